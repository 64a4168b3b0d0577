"""VHDX: fixed, dynamic and differencing disks ([MS-VHDX]).

wim2vhd never writes the log: it keeps LogGuid zero, so there is nothing to
replay.  Headers change only in flush(), safely: the older of the two header
slots is written first with the next sequence number, then the other.
"""
from __future__ import annotations

import array
import os
import sys
import uuid
from typing import Any

from wim2vhd import repro
from wim2vhd.disk import geometry as geo
from wim2vhd.disk import vhdx_layout as L
from wim2vhd.disk.base import ABSENT, PARTIAL, PRESENT, ZERO, Disk, read_exact, write_all
from wim2vhd.errors import CorruptInput, UnsupportedInput, UsageError
from wim2vhd.units import MiB, align_up

DEFAULT_BLOCK_SIZE = 32 * MiB      # what Hyper-V uses for dynamic VHDX
DEFAULT_DIFF_BLOCK_SIZE = 2 * MiB  # what Hyper-V uses for differencing VHDX
CREATOR = "wim2vhd"

_STATE_IN = {
    L.PAYLOAD_BLOCK_NOT_PRESENT: ABSENT,
    L.PAYLOAD_BLOCK_UNDEFINED: ABSENT,
    L.PAYLOAD_BLOCK_ZERO: ZERO,
    L.PAYLOAD_BLOCK_UNMAPPED: ZERO,
    L.PAYLOAD_BLOCK_FULLY_PRESENT: PRESENT,
    L.PAYLOAD_BLOCK_PARTIALLY_PRESENT: PARTIAL,
}
_STATE_OUT = {
    ABSENT: L.PAYLOAD_BLOCK_NOT_PRESENT,
    ZERO: L.PAYLOAD_BLOCK_ZERO,
    PRESENT: L.PAYLOAD_BLOCK_FULLY_PRESENT,
    PARTIAL: L.PAYLOAD_BLOCK_PARTIALLY_PRESENT,
}


def _guid(b: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=bytes(b))


def _with_crc(raw: bytes) -> bytes:
    crc = geo.crc32c_with_zero_field(raw, 4)
    return raw[:4] + crc.to_bytes(4, "little") + raw[8:]


def _crc_ok(raw: bytes) -> bool:
    return int.from_bytes(raw[4:8], "little") == geo.crc32c_with_zero_field(raw, 4)


def check_params(size: int, block_size: int, sector_size: int) -> None:
    if sector_size not in (512, 4096):
        raise UsageError(f"unsupported sector size {sector_size}: use 512 or 4096")
    if size <= 0 or size % sector_size:
        raise UsageError(f"the disk size must be a positive multiple of the {sector_size}-byte sector")
    if size > geo.VHDX_MAX_SIZE:
        raise UsageError("a VHDX can be at most 64 TiB")
    if block_size & (block_size - 1) or not MiB <= block_size <= 256 * MiB:
        raise UsageError(f"unsupported VHDX block size {block_size}: use a power of two from 1M to 256M (default 32M)")


def _metadata_region(items: list[tuple[uuid.UUID, bytes, int]]) -> bytes:
    """The metadata region: table at 0, items from 64 KiB, 8-byte aligned."""
    table = [L.METADATA_TABLE_HEADER.pack({"signature": L.METADATA_SIGNATURE, "entry_count": len(items)})]
    body = bytearray()
    off = 64 * 1024
    for item_id, data, flags in items:
        table.append(L.METADATA_TABLE_ENTRY.pack({
            "item_id": item_id.bytes_le, "offset": off + len(body), "length": len(data), "flags": flags}))
        body += data
        body += b"\0" * (-len(body) % 8)
    raw = b"".join(table).ljust(64 * 1024, b"\0") + bytes(body)
    return raw


