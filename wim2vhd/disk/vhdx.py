"""VHDX: fixed, dynamic and differencing disks ([MS-VHDX]).

wim2vhd never writes the log: it keeps LogGuid zero, so there is nothing to
replay.  An existing file's headers change once per open, before its first
write (new FileWriteGuid and DataWriteGuid), a new file's in flush(); either
way the older of the two header slots is written first with the next sequence
number, then the other.  Parsing and validation are in vhdx_parse.py.
"""
from __future__ import annotations

import array
import os
import sys
import uuid
from typing import Any

from wim2vhd import repro
from wim2vhd.disk import base
from wim2vhd.disk import geometry
from wim2vhd.disk import vhdx_layout as layout
from wim2vhd.disk.base import ABSENT, PARTIAL, PRESENT, ZERO, Disk, read_exact, write_all
from wim2vhd.disk.vhdx_parse import (
    _STATE_IN, _guid, _with_crc, bat_problems, disk_params, fixed_ranges, header_status, linkage,
    metadata_items, parent_candidates, parse_parent_locator, region_status,
)
from wim2vhd.errors import CorruptInput, UnsupportedInput, UsageError
from wim2vhd.units import MiB, align_up

DEFAULT_BLOCK_SIZE = 32 * MiB      # what Hyper-V uses for dynamic VHDX
DEFAULT_DIFF_BLOCK_SIZE = 2 * MiB  # what Hyper-V uses for differencing VHDX
CREATOR = "wim2vhd"

_STATE_OUT = {
    ABSENT: layout.PAYLOAD_BLOCK_NOT_PRESENT,
    ZERO: layout.PAYLOAD_BLOCK_ZERO,
    PRESENT: layout.PAYLOAD_BLOCK_FULLY_PRESENT,
    PARTIAL: layout.PAYLOAD_BLOCK_PARTIALLY_PRESENT,
}


def check_params(size: int, block_size: int, sector_size: int) -> None:
    if sector_size not in (512, 4096):
        raise UsageError(f"unsupported sector size {sector_size}: use 512 or 4096")
    if size <= 0 or size % sector_size:
        raise UsageError(f"the disk size must be a positive multiple of the {sector_size}-byte sector")
    if size > geometry.VHDX_MAX_SIZE:
        raise UsageError("a VHDX can be at most 64 TiB")
    if block_size & (block_size - 1) or not MiB <= block_size <= 256 * MiB:
        raise UsageError(f"unsupported VHDX block size {block_size}: use a power of two from 1M to 256M (default 32M)")


def _metadata_region(items: list[tuple[uuid.UUID, bytes, int]]) -> bytes:
    """The metadata region: table at 0, items from 64 KiB, 8-byte aligned."""
    table = [layout.METADATA_TABLE_HEADER.pack({"signature": layout.METADATA_SIGNATURE, "entry_count": len(items)})]
    body = bytearray()
    off = 64 * 1024
    for item_id, data, flags in items:
        table.append(layout.METADATA_TABLE_ENTRY.pack({
            "item_id": item_id.bytes_le, "offset": off + len(body), "length": len(data), "flags": flags}))
        body += data
        body += b"\0" * (-len(body) % 8)
    raw = b"".join(table).ljust(64 * 1024, b"\0") + bytes(body)
    return raw


def _parent_locator(entries: dict[str, str]) -> bytes:
    keys = list(entries.items())
    hdr = layout.PARENT_LOCATOR_HEADER.pack({"locator_type": layout.PARENT_LOCATOR_TYPE_VHDX.bytes_le,
                                        "key_value_count": len(keys)})
    off = layout.PARENT_LOCATOR_HEADER.size + layout.PARENT_LOCATOR_ENTRY.size * len(keys)
    table, blob = [], bytearray()
    for k, v in keys:
        kb, vb = k.encode("utf-16-le"), v.encode("utf-16-le")
        table.append(layout.PARENT_LOCATOR_ENTRY.pack({
            "key_offset": off + len(blob), "value_offset": off + len(blob) + len(kb),
            "key_length": len(kb), "value_length": len(vb)}))
        blob += kb + vb
    return hdr + b"".join(table) + bytes(blob)


