"""qcow2, checked by qemu (qemu-img check, compare and info; qemu-io), which nobody here wrote.

Header offsets below are the ones docs/interop/qcow2.txt gives: incompatible_features at 72,
l1_table_offset at 40, refcount_order at 96; L2 entry bit 62 is "compressed".
"""
import hashlib
import json
import os
import random
import struct

import pytest

from tests.support import leftovers, run, sfdisk, to_raw, w2v
from wim2vhd.disk import Qcow2Disk, create_disk, open_disk

MiB = 1 << 20
QFMT = {".vhd": "vpc", ".vhdx": "vhdx", ".qcow2": "qcow2", ".img": "raw"}


def qemu_check(path):
    """qemu-img check's verdict on our file: no errors, no leaks (its exit status is 0 only then)."""
    p = run("qemu-img", "check", "-f", "qcow2", "--output=json", path)
    res = json.loads(p.stdout)
    assert res.get("check-errors", 0) == 0 and res.get("corruptions", 0) == 0 and res.get("leaks", 0) == 0, res
    return res


def same_as_raw(raw, disk, fmt="qcow2"):
    p = run("qemu-img", "compare", "-f", "raw", "-F", fmt, raw, disk, check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def scribble(disk, ref, seed, n=60, maxlen=300_000):
    rnd = random.Random(seed)
    for _ in range(n):
        off = rnd.randrange(0, disk.size - 1)
        ln = min(rnd.randrange(1, maxlen), disk.size - off)
        data = rnd.randbytes(ln)
        disk.write(off, data)
        ref[off:off + ln] = data


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ---- what we write, read by qemu ---------------------------------------------------------------

@pytest.mark.parametrize("kind,cluster", [("dynamic", None), ("fixed", None), ("dynamic", 4096), ("fixed", 4096),
                                          ("dynamic", 2 * MiB), ("dynamic", 512)])
def test_qemu_checks_and_reads_ours(tmp, kind, cluster):
    size = 96 * MiB + 512 * 3  # not a whole number of clusters: the last one is partly past the end
    path = tmp / "d.qcow2"
    d = create_disk(str(path), size, dynamic=kind == "dynamic", block_size=cluster)
    d.close()
    res = qemu_check(path)
    if kind == "fixed":
        assert res["allocated-clusters"] == res["total-clusters"], res
    info = json.loads(run("qemu-img", "info", "-f", "qcow2", "--output=json", path).stdout)
    assert info["virtual-size"] == size and info["cluster-size"] == (cluster or 65536)
    assert info["format-specific"]["data"]["compat"] == "1.1"
    ref = bytearray(size)
    (tmp / "empty.img").write_bytes(ref)
    same_as_raw(tmp / "empty.img", path)
    d = open_disk(str(path), writable=True)
    scribble(d, ref, 1)
    d.flush()
    d.set_cache(4 * MiB)  # the write-back cache in front: its writebacks are partial clusters too
    scribble(d, ref, 2)
    d.close()
    qemu_check(path)
    (tmp / "ref.img").write_bytes(ref)
    same_as_raw(tmp / "ref.img", path)


def test_disk_create_info_and_convert(tmp):
    """The commands: create, info, convert into and out of qcow2 (qemu-img compares each result)."""
    q = tmp / "new.qcow2"
    res = json.loads(w2v("disk", "create", q, "--size", "1G", "--block-size", "128K", "--json").stdout)
    assert res["format"] == "qcow2" and res["cluster_size"] == 128 * 1024 and res["virtual_size"] == 1 << 30
    qemu_check(q)
    assert json.loads(run("qemu-img", "info", "--output=json", q).stdout)["cluster-size"] == 128 * 1024
    # a source with data, written by qemu-io
    src = tmp / "src.vhdx"
    w2v("disk", "create", src, "--size", "256M")
    run("qemu-io", "-f", "vhdx", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 100M 3M",
        "-c", "write -P 0x33 255M 64k", src)
    out = tmp / "c.qcow2"
    w2v("disk", "convert", src, out)
    qemu_check(out)
    assert run("qemu-img", "compare", "-f", "vhdx", "-F", "qcow2", src, out).returncode == 0
    info = json.loads(w2v("disk", "info", out, "--json").stdout)
    assert info["format"] == "qcow2" and info["type"] == "dynamic" and info["allocated_bytes"] == 4 * MiB + 65536
    assert "qcow2 (dynamic)" in w2v("disk", "info", out).stdout
    for back in ("back.vhdx", "back.vhd", "back.img"):
        w2v("disk", "convert", out, tmp / back)
        assert run("qemu-img", "compare", "-f", "qcow2", "-F", QFMT[os.path.splitext(back)[1]], out,
                   tmp / back).returncode == 0
    fixed = tmp / "f.qcow2"
    w2v("disk", "convert", src, fixed, "--type", "fixed")
    assert qemu_check(fixed)["allocated-clusters"] == 4096
    assert json.loads(w2v("disk", "info", fixed, "--json").stdout)["type"] == "fixed"
    assert run("qemu-img", "compare", "-f", "vhdx", "-F", "qcow2", src, fixed).returncode == 0
    assert not leftovers(tmp)


def test_qcow2_content_wins_over_the_name(tmp):
    """A qcow2 file named .img is read as qcow2 (by its magic), as qemu-img info probes it."""
    q = tmp / "d.qcow2"
    w2v("disk", "create", q, "--size", "64M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", q)
    os.rename(q, tmp / "d.img")
    d = open_disk(str(tmp / "d.img"))
    assert isinstance(d, Qcow2Disk) and d.read(MiB, 65536) == b"\x5a" * 65536
    d.close()


def test_refuses_4k_sectors_and_bad_cluster_sizes(tmp):
    for args, words in ((["--sector-size", "4096"], "512-byte sectors"), (["--block-size", "3K"], "cluster size"),
                        (["--block-size", "4M"], "cluster size")):
        p = w2v("disk", "create", tmp / "x.qcow2", "--size", "64M", *args, check=False)
        assert p.returncode == 2 and words in p.stderr and p.stderr.count("\n") == 1, p.stderr
        assert not (tmp / "x.qcow2").exists() and not leftovers(tmp)


# ---- what qemu writes, read by us ----------------------------------------------------------------

@pytest.mark.parametrize("compat,cluster", [("1.1", "64k"), ("0.10", "64k"), ("1.1", "4k"), ("0.10", "512")])
def test_we_read_qemu_files(tmp, compat, cluster):
    q = tmp / "q.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"compat={compat},cluster_size={cluster}", q, "80M")
    rnd = random.Random(5)
    cmds = []
    for _ in range(30):
        off, ln = rnd.randrange(0, 79 * MiB) // 512 * 512, rnd.randrange(1, 400) * 512
        cmds += ["-c", f"write -P {rnd.randrange(1, 255)} {off} {ln}"]
    # zeros over data (v3: the zero flag; v2: qemu writes zeros or deallocates) and a discard
    cmds += ["-c", "write -P 0x77 10M 2M", "-c", "write -z 10M 1M", "-c", "discard 11M 512k"]
    run("qemu-io", "-f", "qcow2", *cmds, q)
    raw = tmp / "q.raw"
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", q, raw)
    d = open_disk(str(q))
    assert d.size == 80 * MiB and d.block_size == {"64k": 65536, "4k": 4096, "512": 512}[cluster]
    assert d.read(0, d.size) == raw.read_bytes()
    assert d.info()["qcow2_version"] == (3 if compat == "1.1" else 2)
    d.close()
    # and through the command line, into a VHDX that qemu compares with the qcow2
    w2v("disk", "convert", q, tmp / "o.vhdx")
    assert run("qemu-img", "compare", "-f", "qcow2", "-F", "vhdx", q, tmp / "o.vhdx").returncode == 0


@pytest.mark.parametrize("compat", ["1.1", "0.10"])
def test_we_read_qemu_children(tmp, compat):
    base, child = tmp / "base.qcow2", tmp / "child.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"compat={compat}", base, "32M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 8M", base)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"compat={compat}", "-b", "base.qcow2", "-F", "qcow2", child)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x42 1M 4k", "-c", "write -P 0x43 20M 64k", child)
    raw = tmp / "child.raw"
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", child, raw)
    d = open_disk(str(child))
    assert d.disk_type == "differencing" and d.parent is not None
    assert d.read(0, d.size) == raw.read_bytes()
    d.close()


