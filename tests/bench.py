"""`make bench`: wim2vhd side by side with its anchors, alternating, medians of several runs.

    python -m tests.bench [--runs N] [--only convert,chain,apply,capture,editions,iso,scale] [--work DIR]

Anchors (named in the issues):
  convert  raw (sparse, 1 GiB of data) -> dynamic VHDX: `wim2vhd disk convert` vs `qemu-img convert -O vhdx`
  apply    a WIM of /usr/share: `wim2vhd apply` to a dynamic VHDX vs `mkntfs` + `wimapply` into a raw
           sparse image + `sync` (the anchor), and `wimverify` (the floor)
  capture  `wim2vhd capture` from that VHDX vs `wimcapture` from the equivalent raw NTFS image
  editions k editions of one WIM (sharing their files, as a Windows install.wim's do) in one
           `apply --index all` against k separate applies, and one alone
  iso      the /usr/share WIM applied as it is, from an ISO read in place, and from an ISO copied first
           (WIM2VHD_ISO_COPY=1, the way before ISOs were read in place), side by side
  scale    apply time against the number of files (10k, 50k, 150k) and bytes
  chain    `wim2vhd disk convert` of differencing chains 5 to 100 deep (VHD and VHDX): time per level,
           which must stay flat (it grew about 1.7 times per level before the chain was read linearly)

WIMs are built once and cached under .cache/bench/.  Nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "bench")
W2V = os.path.join(os.path.dirname(sys.executable), "wim2vhd")
MiB, GiB = 1 << 20, 1 << 30


def run(cmd: list[str], **kw) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak RSS in bytes of the command and its children)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err[-2000:]}")
    return dt, ru.ru_maxrss * 1024


def sh(script: str) -> tuple[float, int]:
    return run(["bash", "-c", script])


def rm(*paths: str) -> None:
    for p in paths:
        if os.path.exists(p):
            os.unlink(p)


def alternate(runs: int, cases: dict[str, callable]) -> dict[str, list[tuple[float, int]]]:
    res: dict[str, list[tuple[float, int]]] = {k: [] for k in cases}
    for _ in range(runs):
        for k, fn in cases.items():
            # Untimed: each run starts with nothing dirty in the page cache, so that one which leaves
            # its writes there (qemu-img, --no-sync) does not hand them to the next to write back.
            os.sync()
            res[k].append(fn())
    return res


def med(xs: list[tuple[float, int]]) -> float:
    return statistics.median(x[0] for x in xs)


def peak(xs: list[tuple[float, int]]) -> int:
    return max(x[1] for x in xs)


def line(label: str, secs: float, extra: str = "") -> None:
    print(f"  {label:<44} {secs:8.2f} s  {extra}")


# ---- inputs --------------------------------------------------------------------

def sparse_raw_with_data(path: str, size: int = 8 * GiB, data: int = 1 * GiB) -> str:
    if os.path.exists(path):
        return path
    rnd = random.Random(42)
    chunk = rnd.randbytes(4 * MiB)
    with open(path + ".part", "wb") as f:
        f.truncate(size)
        written = 0
        while written < data:
            n = rnd.choice((64 * 1024, 1 * MiB, 4 * MiB))
            off = rnd.randrange(0, size - n) // 4096 * 4096
            f.seek(off)
            f.write(chunk[:n])
            written += n
    os.replace(path + ".part", path)
    return path


def tree_wim(path: str, source: str) -> str:
    if not os.path.exists(path):
        subprocess.run(["wimcapture", source, path + ".part", os.path.basename(path), "--compress=lzx"],
                       check=True, stdout=subprocess.DEVNULL)
        os.replace(path + ".part", path)
    return path


def synthetic_tree(root: str, files: int, size_fn, *, unique: bool = False) -> str:
    """files files of size_fn(rnd) bytes.  Their data is random (incompressible); with unique, each
    file is its own (no two share a blob) and every other 32 KiB of it is text that compresses."""
    if os.path.isdir(root) and os.path.exists(os.path.join(root, ".done")):
        return root
    shutil.rmtree(root, ignore_errors=True)
    rnd = random.Random(files)
    words = rnd.randbytes(1 << 20)
    text = b"".join(b"%08d the quick brown fox jumps over the lazy dog\n" % k for k in range(600))[:32768]
    for i in range(files):
        d = os.path.join(root, f"d{i // 500:04d}", f"s{(i // 50) % 10}")
        os.makedirs(d, exist_ok=True)
        n = size_fn(rnd)
        with open(os.path.join(d, f"f{i:06d}.dat"), "wb") as f:
            if unique:
                off = rnd.randrange(len(words))
                rot = words[off:] + words[:off]
                for k, pos in enumerate(range(0, n, 32768)):
                    piece = rot[pos % len(rot):][:32768] if k % 2 == 0 else b"%08d%08d" % (i, k) + text[16:]
                    f.write(piece[:n - pos])
            else:
                off = rnd.randrange(0, len(words) - min(n, len(words) - 1))
                f.write((words[off:off + n] * (n // max(1, len(words) - off) + 1))[:n])
    open(os.path.join(root, ".done"), "w").close()
    return root


def wim_total_bytes(wim: str) -> int:
    out = subprocess.run(["wiminfo", wim, "1"], capture_output=True, text=True, check=True).stdout
    for ln in out.splitlines():
        if ln.startswith("Total Bytes:"):
            return int(ln.split(":")[1].strip())
    return 0


# ---- benchmarks --------------------------------------------------------------------

def bench_convert(runs: int, work: str) -> None:
    print(f"convert: sparse raw (8 GiB, 1 GiB of data) -> dynamic VHDX, {runs} runs, medians")
    raw = sparse_raw_with_data(os.path.join(CACHE, "sparse-1g.img"))
    # Each case replaces its own output: on this VM, pages a deleted file gave back are quick to
    # fill again, while fresh ones cost the host a fault each (twice the time of a page-cache write).
    ours, theirs = os.path.join(work, "c-ours.vhdx"), os.path.join(work, "c-qemu.vhdx")
    ours_ns, theirs_s = os.path.join(work, "c-ours-nosync.vhdx"), os.path.join(work, "c-qemu-sync.vhdx")

    def o():
        rm(ours)
        return run([W2V, "disk", "convert", raw, ours])

    def ons():
        rm(ours_ns)
        return run([W2V, "disk", "convert", raw, ours_ns, "--no-sync"])

    def q():
        rm(theirs)
        return run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic", raw, theirs])

    def qs():
        # By default ours ends with an fsync (a durable output) and qemu-img leaves its writes in the
        # page cache: each is compared with the other doing the same.
        rm(theirs_s)
        t, rss = run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic", raw, theirs_s])
        t2, _ = run(["sync", theirs_s])
        return t + t2, rss

    r = alternate(runs, {"ours": o, "qemu+sync": qs, "ours --no-sync": ons, "qemu": q})
    line("wim2vhd disk convert (fsync)", med(r["ours"]), f"file {os.path.getsize(ours) / MiB:.0f} MiB")
    line("qemu-img convert -O vhdx, then sync", med(r["qemu+sync"]), f"file {os.path.getsize(theirs) / MiB:.0f} MiB")
    line("wim2vhd disk convert --no-sync", med(r["ours --no-sync"]))
    line("qemu-img convert -O vhdx", med(r["qemu"]))
    print(f"  ratio ours/qemu-img: {med(r['ours']) / med(r['qemu+sync']):.2f} both synced, "
          f"{med(r['ours --no-sync']) / med(r['qemu']):.2f} neither (goal <= 1.0); "
          f"synced ours/unsynced qemu-img: {med(r['ours']) / med(r['qemu']):.2f}")
    rm(ours, theirs, ours_ns, theirs_s)


def apply_pair(wim: str, work: str, runs: int, label: str) -> dict[str, float]:
    total = wim_total_bytes(wim)
    size = max(8 * GiB, (int(total * 1.5) + 2 * GiB) // GiB * GiB)
    vhdx, raw = os.path.join(work, "a.vhdx"), os.path.join(work, "a.img")
    cap_ours, cap_theirs = os.path.join(work, "ours.wim"), os.path.join(work, "theirs.wim")

    def ours():
        rm(vhdx)
        return run([W2V, "apply", wim, vhdx, "--layout", "native", "--no-boot", "--size", str(size), "--json"])

    def anchor():
        rm(raw)
        return sh(f"truncate -s {size - MiB} {raw} && mkntfs -F -Q -q -p 2048 -H 255 -S 63 {raw} >/dev/null 2>&1 && "
                  f"wimapply {wim} 1 {raw} >/dev/null && sync -f {raw}")

    def floor():
        return run(["wimverify", wim])

    r = alternate(runs, {"ours": ours, "anchor": anchor, "floor": floor})
    o, a, f = med(r["ours"]), med(r["anchor"]), med(r["floor"])
    vhdx_size = os.path.getsize(vhdx)
    raw_alloc = os.stat(raw).st_blocks * 512
    print(f"apply {label}: {total / MiB:.0f} MiB of file data, disk {size // GiB} GiB, {runs} runs, medians")
    line("wim2vhd apply -> dynamic VHDX", o, f"peak RSS {peak(r['ours']) / MiB:.0f} MiB")
    line("anchor: mkntfs + wimapply raw + sync", a, f"peak RSS {peak(r['anchor']) / MiB:.0f} MiB")
    line("floor: wimverify", f)
    print(f"  ratio ours/anchor: {o / a:.2f} (goal <= 0.6)   ours/floor: {o / f:.2f} (goal <= 1.8)")
    print(f"  size: VHDX {vhdx_size / MiB:.0f} MiB, raw allocates {raw_alloc / MiB:.0f} MiB, "
          f"ratio {vhdx_size / raw_alloc:.2f} (goal <= 1.10)")
    return {"ours": o, "anchor": a, "floor": f, "files": 0, "bytes": total, "vhdx": vhdx, "raw": raw,
            "cap_ours": cap_ours, "cap_theirs": cap_theirs}


def bench_capture(runs: int, res: dict) -> None:
    vhdx, raw, co, ct = res["vhdx"], res["raw"], res["cap_ours"], res["cap_theirs"]

    def ours():
        rm(co)
        return run([W2V, "capture", vhdx, co, "--partition", "1", "--name", "bench"])

    def theirs():
        rm(ct)
        return run(["wimcapture", raw, ct, "bench"])

    r = alternate(runs, {"ours": ours, "theirs": theirs})
    print("capture from the applied volume:")
    line("wim2vhd capture from the VHDX", med(r["ours"]))
    line("wimcapture from the raw NTFS image", med(r["theirs"]))
    print(f"  ratio ours/wimcapture: {med(r['ours']) / med(r['theirs']):.2f} (goal <= 1.0)")
    rm(co, ct)


def bench_scale(work: str) -> None:
    print("scale: apply time by number of files and bytes (one run each)")
    cases = [(f"tree-{n}", n, lambda r: r.choice((200, 1500, 6000, 20000)), False) for n in (10_000, 50_000, 150_000)]
    # the large mixed image: ~2 GiB in 1000 files from 4 KiB to 8 MiB, no two alike, half of it
    # compressible.  (Before 2026-12-02 this was "mixed-2g", whose large files were copies of two:
    # 300 targets of two blobs, which wimlib writes a chunk at a time to each copy in turn.)
    cases.append(("large-2g", 1000,
                  lambda r: r.choice((4096, 65536, 400_000, 1_500_000, 3_000_000, 8_000_000)), True))
    for name, n, size_fn, unique in cases:
        root = synthetic_tree(os.path.join(CACHE, name), n, size_fn, unique=unique)
        wim = tree_wim(os.path.join(CACHE, f"{name}.wim"), root)
        total = wim_total_bytes(wim)
        out = os.path.join(work, "s.vhdx")
        rm(out)
        t, rss = run([W2V, "apply", wim, out, "--layout", "native", "--no-boot", "--size", "16G"])
        line(f"{n} files, {total / MiB:.0f} MiB", t,
             f"{n / t:,.0f} files/s, {total / MiB / t:.0f} MiB/s, peak RSS {rss / MiB:.0f} MiB")
        rm(out)


def editions_wim(k: int = 3) -> str:
    """A WIM of k editions that share their files, as a Windows install.wim's do: the 10k-file tree
    captured once and appended k-1 times (wimlib stores each blob once)."""
    path = os.path.join(CACHE, f"editions-{k}.wim")
    if not os.path.exists(path):
        root = synthetic_tree(os.path.join(CACHE, "tree-10000"), 10_000, lambda r: r.choice((200, 1500, 6000, 20000)))
        subprocess.run(["wimcapture", root, path + ".part", "edition 1", "--compress=lzx"], check=True,
                       stdout=subprocess.DEVNULL)
        for i in range(2, k + 1):
            subprocess.run(["wimappend", root, path + ".part", f"edition {i}"], check=True, stdout=subprocess.DEVNULL)
        os.replace(path + ".part", path)
    return path


def bench_editions(runs: int, work: str, k: int = 3) -> None:
    """k editions of one source in one run (`--index all`: the WIM opened once) against k runs of one."""
    wim = editions_wim(k)
    args = ["--layout", "native", "--no-boot", "--size", "4G"]
    outs = [os.path.join(work, f"e-{i}.vhdx") for i in range(1, k + 1)]

    def together():
        rm(*outs)
        return run([W2V, "apply", wim, os.path.join(work, "e-{index}.vhdx"), "--index", "all", *args])

    def apart():
        rm(*outs)
        t = rss = 0
        for i, out in enumerate(outs, 1):
            dt, r = run([W2V, "apply", wim, out, "--index", str(i), *args])
            t, rss = t + dt, max(rss, r)
        return t, rss

    def one():
        rm(outs[0])
        return run([W2V, "apply", wim, outs[0], "--index", "1", *args])

    r = alternate(runs, {"together": together, "apart": apart, "one": one})
    print(f"editions: {k} editions of one WIM (10k files each, shared), {runs} runs, medians")
    line(f"wim2vhd apply --index all ({k} disks)", med(r["together"]), f"peak RSS {peak(r['together']) / MiB:.0f} MiB")
    line(f"{k} x wim2vhd apply --index N", med(r["apart"]))
    line("one edition", med(r["one"]))
    print(f"  ratio together/apart: {med(r['together']) / med(r['apart']):.2f}; together/one: "
          f"{med(r['together']) / med(r['one']):.2f} (k = {k}; goal well under k)")
    rm(*outs)


def iso_of(wim: str) -> str:
    """An ISO 9660 image (xorriso) holding wim as \\sources\\install.wim, as a Windows ISO holds it."""
    path = os.path.splitext(wim)[0] + ".iso"
    if not os.path.exists(path):
        tree = path + ".tree"
        shutil.rmtree(tree, ignore_errors=True)
        os.makedirs(os.path.join(tree, "sources"))
        try:
            os.link(wim, os.path.join(tree, "sources", "install.wim"))
        except OSError:
            shutil.copyfile(wim, os.path.join(tree, "sources", "install.wim"))
        subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-iso-level", "3", "-o", path + ".part", tree],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(tree)
        os.replace(path + ".part", path)
    return path


def bench_iso(runs: int, work: str, wim: str, label: str) -> None:
    """The same WIM applied as it is, from an ISO in place, and from an ISO through a copy (the old way)."""
    iso = iso_of(wim)
    out = os.path.join(work, "i.vhdx")
    args = ["--layout", "native", "--no-boot", "--size", "16G", "--index", "1"]

    def case(src, env=None):
        def fn():
            rm(out)
            return run([W2V, "apply", src, out, *args], env={**os.environ, **(env or {})})
        return fn

    r = alternate(runs, {"wim": case(wim), "iso": case(iso), "copy": case(iso, {"WIM2VHD_ISO_COPY": "1"})})
    print(f"iso: {label} as a WIM and inside an ISO ({os.path.getsize(wim) / MiB:.0f} MiB WIM), {runs} runs, medians")
    line("wim2vhd apply WIM", med(r["wim"]), f"peak RSS {peak(r['wim']) / MiB:.0f} MiB")
    line("wim2vhd apply ISO (read in place)", med(r["iso"]), f"peak RSS {peak(r['iso']) / MiB:.0f} MiB")
    line("wim2vhd apply ISO (WIM2VHD_ISO_COPY=1: copied)", med(r["copy"]),
         f"and {os.path.getsize(wim) / MiB:.0f} MiB more free space needed")
    print(f"  ratio ISO/WIM: {med(r['iso']) / med(r['wim']):.2f} in place (goal about 1.0), "
          f"{med(r['copy']) / med(r['wim']):.2f} copied")
    rm(out)


def bench_chain(runs: int, work: str) -> None:
    from tests.chain import make_chain
    print(f"chain: disk convert of a 64 MiB differencing chain -> raw, {runs} runs, medians")
    for ext in (".vhd", ".vhdx"):
        first = None
        for depth in (5, 10, 25, 50, 100):
            folder = os.path.join(work, f"chain{depth}{ext[1:]}")
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            top = make_chain(folder, ext, depth)[-1]
            out = os.path.join(folder, "o.img")

            def c():
                rm(out)
                return run([W2V, "disk", "convert", top, out, "--no-sync"])

            t = med(alternate(runs, {"c": c})["c"])
            first = first or (depth, t)
            extra = f"{(t - first[1]) / (depth - first[0]) * 1000:+.1f} ms per level past {first[0]}" \
                if depth > first[0] else "(start-up and the data: the fixed cost)"
            line(f"{ext[1:]} chain of {depth}", t, extra)
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="convert,chain,apply,capture,editions,iso,scale")
    ap.add_argument("--work", default=os.path.join(CACHE, "work"),
                    help="where the outputs go (e.g. a tmpfs, to leave the disk's writeback out)")
    args = ap.parse_args()
    os.makedirs(CACHE, exist_ok=True)
    work = args.work
    os.makedirs(work, exist_ok=True)
    only = set(args.only.split(","))
    print(f"wim2vhd bench on {os.uname().nodename}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, outputs in {work}")
    if "convert" in only:
        bench_convert(max(args.runs, 7), work)  # cheap, and the page cache is at its noisiest here
    if "chain" in only:
        bench_chain(args.runs, work)
    res = None
    if "apply" in only or "capture" in only:
        wim = tree_wim(os.path.join(CACHE, "usr-share.wim"), "/usr/share")
        res = apply_pair(wim, work, args.runs, "/usr/share")
        if "capture" in only:
            bench_capture(args.runs, res)
        rm(res["vhdx"], res["raw"])
    if "editions" in only:
        bench_editions(args.runs, work)
    if "iso" in only:
        bench_iso(args.runs, work, tree_wim(os.path.join(CACHE, "usr-share.wim"), "/usr/share"), "/usr/share")
    if "scale" in only:
        bench_scale(work)


if __name__ == "__main__":
    main()
