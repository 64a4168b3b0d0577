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
