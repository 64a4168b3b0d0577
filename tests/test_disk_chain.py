"""Differencing chains: deep ones read in time linear in their depth, loops and over-deep chains refused
in one line.  qemu opens no VHD or VHDX children, so the data is checked against what each level wrote
(tests/chain.py), and dissect.hypervisor reads the deep VHDX chain too."""
import json
import os
import shutil
import struct
import uuid

import pytest

from tests.chain import expected, make_chain
from tests.support import leftovers, w2v
from wim2vhd.disk import open_disk

HANG = 300  # seconds: a guard against hanging, not a measurement


def one_line(p, code, words):
    assert p.returncode == code, p.stdout + p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr and "RecursionError" not in p.stderr, p.stderr
    assert words in p.stderr, p.stderr


@pytest.mark.parametrize("ext", [".vhd", ".vhdx"])
def test_fifty_deep_chain_converts_and_each_level_is_asked_once_per_block(tmp, ext):
    paths = make_chain(tmp, ext, 50)
    w2v("disk", "convert", paths[-1], tmp / "o.img", timeout=HANG)
    assert (tmp / "o.img").read_bytes() == expected(50)
    d = open_disk(paths[-1])
    try:
        chain = d.chain()
        assert len(chain) == 50
        blocks = -(-d.size // d.block_size)
        runs = list(d.extents())
        assert sum(n for _, n in runs) >= 50 * 4096
        # w2v_next_data's questions to each level: at most two per block of the top (the block after a
        # run is asked when the run ends and when the next search starts), whatever the depth.  The
        # old recursion asked each level about 1.7 times as often as the one above it.
        for level in chain:
            assert level.stats()["data_queries"] <= 2 * blocks + 2, (level.path, level.stats()["data_queries"])
    finally:
        d.close()
    if ext == ".vhdx":
        vhdx = pytest.importorskip("dissect.hypervisor.disk.vhdx")
        with open(paths[-1], "rb") as f:
            v = vhdx.VHDX(f)
            assert v.read(v.size) == expected(50)


@pytest.mark.parametrize("ext", [".vhd", ".vhdx"])
def test_disk_that_is_its_own_parent(tmp, ext):
    w2v("disk", "create", tmp / f"p{ext}", "--size", "16M")
    w2v("disk", "diff", tmp / f"p{ext}", tmp / f"c{ext}")
    os.replace(tmp / f"c{ext}", tmp / f"p{ext}")  # the child's locator (.\p) now names itself
    for cmd in (["disk", "info", tmp / f"p{ext}"], ["disk", "convert", tmp / f"p{ext}", tmp / "o.img"],
                ["disk", "diff", tmp / f"p{ext}", tmp / f"d{ext}"]):
        one_line(w2v(*cmd, check=False, timeout=HANG), 3, "the parent chain loops")
    assert not (tmp / "o.img").exists() and not (tmp / f"d{ext}").exists() and not leftovers(tmp)
    p = w2v("disk", "check", tmp / f"p{ext}", check=False, timeout=HANG)
    assert p.returncode == 3 and "loops" in p.stdout


def _vhd_checksum(block: bytes, at: int) -> int:
    """VHD spec: one's complement of the byte sum, the 4-byte checksum field taken as zero."""
    return ~(sum(block) - sum(block[at:at + 4])) & 0xFFFFFFFF


@pytest.mark.parametrize("ext", [".vhd", ".vhdx"])
def test_two_disks_each_others_parent(tmp, ext):
    x, y = tmp / f"x{ext}", tmp / f"y{ext}"
    w2v("disk", "create", x, "--size", "16M")
    w2v("disk", "diff", x, y)                    # y's parent is x
    w2v("disk", "diff", y, tmp / f"x2{ext}")     # x2's parent is y ...
    old = json.loads(w2v("disk", "info", y, "--json").stdout)
    new = json.loads(w2v("disk", "info", tmp / f"x2{ext}", "--json").stdout)
    os.replace(tmp / f"x2{ext}", x)              # ... and x2 takes x's place: x -> y -> x
    raw = bytearray(y.read_bytes())
    if ext == ".vhd":
        # y's dynamic header (at 512): parent unique ID at 40, checksum at 36, now naming x2
        raw[512 + 40:512 + 56] = uuid.UUID(new["unique_id"]).bytes
        struct.pack_into(">I", raw, 512 + 36, _vhd_checksum(raw[512:1536], 36))
    else:
        # y's parent_linkage (UTF-16LE, in the metadata region, which has no checksum), now x2's DataWriteGuid
        was = old["parent_locator"]["parent_linkage"].encode("utf-16-le")
        at = raw.index(was)
        raw[at:at + len(was)] = ("{%s}" % new["data_write_guid"].lower()).encode("utf-16-le")
    y.write_bytes(raw)
    one_line(w2v("disk", "info", y, check=False, timeout=HANG), 3, "the parent chain loops")
    one_line(w2v("disk", "convert", x, tmp / "o.img", check=False, timeout=HANG), 3, "the parent chain loops")
    assert not (tmp / "o.img").exists()
    p = w2v("disk", "check", x, check=False, timeout=HANG)
    assert p.returncode == 3 and "loops" in p.stdout


def test_chain_deeper_than_the_limit(tmp):
    from wim2vhd.disk.base import MAX_CHAIN_DEPTH
    paths = make_chain(tmp, ".vhd", MAX_CHAIN_DEPTH + 2, size=48 << 20)  # 129 parents below the top
    one_line(w2v("disk", "info", paths[-1], check=False, timeout=HANG), 3, f"more than {MAX_CHAIN_DEPTH} disks deep")
    p = w2v("disk", "check", paths[-1], check=False, timeout=HANG)
    assert p.returncode == 3 and "deep" in p.stdout
    # One level less is a chain like any other.
    w2v("disk", "info", paths[-2], timeout=HANG)
    shutil.rmtree(tmp, ignore_errors=True)
