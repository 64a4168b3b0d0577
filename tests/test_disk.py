"""The disk layer against readers nobody here wrote: qemu-img, qemu-io and vhdiinfo."""
import json
import os
import random
import struct
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.support import leftovers, run, w2v
from wim2vhd.errors import UsageError
from wim2vhd.disk import create_disk, open_disk
from wim2vhd.disk.geometry import crc32c, vhd_chs

MiB = 1 << 20
QFMT = {".vhd": "vpc", ".vhdx": "vhdx", ".img": "raw"}


def fill(disk, ref, seed, n=60, maxlen=300_000):
    rnd = random.Random(seed)
    for _ in range(n):
        off = rnd.randrange(0, disk.size - 1)
        ln = min(rnd.randrange(1, maxlen), disk.size - off)
        if disk.sector_size == 4096:
            off -= off % 4096
        data = rnd.randbytes(ln)
        disk.write(off, data)
        ref[off:off + ln] = data


@pytest.mark.parametrize("ext,kind,opts", [
    (".vhd", "dynamic", {}), (".vhd", "fixed", {}),
    (".vhdx", "dynamic", {}), (".vhdx", "fixed", {}),
    (".vhdx", "dynamic", {"block_size": MiB, "sector_size": 4096}),
    (".img", "fixed", {}),
])
def test_qemu_reads_ours_identically(tmp, ext, kind, opts):
    size = 96 * MiB
    ref = bytearray(size)
    d = create_disk(str(tmp / f"d{ext}"), size, dynamic=kind == "dynamic", **opts)
    fill(d, ref, 1)
    d.close()
    (tmp / "ref.img").write_bytes(ref)
    fmt = QFMT[ext]
    if opts.get("sector_size") == 4096:
        # qemu's vhdx driver supports only 512-byte logical sectors: check with libvhdi and our reader.
        out = run("vhdiinfo", tmp / f"d{ext}").stdout
        assert "Bytes per sector\t: 4096 bytes" in out and f"({size} bytes)" in out
        d = open_disk(str(tmp / f"d{ext}"))
        assert d.read(0, size) == bytes(ref)
        d.close()
        return
    if fmt == "vhdx":  # qemu's vpc driver has no check
        assert "No errors" in run("qemu-img", "check", "-f", fmt, tmp / f"d{ext}").stdout
    assert run("qemu-img", "compare", "-f", "raw", "-F", fmt, tmp / "ref.img", tmp / f"d{ext}").returncode == 0
    info = run("qemu-img", "info", "-f", fmt, "--output=json", tmp / f"d{ext}").stdout
    assert f'"virtual-size": {size}' in info
    if ext != ".img":
        out = run("vhdiinfo", tmp / f"d{ext}").stdout
        assert f"({size} bytes)" in out
        assert ("Dynamic" if kind == "dynamic" else "Fixed") in out


@pytest.mark.parametrize("fmt,opts,ext", [
    ("vpc", [], ".vhd"), ("vpc", ["-o", "force_size=on"], ".vhd"),
    ("vpc", ["-o", "subformat=fixed,force_size=on"], ".vhd"),
    ("vhdx", [], ".vhdx"), ("vhdx", ["-o", "subformat=fixed"], ".vhdx"),
    ("vhdx", ["-o", "block_size=1M,log_size=1M"], ".vhdx"),
])
def test_we_read_qemu_files(tmp, fmt, opts, ext):
    raw = tmp / "src.img"
    with open(raw, "wb") as f:
        f.truncate(64 * MiB)
        rnd = random.Random(7)
        for _ in range(40):
            f.seek(rnd.randrange(0, 63 * MiB))
            f.write(rnd.randbytes(rnd.randrange(1, 200_000)))
    out = tmp / f"q{ext}"
    run("qemu-img", "convert", "-f", "raw", "-O", fmt, *opts, raw, out)
    d = open_disk(str(out))
    virt = d.size
    got = d.read(0, virt)
    d.close()
    want = raw.read_bytes()
    # qemu's vpc without force_size rounds the size to CHS geometry; the data must agree where both exist.
    assert got[:min(virt, len(want))] == want[:min(virt, len(want))]
    w2v("disk", "convert", out, tmp / "back.img")
    assert run("qemu-img", "compare", "-f", fmt, "-F", "raw", out, tmp / "back.img").returncode == 0


