"""`wim2vhd disk check [--repair]`: damaged copies found and rewritten, then read by readers nobody here
wrote (qemu-img for VHDX and for VHD's footer copy, vhdiinfo for a VHD's end footer, dissect.util's
CRC-32C and dissect.hypervisor for VHDX headers).  Offsets and fields are [MS-VHDX]'s and the VHD
specification's, written out here rather than taken from wim2vhd's layout modules."""
import json
import os
import struct
import uuid

import pytest

from tests.support import have, leftovers, run, w2v

MiB = 1 << 20
HEADER1, HEADER2, REGION1, REGION2 = 64 << 10, 128 << 10, 192 << 10, 256 << 10  # [MS-VHDX] 2.1

crc32c_mod = pytest.importorskip("dissect.util.hash.crc32c", reason="dissect.util not installed")


def crc32c(data: bytes) -> int:
    return crc32c_mod.crc32c(data)


def vhdx_crc_ok(raw: bytes) -> bool:
    """The checksum at offset 4 of a header or region table is CRC-32C over the block with it zeroed."""
    return struct.unpack_from("<I", raw, 4)[0] == crc32c(raw[:4] + b"\0" * 4 + raw[8:])


def vhd_checksum(footer: bytes) -> int:
    """VHD spec: one's complement of the byte sum of the footer with its checksum (offset 64) zeroed."""
    return ~(sum(footer[:64]) + sum(footer[68:512])) & 0xFFFFFFFF


def flip(path, offset):
    b = bytearray(path.read_bytes())
    b[offset] ^= 1
    path.write_bytes(b)


def check(path, *more):
    return w2v("disk", "check", path, *more, check=False)


def damaged(path, *words):
    p = check(path)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    for w in words:
        assert w in p.stdout, p.stdout
    return p