# ---- children ------------------------------------------------------------------------------------

@pytest.mark.parametrize("parent_ext", [".vhdx", ".vhd", ".qcow2", ".img"])
def test_child_read_by_qemu(tmp, parent_ext):
    parent, child = tmp / f"p{parent_ext}", tmp / "c.qcow2"
    w2v("disk", "create", parent, "--size", "64M")
    fmt = QFMT[parent_ext]
    run("qemu-io", "-f", fmt, "-c", "write -P 0x5a 1M 64k", "-c", "write -P 0x33 10M 3M", parent)
    before = digest(parent)
    res = json.loads(w2v("disk", "diff", parent, child, "--json").stdout)
    assert res["type"] == "differencing" and res["backing_file"] == parent.name
    chain = json.loads(run("qemu-img", "info", "--backing-chain", "--output=json", child).stdout)
    assert [i["format"] for i in chain] == ["qcow2", fmt]
    assert chain[0]["backing-filename"] == parent.name and chain[0]["backing-filename-format"] == fmt
    qemu_check(child)
    assert run("qemu-img", "compare", "-f", "qcow2", "-F", fmt, child, parent).returncode == 0
    # our writes, partial clusters over the parent's data: copied up, as qemu expects
    ref = bytearray(run_read(parent, fmt, tmp))
    c = open_disk(str(child), writable=True)
    scribble(c, ref, 9, n=40, maxlen=150_000)
    c.write(10 * MiB + 1000, b"\xee" * 100)
    ref[10 * MiB + 1000:10 * MiB + 1100] = b"\xee" * 100
    c.close()
    qemu_check(child)
    (tmp / "ref.img").write_bytes(ref)
    same_as_raw(tmp / "ref.img", child)
    # qemu's writes into our child, read back by us
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x99 30M 100k", child)
    ref[30 * MiB:30 * MiB + 102400] = b"\x99" * 102400
    d = open_disk(str(child))
    assert d.read(0, d.size) == bytes(ref)
    d.close()
    assert digest(parent) == before


