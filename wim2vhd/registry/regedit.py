"""Registry files as regedit writes them (.reg), parsed into operations on offline hives.

    rf = regedit.load("tweaks.reg")         # InputError "tweaks.reg:12: ..." if it does not parse
    for op in rf.ops: ...                    # CreateKey, SetValue, DeleteValue, DeleteKey, in file order
    regedit.locate(op.key)                   # -> Location("SYSTEM", r"CurrentControlSet\\Control", ...)

The format (regedit's export format; there is no formal spec, this follows what regedit writes and reads):

    Windows Registry Editor Version 5.00     (or REGEDIT4, whose strings are ANSI)

    [HKEY_LOCAL_MACHINE\\SOFTWARE\\Vendor]     a key, created if missing
    [-HKEY_LOCAL_MACHINE\\SOFTWARE\\Old]       a key deleted with everything below it
    "Name"="text with \\\\ and \\" escaped"      REG_SZ
    @="default value"                         the key's default (unnamed) value
    "Count"=dword:0000002a                    REG_DWORD, up to 8 hex digits
    "Blob"=hex:de,ad,be,ef                    REG_BINARY
    "Path"=hex(2):25,00,53,00,00,00           REG_EXPAND_SZ (UTF-16LE bytes), hex(7) MULTI_SZ, hex(b) QWORD,
                                              hex(N) any type N
    "Gone"=-                                  a value deleted
    ; a comment

Hex data may go on over several lines, each but the last ending in a backslash.  Files come as UTF-16LE with
a BOM (what regedit writes), UTF-8 (with or without a BOM) or ASCII.  Which hive a key lives in is
:func:`locate`'s business; parsing checks it already, so a file with a key that has no hive fails up front.
"""
from __future__ import annotations

import codecs
import os
import re
import stat
import struct
from dataclasses import dataclass
from typing import Iterator, Union

from wim2vhd.errors import CorruptInput, InputError, UnsupportedInput

HEADER_V5 = "Windows Registry Editor Version 5.00"
HEADER_V4 = "REGEDIT4"

REG_NONE, REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ, REG_QWORD = 0, 1, 2, 3, 4, 7, 11


# -- operations ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CreateKey:
    key: str
    line: int


@dataclass(frozen=True, slots=True)
class DeleteKey:
    key: str
    line: int


@dataclass(frozen=True, slots=True)
class SetValue:
    key: str
    name: str  # "" for the default value
    type: int
    data: bytes
    line: int


@dataclass(frozen=True, slots=True)
class DeleteValue:
    key: str
    name: str
    line: int


Op = Union[CreateKey, DeleteKey, SetValue, DeleteValue]


@dataclass(frozen=True)
class RegFile:
    path: str
    ops: tuple[Op, ...]


# -- where keys live ---------------------------------------------------------------------------------------
ROOTS = {
    "HKEY_LOCAL_MACHINE": "HKEY_LOCAL_MACHINE", "HKLM": "HKEY_LOCAL_MACHINE",
    "HKEY_USERS": "HKEY_USERS", "HKU": "HKEY_USERS",
    "HKEY_CLASSES_ROOT": "HKEY_CLASSES_ROOT", "HKCR": "HKEY_CLASSES_ROOT",
    "HKEY_CURRENT_USER": "HKEY_CURRENT_USER", "HKCU": "HKEY_CURRENT_USER",
    "HKEY_CURRENT_CONFIG": "HKEY_CURRENT_CONFIG", "HKCC": "HKEY_CURRENT_CONFIG",
}

# (root, first component) -> (hive, key path prefix inside the hive)
HIVES = {
    ("HKEY_LOCAL_MACHINE", "SYSTEM"): ("SYSTEM", ""),
    ("HKEY_LOCAL_MACHINE", "SOFTWARE"): ("SOFTWARE", ""),
    ("HKEY_USERS", ".DEFAULT"): ("DEFAULT", ""),
}
# Each hive's file in the volume.  Offline there is no current user: HKEY_CURRENT_USER goes to the
# default profile's hive, which Windows copies for every user who signs in for the first time (what
# `reg load HKU\x C:\Users\Default\NTUSER.DAT` edits on a live system).
HIVE_FILES = {
    "SYSTEM": "Windows\\System32\\config\\SYSTEM",
    "SOFTWARE": "Windows\\System32\\config\\SOFTWARE",
    "DEFAULT": "Windows\\System32\\config\\DEFAULT",
    "NTUSER": "Users\\Default\\NTUSER.DAT",
}
SUPPORTED = (r"HKEY_LOCAL_MACHINE\SYSTEM, HKEY_LOCAL_MACHINE\SOFTWARE, HKEY_USERS\.DEFAULT, HKEY_CLASSES_ROOT "
             r"or HKEY_CURRENT_USER (the default user profile)")

