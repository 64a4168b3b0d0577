"""VhdxDisk.check: the file identifier, both headers, both region tables, the metadata items, the
BAT, the log and the parent locator of a VHDX ([MS-VHDX]), each problem in its own words (see check.py)."""
from __future__ import annotations

import array
import os
import sys
import uuid
from typing import Any

from wim2vhd.disk import geometry
from wim2vhd.disk import vhdx_layout as layout
from wim2vhd.disk.base import overlaps
from wim2vhd.disk.check import Facts
from wim2vhd.disk.vhdx_parse import (
    _guid, _with_crc, bat_problems, disk_params, fixed_ranges, header_status, linkage, metadata_items,
    parent_candidates, parse_parent_locator, region_status,
)
from wim2vhd.errors import InputError
from wim2vhd.units import MiB


MAX_LOG_ENTRY = 64 * MiB  # read no more for one entry (Hyper-V's are a few sectors)


def _inside(off: int, n: int, size: int) -> bool:
    return 0 <= off <= size and 0 <= n <= size - off


def check(path: str, fd: int) -> Facts:
    from wim2vhd.disk.base import file_size
    size = file_size(fd)
    facts = Facts(path, "vhdx")
    if size < layout.HEADER_AREA:
        facts.add("file", f"the file is {size} bytes, too small for a VHDX (its headers take 1 MiB)")
        return facts
    if os.pread(fd, 8, 0) != layout.FILE_ID_SIGNATURE:
        facts.add("file identifier", "no 'vhdxfile' signature")
    hdr = _headers(facts, fd, size)
    regions = _region_tables(facts, fd, size)
    if hdr is None or regions is None:
        return facts
    fixed = fixed_ranges(hdr, regions)
    for p in overlaps(fixed):
        facts.add("region table", p)
    meta = _metadata(facts, fd, regions, size)
    if meta is None:
        return facts
    try:
        params = disk_params(meta, path)
    except InputError as e:
        facts.add("metadata", str(e).removeprefix(f"{path}: "))
        return facts
    facts.disk_type = "differencing" if params["differencing"] else "fixed" if params["leave_allocated"] else "dynamic"
    facts.identity = {"data_write_guid": str(_guid(hdr["data_write_guid"])).upper(), "size": params["size"],
                      "sector_size": params["lss"]}
    _bat(facts, fd, regions, params, size, fixed)
    _log(facts, fd, hdr, size)
    if params["differencing"]:
        _parent(facts, meta, params)
    return facts


def _headers(facts: Facts, fd: int, size: int) -> dict[str, Any] | None:
    """Both header slots; the current one (the sound one with the higher sequence number) or None."""
    slots = [header_status(os.pread(fd, layout.HEADER_SIZE, off)) for off in layout.HEADER_OFFSETS]
    sound = [i for i, (_, why) in enumerate(slots) if why is None]
    if not sound:
        facts.add("headers", "both headers are damaged (" + "; ".join(f"header {i + 1}: {why}" for i, (_, why)
                                                                        in enumerate(slots)) + "): no sound copy")
        return None
    cur = max(sound, key=lambda i: slots[i][0]["sequence_number"])
    h = slots[cur][0]
    for i, (_, why) in enumerate(slots):
        if why:
            # Written as a header update writes it: the sound header, with the next sequence number.
            fix = _with_crc(layout.HEADER.pack({**h, "sequence_number": h["sequence_number"] + 1}))
            facts.add(f"header {i + 1}", f"{why} (header {cur + 1} is sound)", [(layout.HEADER_OFFSETS[i], fix)])
    if len(sound) == 2 and slots[0][0]["sequence_number"] == slots[1][0]["sequence_number"] \
            and slots[0][0] != slots[1][0]:
        facts.add("headers", f"both headers have sequence number {h['sequence_number']} but differ: "
                             "neither is known to be current")
    if h["version"] != 1:
        facts.add(f"header {cur + 1}", f"version {h['version']}, not 1")
    if h["log_version"] != 0:
        facts.add(f"header {cur + 1}", f"log version {h['log_version']}, not 0")
    lo, ln = h["log_offset"], h["log_length"]
    if lo % MiB or ln % MiB or lo < layout.HEADER_AREA:
        facts.add(f"header {cur + 1}", f"the log at {lo} ({ln} bytes) is not on 1 MiB boundaries after the headers")
    elif not _inside(lo, ln, size):
        facts.add(f"header {cur + 1}", f"the log at {lo} ({ln} bytes) is past the end of the {size}-byte file")
    return h