@pytest.mark.parametrize("ext", [".vhd", ".vhdx"])
def test_differencing_with_qemu_io(tmp, ext):
    size = 64 * MiB
    parent = tmp / f"p{ext}"
    ref = bytearray(size)
    d = create_disk(str(parent), size)
    fill(d, ref, 3, n=30)
    d.close()
    before = parent.read_bytes()
    w2v("disk", "diff", parent, tmp / f"c{ext}")
    assert parent.read_bytes() == before, "the parent must not change"
    c = open_disk(str(tmp / f"c{ext}"), writable=True)
    assert c.disk_type == "differencing"
    assert c.read(0, size) == bytes(ref)
    fill(c, ref, 4, n=30, maxlen=5000)  # small writes: partial blocks and sectors
    c.write(1000, b"\xab" * 10)         # inside one sector whose rest comes from the parent
    ref[1000:1010] = b"\xab" * 10
    c.close()
    c = open_disk(str(tmp / f"c{ext}"))
    assert c.read(0, size) == bytes(ref)
    assert c.parent is not None and c.parent.read(0, size) != bytes(ref)
    c.close()
    # Flatten with our convert; compare with an independent reader.
    w2v("disk", "convert", tmp / f"c{ext}", tmp / "flat.img")
    assert (tmp / "flat.img").read_bytes() == bytes(ref)
    if ext == ".vhd":
        # qemu reads (but does not follow) VHD differencing disks; check the parent with qemu-io's reads.
        run("qemu-io", "-f", "vpc", "-c", "read -P 0 0 0", parent)


def test_qemu_io_writes_read_back_through_us(tmp):
    p = tmp / "q.vhdx"
    w2v("disk", "create", p, "--size", "64M")
    run("qemu-io", "-f", "vhdx", "-c", "write -P 0x5a 1M 3M", "-c", "write -P 0x33 40M 512", p)
    d = open_disk(str(p))
    assert d.read(MiB, 3 * MiB) == b"\x5a" * 3 * MiB
    assert d.read(40 * MiB, 512) == b"\x33" * 512
    assert d.read(0, MiB) == bytes(MiB)
    d.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.integers(0, 24 * MiB - 1), st.integers(1, 3 * MiB), st.integers(0, 255)),
                    min_size=1, max_size=12),
       ext=st.sampled_from([".vhd", ".vhdx", ".img"]),
       diff=st.booleans(), cache=st.sampled_from([0, 4 * MiB]), writer=st.sampled_from([0, MiB]),
       threads=st.sampled_from([1, 3]), direct=st.booleans(), aligned=st.booleans())
def test_random_writes_match_model(tmp_path_factory, ops, ext, diff, cache, writer, threads, direct, aligned):
    tmp = tmp_path_factory.mktemp("h")
    size = 24 * MiB
    model = bytearray(size)
    kw = {"block_size": MiB} if ext == ".vhdx" else {}
    d = create_disk(str(tmp / f"p{ext}"), size, **kw)
    d.write(5 * MiB + 3, b"parent" * 1000)
    model[5 * MiB + 3:5 * MiB + 6003] = b"parent" * 1000
    if diff and ext != ".img":
        d.close()
        w2v("disk", "diff", tmp / f"p{ext}", tmp / f"c{ext}")
        d = open_disk(str(tmp / f"c{ext}"), writable=True)
    d.set_cache(cache)
    # Writes queued to the background threads must be seen by reads at once; with direct, the large
    # aligned ones (always, when aligned) bypass the page cache while the rest go through it.
    d.set_writer(writer, threads, direct)
    for off, ln, val in ops:
        if aligned:
            off, ln = off // 4096 * 4096, max(4096, ln // 4096 * 4096)
        ln = min(ln, size - off)
        data = bytes([val]) * ln
        d.write(off, data)
        model[off:off + ln] = data
        # read back an area that straddles block and sector edges
        lo = max(0, off - 700)
        assert d.read(lo, ln + 1400) == bytes(model[lo:lo + ln + 1400])
    d.close()
    d = open_disk(d.path)
    assert d.read(0, size) == bytes(model)
    d.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.integers(0, 4 * MiB - 1), st.integers(1, 600 * 1024), st.binary(min_size=1, max_size=8)),
                    min_size=2, max_size=40),
       ext=st.sampled_from([".img", ".vhdx"]), threads=st.integers(1, 4), direct=st.booleans(),
       aligned=st.booleans())