def run_read(disk, fmt, tmp):
    raw = tmp / "read.raw"
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", disk, raw)
    data = raw.read_bytes()
    os.unlink(raw)
    return data


def test_grandchild_and_a_missing_backing_file(tmp):
    base, mid, top = tmp / "base.vhdx", tmp / "mid.qcow2", tmp / "sub" / "top.qcow2"
    os.mkdir(tmp / "sub")
    w2v("disk", "create", base, "--size", "32M")
    run("qemu-io", "-f", "vhdx", "-c", "write -P 0x01 0 1M", base)
    w2v("disk", "diff", base, mid)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x02 512k 1M", mid)
    w2v("disk", "diff", mid, top)
    chain = json.loads(run("qemu-img", "info", "--backing-chain", "--output=json", top).stdout)
    assert [i["format"] for i in chain] == ["qcow2", "qcow2", "vhdx"]
    assert chain[0]["backing-filename"] == "../mid.qcow2"  # relative to the child, as qemu resolves it
    w2v("disk", "convert", top, tmp / "flat.img")
    assert run("qemu-img", "compare", "-F", "raw", top, tmp / "flat.img").returncode == 0
    os.rename(mid, tmp / "moved.qcow2")
    p = w2v("disk", "info", top, check=False)
    assert p.returncode == 3 and "not found" in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_diff_names(tmp):
    """A raw parent takes a qcow2 child only; a VHDX parent's child is .vhdx or .qcow2."""
    w2v("disk", "create", tmp / "r.img", "--size", "16M")
    p = w2v("disk", "diff", tmp / "r.img", tmp / "c.vhd", check=False)
    assert p.returncode == 2 and ".qcow2" in p.stderr
    w2v("disk", "diff", tmp / "r.img", tmp / "c.qcow2")
    qemu_check(tmp / "c.qcow2")


# ---- bad input ---------------------------------------------------------------------------------

def _refused(tmp, path, words):
    before = digest(path)
    for args in (["disk", "info", path], ["disk", "convert", path, tmp / "out.img"]):
        p = w2v(*args, check=False)
        assert p.returncode == 3, p.stderr
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
        assert words in p.stderr, p.stderr
    assert not (tmp / "out.img").exists() and not leftovers(tmp)
    assert digest(path) == before


