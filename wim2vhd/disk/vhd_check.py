"""VhdDisk.check: both footer copies, the dynamic header, the BAT and the parent locators of a VHD
(Microsoft's VHD Image Format Specification), each problem in its own words (see check.py)."""
from __future__ import annotations

import os
import struct
from typing import Any

from wim2vhd.disk import geometry
from wim2vhd.disk.base import check_range, file_size
from wim2vhd.disk.check import Facts
from wim2vhd.disk.vhd_parse import bat_problems, locator_problems, parent_candidates
from wim2vhd.disk.vhd_layout import (
    DYNAMIC_HEADER, DYNHDR_COOKIE, FOOTER, FOOTER_COOKIE, FORMAT_VERSION, HEADER_VERSION, NO_OFFSET,
    TYPE_DIFFERENCING, TYPE_FIXED, TYPE_NAMES,
)
from wim2vhd.errors import InputError
from wim2vhd.units import MiB


def footer_status(raw: bytes) -> str | None:
    """What is wrong with a footer copy, or None."""
    if len(raw) < 512 or raw[:8] != FOOTER_COOKIE:
        return "no 'conectix' cookie"
    f = FOOTER.parse(raw)
    want = geometry.vhd_checksum(raw, FOOTER.offset_of("checksum"))
    if f["checksum"] != want:
        return f"checksum mismatch (stored {f['checksum']:#010x}, computed {want:#010x})"
    return None


def _footer_fields(facts: Facts, f: dict[str, Any], size: int) -> bool:
    """The footer's own values; False when they are too wrong to go on."""
    if f["disk_type"] not in TYPE_NAMES:
        facts.add("footer", f"unknown disk type {f['disk_type']}")
        return False
    if f["format_version"] != FORMAT_VERSION:
        facts.add("footer", f"file format version {f['format_version']:#010x}, not {FORMAT_VERSION:#010x}")
    if f["current_size"] % 512 or f["current_size"] > geometry.VHD_MAX_SIZE or not f["current_size"]:
        facts.add("footer", f"bad virtual size {f['current_size']} (a multiple of 512, at most 2040 GiB)")
        return False
    if f["disk_type"] == TYPE_FIXED:
        if f["data_offset"] != NO_OFFSET:
            facts.add("footer", f"a fixed disk's data offset is {f['data_offset']:#x}, not {NO_OFFSET:#x}")
        if size - 512 < f["current_size"]:
            facts.add("footer", f"a fixed disk of {f['current_size']} bytes in a {size}-byte file (truncated)")
    return True


def check(path: str, fd: int) -> Facts:
    size = file_size(fd)
    facts = Facts(path, "vhd")
    if size < 512:
        facts.add("footer", f"the file is {size} bytes, too small for a VHD")
        return facts
    tail, head = os.pread(fd, 512, size - 512), os.pread(fd, 512, 0)
    tail_bad, head_bad = footer_status(tail), footer_status(head)
    if tail_bad and head_bad and tail[:8] == FOOTER_COOKIE and head[:8] != FOOTER_COOKIE:
        facts.add("footer", f"at the end: {tail_bad}; there is no copy at the start (as in a fixed VHD, which "
                            "has no copy to repair it from)")
        return facts
    if tail_bad and head_bad:
        facts.add("footer", f"no sound footer: at the end {tail_bad}, the copy at the start {head_bad}")
        return facts
    footer = FOOTER.parse(head if tail_bad else tail)
    if not _footer_fields(facts, footer, size):
        return facts
    facts.disk_type = TYPE_NAMES[footer["disk_type"]]
    facts.identity = {"unique_id": footer["unique_id"], "timestamp": footer["timestamp"],
                      "size": footer["current_size"]}
    if footer["disk_type"] == TYPE_FIXED:
        if tail_bad:
            # A fixed disk has one footer: the first sector is the disk's data, not a copy.
            facts.add("footer", f"at the end: {tail_bad} (a fixed VHD has no copy to repair it from)")
        return facts
    hdr = _dynamic_header(facts, fd, footer, size)
    bat_end = 0
    if hdr is not None:
        bat_end = _bat(facts, fd, hdr, footer, size)
        if footer["disk_type"] == TYPE_DIFFERENCING:
            _parent(facts, fd, hdr, size)
    _footer_copies(facts, head, tail, head_bad, tail_bad, size, bat_end)
    return facts


