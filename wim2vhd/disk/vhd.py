"""VHD: fixed, dynamic and differencing disks (Microsoft's VHD Image Format Specification).

A fixed disk is the data followed by a 512-byte footer.  A dynamic disk is a
copy of the footer, a dynamic header, the BAT, then blocks (each a sector
bitmap and the block's data), then the footer.  A differencing disk is a
dynamic disk whose header names its parent; sectors whose bitmap bit is clear
come from the parent.
"""
from __future__ import annotations

import os
import struct
import uuid
from typing import Any

from wim2vhd import repro
from wim2vhd.disk import base
from wim2vhd.disk import geometry
from wim2vhd.disk.base import ABSENT, PARTIAL, PRESENT, Disk, read_exact, write_all
from wim2vhd.disk.vhd_parse import (check_footer, bat_problems, locator_problems, parent_candidates,
                                    read_dynamic_header)
from wim2vhd.disk.vhd_layout import (
    BAT_UNUSED, DYNAMIC_HEADER, DYNHDR_COOKIE, FOOTER, FOOTER_COOKIE, FORMAT_VERSION, HEADER_VERSION,
    NO_OFFSET, PARENT_LOCATOR, PLAT_W2KU, PLAT_W2RU, TYPE_DIFFERENCING, TYPE_DYNAMIC, TYPE_FIXED, TYPE_NAMES,
)
from wim2vhd.errors import CorruptInput, UnsupportedInput, UsageError
from wim2vhd.units import MiB

DEFAULT_BLOCK_SIZE = 2 * MiB
# What we write as the creator.  qemu's vpc driver decides between the CHS
# geometry and the footer's current size by the creator application: for
# "vpc " and "qemu" it believes CHS (which cannot express most sizes
# exactly), for "win " (Hyper-V) it uses current_size.  Hyper-V and Azure
# always use current_size.  "win " is the one value every reader takes as
# authoritative, so every reader sees exactly the size asked for.
CREATOR_APP = b"win "
CREATOR_VERSION = 0x000A0000
CREATOR_OS = b"Wi2k"
DATA_ALIGN = 4096  # block data starts on a 4 KiB boundary; its bitmap sits just before


def _pack_with_checksum(record, values: dict[str, Any]) -> bytes:
    raw = record.pack({**values, "checksum": 0})
    values["checksum"] = geometry.vhd_checksum(raw, record.offset_of("checksum"))
    return record.pack(values)


