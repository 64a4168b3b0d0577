"""Symbolic link and junction reparse buffers ([MS-FSCC] 2.1.2.4 symbolic link, 2.1.2.5 mount point)."""
from __future__ import annotations

import dataclasses
import re
import struct

from wim2vhd import errors

IO_REPARSE_TAG_MOUNT_POINT = 0xA0000003  # junction
IO_REPARSE_TAG_SYMLINK = 0xA000000C
SYMLINK_FLAG_RELATIVE = 0x1

REPARSE_HEADER = struct.Struct("<IHH")      # tag, data length, reserved
LINK_NAMES = struct.Struct("<HHHH")         # substitute offset/length, print offset/length


def _nt_path(target: str) -> str:
    # Windows keeps absolute targets as NT object paths: C:\x -> \??\C:\x.
    return target if target.startswith("\\??\\") else "\\??\\" + target


def symlink_reparse(target: str, *, relative: bool | None = None, print_name: str | None = None) -> bytes:
    """The reparse buffer of a symbolic link to ``target`` (e.g. ``C:\\Data`` or ``..\\x``)."""
    target = target.replace("/", "\\")
    if relative is None:
        relative = not re.match(r"^(?:[A-Za-z]:\\|\\\\|\\\?\?\\)", target)
    sub = target if relative else _nt_path(target)
    prn = print_name if print_name is not None else (target if relative else sub[4:])
    s, p = sub.encode("utf-16-le"), prn.encode("utf-16-le")
    # Windows' mklink puts the print name first; both without terminators.
    body = LINK_NAMES.pack(len(p), len(s), 0, len(p)) + struct.pack("<I", SYMLINK_FLAG_RELATIVE if relative else 0) + p + s
    return REPARSE_HEADER.pack(IO_REPARSE_TAG_SYMLINK, len(body), 0) + body


def junction_reparse(target: str, *, print_name: str | None = None) -> bytes:
    """The reparse buffer of a junction (mount point) to the absolute ``target``."""
    target = target.replace("/", "\\")
    if not re.match(r"^(?:[A-Za-z]:\\|\\\?\?\\)", target):
        raise errors.UsageError(f"invalid junction target {target!r}: must be absolute, e.g. C:\\Users\\Public")
    sub = _nt_path(target)
    prn = print_name if print_name is not None else sub[4:]
    s, p = sub.encode("utf-16-le"), prn.encode("utf-16-le")
    # Each name is NUL-terminated in the buffer (lengths exclude it), as Windows writes them.
    body = LINK_NAMES.pack(0, len(s), len(s) + 2, len(p)) + s + b"\0\0" + p + b"\0\0"
    return REPARSE_HEADER.pack(IO_REPARSE_TAG_MOUNT_POINT, len(body), 0) + body


@dataclasses.dataclass(frozen=True)
class ReparseLink:
    tag: int
    substitute_name: str
    print_name: str
    relative: bool


def parse_link_reparse(data: bytes) -> ReparseLink:
    """The names in a symlink or junction reparse buffer."""
    if len(data) < REPARSE_HEADER.size + LINK_NAMES.size:
        raise errors.CorruptInput("reparse buffer too short")
    tag, length, _ = REPARSE_HEADER.unpack_from(data)
    so, sl, po, pl = LINK_NAMES.unpack_from(data, REPARSE_HEADER.size)
    base = REPARSE_HEADER.size + LINK_NAMES.size
    flags = 0
    if tag == IO_REPARSE_TAG_SYMLINK:
        (flags,) = struct.unpack_from("<I", data, base)
        base += 4
    elif tag != IO_REPARSE_TAG_MOUNT_POINT:
        raise errors.UnsupportedInput(f"reparse tag {tag:#x} is not a symlink or junction")
    name = lambda o, n: data[base + o:base + o + n].decode("utf-16-le")  # noqa: E731
    return ReparseLink(tag, name(so, sl), name(po, pl), bool(flags & SYMLINK_FLAG_RELATIVE))
