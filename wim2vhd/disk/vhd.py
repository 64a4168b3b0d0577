"""VHD: fixed, dynamic and differencing disks (Microsoft's VHD Image Format Specification).

A fixed disk is the data followed by a 512-byte footer.  A dynamic disk is a
copy of the footer, a dynamic header, the BAT, then blocks (each a sector
bitmap and the block's data), then the footer.  A differencing disk is a
dynamic disk whose header names its parent; sectors whose bitmap bit is clear
come from the parent.
"""
from __future__ import annotations

import ntpath
import os
import struct
import uuid
from typing import Any

from wim2vhd import repro
from wim2vhd.disk import base
from wim2vhd.disk import geometry
from wim2vhd.disk.base import ABSENT, PARTIAL, PRESENT, Disk, read_exact, write_all
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


def _check_footer(raw: bytes, path: str, where: str) -> dict[str, Any]:
    f = FOOTER.parse(raw)
    if f["cookie"] != FOOTER_COOKIE:
        raise CorruptInput(f"{path}: not a VHD: bad footer cookie {where}")
    want = geometry.vhd_checksum(raw, FOOTER.offset_of("checksum"))
    if f["checksum"] != want:
        raise CorruptInput(f"{path}: VHD footer checksum mismatch {where} (stored {f['checksum']:#010x}, computed {want:#010x})")
    return f


def read_dynamic_header(fd: int, footer: dict[str, Any], path: str, file_size: int) -> dict[str, Any]:
    """The dynamic header the footer points to, its cookie, checksum and block size checked."""
    hraw = read_exact(fd, 1024, footer["data_offset"], "dynamic header", path, file_size)
    hdr = DYNAMIC_HEADER.parse(hraw)
    if hdr["cookie"] != DYNHDR_COOKIE:
        raise CorruptInput(f"{path}: bad VHD dynamic header cookie")
    want = geometry.vhd_checksum(hraw, DYNAMIC_HEADER.offset_of("checksum"))
    if hdr["checksum"] != want:
        raise CorruptInput(f"{path}: VHD dynamic header checksum mismatch")
    bs = hdr["block_size"]
    if bs < 512 * 1024 or bs & (bs - 1) or bs > 256 * MiB:
        raise UnsupportedInput(f"{path}: unsupported VHD block size {bs}")
    if hdr["max_table_entries"] < -(-footer["current_size"] // bs):
        raise CorruptInput(f"{path}: VHD BAT has {hdr['max_table_entries']} entries, "
                           f"too few for {footer['current_size']} bytes")
    return hdr


def fixed_ranges(hdr: dict[str, Any], footer: dict[str, Any], file_size: int) -> list[tuple[int, int, str]]:
    """Where a dynamic VHD's own structures are in the file: no block may point into them."""
    entries = -(-footer["current_size"] // hdr["block_size"])
    out = [(0, 512, "the footer copy"), (footer["data_offset"], footer["data_offset"] + 1024, "the dynamic header"),
           (hdr["table_offset"], hdr["table_offset"] + -(-entries * 4 // 512) * 512, "the BAT"),
           (file_size - 512, file_size, "the footer")]
    for k in range(8):
        loc = PARENT_LOCATOR.parse(hdr["parent_locators"], k * PARENT_LOCATOR.size)
        off, n = loc["data_offset"], loc["data_length"]
        if loc["platform_code"] != b"\0" * 4 and n and off + n <= file_size:
            out.append((off, off + n, f"the parent locator {k + 1}"))
    return out


def bat_problems(bat: tuple[int, ...], hdr: dict[str, Any], footer: dict[str, Any], file_size: int) -> list[str]:
    """What is wrong with the BAT's entries: past the end of the file, into the headers, BAT or
    locators, or into each other (two blocks that share bytes would corrupt each other's data)."""
    bs = hdr["block_size"]
    span = geometry.vhd_bitmap_bytes(bs) + bs
    limit = file_size - 512
    out, blocks = [], []
    for i, sec in enumerate(bat):
        if sec == BAT_UNUSED:
            continue
        start = sec * 512
        if start + span > limit:
            out.append(f"BAT entry {i} points past the end of the file (sector {sec}; the block would end at "
                       f"{start + span}, the data at {limit})")
        else:
            blocks.append((start, start + span, f"BAT entry {i}"))
    return out + base.overlaps(fixed_ranges(hdr, footer, file_size) + blocks)


MAX_LOCATOR_BYTES = 64 * 1024  # a path; Windows' longest is 32767 UTF-16 code units


def locator_problems(fd: int, hdr: dict[str, Any], file_size: int) -> list[tuple[str | None, Any]]:
    """Each of the 8 parent locators of a header: (problem, None) or (None, (platform code, text)),
    every offset and length checked against the file before it is read."""
    out: list[tuple[str | None, Any]] = []
    for k in range(8):
        loc = PARENT_LOCATOR.parse(hdr["parent_locators"], k * PARENT_LOCATOR.size)
        code, off, n = loc["platform_code"], loc["data_offset"], loc["data_length"]
        if code == b"\0" * 4 or not n:
            continue
        if code not in (PLAT_W2RU, PLAT_W2KU, b"Wi2r", b"Wi2k", b"Mac ", b"MacX"):
            out.append((f"parent locator {k + 1} has an unknown platform code {code!r}", None))
            continue
        if n > MAX_LOCATOR_BYTES or off > file_size or n > file_size - off:
            out.append((f"parent locator {k + 1} at offset {off} ({n} bytes) is past the end of the file", None))
            continue
        if code in (PLAT_W2RU, PLAT_W2KU):
            text = os.pread(fd, n, off).decode("utf-16-le", "replace").rstrip("\0")
            out.append((None, (code, text)))
    return out


def parent_candidates(path: str, fd: int, hdr: dict[str, Any], file_size: int) -> list[str]:
    """Where the parent may be, most likely first (relative locator, absolute, name beside us)."""
    out = []
    here = os.path.dirname(os.path.abspath(path))
    for _, found in locator_problems(fd, hdr, file_size):
        if found is None:
            continue
        code, text = found
        if code == PLAT_W2RU:
            out.insert(0, os.path.normpath(os.path.join(here, text.replace("\\", "/"))))
        else:
            out.append(text.replace("\\", "/") if text.startswith("\\") or text[1:2] != ":" else text)
            out.append(os.path.join(here, ntpath.basename(text)))
    name = hdr["parent_unicode_name"].decode("utf-16-be", "replace").rstrip("\0")
    if name:
        out.append(os.path.join(here, ntpath.basename(name)))
    return list(dict.fromkeys(out))


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
            footer = _check_footer(tail, path, "at the end of the file")
        elif head[:8] == FOOTER_COOKIE:
            # A dynamic disk whose end footer is missing: truncated, or a crash mid-write.
            _check_footer(head, path, "at the start of the file")
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