# Windows' registry element size limits ("Registry Element Size Limits" in the Win32 documentation): a key name
# (each component of a path) up to 255 characters, a value name up to 16,383, a tree up to 512 levels deep.
# Windows' own tools refuse more, so an image given more would hold keys nothing there can open.
MAX_KEY_NAME = 255
MAX_VALUE_NAME = 16383
MAX_DEPTH = 512
# A .reg file is read whole: a tweak file is a few KiB, a full export of SOFTWARE about 300 MiB in UTF-16.
MAX_FILE = 512 << 20

# The control set a running Windows shows as CurrentControlSet: offline it does not exist (Windows links it at
# boot), so it is resolved through SYSTEM\Select\Current.
CURRENT_CONTROL_SET = "CurrentControlSet"


@dataclass(frozen=True)
class Location:
    hive: str          # a key of HIVE_FILES: "SYSTEM", "SOFTWARE", "DEFAULT" or "NTUSER"
    path: str          # key path inside the hive, "" for its root; CurrentControlSet not yet resolved
    current_control_set: bool  # path starts with CurrentControlSet (to be resolved through Select\Current)


def split_key(key: str) -> list[str]:
    return [p for p in key.split("\\") if p]


def locate(key: str) -> Location:
    """The hive and the key path inside it for a full key name; InputError for a key without a hive (a .reg
    file that names one is a bad input: UnsupportedInput for a real hive the image has no file for)."""
    parts = split_key(key)
    root = ROOTS.get(parts[0].upper()) if parts else None
    if root is None:
        raise CorruptInput(f"key {key!r} has no known root: keys start with HKEY_LOCAL_MACHINE, HKEY_USERS, "
                           f"HKEY_CLASSES_ROOT, HKEY_CURRENT_USER or HKEY_CURRENT_CONFIG (or HKLM, HKU, HKCR, "
                           f"HKCU, HKCC)")
    if root == "HKEY_CLASSES_ROOT":
        # HKCR is a merged view; machine-wide classes, the only ones offline, live in HKLM\SOFTWARE\Classes.
        return Location("SOFTWARE", "\\".join(["Classes", *parts[1:]]), False)
    if root == "HKEY_CURRENT_USER":
        return Location("NTUSER", "\\".join(parts[1:]), False)
    hive = HIVES.get((root, parts[1].upper())) if root and len(parts) > 1 else None
    if hive is None:
        raise UnsupportedInput(f"key {key!r} is in no hive of the image: keys must be under {SUPPORTED}")
    rest = parts[2:]
    ccs = hive[0] == "SYSTEM" and bool(rest) and rest[0].lower() == CURRENT_CONTROL_SET.lower()
    return Location(hive[0], "\\".join(rest), ccs)


# -- parsing ------------------------------------------------------------------------------------------------
class _Syntax(Exception):
    pass


def decode(data: bytes) -> str:
    """The text of a .reg file, whatever its encoding (decoded from a view: no copy of the bytes)."""
    view = memoryview(data)
    if data.startswith(codecs.BOM_UTF16_LE):
        text = str(view[2:], "utf-16-le")
    elif data.startswith(codecs.BOM_UTF16_BE):
        text = str(view[2:], "utf-16-be")
    elif data.startswith(codecs.BOM_UTF8):
        text = str(view[3:], "utf-8")
    elif len(data) >= 4 and data[1] == 0 and data[3] == 0 and data[0] != 0:
        text = str(view, "utf-16-le")  # UTF-16 without its BOM
    else:
        try:
            text = str(view, "utf-8")
        except UnicodeDecodeError:
            text = str(view, "cp1252", "replace")  # REGEDIT4 files are in the ANSI code page
    return text