def _new_footer(size: int, disk_type: int, data_offset: int, unique_id: bytes, when: float) -> dict[str, Any]:
    cyl, heads, spt = geometry.vhd_chs(size // 512)
    return {
        "cookie": FOOTER_COOKIE,
        "features": 2,  # "reserved, must always be set"
        "format_version": FORMAT_VERSION,
        "data_offset": data_offset,
        "timestamp": geometry.vhd_timestamp(when),
        "creator_app": CREATOR_APP,
        "creator_version": CREATOR_VERSION,
        "creator_os": CREATOR_OS,
        "original_size": size,
        "current_size": size,
        "cylinders": cyl,
        "heads": heads,
        "sectors_per_track": spt,
        "disk_type": disk_type,
        "checksum": 0,
        "unique_id": unique_id,
        "saved_state": 0,
    }


def check_size(size: int) -> None:
    if size <= 0:
        raise UsageError("the disk size must be positive")
    if size > geometry.VHD_MAX_SIZE:
        raise UsageError(f"a VHD can be at most 2040 GiB ({geometry.VHD_MAX_SIZE} bytes); use .vhdx for larger disks")
    if size % MiB:
        # Azure accepts only fixed VHDs of a whole number of MiB; we hold every VHD to it.
        raise UsageError(f"a VHD's size must be a whole number of MiB (Azure requires it); {size} is not")


class VhdDisk(Disk):
    format_name = "vhd"
    extensions = (".vhd",)

    @classmethod
    def check(cls, path: str, fd: int):
        from wim2vhd.disk import vhd_check
        return vhd_check.check(path, fd)

    @classmethod
    def probe(cls, head: bytes, file_size: int) -> bool:
        # A dynamic VHD starts with a copy of the footer; a fixed one only ends with it.
        return head[:8] == FOOTER_COOKIE

    @classmethod
    def probe_tail(cls, tail: bytes) -> bool:
        return tail[-512:-504] == FOOTER_COOKIE or tail[-511:-503] == FOOTER_COOKIE

    # -- create ----------------------------------------------------------------
    @classmethod
    def create(cls, path: str, size: int, *, dynamic: bool = True, block_size: int | None = None,
               sector_size: int = 512, parent: Disk | None = None, unique_id: bytes | None = None,
               **options: Any) -> "VhdDisk":
        if sector_size != 512:
            raise UsageError("VHD supports only 512-byte sectors; use .vhdx for 4096")
        if parent is not None:
            size = parent.size
        check_size(size)
        block_size = block_size or DEFAULT_BLOCK_SIZE
        if block_size not in (512 * 1024, 2 * MiB) and dynamic:
            # The spec allows other powers of two, but Hyper-V and Virtual PC use 2 MiB (512 KiB in old VPC).
            if block_size & (block_size - 1) or not 512 * 1024 <= block_size <= 256 * MiB:
                raise UsageError(f"unsupported VHD block size {block_size}: use a power of two from 512K to 256M (default 2M)")
        uid = unique_id or repro.guid("vhd-unique-id")
        now = repro.unix_time()  # the footer's creation time stamp
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            if not dynamic and parent is None:
                footer = _pack_with_checksum(FOOTER, _new_footer(size, TYPE_FIXED, NO_OFFSET, uid, now))
                os.ftruncate(fd, size)
                write_all(fd, footer, size)
            else:
                cls._create_dynamic(fd, path, size, block_size, uid, now, parent)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        disk = cls.open(path, writable=True, _parent=parent)
        return disk

    @classmethod
    def _create_dynamic(cls, fd: int, path: str, size: int, block_size: int, uid: bytes, now: float,
                        parent: Disk | None) -> None:
        entries = -(-size // block_size)
        bat_off = 512 + 1024
        bat_bytes = -(-entries * 4 // 512) * 512
        end = bat_off + bat_bytes
        dtype = TYPE_DIFFERENCING if parent is not None else TYPE_DYNAMIC
        hdr: dict[str, Any] = {
            "cookie": DYNHDR_COOKIE,
            "data_offset": NO_OFFSET,
            "table_offset": bat_off,
            "header_version": HEADER_VERSION,
            "max_table_entries": entries,
            "block_size": block_size,
            "checksum": 0,
            "parent_unique_id": b"\0" * 16,
            "parent_timestamp": 0,
            "parent_unicode_name": b"",
            "parent_locators": b"",
        }
        locator_blobs: list[bytes] = []
        if parent is not None:
            pinfo = parent.identity()
            hdr["parent_unique_id"] = pinfo["unique_id"]
            hdr["parent_timestamp"] = pinfo["timestamp"]
            name = os.path.basename(parent.path)
            hdr["parent_unicode_name"] = name.encode("utf-16-be")[:512]
            rel = ".\\" + name
            # The absolute path: on Linux we only know the POSIX path.  Windows resolves W2ru
            # (relative, beside the child) first, so that is the one that matters there.
            absolute = os.path.abspath(parent.path).replace("/", "\\")
            locs = []
            for code, text in ((PLAT_W2RU, rel), (PLAT_W2KU, absolute)):
                blob = text.encode("utf-16-le")
                space = -(-len(blob) // 512) * 512
                locs.append(PARENT_LOCATOR.pack({
                    # Hyper-V stores the data space in bytes (the spec says sectors); readers use data_length.
                    "platform_code": code, "data_space": space, "data_length": len(blob),
                    "data_offset": end,
                }))
                locator_blobs.append((end, blob))
                end += space
            hdr["parent_locators"] = b"".join(locs)
        footer = _pack_with_checksum(FOOTER, _new_footer(size, dtype, 512, uid, now))
        os.ftruncate(fd, end)
        write_all(fd, footer, 0)
        write_all(fd, _pack_with_checksum(DYNAMIC_HEADER, hdr), 512)
        write_all(fd, b"\xff" * bat_bytes, bat_off)
        for off, blob in locator_blobs:
            write_all(fd, blob, off)
        write_all(fd, footer, end)

    # -- open ------------------------------------------------------------------
    @classmethod
    def _open_fd(cls, path: str, fd: int, writable: bool, parent: Disk | None) -> "VhdDisk":
        file_size = base.file_size(fd)
        if file_size < 512:
            raise CorruptInput(f"{path}: truncated file: {file_size} bytes is too small for a VHD")
        tail = read_exact(fd, 512, file_size - 512, "footer", path, file_size)
        head = read_exact(fd, 512, 0, "footer copy", path, file_size)
        if tail[:8] == FOOTER_COOKIE:
            footer = check_footer(tail, path, "at the end of the file")
        elif head[:8] == FOOTER_COOKIE:
            # A dynamic disk whose end footer is missing: truncated, or a crash mid-write.
            check_footer(head, path, "at the start of the file")
            raise CorruptInput(f"{path}: truncated file: the VHD footer at the end is missing")
        else:
            raise CorruptInput(f"{path}: not a VHD: no 'conectix' footer")
        size = footer["current_size"]
        dtype = footer["disk_type"]
        if dtype not in TYPE_NAMES:
            raise UnsupportedInput(f"{path}: unknown VHD disk type {dtype}")
        if size > geometry.VHD_MAX_SIZE:
            raise UnsupportedInput(f"{path}: VHD of {size} bytes is over the 2040 GiB limit")
        if size % 512:
            raise CorruptInput(f"{path}: VHD size {size} is not a multiple of 512")

        if dtype == TYPE_FIXED:
            if file_size - 512 < size:
                raise CorruptInput(f"{path}: truncated file: fixed VHD of {size} bytes in a {file_size}-byte file")
            d = cls(path, fd, {"virtual_size": size, "sector_size": 512, "flat_offset": 0}, writable=writable)
            d.disk_type = "fixed"
            d._footer, d._hdr = footer, None
            return d

        hdr = read_dynamic_header(fd, footer, path, file_size)
        bs = hdr["block_size"]
        entries = -(-size // bs)  # the entries in use: any more the table declares are never read
        bat_raw = read_exact(fd, entries * 4, hdr["table_offset"], "BAT", path, file_size)
        bat = struct.unpack(f">{entries}I", bat_raw)
        bitmap_bytes = geometry.vhd_bitmap_bytes(bs)
        problems = bat_problems(bat, hdr, footer, file_size)
        problems += [p for p, _ in locator_problems(fd, hdr, file_size) if p]
        if problems:
            raise CorruptInput(f"{path}: {problems[0]}")
        limit = file_size - 512  # where the footer is, and where the next block will go
        differencing = dtype == TYPE_DIFFERENCING
        d = cls(path, fd, {
            "virtual_size": size, "sector_size": 512, "block_size": bs,
            "bitmap_mode": 1, "bitmap_bytes": bitmap_bytes, "alloc_align": DATA_ALIGN,
            "file_end": limit, "trailer_at_end": 1, "fill_bitmap_on_alloc": 1,
        }, writable=writable)
        d.disk_type = TYPE_NAMES[dtype]
        d._footer, d._hdr = footer, hdr
        data_off, state = d._tables()
        for i, sec in enumerate(bat):
            if sec != BAT_UNUSED:
                data_off[i] = sec * 512 + bitmap_bytes
                # Blocks of a differencing disk are read sector by sector through their bitmaps.
                state[i] = PARTIAL if differencing else PRESENT
        return d

    # -- parent ----------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {"unique_id": self._footer["unique_id"], "timestamp": self._footer["timestamp"],
                "size": self.size}

    def parent_paths(self) -> list[str]:
        return parent_candidates(self.path, self.fd, self._hdr, base.file_size(self.fd))

    def parent_mismatch(self, parent: Disk) -> str | None:
        want = self._hdr["parent_unique_id"]
        got = parent.identity()
        if got.get("unique_id") != want:
            shown = uuid.UUID(bytes=got["unique_id"]) if got.get("unique_id") else None
            return f"has unique ID {shown}, expected {uuid.UUID(bytes=want)}"
        if parent.size != self.size:
            return f"is {parent.size} bytes, the child {self.size}"
        return None

    # -- flush -----------------------------------------------------------------
    def _flush_metadata(self) -> None:
        if self._hdr is None:
            return
        data_off, state = self._tables()
        bitmap_bytes = geometry.vhd_bitmap_bytes(self.block_size)
        table = self._hdr["table_offset"]
        for i in self._take_dirty():
            entry = BAT_UNUSED if state[i] == ABSENT else (data_off[i] - bitmap_bytes) // 512
            write_all(self.fd, struct.pack(">I", entry), table + 4 * i)
        # The footer follows the last block; the native layer cut it off if it appended blocks.
        end = self._file_end()
        write_all(self.fd, _pack_with_checksum(FOOTER, dict(self._footer)), end)
        self._set_trailer()

    def _info(self) -> dict[str, Any]:
        f = self._footer
        out = {
            "unique_id": str(uuid.UUID(bytes=f["unique_id"])),
            "creator": f["creator_app"].decode("latin-1"),
            "chs": [f["cylinders"], f["heads"], f["sectors_per_track"]],
        }
        if self._hdr is not None and self.disk_type == "differencing":
            out["parent_id"] = str(uuid.UUID(bytes=self._hdr["parent_unique_id"]))
            out["parent_locators"] = self.parent_paths()
        return out
