"""Differencing VHDX children read by an implementation nobody here wrote: dissect.hypervisor (PyPI).
qemu opens no differencing VHDX, so qemu-io only writes the parent's data."""

import pytest

from tests.support import run, w2v

vhdx = pytest.importorskip("dissect.hypervisor.disk.vhdx", reason="dissect.hypervisor not installed")


def test_child_opens_and_reads_parent_data_in_dissect(tmp):
    parent, child = tmp / "p.vhdx", tmp / "c.vhdx"
    w2v("disk", "create", parent, "--size", "64M")
    run("qemu-io", "-f", "vhdx", "-c", "write -P 0x5a 1M 64k", parent)  # qemu writes the parent's data
    w2v("disk", "diff", parent, child)
    with open(child, "rb") as f:
        d = vhdx.VHDX(f)  # dissect resolves the parent through the child's parent locator
        assert d.size == 64 << 20
        d.seek(1 << 20)
        assert d.read(65536) == b"\x5a" * 65536
        d.seek(0)
        assert d.read(4096) == bytes(4096)


def _current_header(path):
    """[MS-VHDX] 2.2.2: headers at 64 KiB and 128 KiB; the current one has the higher SequenceNumber
    (offset 8); FileWriteGuid at 16, DataWriteGuid at 32.  CRC-32C by dissect.util, not ours."""
    from dissect.util.hash.crc32c import crc32c
    raw = open(path, "rb").read(192 << 10)
    heads = []
    for off in (64 << 10, 128 << 10):
        h = raw[off:off + 4096]
        assert h[:4] == b"head"
        assert int.from_bytes(h[4:8], "little") == crc32c(h[:4] + bytes(4) + h[8:])
        heads.append((int.from_bytes(h[8:16], "little"), h[16:32], h[32:48]))
    return max(heads)


def test_write_guids_change_before_the_first_write(tmp):
    from wim2vhd.disk import open_disk
    d = tmp / "d.vhdx"
    run("qemu-img", "create", "-f", "vhdx", d, "64M")
    before = d.read_bytes()
    seq0, fw0, dw0 = _current_header(d)
    disk = open_disk(str(d), writable=True)
    assert d.read_bytes() == before, "opening for writing changes nothing by itself"
    disk.write(1 << 20, b"\x7e" * 4096)
    # Before any flush or close: the headers already carry new GUIDs, both slots rewritten.
    seq1, fw1, dw1 = _current_header(d)
    assert fw1 != fw0 and dw1 != dw0 and seq1 >= seq0 + 2
    disk.close()
    assert _current_header(d)[1:] == (fw1, dw1), "one change per open, not one per flush"
    with open(d, "rb") as f:
        v = vhdx.VHDX(f)
        v.seek(1 << 20)
        assert v.read(4096) == b"\x7e" * 4096
    assert run("qemu-img", "check", "-f", "vhdx", d).returncode == 0
    # A disk opened for writing and closed unwritten keeps its GUIDs: its children stay valid.
    after = d.read_bytes()
    open_disk(str(d), writable=True).close()
    assert d.read_bytes() == after
