"""Virtual disks: raw, VHD, VHDX and qcow2 behind one interface (see base.Disk).

    disk = create_disk("out.vhdx", 64 << 30, dynamic=True)   # format by extension
    disk = open_disk("in.vhd")                                 # format by content
"""
from __future__ import annotations

import os
import sys
from typing import Any

from wim2vhd.disk.base import Disk, file_size, open_input
from wim2vhd.disk.qcow2 import Qcow2Disk
from wim2vhd.disk.raw import RawDisk
from wim2vhd.disk.vhd import VhdDisk
from wim2vhd.disk.vhdx import VhdxDisk
from wim2vhd.errors import CorruptInput, OutputExists, UsageError

FORMATS: tuple[type[Disk], ...] = (VhdxDisk, VhdDisk, Qcow2Disk, RawDisk)  # probe order: raw accepts anything


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


def detect(head: bytes, size: int, tail: bytes) -> type[Disk] | None:
    """The format whose signature the file's first and last 512 bytes hold, or None (raw, or damaged)."""
    if VhdxDisk.probe(head, size):
        return VhdxDisk
    if Qcow2Disk.probe(head, size):
        return Qcow2Disk
    if VhdDisk.probe(head, size) or VhdDisk.probe_tail(tail):
        return VhdDisk
    return None


def ends(fd: int) -> tuple[bytes, int, bytes]:
    """(first 512 bytes, size, last 512 bytes) of the file open on fd."""
    size = file_size(fd)
    return os.pread(fd, 512, 0), size, os.pread(fd, 512, size - 512) if size >= 512 else b""


def probe(path: str) -> type[Disk]:
    """The format of an existing file, by its content."""
    fd = open_input(path)  # refuses a FIFO or a socket before reading can block
    try:
        head, size, tail = ends(fd)
    finally:
        os.close(fd)
    found = detect(head, size, tail)
    if found is not None:
        return found
    ext = os.path.splitext(path)[1].lower()
    signature = {".vhd": "conectix", ".vhdx": "vhdxfile", ".qcow2": "QFI\\xfb"}
    if ext in signature:
        # Named like a virtual disk but not one: say so rather than treat it as raw.
        name = "qcow2" if ext == ".qcow2" else ext[1:].upper()
        raise CorruptInput(f"{path}: not a {name} file (no {signature[ext]} signature)")
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


# The drivers reach the registry through Disk.formats (a parent may be of any format; they cannot
# import this module, which imports them).
Disk.formats = sys.modules[__name__]

__all__ = ["Disk", "RawDisk", "VhdDisk", "VhdxDisk", "Qcow2Disk", "FORMATS", "create_disk", "open_disk", "probe",
           "format_for_path", "format_by_name"]
