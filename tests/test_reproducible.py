"""--seed makes builds reproducible: the same image, options and seed give the same bytes, whenever
they run; the time stamps the run makes are SOURCE_DATE_EPOCH's (or the image's), read back with
ntfs-3g's and mtools' own tools."""
import hashlib
import os
import time

from tests.support import extract_partition, run, sfdisk, to_raw, w2v

CASES = [("u.vhdx", ["--layout", "uefi"]), ("b.vhd", ["--layout", "bios", "--type", "fixed"]),
         # WinRE's store objects and files, and the KDNET key made for --debug net, come from the seed too
         ("r.vhdx", ["--layout", "uefi", "--recovery", "64M", "--debug", "net:10.0.0.2:50000"]),
         ("rb.vhd", ["--layout", "bios", "--recovery", "64M"])]


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(wim, d, seed, env=None, extra=()):
    d.mkdir()
    for name, args in CASES:
        cmd = ["apply", wim, d / name, "--index", "1", "--size", "1G", *args, *extra]
        if seed is not None:
            cmd += ["--seed", seed]
        w2v(*cmd, env={**os.environ, **(env or {})})
    return {name: digest(d / name) for name, _ in CASES}


def test_same_seed_same_bytes(fixture_wim, tmp):
    first = build(fixture_wim, tmp / "a", "golden")
    time.sleep(2.1)  # FAT keeps times in 2-second steps: anything that read the clock now differs
    assert build(fixture_wim, tmp / "b", "golden") == first
    other = build(fixture_wim, tmp / "c", "other")
    assert all(other[k] != first[k] for k in first)
    unseeded = [build(fixture_wim, tmp / n, None) for n in ("d", "e")]
    assert all(unseeded[0][k] != unseeded[1][k] for k in first), "without a seed, IDs are random"
    # --no-sync writes through the page cache and skips the fsyncs: the bytes are the same
    assert build(fixture_wim, tmp / "f", "golden", extra=["--no-sync"]) == first


def test_times_are_source_date_epoch(fixture_wim, tmp):
    epoch = 1700000000  # 2023-11-14 22:13:20 UTC
    build(fixture_wim, tmp / "s", "t", env={"SOURCE_DATE_EPOCH": str(epoch)})
    raw = to_raw(tmp / "s" / "u.vhdx", tmp)
    pt = sfdisk(raw)
    esp = extract_partition(raw, pt["partitions"][0], tmp, "esp.img")
    # mtools shows the ESP's files with the pinned date and time (FAT: local = UTC here, 2-second steps)
    listing = run("mdir", "-i", esp, "::/EFI/Microsoft/Boot", env={**os.environ, "TZ": "UTC"}).stdout
    assert "2023-11-14  22:13" in listing and "BCD" in listing, listing
    # ntfs-3g's ntfsinfo shows the file name attribute libntfs-3g wrote when it created the file
    ntfs = extract_partition(raw, pt["partitions"][2], tmp, "win.img")
    info = run("ntfsinfo", "-F", "/Windows/System32/ntoskrnl.exe", ntfs, env={**os.environ, "TZ": "UTC"}).stdout
    fn = info[info.index("$FILE_NAME"):]
    assert "Tue Nov 14 22:13:20 2023" in fn, fn[:800]
    # a bad SOURCE_DATE_EPOCH is a usage error
    p = w2v("apply", fixture_wim, tmp / "x.vhdx", "--index", "1", "--size", "1G", "--seed", "t", check=False,
            env={**os.environ, "SOURCE_DATE_EPOCH": "yesterday"})
    assert p.returncode == 2 and "SOURCE_DATE_EPOCH" in p.stderr and not (tmp / "x.vhdx").exists()