def test_bad_inputs(tmp):
    good = tmp / "g.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", good, "64M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", good)
    data = good.read_bytes()
    (tmp / "trunc.qcow2").write_bytes(data[:50])
    _refused(tmp, tmp / "trunc.qcow2", "truncated")
    b = bytearray(data)
    struct.pack_into(">Q", b, 40, 1 << 40)  # l1_table_offset
    (tmp / "l1.qcow2").write_bytes(b)
    _refused(tmp, tmp / "l1.qcow2", "L1 table")
    b = bytearray(data)
    struct.pack_into(">I", b, 96, 7)  # refcount_order: at most 6
    (tmp / "rc.qcow2").write_bytes(b)
    _refused(tmp, tmp / "rc.qcow2", "refcount order 7")
    b = bytearray(data)
    struct.pack_into(">Q", b, 72, 1 << 9)  # incompatible_features: bit 9 means nothing yet
    (tmp / "inc.qcow2").write_bytes(b)
    _refused(tmp, tmp / "inc.qcow2", "unknown incompatible feature (bit 9")
    (tmp / "magic.qcow2").write_bytes(b"\0" * 4096)
    _refused(tmp, tmp / "magic.qcow2", "not a qcow2 file")
    # compressed clusters, extended L2 entries, an external data file: made by qemu-img
    src = tmp / "src.img"
    with open(src, "wb") as f:
        f.truncate(8 * MiB)
        f.write(b"hello" * 1000)
    run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", src, tmp / "comp.qcow2")
    # compressed clusters are read (native inflate): qemu-img compare is the oracle
    w2v("disk", "convert", tmp / "comp.qcow2", tmp / "comp.img")
    same_as_raw(src, tmp / "comp.qcow2")
    assert (tmp / "comp.img").read_bytes() == src.read_bytes()
    from wim2vhd.errors import UnsupportedInput
    with pytest.raises(UnsupportedInput, match="compressed clusters"):
        open_disk(str(tmp / "comp.qcow2"), writable=True)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", tmp / "ext.qcow2", "8M")
    _refused(tmp, tmp / "ext.qcow2", "extended L2 entries")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp / 'data.bin'}", tmp / "df.qcow2", "8M")
    _refused(tmp, tmp / "df.qcow2", "external data file")
    for attempt in range(5):  # qemu times PBKDF2 on the CPU for LUKS, and on a loaded machine the timing
        made = run("qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=abc",  # can fail
                   "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=50", tmp / "enc.qcow2",
                   "8M", check=False)  # ("Unable to get accurate CPU usage"): try again
        if made.returncode == 0:
            break
        assert "accurate CPU usage" in made.stderr, made.stderr
    _refused(tmp, tmp / "enc.qcow2", "encrypted")
    if run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", tmp / "zstd.qcow2", "8M",
           check=False).returncode == 0:  # qemu built with zstd
        _refused(tmp, tmp / "zstd.qcow2", "compression type")


def test_snapshots_read_but_not_written(tmp):
    """The active layer of an image with internal snapshots reads as qemu reads it; writing is refused."""
    q = tmp / "s.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", q, "16M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x01 0 2M", q)
    run("qemu-img", "snapshot", "-c", "before", q)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x02 1M 64k", q)
    raw = tmp / "s.raw"
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", q, raw)
    d = open_disk(str(q))
    assert d.read(0, d.size) == raw.read_bytes()
    d.close()
    from wim2vhd.errors import UnsupportedInput
    before = digest(q)
    with pytest.raises(UnsupportedInput, match="snapshots"):
        open_disk(str(q), writable=True)
    # an image qemu laid out (L2 tables allocated on demand) is read, not written
    run("qemu-img", "create", "-q", "-f", "qcow2", tmp / "n.qcow2", "16M")
    with pytest.raises(UnsupportedInput, match="laid out as it makes them"):
        open_disk(str(tmp / "n.qcow2"), writable=True)
    assert digest(q) == before


# ---- apply and capture -------------------------------------------------------------------------

