"""Hostile disk inputs: header fields that point anywhere, FIFOs, files systems without SEEK_DATA.
Each gives one line and exit 3 (or the right answer), never a traceback, a hang or a 16 GiB buffer.
Offsets are the VHD specification's and [MS-VHDX]'s, written out here."""
import errno
import os
import resource
import struct
import uuid

import pytest

from tests.support import leftovers, w2v

MiB = 1 << 20
HANG = 60  # seconds: a guard against blocking, not a measurement
HDR = 512  # a dynamic VHD's header follows the footer copy


def vhd_checksum(block, at):
    return ~(sum(block) - sum(block[at:at + 4])) & 0xFFFFFFFF


def fix_vhd(raw):
    """Checksums of both footers (offset 64) and the dynamic header (offset 36), after an edit."""
    for off in (0, len(raw) - 512):
        if raw[off:off + 8] == b"conectix":
            struct.pack_into(">I", raw, off + 64, vhd_checksum(raw[off:off + 512], 64))
    if raw[HDR:HDR + 8] == b"cxsparse":
        struct.pack_into(">I", raw, HDR + 36, vhd_checksum(raw[HDR:HDR + 1024], 36))
    return raw


def crc32c(data):
    from dissect.util.hash.crc32c import crc32c as c
    return c(data)


def fix_vhdx_regions(raw):
    for off in (192 << 10, 256 << 10):
        t = raw[off:off + 65536]
        t[4:8] = bytes(4)
        struct.pack_into("<I", raw, off + 4, crc32c(bytes(t)))
    return raw


def refused(tmp, name, raw, cmd="info", words="", code=3):
    path = tmp / name
    path.write_bytes(raw)
    before = path.read_bytes()
    args = ["disk", cmd, path] + ([tmp / "o.img"] if cmd == "convert" else [])
    p = w2v(*args, check=False, timeout=HANG)
    assert p.returncode == code, p.stdout + p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr
    assert words in p.stderr, p.stderr
    assert path.read_bytes() == before and not leftovers(tmp) and not (tmp / "o.img").exists()
    return p


def test_vhd_parent_locator_offset_past_everything(tmp):
    w2v("disk", "create", tmp / "p.vhd", "--size", "16M")
    w2v("disk", "diff", tmp / "p.vhd", tmp / "c.vhd")
    raw = bytearray((tmp / "c.vhd").read_bytes())
    # the first parent locator entry: dynamic header offset 576, 24 bytes each; its data offset at 16
    struct.pack_into(">Q", raw, HDR + 576 + 16, 2 ** 64 - 1)
    refused(tmp, "l.vhd", fix_vhd(raw), "info", "parent locator 1")
    refused(tmp, "l2.vhd", fix_vhd(raw), "convert", "past the end of the file")


def test_fixed_vhd_whose_footer_says_dynamic(tmp):
    w2v("disk", "create", tmp / "f.vhd", "--size", "8M", "--type", "fixed")
    raw = bytearray((tmp / "f.vhd").read_bytes())
    struct.pack_into(">I", raw, len(raw) - 512 + 60, 3)  # disk type: dynamic; data offset stays 2^64-1
    refused(tmp, "t.vhd", fix_vhd(raw), "info", "dynamic header at offset 18446744073709551615")
    refused(tmp, "t2.vhd", fix_vhd(raw), "convert", "past the end")


def test_vhd_table_offset_past_everything(tmp):
    w2v("disk", "create", tmp / "d.vhd", "--size", "16M")
    raw = bytearray((tmp / "d.vhd").read_bytes())
    struct.pack_into(">Q", raw, HDR + 16, 2 ** 64 - 1)  # table offset
    refused(tmp, "b.vhd", fix_vhd(raw), "info", "BAT at offset")


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # far below the 16 GiB a BAT of 2^32 would take


def test_vhd_bat_of_2_32_entries_allocates_nothing_of_it(tmp):
    w2v("disk", "create", tmp / "d.vhd", "--size", "16M")
    raw = bytearray((tmp / "d.vhd").read_bytes())
    struct.pack_into(">I", raw, HDR + 28, 2 ** 32 - 1)  # max table entries
    (tmp / "big.vhd").write_bytes(fix_vhd(raw))
    # Only the entries the virtual size uses are read: the disk opens, and check names the table.
    p = w2v("disk", "info", tmp / "big.vhd", timeout=HANG, preexec_fn=_limit_memory)
    assert "16.0 MiB" in p.stdout or "16777216" in p.stdout
    p = w2v("disk", "check", tmp / "big.vhd", check=False, timeout=HANG, preexec_fn=_limit_memory)
    assert p.returncode == 3 and "4294967295 entries" in p.stdout and "past the end" in p.stdout, p.stdout


