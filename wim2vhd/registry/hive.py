"""A small Pythonic layer over hivex: open a registry hive, walk and edit it, commit it.

    with Hive.open(path) as h:                     # read-only (mmap)
        for key in h.root.children(): ...
        v = h.root.get_key(r"Description").value("KeyName")
    h = Hive.open(path, write=True)                # edits happen in memory
    k = h.root.add_child("Objects")
    k.set_value(Value.dword("Type", 0x10100002))
    h.commit(new_path)                             # writes the whole hive

Every hivex failure (NULL or -1 with errno) becomes a wim2vhd error in one
place, :func:`_raise`.  hivex cannot create a hive; :meth:`Hive.new` opens a
fresh one made by :func:`wim2vhd.registry.regf.empty_hive`.
"""
from __future__ import annotations

import enum
import errno as _errno
import os
import struct
import tempfile
from dataclasses import dataclass
from typing import Iterator

from wim2vhd import repro
from wim2vhd._lib import ffi, lib
from wim2vhd.registry.regf import BASE_BLOCK, empty_hive
from wim2vhd.errors import CorruptInput, EnvironmentFault, InputError, InternalError, OutputError, from_errno


class RegType(enum.IntEnum):
    NONE = 0
    SZ = 1
    EXPAND_SZ = 2
    BINARY = 3
    DWORD = 4
    DWORD_BIG_ENDIAN = 5
    LINK = 6
    MULTI_SZ = 7
    RESOURCE_LIST = 8
    FULL_RESOURCE_DESCRIPTOR = 9
    RESOURCE_REQUIREMENTS_LIST = 10
    QWORD = 11


def _regtype(t: int) -> RegType | int:
    try:
        return RegType(t)
    except ValueError:
        return t


@dataclass(frozen=True)
class Value:
    """One registry value: its name, type and raw data, exactly as stored."""

    name: str
    type: int
    data: bytes

    # -- constructors ---------------------------------------------------------
    @classmethod
    def sz(cls, name: str, text: str) -> "Value":
        return cls(name, RegType.SZ, encode_sz(text))

    @classmethod
    def multi_sz(cls, name: str, items: list[str]) -> "Value":
        return cls(name, RegType.MULTI_SZ, encode_multi_sz(items))

    @classmethod
    def dword(cls, name: str, n: int) -> "Value":
        return cls(name, RegType.DWORD, struct.pack("<I", n))

    @classmethod
    def binary(cls, name: str, data: bytes) -> "Value":
        return cls(name, RegType.BINARY, bytes(data))

    # -- readers (the data is input: CorruptInput when it does not fit the type) -------
    def as_str(self) -> str:
        return decode_sz(self.data)

    def as_multi_sz(self) -> list[str]:
        return decode_multi_sz(self.data)

    def as_dword(self) -> int:
        if len(self.data) != 4:
            raise CorruptInput(f"value {self.name!r}: {len(self.data)} bytes, a DWORD has 4")
        return struct.unpack("<I", self.data)[0]


