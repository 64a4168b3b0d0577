"""Virtual disks: raw, VHD and VHDX behind one interface (see base.Disk).

    disk = create_disk("out.vhdx", 64 << 30, dynamic=True)   # format by extension
    disk = open_disk("in.vhd")                                 # format by content
"""
from __future__ import annotations

import os
from typing import Any

from wim2vhd.disk.base import Disk, file_size, open_input
from wim2vhd.disk.raw import RawDisk
from wim2vhd.disk.vhd import VhdDisk
from wim2vhd.disk.vhdx import VhdxDisk
from wim2vhd.errors import CorruptInput, OutputExists, UsageError

FORMATS: tuple[type[Disk], ...] = (VhdxDisk, VhdDisk, RawDisk)  # probe order: raw accepts anything


def known_formats() -> str:
    """The formats and their extensions, for messages: "vhdx (.vhdx), vhd (.vhd), raw (.img, .raw, .bin)"."""
    return ", ".join(f"{f.format_name} ({', '.join(f.extensions)})" for f in FORMATS)


def format_for_path(path: str) -> type[Disk]:
    ext = os.path.splitext(path)[1].lower()
    for f in FORMATS:
        if ext in f.extensions:
            return f
    what = f"extension {ext!r}" if ext else "no extension"
    raise UsageError(f"cannot tell the disk format of {path!r} from its name ({what}): "
                     f"the formats are {known_formats()}")


def format_by_name(name: str) -> type[Disk]:
    for f in FORMATS:
        if f.format_name == name:
            return f
    raise UsageError(f"unknown disk format {name!r}: the formats are {known_formats()}")


def probe(path: str) -> type[Disk]:
    """The format of an existing file, by its content."""
    fd = open_input(path)  # refuses a FIFO or a socket before reading can block
    try:
        size = file_size(fd)
        head = os.pread(fd, 512, 0)
        tail = os.pread(fd, 512, size - 512) if size >= 512 else b""
    finally:
        os.close(fd)
    if VhdxDisk.probe(head, size):
        return VhdxDisk
    if VhdDisk.probe(head, size) or VhdDisk.probe_tail(tail):
        return VhdDisk
    ext = os.path.splitext(path)[1].lower()
    if ext in (".vhd", ".vhdx"):
        # Named like a virtual disk but not one: say so rather than treat it as raw.
        raise CorruptInput(f"{path}: not a {ext[1:].upper()} file (no {'vhdxfile' if ext == '.vhdx' else 'conectix'} signature)")
    return RawDisk


def open_disk(path: str, *, writable: bool = False) -> Disk:
    return probe(path).open(path, writable=writable)


def create_disk(path: str, size: int, *, fmt: type[Disk] | None = None, force: bool = False, **options: Any) -> Disk:
    """Create a disk at path (its format from the extension unless fmt is given)."""
    fmt = fmt or format_for_path(path)
    if os.path.lexists(path):
        if not force:
            raise OutputExists(f"{path} exists: use --force to replace it")
        os.unlink(path)
    return fmt.create(path, size, **options)


__all__ = ["Disk", "RawDisk", "VhdDisk", "VhdxDisk", "FORMATS", "create_disk", "open_disk", "probe",
           "format_for_path", "format_by_name"]