def _metadata_entry(raw, guid):
    table = raw.index(b"metadata", 2 * MiB - 16)
    n = struct.unpack_from("<H", raw, table + 10)[0]
    return next(table + 32 + 32 * k for k in range(n) if raw[table + 32 + 32 * k:table + 48 + 32 * k] == guid.bytes_le)


def test_vhdx_region_offset_past_everything(tmp):
    w2v("disk", "create", tmp / "d.vhdx", "--size", "16M")
    raw = bytearray((tmp / "d.vhdx").read_bytes())
    meta = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
    for off in (192 << 10, 256 << 10):
        k = next(k for k in range(2) if raw[off + 16 + 32 * k:off + 32 + 32 * k] == meta)
        struct.pack_into("<Q", raw, off + 32 + 32 * k, 2 ** 64 - 1)  # the metadata region's file offset
    refused(tmp, "r.vhdx", fix_vhdx_regions(raw), "info", "metadata region at offset 18446744073709551615")
    p = w2v("disk", "check", tmp / "r.vhdx", check=False, timeout=HANG)
    assert p.returncode == 3 and "past the end" in p.stdout and "Traceback" not in p.stderr


def test_vhdx_disk_id_of_5_bytes(tmp):
    w2v("disk", "create", tmp / "d.vhdx", "--size", "16M")
    raw = bytearray((tmp / "d.vhdx").read_bytes())
    e = _metadata_entry(raw, uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746"))
    struct.pack_into("<I", raw, e + 20, 5)  # its length ([MS-VHDX] 2.6.2.3: 16 bytes)
    refused(tmp, "i.vhdx", raw, "info", "virtual disk ID is 5 bytes, not 16")
    p = w2v("disk", "check", tmp / "i.vhdx", check=False, timeout=HANG)
    assert p.returncode == 3 and "5 bytes" in p.stdout


@pytest.mark.parametrize("name", ["f.vhd", "f.vhdx", "f.img"])
def test_fifo_refused_before_it_can_block(tmp, name):
    os.mkfifo(tmp / name)
    w2v("disk", "create", tmp / "p.vhdx", "--size", "16M")
    for args in (["disk", "info", tmp / name], ["disk", "convert", tmp / name, tmp / "o.vhdx"],
                 ["disk", "diff", tmp / name, tmp / f"c{os.path.splitext(name)[1]}"],
                 ["disk", "check", tmp / name]):
        p = w2v(*args, check=False, timeout=HANG)  # a FIFO nobody writes would block an open for reading
        assert p.returncode == 3 and "is a FIFO, not a disk image" in p.stderr, p.stderr
        assert p.stderr.count("\n") == 1
    assert not (tmp / "o.vhdx").exists() and not leftovers(tmp)


def test_next_data_on_a_file_without_seek_data_reads_everything():
    # A pipe answers lseek with ESPIPE, as a file system without SEEK_DATA answers EINVAL or EOPNOTSUPP:
    # only ENXIO means "no more data"; anything else, that all of it is data.
    from wim2vhd._lib import ffi, lib
    r, w = os.pipe()
    try:
        p = ffi.new("struct w2v_params *")
        p.fd, p.virtual_size, p.sector_size = r, 8 * MiB, 512
        d = lib.w2v_disk_new(p)
        ln = ffi.new("uint64_t *")
        assert lib.w2v_next_data(d, 4096, ln) == 4096 and ln[0] == 8 * MiB - 4096
        lib.w2v_disk_free(d)
    finally:
        os.close(r)
        os.close(w)


def test_data_extents_without_seek_data(tmp, monkeypatch):
    from wim2vhd.fs import extents
    f = tmp / "f.img"
    with open(f, "wb") as h:
        h.truncate(4 * MiB)
        h.seek(MiB)
        h.write(b"x" * 4096)
    real = os.lseek
    for code in (errno.EINVAL, errno.EOPNOTSUPP, errno.EIO):
        def lseek(fd, off, how, code=code):
            if how == os.SEEK_DATA:
                raise OSError(code, os.strerror(code))
            return real(fd, off, how)
        monkeypatch.setattr(os, "lseek", lseek)
        assert extents.data_extents(str(f)) == [(0, 4 * MiB)], code
    monkeypatch.setattr(os, "lseek", real)
    ext = extents.data_extents(str(f))
    assert any(s <= MiB and s + n >= MiB + 4096 for s, n in ext), ext