def encode_sz(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\0\0"


def _utf16(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-16-le")
    except UnicodeDecodeError:  # a lone surrogate
        raise CorruptInput(f"not {what}: bad UTF-16") from None


def decode_sz(data: bytes) -> str:
    if len(data) % 2 or not data.endswith(b"\0\0"):
        raise CorruptInput("not a NUL-terminated UTF-16 string")
    return _utf16(data[:-2], "a REG_SZ")


def encode_multi_sz(items: list[str]) -> bytes:
    return b"".join(encode_sz(s) for s in items) + b"\0\0"


def decode_multi_sz(data: bytes) -> list[str]:
    if len(data) % 2 or not data.endswith(b"\0\0"):
        raise CorruptInput("not a REG_MULTI_SZ")
    text = _utf16(data[:-2], "a REG_MULTI_SZ")
    if text == "":
        return []
    if not text.endswith("\0"):
        raise CorruptInput("not a REG_MULTI_SZ")
    return text[:-1].split("\0")


# -- the one place hivex errors are translated --------------------------------
def _raise(what: str, path: str | None = None, err: int | None = None) -> None:
    code = ffi.errno if err is None else err
    if path is not None and what == "open":
        if code in (_errno.ENOENT, _errno.EACCES, _errno.EPERM, _errno.EISDIR):
            raise from_errno(code, path)
        if code in (_errno.ENOTSUP, _errno.EINVAL, _errno.EFAULT, _errno.ERANGE, _errno.ELOOP, 0):
            try:
                with open(path, "rb") as f:
                    magic = f.read(4)
            except OSError:
                magic = b""
            if magic != b"regf":
                raise CorruptInput(f"{path} is not a registry hive")
            # hivex says EINVAL for a short file or a bad header checksum,
            # ENOTSUP for a bad version, hbin or cell; its own text goes nowhere.
            reason = {_errno.EINVAL: "too short, or a bad header checksum",
                      _errno.ENOTSUP: "bad version, hbin or cell"}.get(code, "unreadable structure")
            raise CorruptInput(f"{path} is a damaged registry hive ({reason})",
                               hint="restore it from a backup")
        raise from_errno(code or _errno.EIO, path)
    name = path or "the registry hive"
    if code in _DAMAGE:
        raise CorruptInput(f"{name} is a damaged registry hive ({_DAMAGE[code]}, found while {what})",
                           hint="restore it from a backup")
    if code == _errno.EROFS:
        raise InternalError(f"{name} was opened read-only: cannot {what}")
    if code == _errno.ENOMEM:
        raise EnvironmentFault(f"out of memory while {what} in {name}")
    raise EnvironmentFault(f"hivex failed while {what} in {name}: {os.strerror(code) if code else 'unknown error'}")


# What hivex's errno means when it walks a damaged hive.
_DAMAGE = {
    _errno.EFAULT: "a cell points outside the hive",
    _errno.ERANGE: "a length is out of range",
    _errno.ENOTSUP: "a cell of an unknown kind",
    _errno.EINVAL: "an inconsistent cell",
    _errno.ELOOP: "a loop in the key tree",
}


def _check_not_truncated(path: str) -> None:
    """hivex reads a hive cut at an hbin boundary without complaint; Windows
    does not, so neither do we: the base block says how long the hbins are."""
    try:
        with open(path, "rb") as f:
            head = f.read(BASE_BLOCK.size)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return  # hivex_open reports it
    if len(head) < BASE_BLOCK.size or head[:4] != b"regf":
        return
    hbins = BASE_BLOCK.parse(head)["hbins_size"]
    if size < BASE_BLOCK.size + hbins:
        raise CorruptInput(f"{path} is a damaged registry hive (truncated: {size} bytes, "
                           f"its header says {BASE_BLOCK.size + hbins})", hint="restore it from a backup")


def _take_str(p) -> str:
    try:
        return ffi.string(p).decode("utf-8", "surrogateescape")
    finally:
        lib.free(p)


class Key:
    """A key (node) of an open hive."""

    __slots__ = ("hive", "node")

    def __init__(self, hive: "Hive", node: int):
        self.hive = hive
        self.node = node

    def __eq__(self, other) -> bool:
        return isinstance(other, Key) and other.hive is self.hive and other.node == self.node

    def __hash__(self) -> int:
        return hash((id(self.hive), self.node))

    def __repr__(self) -> str:
        return f"<Key {self.name!r}>"

    @property
    def _h(self):
        return self.hive._handle()

    @property
    def name(self) -> str:
        ffi.errno = 0
        p = lib.hivex_node_name(self._h, self.node)
        if p == ffi.NULL:
            _raise("reading a key name", self.hive.path)
        return _take_str(p)

    @property
    def timestamp(self) -> int:
        """The key's last write time as a Windows FILETIME."""
        ffi.errno = 0
        t = lib.hivex_node_timestamp(self._h, self.node)
        if t < 0:
            _raise("reading a key timestamp", self.hive.path)
        return t

    # -- children -------------------------------------------------------------
    def children(self) -> list["Key"]:
        ffi.errno = 0
        arr = lib.hivex_node_children(self._h, self.node)
        if arr == ffi.NULL:
            _raise("listing subkeys", self.hive.path)
        try:
            out = []
            i = 0
            while arr[i] != 0:
                out.append(Key(self.hive, arr[i]))
                i += 1
            return out
        finally:
            lib.free(arr)

    def __iter__(self) -> Iterator["Key"]:
        return iter(self.children())

    def child(self, name: str) -> "Key | None":
        """The subkey called `name` (case-insensitive), or None."""
        ffi.errno = 0
        n = lib.hivex_node_get_child(self._h, self.node, name.encode("utf-8"))
        if n == 0:
            if ffi.errno:
                _raise(f"looking up key {name!r}", self.hive.path)
            return None
        return Key(self.hive, n)

    def get_key(self, path: str) -> "Key | None":
        """The key at a backslash-separated path below this one, or None."""
        k: Key | None = self
        for part in [p for p in path.split("\\") if p]:
            k = k.child(part)
            if k is None:
                return None
        return k

    def add_child(self, name: str) -> "Key":
        self.hive._require_writable()
        if self.child(name) is not None:
            raise InternalError(f"key {name!r} already exists under {self.name!r}")
        ffi.errno = 0
        n = lib.hivex_node_add_child(self._h, self.node, name.encode("utf-8"))
        if n == 0:
            _raise(f"adding key {name!r}", self.hive.path)
        return Key(self.hive, n)

    def ensure_child(self, name: str) -> "Key":
        return self.child(name) or self.add_child(name)

    def delete(self) -> None:
        """Delete this key, its values and its subkeys.  The handle becomes invalid."""
        self.hive._require_writable()
        ffi.errno = 0
        if lib.hivex_node_delete_child(self._h, self.node) == -1:
            _raise("deleting a key", self.hive.path)

    # -- values ---------------------------------------------------------------
    def _value_at(self, vh: int) -> Value:
        h = self._h
        ffi.errno = 0
        kp = lib.hivex_value_key(h, vh)
        if kp == ffi.NULL:
            _raise("reading a value name", self.hive.path)
        name = _take_str(kp)
        t = ffi.new("hive_type *")
        ln = ffi.new("size_t *")
        ffi.errno = 0
        p = lib.hivex_value_value(h, vh, t, ln)
        if p == ffi.NULL:
            _raise(f"reading value {name!r}", self.hive.path)
        try:
            data = bytes(ffi.buffer(p, ln[0]))
        finally:
            lib.free(p)
        return Value(name, _regtype(int(t[0])), data)

    def values(self) -> list[Value]:
        ffi.errno = 0
        arr = lib.hivex_node_values(self._h, self.node)
        if arr == ffi.NULL:
            _raise("listing values", self.hive.path)
        try:
            handles = []
            i = 0
            while arr[i] != 0:
                handles.append(arr[i])
                i += 1
        finally:
            lib.free(arr)
        return [self._value_at(v) for v in handles]

    def value(self, name: str) -> Value | None:
        """The value called `name` (case-insensitive; "" is the default value), or None."""
        ffi.errno = 0
        vh = lib.hivex_node_get_value(self._h, self.node, name.encode("utf-8"))
        if vh == 0:
            if ffi.errno:
                _raise(f"looking up value {name!r}", self.hive.path)
            return None
        return self._value_at(vh)

    def set_value(self, value: Value) -> None:
        """Add `value`, or replace the value of the same name."""
        self.hive._require_writable()
        key = ffi.new("char[]", value.name.encode("utf-8"))
        data = ffi.new("char[]", value.data) if value.data else ffi.NULL
        sv = ffi.new("hive_set_value *")
        sv.key = key
        sv.t = int(value.type)
        sv.len = len(value.data)
        sv.value = data
        ffi.errno = 0
        if lib.hivex_node_set_value(self._h, self.node, sv, 0) == -1:
            _raise(f"setting value {value.name!r}", self.hive.path)

    def set_values(self, values: list[Value]) -> None:
        """Replace all values of this key by `values`."""
        self.hive._require_writable()
        keep = []
        arr = ffi.new("hive_set_value[]", max(1, len(values)))
        for i, v in enumerate(values):
            k = ffi.new("char[]", v.name.encode("utf-8"))
            d = ffi.new("char[]", v.data) if v.data else ffi.NULL
            keep += [k, d]
            arr[i].key = k
            arr[i].t = int(v.type)
            arr[i].len = len(v.data)
            arr[i].value = d
        ffi.errno = 0
        if lib.hivex_node_set_values(self._h, self.node, len(values), arr, 0) == -1:
            _raise("setting values", self.hive.path)

    def delete_value(self, name: str) -> bool:
        """Remove the value called `name`; True if there was one."""
        vals = self.values()
        rest = [v for v in vals if v.name.lower() != name.lower()]
        if len(rest) == len(vals):
            return False
        self.set_values(rest)
        return True


class Hive:
    """An open registry hive.  Use as a context manager, or call close()."""

    def __init__(self, handle, path: str | None, writable: bool):
        self._h = handle
        self.path = path
        self.writable = writable

    @classmethod
    def open(cls, path: str | os.PathLike, *, write: bool = False) -> "Hive":
        """Open an existing hive.  With write=True the whole file is read into
        memory; nothing reaches the disk before :meth:`commit`."""
        path = os.fspath(path)
        if os.path.isdir(path):
            raise InputError(f"{path} is a directory, not a registry hive")
        _check_not_truncated(path)
        flags = lib.HIVEX_OPEN_WRITE if write else 0
        ffi.errno = 0
        h = lib.hivex_open(path.encode("utf-8", "surrogateescape"), flags)
        if h == ffi.NULL:
            _raise("open", path)
        return cls(h, path, write)

    @classmethod
    def new(cls, root_name: str = "NewStoreRoot") -> "Hive":
        """A new, empty, writable hive held in memory (see regf.empty_hive)."""
        now = filetime_now()
        fd, tmp = tempfile.mkstemp(prefix="wim2vhd-hive-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(empty_hive(root_name, now))
            hive = cls.open(tmp, write=True)  # hivex reads it all and closes the file
        finally:
            os.unlink(tmp)
        hive.path = None
        return hive

    def _handle(self):
        if self._h is None:
            raise InternalError("registry hive used after close()")
        return self._h

    def _require_writable(self) -> None:
        if not self.writable:
            raise InternalError(f"registry hive {self.path or ''} was opened read-only")

    @property
    def root(self) -> Key:
        ffi.errno = 0
        n = lib.hivex_root(self._handle())
        if n == 0:
            _raise("finding the root key", self.path)
        return Key(self, n)

    def get_key(self, path: str) -> Key | None:
        return self.root.get_key(path)

    def commit(self, path: str | os.PathLike) -> None:
        """Write the whole hive to `path` (created or truncated).  No fsync: see
        wim2vhd.boot.store for the atomic replace of a user's file."""
        self._require_writable()
        p = os.fspath(path)
        ffi.errno = 0
        if lib.hivex_commit(self._handle(), p.encode("utf-8", "surrogateescape"), 0) == -1:
            err = ffi.errno
            if err in (_errno.ENOSPC, _errno.EDQUOT, _errno.EFBIG):
                raise from_errno(err, p, output=True, host=True)
            raise OutputError(f"cannot write {p}: {os.strerror(err) if err else 'hivex_commit failed'}")

    def close(self) -> None:
        if self._h is not None:
            h, self._h = self._h, None
            lib.hivex_close(h)

    def __enter__(self) -> "Hive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def filetime_now() -> int:
    """Now as a Windows FILETIME (100 ns ticks since 1601-01-01 UTC); the pinned time in a reproducible run."""
    return repro.filetime()
