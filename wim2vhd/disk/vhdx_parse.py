"""Reading a VHDX's own structures ([MS-VHDX]): each parser gives the values and what is wrong with
them, for VhdxDisk to refuse and for `disk check` (vhdx_check.py) to report.  Every offset and length
from the file is checked before use."""
from __future__ import annotations

import os
import uuid
from typing import Any

from wim2vhd.disk import base
from wim2vhd.disk import geometry
from wim2vhd.disk import vhdx_layout as layout
from wim2vhd.disk.base import ABSENT, PARTIAL, PRESENT, ZERO
from wim2vhd.errors import CorruptInput, UnsupportedInput
from wim2vhd.units import MiB

_STATE_IN = {
    layout.PAYLOAD_BLOCK_NOT_PRESENT: ABSENT,
    layout.PAYLOAD_BLOCK_UNDEFINED: ABSENT,
    layout.PAYLOAD_BLOCK_ZERO: ZERO,
    layout.PAYLOAD_BLOCK_UNMAPPED: ZERO,
    layout.PAYLOAD_BLOCK_FULLY_PRESENT: PRESENT,
    layout.PAYLOAD_BLOCK_PARTIALLY_PRESENT: PARTIAL,
}
def _guid(b: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=bytes(b))


def _with_crc(raw: bytes) -> bytes:
    crc = geometry.crc32c_with_zero_field(raw, 4)
    return raw[:4] + crc.to_bytes(4, "little") + raw[8:]


def _crc_ok(raw: bytes) -> bool:
    return int.from_bytes(raw[4:8], "little") == geometry.crc32c_with_zero_field(raw, 4)


def header_status(raw: bytes) -> tuple[dict[str, Any], str | None]:
    """A header slot's fields, and what is wrong with it (None if sound)."""
    h = layout.HEADER.parse(raw)
    if h["signature"] != layout.HEADER_SIGNATURE:
        return h, "has a bad signature"
    if not _crc_ok(raw):
        return h, "CRC-32C mismatch"
    return h, None


def region_status(raw: bytes) -> tuple[dict[uuid.UUID, tuple[int, int, int]], str | None]:
    """A region table's entries {guid: (offset, length, required)}, and what is wrong with it."""
    h = layout.REGION_TABLE_HEADER.parse(raw)
    if h["signature"] != layout.REGION_SIGNATURE:
        return {}, "has a bad signature"
    if not _crc_ok(raw):
        return {}, "CRC-32C mismatch"
    if h["entry_count"] > layout.REGION_MAX_ENTRIES:
        return {}, f"has {h['entry_count']} entries, more than {layout.REGION_MAX_ENTRIES}"
    regions = {}
    for k in range(h["entry_count"]):
        e = layout.REGION_TABLE_ENTRY.parse(raw, layout.REGION_TABLE_HEADER.size + k * layout.REGION_TABLE_ENTRY.size)
        regions[_guid(e["guid"])] = (e["file_offset"], e["length"], e["required"] & 1)
    return regions, None