def _region_tables(facts: Facts, fd: int, size: int) -> dict[uuid.UUID, tuple[int, int]] | None:
    raws = [os.pread(fd, layout.REGION_SIZE, off) for off in layout.REGION_OFFSETS]
    tables = [region_status(r) for r in raws]
    sound = [i for i, (_, why) in enumerate(tables) if why is None]
    if not sound:
        facts.add("region tables", "both region tables are damaged (" + "; ".join(
            f"table {i + 1}: {why}" for i, (_, why) in enumerate(tables)) + "): no sound copy")
        return None
    good = sound[0]
    for i, (_, why) in enumerate(tables):
        if why:
            facts.add(f"region table {i + 1}", f"{why} (region table {good + 1} is sound)",
                      [(layout.REGION_OFFSETS[i], raws[good])])
    if len(sound) == 2 and raws[0] != raws[1]:
        facts.add("region table 2", "differs from region table 1", [(layout.REGION_OFFSETS[1], raws[0])])
    regions = tables[good][0]
    for g, (off, n, required) in regions.items():
        name = layout.REGION_NAMES.get(g, f"the region {g}")
        if g not in layout.REGION_NAMES:
            if required:
                facts.add("region table", f"requires an unknown region {g}")
            continue
        if off % MiB or n % MiB or off < layout.HEADER_AREA or not n:
            facts.add("region table", f"{name} at {off} ({n} bytes) is not on 1 MiB boundaries after the headers")
        if not _inside(off, n, size):
            facts.add("region table", f"{name} at {off} ({n} bytes) is past the end of the {size}-byte file")
    missing = [layout.REGION_NAMES[g] for g in layout.REGION_NAMES if g not in regions]
    if missing:
        facts.add("region table", f"lacks {' and '.join(missing)}")
        return None
    out = {g: (o, n) for g, (o, n, _) in regions.items()}
    if any(not _inside(o, n, size) for g, (o, n) in out.items() if g in layout.REGION_NAMES):
        return None
    return out


def _metadata(facts: Facts, fd: int, regions, size: int) -> dict[uuid.UUID, bytes] | None:
    off, n = regions[layout.METADATA_REGION]
    items, problems = metadata_items(os.pread(fd, n, off))
    for p in problems:
        facts.add("metadata", p)
    for g, (data, flags) in items.items():
        want = layout.META_FLAGS[g]
        if flags & 7 != want:
            facts.add("metadata", f"item {layout.META_NAMES[g]} has flags {flags & 7:#x}, [MS-VHDX] gives {want:#x} "
                                  "(IsUser 1, IsVirtualDisk 2, IsRequired 4)")
    for g in (layout.META_VIRTUAL_DISK_ID, layout.META_PHYSICAL_SECTOR_SIZE):
        if g not in items and not problems:
            facts.add("metadata", f"lacks the {layout.META_NAMES[g]} item (required)")
    if problems and not all(g in items for g in (layout.META_FILE_PARAMETERS, layout.META_VIRTUAL_DISK_SIZE,
                                                  layout.META_LOGICAL_SECTOR_SIZE)):
        return None
    return {g: data for g, (data, _) in items.items()}