_BREAK = re.compile(r"\r\n|\n|\r")  # not str.splitlines: names may hold U+2028 and the like


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the text, one at a time (a list of every line would be a second copy of
    the file, and more); a final line break ends the last line, as it does in regedit."""
    start = n = 0
    for m in _BREAK.finditer(text):
        n += 1
        yield n, text[start:m.start()]
        start = m.end()
    if start < len(text):
        yield n + 1, text[start:]


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_TYPED = re.compile(r"^hex\(([0-9a-fA-F]{1,8})\):(.*)$", re.IGNORECASE | re.DOTALL)


def _quoted(s: str, pos: int) -> tuple[str, int]:
    """The "..." string starting at s[pos] (a quote), unescaped, and the position after it."""
    out = []
    i = pos + 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s):
                break
            n = s[i + 1]
            if n not in "\\\"":
                raise _Syntax(f"unknown escape {chr(92) + n!r} in a string (write \\\\ for a backslash, \\\" for a quote)")
            out.append(n)
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise _Syntax("a string has no closing quote")


def _hex_bytes(text: str) -> bytes:
    """Bytes like "de,ad, be,ef," (a final comma allowed), in one pass over the text."""
    if not text.strip():
        return b""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 1 and not parts[-1]:
        parts.pop()  # one final comma
    for p in parts:
        if not (0 < len(p) <= 2 and p[0] in _HEX_DIGITS and p[-1] in _HEX_DIGITS):
            raise _Syntax(f"bad hex data {text.strip()[:40]!r}: expected bytes like de,ad,be,ef")
    return bytes(int(p, 16) for p in parts)


def _ansi_to_utf16(t: int, data: bytes) -> bytes:
    # REGEDIT4 writes string-like hex types in the ANSI code page; regedit converts them on import.
    if t in (REG_SZ, REG_EXPAND_SZ, REG_MULTI_SZ):
        return data.decode("cp1252", "replace").encode("utf-16-le")
    return data


def _value(data: str, ansi: bool) -> tuple[int, bytes] | None:
    """(type, bytes) of a value's data, or None for "-" (delete)."""
    d = data.strip()
    if d == "-":
        return None
    if d.startswith('"'):
        text, end = _quoted(d, 0)
        if d[end:].strip():
            raise _Syntax(f"unexpected {d[end:].strip()[:20]!r} after a string")
        return REG_SZ, (text + "\0").encode("utf-16-le")
    low = d.lower()
    if low.startswith("dword:"):
        digits = d[6:].strip()
        if not re.fullmatch(r"[0-9a-fA-F]{1,8}", digits):
            raise _Syntax(f"bad dword {digits!r}: expected up to 8 hex digits, e.g. dword:0000002a")
        return REG_DWORD, struct.pack("<I", int(digits, 16))
    if low.startswith("hex:"):
        return REG_BINARY, _hex_bytes(d[4:])
    m = _TYPED.match(d)
    if m:
        t = int(m.group(1), 16)
        raw = _hex_bytes(m.group(2))
        if t in (REG_EXPAND_SZ, REG_MULTI_SZ) and not ansi and len(raw) % 2:
            # Version 5 files hold these as UTF-16LE: an odd count of bytes is half a character.
            raise _Syntax(f"hex({t:x}) data has {len(raw)} bytes: a UTF-16 string has an even number")
        return t, _ansi_to_utf16(t, raw) if ansi else raw
    raise _Syntax(f"unknown value data {d[:30]!r}: expected \"text\", dword:, hex:, hex(N): or -")


def _check_key(parts: list[str]) -> None:
    for p in parts:
        if len(p) > MAX_KEY_NAME:
            raise _Syntax(f"key name {p[:40]!r}... has {len(p)} characters: Windows allows at most {MAX_KEY_NAME}")
    if len(parts) - 1 > MAX_DEPTH:
        raise _Syntax(f"a key {len(parts) - 1} levels deep: Windows allows at most {MAX_DEPTH}")