def metadata_items(raw: bytes) -> tuple[dict[uuid.UUID, tuple[bytes, int]], list[str]]:
    """The metadata region's items {guid: (data, flags)}, and what is wrong with them."""
    h = layout.METADATA_TABLE_HEADER.parse(raw)
    if h["signature"] != layout.METADATA_SIGNATURE:
        return {}, ["bad VHDX metadata table signature"]
    if h["entry_count"] > layout.METADATA_MAX_ENTRIES:
        return {}, [f"the VHDX metadata table has {h['entry_count']} entries, more than {layout.METADATA_MAX_ENTRIES}"]
    items, problems = {}, []
    for k in range(h["entry_count"]):
        e = layout.METADATA_TABLE_ENTRY.parse(raw, layout.METADATA_TABLE_HEADER.size + k * layout.METADATA_TABLE_ENTRY.size)
        g, off, n, flags = _guid(e["item_id"]), e["offset"], e["length"], e["flags"]
        name = layout.META_NAMES.get(g, f"item {g}")
        if g not in layout.KNOWN_METADATA:
            if flags & layout.META_IS_REQUIRED:
                problems.append(f"VHDX requires unknown metadata {g}")
            continue
        if n and (off < layout.METADATA_TABLE_SIZE or off + n > len(raw)):
            problems.append(f"VHDX metadata item {name} lies outside its region (offset {off}, {n} bytes)")
            continue
        want = layout.META_LENGTHS.get(g)
        if want is not None and n != want:
            problems.append(f"VHDX metadata item {name} is {n} bytes, not {want}")
            continue
        items[g] = (raw[off:off + n], flags)
    for need in (layout.META_FILE_PARAMETERS, layout.META_VIRTUAL_DISK_SIZE, layout.META_LOGICAL_SECTOR_SIZE):
        if need not in items and not problems:
            problems.append(f"VHDX metadata lacks the {layout.META_NAMES[need]} item")
    return items, problems


def disk_params(meta: dict[uuid.UUID, bytes], path: str) -> dict[str, Any]:
    """The virtual disk the metadata describes, each value checked."""
    fp = layout.FILE_PARAMETERS.parse(meta[layout.META_FILE_PARAMETERS])
    size = int.from_bytes(meta[layout.META_VIRTUAL_DISK_SIZE], "little")
    lss = int.from_bytes(meta[layout.META_LOGICAL_SECTOR_SIZE], "little")
    pss = int.from_bytes(meta.get(layout.META_PHYSICAL_SECTOR_SIZE, (4096).to_bytes(4, "little")), "little")
    bs = fp["block_size"]
    differencing = bool(fp["flags"] & layout.FP_HAS_PARENT)
    if lss not in (512, 4096):
        raise UnsupportedInput(f"{path}: unsupported VHDX logical sector size {lss}")
    if pss not in (512, 4096):
        raise UnsupportedInput(f"{path}: unsupported VHDX physical sector size {pss}")
    if bs & (bs - 1) or not MiB <= bs <= 256 * MiB:
        raise UnsupportedInput(f"{path}: unsupported VHDX block size {bs}")
    if size == 0 or size > geometry.VHDX_MAX_SIZE or size % lss:
        raise CorruptInput(f"{path}: bad VHDX virtual size {size}")
    if differencing and layout.META_PARENT_LOCATOR not in meta:
        raise CorruptInput(f"{path}: a differencing VHDX without a parent locator")
    return {"size": size, "lss": lss, "pss": pss, "block_size": bs, "differencing": differencing,
            "leave_allocated": bool(fp["flags"] & layout.FP_LEAVE_BLOCKS_ALLOCATED)}


def parse_parent_locator(raw: bytes, path: str) -> dict[str, str]:
    """The parent locator's key/value pairs ([MS-VHDX] 2.6.2.6), each offset checked against the item."""
    h = layout.PARENT_LOCATOR_HEADER.parse(raw)
    if _guid(h["locator_type"]) != layout.PARENT_LOCATOR_TYPE_VHDX:
        raise UnsupportedInput(f"{path}: unknown parent locator type {_guid(h['locator_type'])}")
    out = {}
    for i in range(h["key_value_count"]):
        e = layout.PARENT_LOCATOR_ENTRY.parse(raw, layout.PARENT_LOCATOR_HEADER.size + i * layout.PARENT_LOCATOR_ENTRY.size)
        for what in ("key", "value"):
            o, n = e[f"{what}_offset"], e[f"{what}_length"]
            if o + n > len(raw) or not n:
                raise CorruptInput(f"{path}: VHDX parent locator entry {i + 1}: its {what} at {o} ({n} bytes) "
                                   f"is outside the {len(raw)}-byte item")
        k = raw[e["key_offset"]:e["key_offset"] + e["key_length"]].decode("utf-16-le", "replace")
        v = raw[e["value_offset"]:e["value_offset"] + e["value_length"]].decode("utf-16-le", "replace")
        out[k] = v
    return out