def _bat(facts: Facts, fd: int, regions, params: dict[str, Any], size: int, fixed) -> None:
    off, n = regions[layout.BAT_REGION]
    bs, lss, differencing = params["block_size"], params["lss"], params["differencing"]
    entries = geometry.vhdx_bat_entries(params["size"], bs, lss, differencing)
    if n < entries * 8:
        facts.add("BAT", f"the region holds {n // 8} entries, {entries} needed")
        return
    bat = array.array("Q")
    bat.frombytes(os.pread(fd, entries * 8, off))
    if sys.byteorder != "little":
        bat.byteswap()
    ratio = geometry.vhdx_chunk_ratio(lss, bs)
    already = set(overlaps(fixed))
    for p in bat_problems(bat, ratio, -(-params["size"] // bs), bs, differencing, size, fixed):
        if p not in already:
            facts.add("BAT", p)
    if not differencing:
        sb = [j for j in range(ratio, len(bat), ratio + 1) if bat[j] & layout.BAT_STATE_MASK == layout.SB_BLOCK_PRESENT]
        if sb:
            facts.add("BAT", f"{len(sb)} sector bitmap blocks present (entry {sb[0]} first) in a disk with no parent")


def _parent(facts: Facts, meta: dict[uuid.UUID, bytes], params: dict[str, Any]) -> None:
    try:
        loc = parse_parent_locator(meta[layout.META_PARENT_LOCATOR], facts.path)
    except InputError as e:
        facts.add("parent locator", str(e).removeprefix(f"{facts.path}: "))
        loc = {}
    if not loc.get("parent_linkage"):
        facts.add("parent locator", "has no parent_linkage")
    for k in ("parent_linkage", "parent_linkage2"):
        v = loc.get(k)
        if v is not None:
            try:
                uuid.UUID(v.strip("{}"))
            except ValueError:
                facts.add("parent locator", f"its {k} {v!r} is not a GUID")
    if not any(loc.get(k) for k in ("relative_path", "volume_path", "absolute_win32_path")):
        facts.add("parent locator", "names no path to the parent (relative_path, volume_path, absolute_win32_path)")
    facts.expect = {"data_write_guid": linkage(loc), "size": params["size"], "sector_size": params["lss"]}
    facts.parent_candidates = parent_candidates(facts.path, loc)


def _log(facts: Facts, fd: int, hdr: dict[str, Any], size: int) -> None:
    """The log is empty when LogGuid is zero; otherwise say what replaying it would do ([MS-VHDX] 2.3)."""
    if not any(hdr["log_guid"]):
        return
    lo, ln = hdr["log_offset"], hdr["log_length"]
    if not _inside(lo, ln, size) or not ln:
        return  # said with the header
    entries = {}
    for pos in range(0, ln, layout.LOG_SECTOR):
        e = layout.LOG_ENTRY_HEADER.parse(os.pread(fd, layout.LOG_ENTRY_HEADER.size, lo + pos))
        n = e["entry_length"]
        if e["signature"] != layout.LOG_SIGNATURE or e["log_guid"] != hdr["log_guid"] or not n or n % layout.LOG_SECTOR \
                or n > min(ln, MAX_LOG_ENTRY):
            continue
        first = min(n, ln - pos)  # an entry may wrap around the end of the circular log
        raw = os.pread(fd, first, lo + pos) + os.pread(fd, n - first, lo)
        if int.from_bytes(raw[4:8], "little") != geometry.crc32c_with_zero_field(raw, 4):
            continue
        entries[pos] = (e, raw)
    guid = _guid(hdr["log_guid"])
    if not entries:
        facts.add("log", f"LogGuid is {guid} but the log holds no valid entry: replaying it would change nothing")
        return
    last_pos = max(entries, key=lambda p: entries[p][0]["sequence_number"])
    seq = [entries[last_pos]]
    # The active sequence runs from the entry at the last one's tail, each entry's number one more.
    while seq[0][0]["sequence_number"] > 1:
        prev = next((v for v in entries.values()
                     if v[0]["sequence_number"] == seq[0][0]["sequence_number"] - 1), None)
        if prev is None or entries[last_pos][0]["tail"] == _pos_of(entries, seq[0]):
            break
        seq.insert(0, prev)
    writes, zeros, zero_bytes, offsets = 0, 0, 0, []
    for e, raw in seq:
        for k in range(e["descriptor_count"]):
            d = layout.LOG_DESCRIPTOR.parse(raw, layout.LOG_ENTRY_HEADER.size + k * layout.LOG_DESCRIPTOR.size)
            if d["signature"] == layout.LOG_DESC_SIGNATURE:
                writes += 1
                offsets.append(d["file_offset"])
            elif d["signature"] == layout.LOG_ZERO_SIGNATURE:
                zeros += 1
                zero_bytes += d["leading_bytes"]
                offsets.append(d["file_offset"])
    last = seq[-1][0]
    where = f" at file offsets {min(offsets)}-{max(offsets)}" if offsets else ""
    facts.add("log", f"the log holds {len(seq)} entries to replay (sequence {seq[0][0]['sequence_number']}-"
                     f"{last['sequence_number']}): replaying would write {writes} 4 KiB sectors and zero {zeros} "
                     f"ranges ({zero_bytes} bytes){where}, with the file at least {last['last_file_offset']} bytes long; "
                     "run `qemu-img check -r all` on it, or open it in Hyper-V")


def _pos_of(entries: dict[int, tuple], item: tuple) -> int:
    return next(p for p, v in entries.items() if v is item)