def _parent_locator(entries: dict[str, str]) -> bytes:
    keys = list(entries.items())
    hdr = L.PARENT_LOCATOR_HEADER.pack({"locator_type": L.PARENT_LOCATOR_TYPE_VHDX.bytes_le,
                                        "key_value_count": len(keys)})
    off = L.PARENT_LOCATOR_HEADER.size + L.PARENT_LOCATOR_ENTRY.size * len(keys)
    table, blob = [], bytearray()
    for k, v in keys:
        kb, vb = k.encode("utf-16-le"), v.encode("utf-16-le")
        table.append(L.PARENT_LOCATOR_ENTRY.pack({
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


def _parse_parent_locator(raw: bytes, path: str) -> dict[str, str]:
    h = L.PARENT_LOCATOR_HEADER.parse(raw)
    if _guid(h["locator_type"]) != L.PARENT_LOCATOR_TYPE_VHDX:
        raise UnsupportedInput(f"{path}: unknown parent locator type {_guid(h['locator_type'])}")
    out = {}
    for i in range(h["key_value_count"]):
        e = L.PARENT_LOCATOR_ENTRY.parse(raw, L.PARENT_LOCATOR_HEADER.size + i * L.PARENT_LOCATOR_ENTRY.size)
        k = raw[e["key_offset"]:e["key_offset"] + e["key_length"]].decode("utf-16-le", "replace")
        v = raw[e["value_offset"]:e["value_offset"] + e["value_length"]].decode("utf-16-le", "replace")
        out[k] = v
    return out


class VhdxDisk(Disk):
    format_name = "vhdx"
    extensions = (".vhdx",)
    _fresh = False  # made by create(), not yet in use (see there)

    @classmethod
    def probe(cls, head: bytes, file_size: int) -> bool:
        return head[:8] == L.FILE_ID_SIGNATURE

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
        entries = geo.vhdx_bat_entries(size, block_size, sector_size, differencing)
        bat_len = align_up(max(entries * 8, 1), MiB)
        payload_start = L.BAT_OFFSET + bat_len
        n_blocks = -(-size // block_size)
        ratio = geo.vhdx_chunk_ratio(sector_size, block_size)

        flags = 0 if dynamic else L.FP_LEAVE_BLOCKS_ALLOCATED
        items = [
            (L.META_FILE_PARAMETERS,
             L.FILE_PARAMETERS.pack({"block_size": block_size,
                                     "flags": flags | (L.FP_HAS_PARENT if differencing else 0)})),
            (L.META_VIRTUAL_DISK_SIZE, size.to_bytes(8, "little")),
            (L.META_LOGICAL_SECTOR_SIZE, sector_size.to_bytes(4, "little")),
            (L.META_PHYSICAL_SECTOR_SIZE, physical_sector_size.to_bytes(4, "little")),
            (L.META_VIRTUAL_DISK_ID, disk_id or repro.uuid_for("vhdx-disk-id").bytes_le),
        ]
        if differencing:
            items.append((L.META_PARENT_LOCATOR, _parent_locator(_parent_entries(parent, path))))
        items = [(g, data, L.META_FLAGS[g]) for g, data in items]
        metadata = _metadata_region(items)
        if len(metadata) > L.METADATA_LENGTH:
            raise UsageError("VHDX metadata does not fit its region (parent path too long?)")

        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            end = payload_start
            if not dynamic:
                end = payload_start + n_blocks * block_size
                bat = array.array("Q", bytes(entries * 8))
                for b in range(n_blocks):
                    off = payload_start + b * block_size
                    bat[geo.vhdx_payload_entry(b, ratio)] = (off >> 20 << L.BAT_OFFSET_SHIFT) | L.PAYLOAD_BLOCK_FULLY_PRESENT
                if sys.byteorder != "little":
                    bat.byteswap()
                bat_bytes = bat.tobytes()
            os.ftruncate(fd, end)
            write_all(fd, L.FILE_IDENTIFIER.pack({"signature": L.FILE_ID_SIGNATURE,
                                                  "creator": CREATOR.encode("utf-16-le")}), 0)
            regions = [(L.BAT_REGION, L.BAT_OFFSET, bat_len), (L.METADATA_REGION, L.METADATA_OFFSET, L.METADATA_LENGTH)]
            rt = L.REGION_TABLE_HEADER.pack({"signature": L.REGION_SIGNATURE, "checksum": 0,
                                             "entry_count": len(regions)})
            rt += b"".join(L.REGION_TABLE_ENTRY.pack({"guid": g.bytes_le, "file_offset": o, "length": n, "required": 1})
                           for g, o, n in regions)
            rt = _with_crc(rt.ljust(L.REGION_SIZE, b"\0"))
            for off in L.REGION_OFFSETS:
                write_all(fd, rt, off)
            write_all(fd, metadata, L.METADATA_OFFSET)
            if not dynamic:
                write_all(fd, bat_bytes, L.BAT_OFFSET)
            hdr = {
                "signature": L.HEADER_SIGNATURE, "checksum": 0, "sequence_number": 0,
                "file_write_guid": repro.uuid_for("vhdx-file-write").bytes_le,
                "data_write_guid": repro.uuid_for("vhdx-data-write").bytes_le,
                "log_guid": b"\0" * 16, "log_version": 0, "version": 1,
                "log_length": L.LOG_LENGTH, "log_offset": L.LOG_OFFSET,
            }
            for i, off in enumerate(L.HEADER_OFFSETS):
                write_all(fd, _with_crc(L.HEADER.pack({**hdr, "sequence_number": i + 1})), off)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        d = cls.open(path, writable=True, _parent=parent)
        # A new file is not a disk anyone uses until it is complete (atomic.py syncs it, then renames
        # it into place), so its header updates need no ordering against its data.
        d._fresh = True
        return d

    # -- open ------------------------------------------------------------------
    @classmethod
    def _read_header(cls, fd: int, path: str) -> tuple[dict[str, Any], int]:
        best, slot = None, -1
        bad = []
        for i, off in enumerate(L.HEADER_OFFSETS):
            raw = read_exact(fd, L.HEADER_SIZE, off, f"header {i + 1}", path)
            h = L.HEADER.parse(raw)
            if h["signature"] != L.HEADER_SIGNATURE:
                bad.append(f"header {i + 1} has a bad signature")
                continue
            if not _crc_ok(raw):
                bad.append(f"header {i + 1} CRC-32C mismatch")
                continue
            if best is None or h["sequence_number"] > best["sequence_number"]:
                best, slot = h, i
        if best is None:
            raise CorruptInput(f"{path}: no valid VHDX header ({'; '.join(bad)})")
        return best, slot

    @classmethod
    def _read_regions(cls, fd: int, path: str) -> dict[uuid.UUID, tuple[int, int]]:
        for i, off in enumerate(L.REGION_OFFSETS):
            raw = read_exact(fd, L.REGION_SIZE, off, f"region table {i + 1}", path)
            h = L.REGION_TABLE_HEADER.parse(raw)
            if h["signature"] != L.REGION_SIGNATURE or not _crc_ok(raw) or h["entry_count"] > 2047:
                continue
            regions = {}
            for k in range(h["entry_count"]):
                e = L.REGION_TABLE_ENTRY.parse(raw, L.REGION_TABLE_HEADER.size + k * L.REGION_TABLE_ENTRY.size)
                g = _guid(e["guid"])
                if g not in (L.BAT_REGION, L.METADATA_REGION) and e["required"] & 1:
                    raise UnsupportedInput(f"{path}: VHDX requires an unknown region {g}")
                regions[g] = (e["file_offset"], e["length"])
            if L.BAT_REGION not in regions or L.METADATA_REGION not in regions:
                raise CorruptInput(f"{path}: VHDX region table lacks the BAT or metadata region")
            return regions
        raise CorruptInput(f"{path}: both VHDX region tables are damaged (bad signature or CRC-32C mismatch)")

    @classmethod
    def _read_metadata(cls, fd: int, path: str, off: int, length: int) -> dict[uuid.UUID, bytes]:
        raw = read_exact(fd, length, off, "metadata region", path)
        h = L.METADATA_TABLE_HEADER.parse(raw)
        if h["signature"] != L.METADATA_SIGNATURE:
            raise CorruptInput(f"{path}: bad VHDX metadata table signature")
        items = {}
        for k in range(h["entry_count"]):
            e = L.METADATA_TABLE_ENTRY.parse(raw, L.METADATA_TABLE_HEADER.size + k * L.METADATA_TABLE_ENTRY.size)
            g = _guid(e["item_id"])
            if g not in L.KNOWN_METADATA and e["flags"] & L.META_IS_REQUIRED:
                raise UnsupportedInput(f"{path}: VHDX requires unknown metadata {g}")
            if e["offset"] + e["length"] > length:
                raise CorruptInput(f"{path}: VHDX metadata item {g} lies outside its region")
            items[g] = raw[e["offset"]:e["offset"] + e["length"]]
        for need in (L.META_FILE_PARAMETERS, L.META_VIRTUAL_DISK_SIZE, L.META_LOGICAL_SECTOR_SIZE):
            if need not in items:
                raise CorruptInput(f"{path}: VHDX metadata lacks {need}")
        return items

    @classmethod
    def _open_fd(cls, path: str, fd: int, writable: bool, parent: Disk | None) -> "VhdxDisk":
        file_size = os.fstat(fd).st_size
        ident = read_exact(fd, 8, 0, "file identifier", path)
        if ident != L.FILE_ID_SIGNATURE:
            raise CorruptInput(f"{path}: not a VHDX: bad file identifier signature")
        hdr, slot = cls._read_header(fd, path)
        if hdr["version"] != 1:
            raise UnsupportedInput(f"{path}: VHDX version {hdr['version']} is not supported")
        if any(hdr["log_guid"]):
            # Someone crashed mid-update; replaying the log is not implemented.
            raise UnsupportedInput(f"{path}: the VHDX has a log to replay; open it once in Hyper-V or run "
                                   "`qemu-img check -r all` on it first")
        regions = cls._read_regions(fd, path)
        meta = cls._read_metadata(fd, path, *regions[L.METADATA_REGION])
        fp = L.FILE_PARAMETERS.parse(meta[L.META_FILE_PARAMETERS])
        size = int.from_bytes(meta[L.META_VIRTUAL_DISK_SIZE][:8], "little")
        lss = int.from_bytes(meta[L.META_LOGICAL_SECTOR_SIZE][:4], "little")
        pss = int.from_bytes(meta.get(L.META_PHYSICAL_SECTOR_SIZE, b"\0\x10\0\0")[:4], "little")
        bs = fp["block_size"]
        differencing = bool(fp["flags"] & L.FP_HAS_PARENT)
        if lss not in (512, 4096):
            raise UnsupportedInput(f"{path}: unsupported VHDX logical sector size {lss}")
        if bs & (bs - 1) or not MiB <= bs <= 256 * MiB:
            raise UnsupportedInput(f"{path}: unsupported VHDX block size {bs}")
        if size == 0 or size > geo.VHDX_MAX_SIZE or size % lss:
            raise CorruptInput(f"{path}: bad VHDX virtual size {size}")
        ratio = geo.vhdx_chunk_ratio(lss, bs)
        entries = geo.vhdx_bat_entries(size, bs, lss, differencing)
        bat_off, bat_len = regions[L.BAT_REGION]
        if bat_len < entries * 8:
            raise CorruptInput(f"{path}: VHDX BAT region holds {bat_len // 8} entries, {entries} needed")
        raw = read_exact(fd, entries * 8, bat_off, "BAT", path)
        bat = array.array("Q")
        bat.frombytes(raw)
        if sys.byteorder != "little":
            bat.byteswap()

        d = cls(path, fd, {
            "virtual_size": size, "sector_size": lss, "block_size": bs,
            "bitmap_mode": 2, "bitmap_bytes": bs // lss // 8, "chunk_ratio": ratio,
            "group_bytes": L.SECTOR_BITMAP_BLOCK, "alloc_align": MiB,
            "file_end": align_up(file_size, MiB),
        }, writable=writable)
        d.disk_type = "differencing" if differencing else ("dynamic" if not fp["flags"] & L.FP_LEAVE_BLOCKS_ALLOCATED else "fixed")
        d._hdr, d._hdr_slot, d._meta, d._bat_off = hdr, slot, meta, bat_off
        d._ratio, d._physical_sector_size = ratio, pss
        d._writes_seen = 0
        try:
            data_off, state = d._tables()
            group_off = d._group_table()
            n_blocks = -(-size // bs)
            for j in (i for i, v in enumerate(bat) if v):
                v = bat[j]
                st, off = v & L.BAT_STATE_MASK, (v >> L.BAT_OFFSET_SHIFT) << 20
                chunk, r = divmod(j, ratio + 1)
                if r == ratio:  # a sector bitmap entry
                    if st == L.SB_BLOCK_PRESENT:
                        if off + L.SECTOR_BITMAP_BLOCK > file_size:
                            raise CorruptInput(f"{path}: BAT entry {j} points past the end of the file")
                        if chunk < len(group_off):
                            group_off[chunk] = off
                    continue
                blk = chunk * ratio + r
                if blk >= n_blocks:
                    continue
                if st not in _STATE_IN:
                    raise CorruptInput(f"{path}: BAT entry {j} has an invalid state {st}")
                s = _STATE_IN[st]
                if s in (PRESENT, PARTIAL):
                    if off < L.BAT_OFFSET or off + bs > file_size:
                        raise CorruptInput(f"{path}: BAT entry {j} points past the end of the file "
                                           f"(offset {off}, file is {file_size} bytes)")
                    if s == PARTIAL and not differencing:
                        raise CorruptInput(f"{path}: partially present block {blk} in a disk with no parent")
                    data_off[blk] = off
                state[blk] = s
            if differencing:
                d._locator = _parse_parent_locator(meta[L.META_PARENT_LOCATOR], path) \
                    if L.META_PARENT_LOCATOR in meta else {}
                d.set_parent(parent if parent is not None else d._parent())
        except BaseException:
            d._free_native()
            raise
        return d

    def _group_table(self) -> "_GroupView":
        from wim2vhd._lib import lib
        return _GroupView(lib.w2v_group_off(self._h), lib.w2v_n_groups(self._h))

    # -- parent ----------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {"data_write_guid": str(_guid(self._hdr["data_write_guid"])).upper(),
                "disk_id": str(_guid(self._meta.get(L.META_VIRTUAL_DISK_ID, b"\0" * 16)))}

    def parent_paths(self) -> list[str]:
        here = os.path.dirname(os.path.abspath(self.path))
        out = []
        for key in ("relative_path", "absolute_win32_path", "volume_path"):
            v = self._locator.get(key)
            if not v:
                continue
            if key == "relative_path":
                out.append(os.path.normpath(os.path.join(here, v.replace("\\", "/"))))
            elif v.startswith("\\") and not v.startswith("\\\\"):
                out.append(v.replace("\\", "/"))
            out.append(os.path.join(here, v.replace("\\", "/").rsplit("/", 1)[-1]))
        return list(dict.fromkeys(out))

    def _parent(self) -> Disk:
        want = tuple(g for g in (self._locator.get(k, "").strip("{}").upper()
                                 for k in ("parent_linkage", "parent_linkage2")) if g)
        return self._find_parent("data_write_guid", want)

    # -- flush -----------------------------------------------------------------
    def _flush_metadata(self) -> None:
        data_off, state = self._tables()
        ratio = self._ratio
        entries = []
        for b in self._take_dirty():
            s = state[b]
            v = _STATE_OUT[s] | ((data_off[b] >> 20 << L.BAT_OFFSET_SHIFT) if s in (PRESENT, PARTIAL) else 0)
            entries.append((geo.vhdx_payload_entry(b, ratio), v))
        groups = self._group_table()
        for c in self._take_dirty(groups=True):
            entries.append((geo.vhdx_bitmap_entry(c, ratio), (groups[c] >> 20 << L.BAT_OFFSET_SHIFT) | L.SB_BLOCK_PRESENT))
        for j, v in entries:
            write_all(self.fd, v.to_bytes(8, "little"), self._bat_off + 8 * j)
        writes = self.stats()["writes"]
        if entries or writes != self._writes_seen:
            self._update_headers(data_changed=writes != self._writes_seen)
            self._writes_seen = writes

    def _update_headers(self, data_changed: bool) -> None:
        """Write both headers with new sequence numbers, the stale slot first (MS-VHDX 2.2.2.1)."""
        h = dict(self._hdr)
        h["file_write_guid"] = repro.uuid_for("vhdx-file-write").bytes_le
        if data_changed:
            h["data_write_guid"] = repro.uuid_for("vhdx-data-write").bytes_le
        for slot in (1 - self._hdr_slot, self._hdr_slot):
            h["sequence_number"] += 1
            write_all(self.fd, _with_crc(L.HEADER.pack(h)), L.HEADER_OFFSETS[slot])
            if not self._fresh:
                os.fdatasync(self.fd)  # an existing disk: each header durable before the next
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