def test_apply_to_qcow2_and_capture(fixture_wim, tmp):
    out = tmp / "w.qcow2"
    res = json.loads(w2v("apply", fixture_wim, out, "--index", "1", "--size", "3G", "--seed", "q1",
                         "--json").stdout)
    assert res["disk"]["format"] == "qcow2" and not leftovers(tmp)
    qemu_check(out)
    raw = to_raw(out, tmp)  # qemu-img convert: qemu's reading of our qcow2
    assert "No problems found" in run("sgdisk", "-v", raw).stdout
    parts = sfdisk(raw)["partitions"]
    win = parts[-1]
    ntfs = tmp / "ntfs.img"
    run("dd", f"if={raw}", f"of={ntfs}", "bs=1M", "iflag=skip_bytes,count_bytes", f"skip={win['start'] * 512}",
        f"count={win['size'] * 512}", "conv=sparse", "status=none")
    assert "processed successfully" in run("ntfsfix", "-n", ntfs).stdout
    assert "ntoskrnl.exe" in run("ntfsls", ntfs, "-p", "/Windows/System32").stdout.split()
    info = json.loads(w2v("disk", "info", out, "--json").stdout)
    assert info["partitions"]["scheme"] == "gpt" and len(info["partitions"]["partitions"]) == len(parts)
    # capture from the qcow2, read back by wimlib
    w2v("capture", out, tmp / "back.wim")
    assert "Windows" in run("wiminfo", tmp / "back.wim", "1").stdout
    # a qcow2 child of the applied disk, captured through its chain
    w2v("disk", "diff", out, tmp / "child.qcow2")
    qemu_check(tmp / "child.qcow2")
    w2v("capture", tmp / "child.qcow2", tmp / "child.wim")
    a = run("wimdir", tmp / "back.wim", "1").stdout
    assert a == run("wimdir", tmp / "child.wim", "1").stdout and "/Windows/System32/ntoskrnl.exe" in a


def test_a_backing_chain_that_loops(tmp):
    w2v("disk", "create", tmp / "p.qcow2", "--size", "16M")
    w2v("disk", "diff", tmp / "p.qcow2", tmp / "c.qcow2")
    b = bytearray((tmp / "c.qcow2").read_bytes())
    at = b.index(b"p.qcow2")  # the backing file name: now the child itself
    b[at:at + 7] = b"c.qcow2"
    (tmp / "c.qcow2").write_bytes(b)
    _refused(tmp, tmp / "c.qcow2", "backing chain comes back")


def test_a_writer_clears_the_autoclear_bits(tmp):
    """qemu-img adds a dirty bitmap to our image; we do not keep bitmaps, so writing clears the autoclear
    bit (docs/interop/qcow2.txt) and qemu then calls the bitmaps inconsistent, not the data."""
    q = tmp / "bm.qcow2"
    w2v("disk", "create", q, "--size", "16M")
    run("qemu-img", "bitmap", "--add", q, "b0")
    assert struct.unpack_from(">Q", q.read_bytes(), 88)[0] & 1  # autoclear bit 0: bitmaps consistent
    d = open_disk(str(q), writable=True)
    d.write(4096, b"z" * 5000)
    d.close()
    assert struct.unpack_from(">Q", q.read_bytes(), 88)[0] == 0
    p = run("qemu-img", "check", "--output=json", q, check=False)
    assert json.loads(p.stdout).get("corruptions", 0) == 0 and "bitmaps are now considered inconsistent" in p.stderr
    ref = bytearray(16 * MiB)
    ref[4096:4096 + 5000] = b"z" * 5000
    (tmp / "ref.img").write_bytes(ref)
    same_as_raw(tmp / "ref.img", q)


def test_disk_check_reads_qcow2(tmp):
    """`disk check` on qcow2: sound when qemu-img made it (the independent writer) and when we did;
    a version qemu never wrote is one line, exit 3."""
    ours, theirs = tmp / "ours.qcow2", tmp / "theirs.qcow2"
    w2v("disk", "create", ours, "--size", "64M")
    run("qemu-img", "create", "-q", "-f", "qcow2", theirs, "64M")
    for f in (ours, theirs):
        assert w2v("disk", "check", f, check=False).returncode == 0
    data = bytearray(ours.read_bytes())
    data[4:8] = (9).to_bytes(4, "big")
    ours.write_bytes(bytes(data))
    p = w2v("disk", "check", ours, check=False)
    assert p.returncode == 3 and "version" in (p.stdout + p.stderr).lower(), p.stdout + p.stderr