def _parent_entries(parent: Disk, child_path: str) -> dict[str, str]:
    """The VHDX parent locator's entries for a child at child_path ([MS-VHDX] 2.6.2.6.3)."""
    return {
        # The spec asks for "a lowercase string with enclosing braces" (its own example is in upper case);
        # readers compare case-insensitively, as we do.
        "parent_linkage": "{%s}" % parent.identity()["data_write_guid"].lower(),
        # Relative to the child's directory, with "\\" and "..", as Windows resolves it first.
        "relative_path": relative_win_path(parent.path, child_path),
        # absolute_win32_path and volume_path are left out: on Linux there is no Windows path to give
        # (a POSIX path with its slashes turned is not one), and relative_path suffices.
    }


def relative_win_path(target: str, child_path: str) -> str:
    """target relative to child_path's directory, as a Windows path (".\\name", "..\\dir\\name")."""
    rel = os.path.relpath(os.path.abspath(target), os.path.dirname(os.path.abspath(child_path)))
    rel = rel.replace("/", "\\")
    return rel if rel.startswith("..") else ".\\" + rel


class VhdxDisk(Disk):
    format_name = "vhdx"
    extensions = (".vhdx",)
    _fresh = False  # made by create(), not yet in use (see there)

    @classmethod
    def check(cls, path: str, fd: int):
        from wim2vhd.disk import vhdx_check
        return vhdx_check.check(path, fd)

    @classmethod
    def probe(cls, head: bytes, file_size: int) -> bool:
        return head[:8] == layout.FILE_ID_SIGNATURE

    # -- create ----------------------------------------------------------------
    @classmethod
    def create(cls, path: str, size: int, *, dynamic: bool = True, block_size: int | None = None,
               sector_size: int = 512, physical_sector_size: int = 4096, parent: Disk | None = None,
               disk_id: bytes | None = None, **options: Any) -> "VhdxDisk":
        if parent is not None:
            size, sector_size = parent.size, parent.sector_size
            block_size = block_size or DEFAULT_DIFF_BLOCK_SIZE
            dynamic = True
        block_size = block_size or DEFAULT_BLOCK_SIZE
        check_params(size, block_size, sector_size)
        differencing = parent is not None
        entries = geometry.vhdx_bat_entries(size, block_size, sector_size, differencing)
        bat_len = align_up(max(entries * 8, 1), MiB)
        payload_start = layout.BAT_OFFSET + bat_len
        n_blocks = -(-size // block_size)
        ratio = geometry.vhdx_chunk_ratio(sector_size, block_size)

        flags = 0 if dynamic else layout.FP_LEAVE_BLOCKS_ALLOCATED
        items = [
            (layout.META_FILE_PARAMETERS,
             layout.FILE_PARAMETERS.pack({"block_size": block_size,
                                     "flags": flags | (layout.FP_HAS_PARENT if differencing else 0)})),
            (layout.META_VIRTUAL_DISK_SIZE, size.to_bytes(8, "little")),
            (layout.META_LOGICAL_SECTOR_SIZE, sector_size.to_bytes(4, "little")),
            (layout.META_PHYSICAL_SECTOR_SIZE, physical_sector_size.to_bytes(4, "little")),
            (layout.META_VIRTUAL_DISK_ID, disk_id or repro.uuid_for("vhdx-disk-id").bytes_le),
        ]
        if differencing:
            items.append((layout.META_PARENT_LOCATOR, _parent_locator(_parent_entries(parent, path))))
        items = [(g, data, layout.META_FLAGS[g]) for g, data in items]
        metadata = _metadata_region(items)
        if len(metadata) > layout.METADATA_LENGTH:
            raise UsageError("VHDX metadata does not fit its region (parent path too long?)")

        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            end = payload_start
            if not dynamic:
                end = payload_start + n_blocks * block_size
                bat = array.array("Q", bytes(entries * 8))
                for b in range(n_blocks):
                    off = payload_start + b * block_size
                    bat[geometry.vhdx_payload_entry(b, ratio)] = (off >> 20 << layout.BAT_OFFSET_SHIFT) | layout.PAYLOAD_BLOCK_FULLY_PRESENT
                if sys.byteorder != "little":
                    bat.byteswap()
                bat_bytes = bat.tobytes()
            os.ftruncate(fd, end)
            write_all(fd, layout.FILE_IDENTIFIER.pack({"signature": layout.FILE_ID_SIGNATURE,
                                                  "creator": CREATOR.encode("utf-16-le")}), 0)
            regions = [(layout.BAT_REGION, layout.BAT_OFFSET, bat_len), (layout.METADATA_REGION, layout.METADATA_OFFSET, layout.METADATA_LENGTH)]
            rt = layout.REGION_TABLE_HEADER.pack({"signature": layout.REGION_SIGNATURE, "checksum": 0,
                                             "entry_count": len(regions)})
            rt += b"".join(layout.REGION_TABLE_ENTRY.pack({"guid": g.bytes_le, "file_offset": o, "length": n, "required": 1})
                           for g, o, n in regions)
            rt = _with_crc(rt.ljust(layout.REGION_SIZE, b"\0"))
            for off in layout.REGION_OFFSETS:
                write_all(fd, rt, off)
            write_all(fd, metadata, layout.METADATA_OFFSET)
            if not dynamic:
                write_all(fd, bat_bytes, layout.BAT_OFFSET)
            hdr = {
                "signature": layout.HEADER_SIGNATURE, "checksum": 0, "sequence_number": 0,
                "file_write_guid": repro.uuid_for("vhdx-file-write").bytes_le,
                "data_write_guid": repro.uuid_for("vhdx-data-write").bytes_le,
                "log_guid": b"\0" * 16, "log_version": 0, "version": 1,
                "log_length": layout.LOG_LENGTH, "log_offset": layout.LOG_OFFSET,
            }
            for i, off in enumerate(layout.HEADER_OFFSETS):
                write_all(fd, _with_crc(layout.HEADER.pack({**hdr, "sequence_number": i + 1})), off)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        d = cls.open_one(path, writable=True, _new=True)
        # A new file is not a disk anyone uses until it is complete (atomic.py syncs it, then renames
        # it into place), so its header updates need no ordering against its data.
        d._fresh = True
        if parent is not None:
            try:
                d._link_parent(parent)
            except BaseException:
                d.abandon()
                raise
        return d

    # -- open ------------------------------------------------------------------
    @classmethod
    def _read_header(cls, fd: int, path: str, size: int) -> tuple[dict[str, Any], int]:
        best, slot = None, -1
        bad = []
        for i, off in enumerate(layout.HEADER_OFFSETS):
            h, why = header_status(read_exact(fd, layout.HEADER_SIZE, off, f"header {i + 1}", path, size))
            if why:
                bad.append(f"header {i + 1} {why}")
            elif best is None or h["sequence_number"] > best["sequence_number"]:
                best, slot = h, i
        if best is None:
            raise CorruptInput(f"{path}: no valid VHDX header ({'; '.join(bad)})")
        return best, slot

    @classmethod
    def _read_regions(cls, fd: int, path: str, size: int) -> dict[uuid.UUID, tuple[int, int]]:
        for i, off in enumerate(layout.REGION_OFFSETS):
            regions, why = region_status(read_exact(fd, layout.REGION_SIZE, off, f"region table {i + 1}", path, size))
            if why:
                continue
            for g, (o, n, required) in regions.items():
                if g not in layout.REGION_NAMES and required:
                    raise UnsupportedInput(f"{path}: VHDX requires an unknown region {g}")
            if layout.BAT_REGION not in regions or layout.METADATA_REGION not in regions:
                raise CorruptInput(f"{path}: VHDX region table lacks the BAT or metadata region")
            return {g: (o, n) for g, (o, n, _) in regions.items()}
        raise CorruptInput(f"{path}: both VHDX region tables are damaged (bad signature or CRC-32C mismatch)")

    @classmethod
    def _read_metadata(cls, fd: int, path: str, off: int, length: int, size: int) -> dict[uuid.UUID, bytes]:
        raw = read_exact(fd, length, off, "metadata region", path, size)
        items, problems = metadata_items(raw)
        if problems:
            raise (UnsupportedInput if "unknown" in problems[0] else CorruptInput)(f"{path}: {problems[0]}")
        return {g: data for g, (data, _) in items.items()}

    @classmethod
    def _open_fd(cls, path: str, fd: int, writable: bool, parent: Disk | None) -> "VhdxDisk":
        file_size = base.file_size(fd)
        ident = read_exact(fd, 8, 0, "file identifier", path, file_size)
        if ident != layout.FILE_ID_SIGNATURE:
            raise CorruptInput(f"{path}: not a VHDX: bad file identifier signature")
        hdr, slot = cls._read_header(fd, path, file_size)
        if hdr["version"] != 1:
            raise UnsupportedInput(f"{path}: VHDX version {hdr['version']} is not supported")
        if any(hdr["log_guid"]):
            # Someone crashed mid-update; replaying the log is not implemented.
            raise UnsupportedInput(f"{path}: the VHDX has a log to replay (`wim2vhd disk check` says what it "
                                   "holds); open it once in Hyper-V or run `qemu-img check -r all` on it first")
        regions = cls._read_regions(fd, path, file_size)
        meta = cls._read_metadata(fd, path, *regions[layout.METADATA_REGION], file_size)
        p = disk_params(meta, path)
        size, lss, bs, differencing = p["size"], p["lss"], p["block_size"], p["differencing"]
        ratio = geometry.vhdx_chunk_ratio(lss, bs)
        entries = geometry.vhdx_bat_entries(size, bs, lss, differencing)
        bat_off, bat_len = regions[layout.BAT_REGION]
        if bat_len < entries * 8:
            raise CorruptInput(f"{path}: VHDX BAT region holds {bat_len // 8} entries, {entries} needed")
        raw = read_exact(fd, entries * 8, bat_off, "BAT", path, file_size)
        bat = array.array("Q")
        bat.frombytes(raw)
        if sys.byteorder != "little":
            bat.byteswap()
        n_blocks = -(-size // bs)
        problems = bat_problems(bat, ratio, n_blocks, bs, differencing, file_size, fixed_ranges(hdr, regions))
        if problems:
            raise CorruptInput(f"{path}: {problems[0]}")
        locator = parse_parent_locator(meta[layout.META_PARENT_LOCATOR], path) if differencing else {}

        d = cls(path, fd, {
            "virtual_size": size, "sector_size": lss, "block_size": bs,
            "bitmap_mode": 2, "bitmap_bytes": bs // lss // 8, "chunk_ratio": ratio,
            "group_bytes": layout.SECTOR_BITMAP_BLOCK, "alloc_align": MiB,
            "file_end": align_up(file_size, MiB),
        }, writable=writable)
        d.disk_type = "differencing" if differencing else ("fixed" if p["leave_allocated"] else "dynamic")
        d._hdr, d._hdr_slot, d._meta, d._bat_off = hdr, slot, meta, bat_off
        d._ratio, d._physical_sector_size = ratio, p["pss"]
        d._locator = locator
        d._writes_seen = 0
        d._next_hdr = None
        try:
            data_off, state = d._tables()
            group_off = d._group_table()
            for j in (i for i, v in enumerate(bat) if v):
                v = bat[j]
                st, off = v & layout.BAT_STATE_MASK, (v >> layout.BAT_OFFSET_SHIFT) << 20
                chunk, r = divmod(j, ratio + 1)
                if r == ratio:  # a sector bitmap entry
                    if st == layout.SB_BLOCK_PRESENT and chunk < len(group_off):
                        group_off[chunk] = off
                    continue
                blk = chunk * ratio + r
                if blk >= n_blocks:
                    continue
                s = _STATE_IN[st]
                if s in (PRESENT, PARTIAL):
                    data_off[blk] = off
                state[blk] = s
        except BaseException:
            d._free_native()
            raise
        return d

    @classmethod
    def open_one(cls, path: str, *, writable: bool = False, _new: bool = False) -> "VhdxDisk":
        d = super().open_one(path, writable=writable)
        if writable and not _new:
            try:
                d._arm_first_write()
            except BaseException:
                d.abandon()
                raise
        return d

    def _arm_first_write(self) -> None:
        """Before the first write of this open changes the file, both headers get a new FileWriteGuid and
        DataWriteGuid ([MS-VHDX] 2.2.2: "before the first modification"; every write through the block
        layer is to user-visible data), the stale slot first, each durable before the next."""
        from wim2vhd._lib import lib
        h = dict(self._hdr)
        h["file_write_guid"] = repro.uuid_for("vhdx-file-write").bytes_le
        h["data_write_guid"] = repro.uuid_for("vhdx-data-write").bytes_le
        pieces = []
        for slot in (1 - self._hdr_slot, self._hdr_slot):
            h["sequence_number"] += 1
            pieces += [_with_crc(layout.HEADER.pack(h)), layout.HEADER_OFFSETS[slot]]
        r = lib.w2v_set_first_write(self._h, pieces[0], pieces[1], pieces[2], pieces[3], layout.HEADER_SIZE, 1)
        if r < 0:
            raise base.from_errno(r, f"{self.path}: header update")
        self._next_hdr = h

    def _group_table(self) -> "_GroupView":
        from wim2vhd._lib import lib
        return _GroupView(lib.w2v_group_off(self._h), lib.w2v_n_groups(self._h))

    # -- parent ----------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {"data_write_guid": str(_guid(self._hdr["data_write_guid"])).upper(),
                "disk_id": str(_guid(self._meta.get(layout.META_VIRTUAL_DISK_ID, b"\0" * 16)))}

    def parent_paths(self) -> list[str]:
        return parent_candidates(self.path, self._locator)

    def parent_linkage(self) -> tuple[str, ...]:
        return linkage(self._locator)

    def parent_mismatch(self, parent: Disk) -> str | None:
        want = linkage(self._locator)
        got = parent.identity().get("data_write_guid")
        if got not in want:
            return f"has DataWriteGuid {got}, expected {want[0] if want else 'one recorded in parent_linkage'}"
        if parent.size != self.size:
            return f"is {parent.size} bytes, the child {self.size}"
        if parent.sector_size != self.sector_size:
            return f"has {parent.sector_size}-byte sectors, the child {self.sector_size}-byte ones"
        return None

    # -- flush -----------------------------------------------------------------
    def _flush_metadata(self) -> None:
        data_off, state = self._tables()
        ratio = self._ratio
        entries = []
        for b in self._take_dirty():
            s = state[b]
            v = _STATE_OUT[s] | ((data_off[b] >> 20 << layout.BAT_OFFSET_SHIFT) if s in (PRESENT, PARTIAL) else 0)
            entries.append((geometry.vhdx_payload_entry(b, ratio), v))
        groups = self._group_table()
        for c in self._take_dirty(groups=True):
            entries.append((geometry.vhdx_bitmap_entry(c, ratio), (groups[c] >> 20 << layout.BAT_OFFSET_SHIFT) | layout.SB_BLOCK_PRESENT))
        for j, v in entries:
            write_all(self.fd, v.to_bytes(8, "little"), self._bat_off + 8 * j)
        if self._next_hdr is not None:
            from wim2vhd._lib import lib
            if not lib.w2v_first_write_pending(self._h):
                self._hdr, self._next_hdr = self._next_hdr, None  # written before the first write
            return
        writes = self.stats()["writes"]
        if self._fresh and (entries or writes != self._writes_seen):
            self._update_headers(data_changed=writes != self._writes_seen)
            self._writes_seen = writes

    def _update_headers(self, data_changed: bool) -> None:
        """A new file's headers, with new sequence numbers, the stale slot first ([MS-VHDX] 2.2.2.1).
        (An existing file's are written before its first write: _arm_first_write.)"""
        h = dict(self._hdr)
        h["file_write_guid"] = repro.uuid_for("vhdx-file-write").bytes_le
        if data_changed:
            h["data_write_guid"] = repro.uuid_for("vhdx-data-write").bytes_le
        for slot in (1 - self._hdr_slot, self._hdr_slot):
            h["sequence_number"] += 1
            write_all(self.fd, _with_crc(layout.HEADER.pack(h)), layout.HEADER_OFFSETS[slot])
        self._hdr = h

    def _info(self) -> dict[str, Any]:
        out = {
            "disk_id": self.identity()["disk_id"],
            "data_write_guid": self.identity()["data_write_guid"],
            "physical_sector_size": self._physical_sector_size,
        }
        if self.disk_type == "differencing":
            out["parent_locator"] = dict(self._locator)
        return out


class _GroupView:
    """The native group-offset table, indexable from Python."""

    def __init__(self, ptr, n: int):
        self._p, self._n = ptr, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> int:
        return self._p[i]

    def __setitem__(self, i: int, v: int) -> None:
        self._p[i] = v