def test_parallel_writers_keep_overlapping_writes_in_order(tmp_path_factory, ops, ext, threads, direct, aligned):
    """Many writes queued at once, most of them overlapping, written by several threads: the file must
    end as if they were written one after another (no read in between drains the queue)."""
    tmp = tmp_path_factory.mktemp("w")
    size = 4 * MiB
    model = bytearray(size)
    d = create_disk(str(tmp / f"w{ext}"), size, **({"block_size": MiB} if ext == ".vhdx" else {}))
    d.set_cache(0)
    d.set_writer(2 * MiB, threads, direct)
    big_aligned = 0
    for off, ln, pattern in ops:
        if aligned:  # direct writes (from 256 KiB) mixed with buffered ones over the same ranges
            off, ln = off // 4096 * 4096, max(4096, ln // 4096 * 4096)
        ln = min(ln, size - off)
        data = (pattern * (ln // len(pattern) + 1))[:ln]
        d.write(off, data)
        model[off:off + ln] = data
        big_aligned += aligned and ln >= 256 * 1024 and ln % 4096 == 0 and ext == ".img"
    d.flush()
    # /tmp takes O_DIRECT here (ext4; tmpfs too since Linux 6.6): the raw image's big aligned writes went direct.
    assert (d.stats()["direct_writes"] >= big_aligned) if direct else d.stats()["direct_writes"] == 0
    d.close()
    d = open_disk(d.path)
    assert d.read(0, size) == bytes(model)
    d.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.integers(0, 4 * MiB - 1), st.integers(1, 300 * 1024), st.integers(1, 255),
                              st.integers(0, 4 * MiB - 1), st.integers(1, 200 * 1024)),
                    min_size=2, max_size=40),
       ext=st.sampled_from([".img", ".vhdx"]), threads=st.integers(1, 3), cache=st.sampled_from([0, MiB]))
def test_reads_between_queued_writes_see_them(tmp_path_factory, ops, ext, threads, cache):
    """A read waits only for the queued writes that touch its range: reads of any range, while
    other writes stay queued, see exactly what was written before them."""
    tmp = tmp_path_factory.mktemp("r")
    size = 4 * MiB
    model = bytearray(size)
    d = create_disk(str(tmp / f"r{ext}"), size, **({"block_size": MiB} if ext == ".vhdx" else {}))
    d.set_cache(cache)
    d.set_writer(8 * MiB, threads, True)
    for off, ln, val, roff, rln in ops:
        ln = min(ln, size - off)
        d.write(off, bytes([val]) * ln)
        model[off:off + ln] = bytes([val]) * ln
        rln = min(rln, size - roff)
        assert d.read(roff, rln) == bytes(model[roff:roff + rln])
    d.close()
    d = open_disk(d.path)
    assert d.read(0, size) == bytes(model)
    d.close()


def test_writer_threads_checked(tmp):
    d = create_disk(str(tmp / "a.img"), MiB)
    for bad in (0, 5):
        with pytest.raises(UsageError, match="writer threads must be 1 to 4"):
            d.set_writer(MiB, bad)
    d.close()