def _footer_copies(facts: Facts, head: bytes, tail: bytes, head_bad: str | None, tail_bad: str | None,
                   size: int, data_end: int) -> None:
    """A dynamic disk's footer at the end and its copy at the start: each repaired from the other."""
    if head_bad:
        facts.add("footer copy", f"at the start of the file: {head_bad}", [(0, tail)])
    elif tail_bad:
        if tail[:8] != FOOTER_COOKIE and data_end > size - 512:
            # The last sector is a block's data: the end footer is not damaged but missing (truncated).
            facts.add("footer", f"at the end: {tail_bad}; the last sector holds block data, so the file "
                                "was cut short: there is no place to repair it into")
        else:
            facts.add("footer", f"at the end: {tail_bad}", [(size - 512, head)])
    elif head != tail:
        facts.add("footer copy", "the copy at the start differs from the footer at the end", [(0, tail)])


def _dynamic_header(facts: Facts, fd: int, footer: dict[str, Any], size: int) -> dict[str, Any] | None:
    try:
        check_range(footer["data_offset"], 1024, size, "the dynamic header", facts.path)
    except InputError:
        facts.add("dynamic header", f"its offset {footer['data_offset']:#x} is past the end of the "
                                    f"{size}-byte file")
        return None
    raw = os.pread(fd, 1024, footer["data_offset"])
    hdr = DYNAMIC_HEADER.parse(raw)
    if hdr["cookie"] != DYNHDR_COOKIE:
        facts.add("dynamic header", "no 'cxsparse' cookie")
        return None
    want = geometry.vhd_checksum(raw, DYNAMIC_HEADER.offset_of("checksum"))
    if hdr["checksum"] != want:
        facts.add("dynamic header", f"checksum mismatch (stored {hdr['checksum']:#010x}, computed {want:#010x}; "
                                    "it has no copy to repair it from)")
        return None
    if hdr["header_version"] != HEADER_VERSION:
        facts.add("dynamic header", f"header version {hdr['header_version']:#010x}, not {HEADER_VERSION:#010x}")
    if hdr["data_offset"] != NO_OFFSET:
        facts.add("dynamic header", f"its data offset is {hdr['data_offset']:#x}, not {NO_OFFSET:#x} (reserved)")
    bs = hdr["block_size"]
    if bs < 512 * 1024 or bs & (bs - 1) or bs > 256 * MiB:
        facts.add("dynamic header", f"unsupported block size {bs}")
        return None
    need = -(-footer["current_size"] // bs)
    if hdr["max_table_entries"] < need:
        facts.add("dynamic header", f"the BAT has {hdr['max_table_entries']} entries, too few for "
                                    f"{footer['current_size']} bytes ({need} needed)")
        return None
    return hdr


def _bat(facts: Facts, fd: int, hdr: dict[str, Any], footer: dict[str, Any], size: int) -> int:
    """The BAT's entries; returns where the last block ends (0 if none)."""
    off, entries = hdr["table_offset"], hdr["max_table_entries"]
    if off % 512:
        facts.add("BAT", f"its offset {off} is not a multiple of the 512-byte sector")
    if off > size or entries * 4 > size - off:
        facts.add("BAT", f"a table of {entries} entries at offset {off} runs past the end of the {size}-byte file")
    need = -(-footer["current_size"] // hdr["block_size"])
    if off > size or need * 4 > size - off:
        return 0
    bat = struct.unpack(f">{need}I", os.pread(fd, need * 4, off))
    for p in bat_problems(bat, hdr, footer, size):
        facts.add("BAT", p)
    span = geometry.vhd_bitmap_bytes(hdr["block_size"]) + hdr["block_size"]
    return max((s * 512 + span for s in bat if s != 0xFFFFFFFF), default=0)


def _parent(facts: Facts, fd: int, hdr: dict[str, Any], size: int) -> None:
    for p, _ in locator_problems(fd, hdr, size):
        if p:
            facts.add("parent locator", p)
    if not any(hdr["parent_unique_id"]):
        facts.add("dynamic header", "a differencing disk whose parent unique ID is zero")
    facts.expect = {"unique_id": hdr["parent_unique_id"], "timestamp": hdr["parent_timestamp"],
                    "size": facts.identity["size"]}
    facts.parent_candidates = parent_candidates(facts.path, fd, hdr, size)