def parse(data: bytes, path: str = "<reg>") -> RegFile:
    """Parse a .reg file; InputError naming the line for anything that does not parse or that names a key
    in no hive of an image."""
    try:
        text = decode(data)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a .reg file: {e.reason} in its text") from None
    del data  # (the caller's buffer: load passes its only reference)
    lines = _lines(text)
    ops: list[Op] = []
    # the header: the first line that is not blank
    lineno, head = 0, ""
    for lineno, line in lines:
        if line.strip():
            head = line.strip()
            break
    else:
        lineno += 1
    if head not in (HEADER_V5, HEADER_V4):
        raise InputError(f"{path}:{lineno}: not a .reg file: the first line must be {HEADER_V5!r} (or {HEADER_V4!r})")
    ansi = head == HEADER_V4
    key: str | None = None
    deleted = False
    for lineno, line in lines:
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        try:
            if line.startswith("["):
                if not line.endswith("]"):
                    raise _Syntax("a key line must end with ]")
                name = line[1:-1].strip()
                deleted = name.startswith("-")
                if deleted:
                    name = name[1:].strip()
                parts = split_key(name)
                if not parts:
                    raise _Syntax("empty key name")
                _check_key(parts)
                key = "\\".join(parts)
                loc = locate(key)
                if deleted:
                    if not loc.path:
                        raise UnsupportedInput(f"cannot delete {key!r}: it is the root of the {loc.hive} hive")
                    ops.append(DeleteKey(key, lineno))
                else:
                    ops.append(CreateKey(key, lineno))
                continue
            # a value: "name"=data or @=data
            if line.startswith("@"):
                vname, rest = "", line[1:]
            elif line.startswith('"'):
                vname, end = _quoted(line, 0)
                rest = line[end:]
                if len(vname) > MAX_VALUE_NAME:
                    raise _Syntax(f"a value name of {len(vname)} characters: Windows allows at most {MAX_VALUE_NAME}")
            else:
                raise _Syntax(f"unexpected {line[:30]!r}: expected [KEY], \"name\"=data, @=data or ; comment")
            rest = rest.lstrip()
            if not rest.startswith("="):
                raise _Syntax("expected = after the value name")
            rest = rest[1:].strip()
            # hex data continues on the next lines while a line ends with a backslash
            if rest[:3].lower() == "hex" and rest.endswith("\\"):
                pieces = [rest[:-1]]  # joined once at the end: appending to a string copies it every line
                while True:
                    nxt = next(lines, None)
                    if nxt is None:
                        raise _Syntax("the file ends inside continued hex data")
                    more = nxt[1].strip()
                    if not more.endswith("\\"):
                        pieces.append(more)
                        break
                    pieces.append(more[:-1])
                rest = "".join(pieces)
            value = _value(rest, ansi)
            if key is None:
                raise _Syntax("a value before any [KEY] line")
            if deleted:
                continue  # regedit ignores values under a key being deleted
            if value is None:
                ops.append(DeleteValue(key, vname, lineno))
            else:
                ops.append(SetValue(key, vname, value[0], value[1], lineno))
        except _Syntax as e:
            raise CorruptInput(f"{path}:{lineno}: {e}") from None
        except InputError as e:
            raise type(e)(f"{path}:{lineno}: {e.message}", hint=e.hint) from None
    return RegFile(path, tuple(ops))


def load(path: str | os.PathLike) -> RegFile:
    """Read and parse a .reg file: a regular file of at most MAX_FILE bytes, read no further than its size
    (a device such as /dev/zero or a FIFO would be read until memory runs out, or block)."""
    p = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (fstat then refuses it); no effect on files.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"--reg-import {p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"--reg-import {p}: is a directory, not a .reg file") from None
    except OSError as e:
        raise InputError(f"--reg-import {p}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"--reg-import {p}: is a directory, not a .reg file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"--reg-import {p}: not a regular file (a device, FIFO or socket): give a .reg file")
        if st.st_size > MAX_FILE:
            raise InputError(f"--reg-import {p}: {st.st_size} bytes, more than a .reg file of {MAX_FILE >> 20} MiB, "
                             f"the most wim2vhd reads: split it")
        chunks, left = [], st.st_size
        while left > 0:  # no further than the size it had when opened, should it grow meanwhile
            b = os.read(fd, min(left, 1 << 20))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        box = [b"".join(chunks)]
        del chunks
    except OSError as e:
        raise InputError(f"--reg-import {p}: {e.strerror}") from None
    finally:
        os.close(fd)
    return parse(box.pop(), p)  # parse holds the only reference to the bytes, and drops them once decoded


# -- writing (for tests and for users who want to see what will be imported) -------------------------------
def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _hex(data: bytes) -> str:
    return ",".join(f"{b:02x}" for b in data)


def format_value(op: SetValue) -> str:
    name = "@" if op.name == "" else f'"{_escape(op.name)}"'
    if op.type == REG_SZ and len(op.data) % 2 == 0 and op.data.endswith(b"\0\0"):
        text = op.data[:-2].decode("utf-16-le", "surrogatepass")
        if "\0" not in text and "\n" not in text and "\r" not in text:
            return f'{name}="{_escape(text)}"'
    if op.type == REG_DWORD and len(op.data) == 4:
        return f"{name}=dword:{struct.unpack('<I', op.data)[0]:08x}"
    if op.type == REG_BINARY:
        return f"{name}=hex:{_hex(op.data)}"
    return f"{name}=hex({op.type:x}):{_hex(op.data)}"


def dumps(ops: list[Op] | tuple[Op, ...]) -> str:
    """Regedit version 5 text for a list of operations (values follow their key's line)."""
    out = [HEADER_V5, ""]
    current = None
    for op in ops:
        if isinstance(op, DeleteKey):
            out += ["", f"[-{op.key}]"]
            current = None
        elif isinstance(op, CreateKey) or op.key != current:
            out += ["", f"[{op.key}]"]
            current = op.key
        if isinstance(op, SetValue):
            out.append(format_value(op))
        elif isinstance(op, DeleteValue):
            out.append(("@" if op.name == "" else f'"{_escape(op.name)}"') + "=-")
    return "\r\n".join(out) + "\r\n"
