"""Reading a VHD's structures, each offset and length checked against the file: the footer, the
dynamic header, the BAT's entries and the parent locators (shared by the driver, vhd.py, and by
`disk check`, vhd_check.py)."""
from __future__ import annotations

import ntpath
import os
from typing import Any

from wim2vhd.disk import base, geometry
from wim2vhd.disk.base import read_exact
from wim2vhd.disk.vhd_layout import (BAT_UNUSED, DYNAMIC_HEADER, DYNHDR_COOKIE, FOOTER, FOOTER_COOKIE,
                                     PARENT_LOCATOR, PLAT_W2KU, PLAT_W2RU)
from wim2vhd.errors import CorruptInput, UnsupportedInput
from wim2vhd.units import MiB


def check_footer(raw: bytes, path: str, where: str) -> dict[str, Any]:
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