def parent_candidates(path: str, locator: dict[str, str]) -> list[str]:
    """Where the parent may be, most likely first."""
    here = os.path.dirname(os.path.abspath(path))
    out = []
    for key in ("relative_path", "absolute_win32_path", "volume_path"):
        v = locator.get(key)
        if not v:
            continue
        if key == "relative_path":
            out.append(os.path.normpath(os.path.join(here, v.replace("\\", "/"))))
        elif v.startswith("\\") and not v.startswith("\\\\"):
            out.append(v.replace("\\", "/"))
        out.append(os.path.join(here, v.replace("\\", "/").rsplit("/", 1)[-1]))
    return list(dict.fromkeys(out))


def linkage(locator: dict[str, str]) -> tuple[str, ...]:
    """The parent DataWriteGuids the locator accepts, upper case without braces."""
    return tuple(g for g in (locator.get(k, "").strip("{}").upper() for k in ("parent_linkage", "parent_linkage2")) if g)


def fixed_ranges(hdr: dict[str, Any], regions: dict[uuid.UUID, tuple[int, int]]) -> list[tuple[int, int, str]]:
    """The file's own structures: no block may point into them."""
    out = [(0, layout.HEADER_AREA, "the headers"), (hdr["log_offset"], hdr["log_offset"] + hdr["log_length"], "the log")]
    for g, (off, n) in regions.items():
        out.append((off, off + n, layout.REGION_NAMES.get(g, f"the region {g}")))
    return out


def bat_problems(bat, ratio: int, n_blocks: int, block_size: int, differencing: bool, file_size: int,
                 fixed: list[tuple[int, int, str]]) -> list[str]:
    """What is wrong with the BAT's entries: bad states, reserved bits, offsets past the end of the file,
    into the file's own structures or into each other."""
    out, used = [], []
    for j in (i for i, v in enumerate(bat) if v):
        v = bat[j]
        st, off = v & layout.BAT_STATE_MASK, (v >> layout.BAT_OFFSET_SHIFT) << 20
        chunk, r = divmod(j, ratio + 1)
        if v & layout.BAT_RESERVED_MASK:
            out.append(f"BAT entry {j} has reserved bits set ({v:#018x})")
        if r == ratio:  # a sector bitmap entry
            if st not in (layout.SB_BLOCK_NOT_PRESENT, layout.SB_BLOCK_PRESENT):
                out.append(f"BAT entry {j} (sector bitmap {chunk}) has an invalid state {st}")
            elif st == layout.SB_BLOCK_PRESENT:
                if off + layout.SECTOR_BITMAP_BLOCK > file_size:
                    out.append(f"BAT entry {j} (sector bitmap {chunk}) points past the end of the file "
                               f"(offset {off}, file is {file_size} bytes)")
                else:
                    used.append((off, off + layout.SECTOR_BITMAP_BLOCK, f"BAT entry {j} (sector bitmap {chunk})"))
            continue
        blk = chunk * ratio + r
        if blk >= n_blocks:
            continue
        if st not in _STATE_IN:
            out.append(f"BAT entry {j} has an invalid state {st}")
        elif st == layout.PAYLOAD_BLOCK_PARTIALLY_PRESENT and not differencing:
            out.append(f"BAT entry {j}: partially present block {blk} in a disk with no parent")
        elif st in (layout.PAYLOAD_BLOCK_FULLY_PRESENT, layout.PAYLOAD_BLOCK_PARTIALLY_PRESENT):
            if off + block_size > file_size:
                out.append(f"BAT entry {j} points past the end of the file "
                           f"(offset {off}, file is {file_size} bytes)")
            else:
                used.append((off, off + block_size, f"BAT entry {j} (block {blk})"))
    return out + base.overlaps(fixed + used)
