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
# The names -f/--format takes (any case), as qemu-img's -f names them (but vhd, not vpc).
FORMAT_NAMES = ("raw", "vhd", "vhdx", "qcow2")


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
                     f"the formats are {known_formats()}",
                     hint=f"or name one with -f/--format {'|'.join(FORMAT_NAMES)}")


def format_by_name(name: str) -> type[Disk]:
    for f in FORMATS:
        if f.format_name == name:
            return f
    raise UsageError(f"unknown disk format {name!r}: the formats are {known_formats()}")


def named_format(name: str, flag: str = "-f/--format") -> type[Disk]:
    """The format a user named (raw, vhd, vhdx, qcow2, any case)."""
    key = str(name).strip().lower()
    for f in FORMATS:
        if f.format_name == key:
            return f
    raise UsageError(f"{flag} must be one of {', '.join(FORMAT_NAMES)}, not {name!r}")


def output_format(path: str, name: str | None = None, flag: str = "-f/--format") -> type[Disk]:
    """The format of a disk to write: the one named (-f/--format), which wins over the extension, else
    the extension's."""
    return named_format(name, flag) if name is not None else format_for_path(path)


def _shown(fmt: type[Disk]) -> str:
    return fmt.format_name if fmt.format_name in ("raw", "qcow2") else fmt.format_name.upper()


def check_named(path: str, fmt: type[Disk], found: type[Disk] | None, flag: str = "-f") -> None:
    """Refuse a file read as fmt (-f/--format) whose content is another format's (found; None: no
    signature).  raw takes any file as its bytes, as qemu-img -f raw does."""
    if fmt is RawDisk or found is fmt:
        return
    what = f"a {_shown(found)} disk" if found is not None else "a raw image (no disk signature)"
    hint = f"give {flag} {found.format_name if found is not None else 'raw'} or leave out {flag}"
    raise CorruptInput(f"{path} is not a {_shown(fmt)} file: it looks like {what} ({hint})")


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


def probe(path: str, fmt: type[Disk] | None = None, flag: str = "-f") -> type[Disk]:
    """The format of an existing file, by its content; with fmt (-f/--format), fmt, once the content
    is found to be no other format's."""
    fd = open_input(path)  # refuses a FIFO or a socket before reading can block
    try:
        head, size, tail = ends(fd)
    finally:
        os.close(fd)
    found = detect(head, size, tail)
    if fmt is not None:
        check_named(path, fmt, found, flag)
        return fmt
    if found is not None:
        return found
    ext = os.path.splitext(path)[1].lower()
    signature = {".vhd": "conectix", ".vhdx": "vhdxfile", ".qcow2": "QFI\\xfb"}
    if ext in signature:
        # Named like a virtual disk but not one: say so rather than treat it as raw.
        name = "qcow2" if ext == ".qcow2" else ext[1:].upper()
        raise CorruptInput(f"{path}: not a {name} file (no {signature[ext]} signature)")
    return RawDisk


def open_disk(path: str, *, writable: bool = False, format: str | None = None, flag: str = "-f/--format") -> Disk:
    """The disk at path, its format by its content; format (-f/--format, any case): read as that
    format, and refused (CorruptInput) when the content is another's."""
    fmt = named_format(format, flag) if format is not None else None
    return probe(path, fmt, flag.split("/")[0]).open(path, writable=writable)


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
           "format_for_path", "format_by_name", "named_format", "output_format", "FORMAT_NAMES"]