def sound(path):
    p = check(path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "sound" in p.stdout
    return p


@pytest.mark.parametrize("fmt,opts,ext", [("vhdx", [], ".vhdx"), ("vhdx", ["-o", "subformat=fixed"], ".vhdx"),
                                          ("vhdx", ["-o", "block_size=1M"], ".vhdx"), ("vpc", [], ".vhd"),
                                          ("vpc", ["-o", "subformat=fixed,force_size=on"], ".vhd")])
def test_disks_qemu_wrote_are_sound(tmp, fmt, opts, ext):
    # Files made by another implementation: a checker that flags them is wrong, not them.
    raw = tmp / "src.img"
    with open(raw, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(3 * MiB)
        f.write(os.urandom(5 * MiB))
    run("qemu-img", "convert", "-f", "raw", "-O", fmt, *opts, raw, tmp / f"q{ext}")
    sound(tmp / f"q{ext}")


@pytest.mark.parametrize("ext", [".vhd", ".vhdx"])
def test_ours_and_children_are_sound(tmp, ext):
    w2v("disk", "create", tmp / f"p{ext}", "--size", "64M")
    w2v("disk", "diff", tmp / f"p{ext}", tmp / f"c{ext}")
    assert "a chain of 2 disks" in sound(tmp / f"c{ext}").stdout
    p = w2v("disk", "check", tmp / f"c{ext}", "--json")
    assert json.loads(p.stdout) == []


def test_vhdx_header_repaired_from_the_sound_one(tmp):
    d = tmp / "d.vhdx"
    run("qemu-img", "create", "-f", "vhdx", d, "64M")
    run("qemu-io", "-f", "vhdx", "-c", "write -P 0x33 0 1M", d)
    flip(d, HEADER2 + 200)
    before = d.read_bytes()
    damaged(d, "header 2", "CRC-32C")
    assert d.read_bytes() == before, "check without --repair changes nothing"
    p = check(d, "--json")
    assert [x["structure"] for x in json.loads(p.stdout)] == ["header 2"] and json.loads(p.stdout)[0]["repairable"]
    p = check(d, "--repair")
    assert p.returncode == 0 and "repaired" in p.stdout, p.stdout + p.stderr
    raw = d.read_bytes()
    for off in (HEADER1, HEADER2):
        assert raw[off:off + 4] == b"head" and vhdx_crc_ok(raw[off:off + 4096])
    seq1, seq2 = (struct.unpack_from("<Q", raw, off + 8)[0] for off in (HEADER1, HEADER2))
    assert seq2 == seq1 + 1, "the rewritten copy is the sound header with the next sequence number"
    assert run("qemu-img", "check", "-f", "vhdx", d).returncode == 0
    assert run("qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", d, d).returncode == 0
    out = run("qemu-io", "-f", "vhdx", "-c", "read -P 0x33 0 1M", d).stdout
    assert "read 1048576/1048576" in out


def test_vhdx_region_table_repaired_qemu_reads_it_again(tmp):
    d = tmp / "d.vhdx"
    w2v("disk", "create", d, "--size", "64M")
    flip(d, REGION1 + 40)
    # qemu reads only the first region table: it refuses the file until the repair
    assert run("qemu-img", "check", "-f", "vhdx", d, check=False).returncode != 0
    damaged(d, "region table 1")
    assert check(d, "--repair").returncode == 0
    raw = d.read_bytes()
    assert raw[REGION1:REGION1 + 65536] == raw[REGION2:REGION2 + 65536] and vhdx_crc_ok(raw[REGION1:REGION1 + 65536])
    assert run("qemu-img", "check", "-f", "vhdx", d).returncode == 0
    sound(d)


def test_vhd_footer_copies_repaired(tmp):
    d = tmp / "d.vhd"
    w2v("disk", "create", d, "--size", "64M")
    good = d.read_bytes()
    # The copy at the start: qemu reads it first and refuses a bad checksum.
    flip(d, 30)
    assert run("qemu-img", "info", "-f", "vpc", d, check=False).returncode != 0
    damaged(d, "footer copy", "checksum mismatch")
    assert check(d, "--repair").returncode == 0
    assert d.read_bytes() == good
    run("qemu-img", "info", "-f", "vpc", d)
    # The footer at the end: libvhdi reads that one, and refuses it.
    flip(d, len(good) - 500)
    if have("vhdiinfo"):
        assert run("vhdiinfo", d, check=False).returncode != 0
    damaged(d, "footer: at the end")
    assert check(d, "--repair").returncode == 0
    raw = d.read_bytes()
    assert raw == good and struct.unpack_from(">I", raw, len(raw) - 512 + 64)[0] == vhd_checksum(raw[-512:])
    if have("vhdiinfo"):
        run("vhdiinfo", d)
    run("qemu-img", "info", "-f", "vpc", d)


def test_repair_refused_when_no_copy_is_sound(tmp):
    d = tmp / "d.vhdx"
    w2v("disk", "create", d, "--size", "64M")
    flip(d, HEADER1 + 300)
    flip(d, HEADER2 + 300)
    before = d.read_bytes()
    damaged(d, "both headers are damaged")
    p = check(d, "--repair")
    assert p.returncode == 3 and "nothing --repair can fix" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert d.read_bytes() == before and not leftovers(tmp)
    f = tmp / "f.vhd"
    w2v("disk", "create", f, "--size", "8M", "--type", "fixed")
    flip(f, os.path.getsize(f) - 400)
    before = f.read_bytes()
    damaged(f, "no copy to repair it from")
    assert check(f, "--repair").returncode == 3 and f.read_bytes() == before


def _vhd_bat(path):
    raw = bytearray(path.read_bytes())
    table = struct.unpack_from(">Q", raw, 512 + 16)[0]  # dynamic header: table offset at 16
    return raw, table


def test_vhd_bat_entries_overlapping_or_into_the_bat(tmp):
    d = tmp / "d.vhd"
    run("qemu-img", "create", "-f", "vpc", d, "64M")
    run("qemu-io", "-f", "vpc", "-c", "write -P 1 0 64k", "-c", "write -P 2 4M 64k", d)
    raw, table = _vhd_bat(d)
    e0 = struct.unpack_from(">I", raw, table)[0]
    assert e0 != 0xFFFFFFFF
    struct.pack_into(">I", raw, table + 4, e0 + 1)      # block 1 starts a sector into block 0
    struct.pack_into(">I", raw, table + 8, table // 512)  # block 2 on the BAT itself
    (tmp / "bad.vhd").write_bytes(raw)
    p = damaged(tmp / "bad.vhd", "BAT entry 0 and BAT entry 1 overlap", "BAT entry 2 points into the BAT")
    assert "past the end" not in p.stdout
    p = w2v("disk", "convert", tmp / "bad.vhd", tmp / "o.img", check=False)
    assert p.returncode == 3 and "overlap" in p.stderr and "past the end" not in p.stderr, p.stderr
    assert not (tmp / "o.img").exists()
    struct.pack_into(">I", raw, table + 4, 0x7FFFFFFF)
    struct.pack_into(">I", raw, table + 8, 0xFFFFFFFF)
    (tmp / "far.vhd").write_bytes(raw)
    damaged(tmp / "far.vhd", "BAT entry 1 points past the end of the file")


def vhdx_regions(raw):
    """(BAT offset, metadata offset): region table entries (32 bytes each, after a 16-byte header) give
    GUID, offset, length; the BAT is 2DC27766-..., the metadata 8B7CA206-... ([MS-VHDX] 2.2.3.2)."""
    bat_guid = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08").bytes_le
    meta_guid = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
    ents = {bytes(raw[REGION1 + 16 + 32 * k:REGION1 + 32 + 32 * k]): struct.unpack_from("<Q", raw, REGION1 + 32 + 32 * k)[0]
            for k in range(struct.unpack_from("<I", raw, REGION1 + 8)[0])}
    return ents[bat_guid], ents[meta_guid]


def test_vhdx_bat_entries_overlapping_or_into_metadata(tmp):
    d = tmp / "d.vhdx"
    w2v("disk", "create", d, "--size", "256M", "--block-size", "1M")
    run("qemu-io", "-f", "vhdx", "-c", "write -P 1 0 64k", "-c", "write -P 2 8M 64k", d)
    raw = bytearray(d.read_bytes())
    bat, meta = vhdx_regions(raw)
    e0 = struct.unpack_from("<Q", raw, bat)[0]
    assert e0 & 7 == 6
    struct.pack_into("<Q", raw, bat + 8, e0)                          # block 1 = block 0's place
    struct.pack_into("<Q", raw, bat + 16, (meta >> 20 << 20) | 6)     # block 2 on the metadata region
    (tmp / "bad.vhdx").write_bytes(raw)
    p = damaged(tmp / "bad.vhdx", "overlap", "points into the metadata region")
    assert "past the end" not in p.stdout
    p = w2v("disk", "info", tmp / "bad.vhdx", check=False)
    assert p.returncode == 3 and "past the end" not in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_parent_that_changed_is_reported(tmp):
    for ext in (".vhd", ".vhdx"):
        w2v("disk", "create", tmp / f"p{ext}", "--size", "64M")
        w2v("disk", "diff", tmp / f"p{ext}", tmp / f"c{ext}")
    # VHDX: writing to the parent gives it a new DataWriteGuid, which the child's parent_linkage no longer names
    run("qemu-io", "-f", "vhdx", "-c", "write -P 9 0 4k", tmp / "p.vhdx")
    damaged(tmp / "c.vhdx", "DataWriteGuid", "the parent changed since the child was made")
    # VHD: the parent's footer time stamp (offset 24) no longer what the child recorded
    p = tmp / "p.vhd"
    raw = bytearray(p.read_bytes())
    for off in (0, len(raw) - 512):
        struct.pack_into(">I", raw, off + 24, struct.unpack_from(">I", raw, off + 24)[0] + 100)
        struct.pack_into(">I", raw, off + 64, vhd_checksum(raw[off:off + 512]))
    p.write_bytes(raw)
    sound(p)
    damaged(tmp / "c.vhd", "time stamp", "the parent changed since the child was made")


@pytest.mark.parametrize("ext", [".vhd", ".vhdx"])
def test_parent_of_another_size_is_refused(tmp, ext):
    w2v("disk", "create", tmp / f"p{ext}", "--size", "64M")
    w2v("disk", "diff", tmp / f"p{ext}", tmp / f"c{ext}")
    p = tmp / f"p{ext}"
    raw = bytearray(p.read_bytes())
    if ext == ".vhd":  # current size at footer offset 48, in both copies
        for off in (0, len(raw) - 512):
            struct.pack_into(">Q", raw, off + 48, 32 * MiB)
            struct.pack_into(">I", raw, off + 64, vhd_checksum(raw[off:off + 512]))
    else:  # the virtual disk size item (2FA54224-...), 8 bytes, in the metadata region
        size_guid = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8").bytes_le
        table = raw.index(b"metadata")
        k = next(k for k in range(16) if raw[table + 32 + 32 * k:table + 48 + 32 * k] == size_guid)
        item = struct.unpack_from("<I", raw, table + 48 + 32 * k)[0]
        struct.pack_into("<Q", raw, table + item, 32 * MiB)
    p.write_bytes(raw)
    info = run("qemu-img", "info", "-f", "vpc" if ext == ".vhd" else "vhdx", "--output=json", p).stdout
    assert json.loads(info)["virtual-size"] == 32 * MiB  # qemu reads the parent's new size
    damaged(tmp / f"c{ext}", "virtual size")
    q = w2v("disk", "convert", tmp / f"c{ext}", tmp / "o.img", check=False)
    assert q.returncode == 3 and "33554432 bytes, the child 67108864" in q.stderr, q.stderr


def _with_log(path, target_off, payload):
    """A VHDX log of one entry ([MS-VHDX] 2.3) writing a 4 KiB sector at target_off: header (64 bytes)
    and one data descriptor in the first sector, the data sector in the second; LogGuid set in the
    current header."""
    raw = bytearray(path.read_bytes())
    seqs = [struct.unpack_from("<Q", raw, off + 8)[0] for off in (HEADER1, HEADER2)]
    cur = (HEADER1, HEADER2)[seqs.index(max(seqs))]
    log_off, log_len = struct.unpack_from("<Q", raw, cur + 72)[0], struct.unpack_from("<I", raw, cur + 68)[0]
    guid = uuid.uuid4().bytes_le
    seq = 7
    entry = bytearray(8192)
    struct.pack_into("<4sIIIQII16sQQ", entry, 0, b"loge", 0, 8192, 0, seq, 1, 0, guid, len(raw), len(raw))
    struct.pack_into("<4sIQQQ", entry, 64, b"desc", struct.unpack_from("<I", payload, 4092)[0],
                     struct.unpack_from("<Q", payload, 0)[0], target_off, seq)
    struct.pack_into("<4sI", entry, 4096, b"data", seq >> 32)
    entry[4096 + 8:4096 + 4092] = payload[8:4092]
    struct.pack_into("<I", entry, 4096 + 4092, seq & 0xFFFFFFFF)
    struct.pack_into("<I", entry, 4, crc32c(bytes(entry)))
    raw[log_off:log_off + 8192] = entry
    hdr = bytearray(raw[cur:cur + 4096])
    hdr[48:64] = guid
    struct.pack_into("<I", hdr, 4, 0)
    struct.pack_into("<I", hdr, 4, crc32c(bytes(hdr)))
    raw[cur:cur + 4096] = hdr
    path.write_bytes(raw)
    return log_len


def test_vhdx_log_described_as_qemu_replays_it(tmp):
    d = tmp / "d.vhdx"
    w2v("disk", "create", d, "--size", "64M", "--type", "fixed")
    # A sector inside the fixed disk's first block: its BAT entry's FileOffsetMB (bits 20-63)
    bat, _ = vhdx_regions(d.read_bytes())
    target = (struct.unpack_from("<Q", d.read_bytes(), bat)[0] >> 20 << 20) + 8192
    payload = bytes(range(256)) * 16
    _with_log(d, target, payload)
    p = damaged(d, "log", "1 entries to replay", "write 1 4 KiB sectors", f"at file offsets {target}-{target}")
    q = w2v("disk", "info", d, check=False)
    assert q.returncode == 3 and "log to replay" in q.stderr
    # qemu replays the log: the sector lands where the check said it would.
    run("qemu-img", "check", "-r", "all", "-f", "vhdx", d)
    assert d.read_bytes()[target:target + 4096] == payload
    sound(d)
    assert p.stdout.count("\n") == 1


_HEADER_AREAS = {".vhdx": [(0, 8), (HEADER1, 80), (HEADER2, 80), (REGION1, 96), (REGION2, 96), (2 * MiB, 256),
                           (2 * MiB + 65536, 400), (3 * MiB, 64)],
                 ".vhd": [(0, 512), (512, 1024), (1536, 512), (-512, 512)]}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("mutants")
    for ext, fmt in ((".vhdx", "vhdx"), (".vhd", "vpc")):
        w2v("disk", "create", d / f"p{ext}", "--size", "64M")
        run("qemu-io", "-f", fmt, "-c", "write -P 1 0 3M", d / f"p{ext}")
        w2v("disk", "diff", d / f"p{ext}", d / f"c{ext}")
    return d


@pytest.mark.parametrize("name", ["p.vhdx", "c.vhdx", "p.vhd", "c.vhd"])
def test_damaged_headers_give_problems_never_a_crash(made, name):
    """Random damage to the headers, region tables, metadata and BAT: check and open either succeed or
    raise the input error, never anything else (in-process, to try many)."""
    import random
    from wim2vhd.disk import open_disk
    from wim2vhd.disk.check import check as run_check
    from wim2vhd.errors import Wim2VhdError
    path = made / name
    good = path.read_bytes()
    rnd = random.Random(name)
    try:
        for _ in range(60):
            b = bytearray(good)
            for _ in range(rnd.randint(1, 5)):
                start, n = rnd.choice(_HEADER_AREAS[path.suffix])
                off = (start % len(b)) + rnd.randrange(n)
                b[off] = rnd.choice([0, 0xFF, b[off] ^ (1 << rnd.randrange(8))])
            path.write_bytes(b)
            for step in (lambda: run_check(str(path)), lambda: open_disk(str(path)).close()):
                try:
                    step()
                except Wim2VhdError:
                    pass
    finally:
        path.write_bytes(good)