def test_pure_functions():
    # The VHD specification's algorithm (appendix "CHS calculation"), worked by hand for 131072 sectors:
    # 17 sectors per track, cylinders x heads = 7710, heads = ceil(7710 / 1024) = 8, 7710 < 8 x 1024.
    assert vhd_chs(64 * MiB // 512) == (963, 8, 17)
    c, h, s = vhd_chs(127 * 1024 * MiB // 512)
    assert c * h * s <= 127 * 1024 * MiB // 512
    assert vhd_chs(10**12) == (65535, 16, 255)
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value


# ---- bad input -------------------------------------------------------------

def _expect_fail(args, code, words, tmp):
    p = w2v(*args, check=False)
    assert p.returncode == code, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert words in p.stderr, p.stderr
    assert not leftovers(tmp)


def test_bad_inputs(tmp):
    good = tmp / "g.vhdx"
    w2v("disk", "create", good, "--size", "64M")
    w2v("disk", "create", tmp / "g.vhd", "--size", "64M")
    d = open_disk(str(good), writable=True)
    d.write(0, b"x" * 4096)
    d.close()
    data = good.read_bytes()
    # truncated
    (tmp / "trunc.vhdx").write_bytes(data[:100_000])
    _expect_fail(["disk", "convert", tmp / "trunc.vhdx", tmp / "o.img"], 3, "truncated", tmp)
    (tmp / "trunc.vhd").write_bytes((tmp / "g.vhd").read_bytes()[:2000])
    _expect_fail(["disk", "info", tmp / "trunc.vhd"], 3, "", tmp)
    # bad signature
    (tmp / "sig.vhdx").write_bytes(b"XXXXXXXX" + data[8:])
    _expect_fail(["disk", "info", tmp / "sig.vhdx"], 3, "not a VHDX", tmp)
    (tmp / "sig.vhd").write_bytes(b"\0" * 4096)
    _expect_fail(["disk", "info", tmp / "sig.vhd"], 3, "not a VHD", tmp)
    # CRC mismatch in both headers
    b = bytearray(data)
    b[64 * 1024 + 100] ^= 1
    b[128 * 1024 + 100] ^= 1
    (tmp / "crc.vhdx").write_bytes(b)
    _expect_fail(["disk", "info", tmp / "crc.vhdx"], 3, "CRC-32C mismatch", tmp)
    # VHD footer checksum
    v = bytearray((tmp / "g.vhd").read_bytes())
    v[-512 + 20] ^= 1
    (tmp / "sum.vhd").write_bytes(v)
    _expect_fail(["disk", "info", tmp / "sum.vhd"], 3, "checksum mismatch", tmp)
    # BAT entry past the end of the file
    b = bytearray(data)
    struct.pack_into("<Q", b, 3 * MiB, (4000 << 20) | 6)
    (tmp / "bat.vhdx").write_bytes(b)
    _expect_fail(["disk", "convert", tmp / "bat.vhdx", tmp / "o2.img"], 3, "past the end of the file", tmp)
    assert not (tmp / "o2.img").exists()
    # a metadata item shorter than its record ([MS-VHDX] 2.6.1: table header 32 bytes, entries of
    # 32: item GUID, offset, length; File Parameters is CAA16737-FA36-4D43-B3B6-33F0AA44E76B, 8 bytes)
    b = bytearray(data)
    table = b.index(b"metadata")
    file_params = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b").bytes_le
    entry = next(table + 32 + 32 * k for k in range(struct.unpack_from("<H", b, table + 10)[0])
                 if b[table + 32 + 32 * k:table + 48 + 32 * k] == file_params)
    struct.pack_into("<I", b, entry + 20, 4)
    (tmp / "meta.vhdx").write_bytes(b)
    _expect_fail(["disk", "info", tmp / "meta.vhdx"], 3, "file parameters", tmp)
    # too big, bad block size, existing output
    _expect_fail(["disk", "create", tmp / "big.vhd", "--size", "2041G"], 2, "2040 GiB", tmp)
    _expect_fail(["disk", "create", tmp / "bs.vhdx", "--size", "1G", "--block-size", "3M"], 2, "block size", tmp)
    _expect_fail(["disk", "create", good, "--size", "1G"], 4, "--force", tmp)
    assert good.read_bytes() == data


@pytest.mark.parametrize("ext", [".vhd", ".vhdx"])
def test_missing_and_wrong_parent(tmp, ext):
    w2v("disk", "create", tmp / f"p{ext}", "--size", "64M")
    w2v("disk", "diff", tmp / f"p{ext}", tmp / f"c{ext}")
    os.rename(tmp / f"p{ext}", tmp / f"moved{ext}")
    _expect_fail(["disk", "info", tmp / f"c{ext}"], 3, "parent disk not found", tmp)
    w2v("disk", "create", tmp / f"p{ext}", "--size", "64M")  # same name, another disk
    _expect_fail(["disk", "convert", tmp / f"c{ext}", tmp / "o.img"], 3, "not the disk this child was made from"
                 if ext == ".vhd" else "expected", tmp)
    assert not (tmp / "o.img").exists()


def test_create_is_fast_and_small_for_huge_disks(tmp):
    w2v("disk", "create", tmp / "h.vhdx", "--size", "64T")
    w2v("disk", "create", tmp / "h.vhd", "--size", "2040G")
    assert os.stat(tmp / "h.vhdx").st_blocks * 512 < 4 * MiB
    i = open_disk(str(tmp / "h.vhd"))
    assert i.size == 2040 << 30
    i.close()


def test_convert_cost_follows_data(tmp):
    raw = tmp / "sparse.img"
    with open(raw, "wb") as f:
        f.truncate(1 << 40)  # 1 TiB, nearly all hole
        f.seek(500 << 30)
        f.write(b"data" * 1000)
    w2v("disk", "convert", raw, tmp / "s.vhdx")
    d = open_disk(str(tmp / "s.vhdx"))
    assert d.read(500 << 30, 4000) == b"data" * 1000
    assert d.allocated_bytes() == 32 * MiB
    d.close()


@pytest.mark.parametrize("ext", [".vhd", ".vhdx"])
def test_no_sync_outputs_read_the_same(tmp, ext):
    """--no-sync takes another write path (page cache, one writer thread, no fsync): its disks must
    read exactly like the default's, to qemu-img, and leave no temporary file."""
    raw = tmp / "src.img"
    ref = bytearray(64 * MiB)
    d = create_disk(str(raw), len(ref), fmt=None)
    fill(d, ref, seed=7, n=40, maxlen=3 * MiB)
    d.close()
    w2v("disk", "convert", raw, tmp / f"sync{ext}")
    w2v("disk", "convert", raw, tmp / f"nosync{ext}", "--no-sync")
    for name in ("sync", "nosync"):
        run("qemu-img", "compare", "-f", "raw", "-F", QFMT[ext], raw, tmp / f"{name}{ext}")
    w2v("disk", "create", tmp / f"empty{ext}", "--size", "1G", "--no-sync")
    w2v("disk", "diff", tmp / f"nosync{ext}", tmp / f"child{ext}", "--no-sync")
    c = open_disk(str(tmp / f"child{ext}"))
    assert c.read(0, len(ref)) == ref  # (qemu's vpc driver does not open differencing VHDs)
    c.close()
    assert open_disk(str(tmp / f"empty{ext}")).size == 1 << 30
    if ext == ".vhdx":  # qemu-img checks VHDX, not VHD
        run("qemu-img", "check", "-f", "vhdx", tmp / f"empty{ext}")
    assert not leftovers(tmp)


@pytest.mark.parametrize("ext,fmt", [(".vhd", "vpc"), (".vhdx", "vhdx")])
def test_convert_of_a_raw_image_of_any_size_rounds_up(tmp, ext, fmt):
    raw = tmp / "odd.img"
    size = 5 * MiB + 7 * 512 + 100  # neither a whole MiB nor a whole sector
    data = random.Random(5).randbytes(size)
    raw.write_bytes(data)
    p = w2v("disk", "convert", raw, tmp / f"o{ext}")
    want = -(-size // MiB) * MiB if ext == ".vhd" else -(-size // 512) * 512
    assert f"rounded up from the input's {size}" in p.stderr and f"the disk is {want} bytes" in p.stderr
    info = json.loads(run("qemu-img", "info", "-f", fmt, "--output=json", tmp / f"o{ext}").stdout)
    assert info["virtual-size"] == want
    # Without -s, qemu-img compare takes the longer image's zero tail as equal: the data is the input's.
    assert run("qemu-img", "compare", "-f", "raw", "-F", fmt, raw, tmp / f"o{ext}").returncode == 0
    start = -(-size // 512) * 512
    if want > start:  # the added sectors read as zeros
        out = run("qemu-io", "-f", fmt, "-c", f"read -P 0 {start} {want - start}", tmp / f"o{ext}").stdout
        assert "Pattern verification failed" not in out and f"read {want - start}/" in out, out
