"""Files inside an NTFS volume, through libntfs-3g, with no mount (see wim2vhd.ntfs).

Every libntfs-3g failure becomes a :mod:`wim2vhd.errors` exception in :func:`_raise_for`, carrying
libntfs-3g's own words (its log is captured by the native layer and never printed).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import errno as _errno
import os
from typing import BinaryIO, Iterator, Sequence, Union

from wim2vhd import errors
from wim2vhd.ntfs.reparse import junction_reparse, symlink_reparse

# -- constants from the Windows SDK (winnt.h) -----------------------------------


class FileAttr(enum.IntFlag):
    READONLY = 0x1
    HIDDEN = 0x2
    SYSTEM = 0x4
    DIRECTORY = 0x10
    ARCHIVE = 0x20
    NORMAL = 0x80
    TEMPORARY = 0x100
    SPARSE_FILE = 0x200
    REPARSE_POINT = 0x400
    COMPRESSED = 0x800
    OFFLINE = 0x1000
    NOT_CONTENT_INDEXED = 0x2000
    ENCRYPTED = 0x4000


# NT FILETIME epoch, and the Unix epoch in FILETIME ticks.
FILETIME_UNIX_EPOCH = 116444736000000000
_EPOCH_1601 = _dt.datetime(1601, 1, 1, tzinfo=_dt.timezone.utc)

Time = Union[int, _dt.datetime]


def to_filetime(t: Time) -> int:
    """A datetime (naive = UTC) or an int FILETIME, as an int FILETIME."""
    if isinstance(t, int):
        if t < 0:
            raise errors.UsageError(f"invalid NT time {t}: must not be negative")
        return t
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    delta = t - _EPOCH_1601
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def from_filetime(ft: int) -> _dt.datetime:
    return _EPOCH_1601 + _dt.timedelta(microseconds=ft // 10)


# -- the volume -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NtfsStat:
    mft_no: int
    is_dir: bool
    size: int
    alloc_size: int
    attributes: FileAttr
    nlink: int
    reparse_tag: int
    security_id: int
    n_streams: int
    creation_time: int
    write_time: int
    access_time: int
    change_time: int


def _lib():
    from wim2vhd._lib import ffi, lib

    return ffi, lib


def _detail() -> str:
    """What libntfs-3g logged during the last native call, on one line."""
    ffi, lib = _lib()
    text = ffi.string(lib.w2v_ntfsvol_last_error()).decode("utf-8", "replace").strip()
    return text.splitlines()[0][:300] if text else ""


def _raise_for(rc: int, what: str, *, invalid: type[errors.Wim2VhdError] | None = None) -> None:
    """The one place a libntfs-3g failure (-errno) becomes our error.

    ``invalid``: the error class for EINVAL when it means "a bad value was
    passed" (a descriptor, a DOS name) rather than "the volume is damaged".
    """
    if rc >= 0:
        return
    code, detail = -rc, _detail()
    if code == _errno.EEXIST:
        e: errors.Wim2VhdError = errors.OutputExists(f"{what}: {os.strerror(code)}")
    elif code == _errno.EROFS:
        e = errors.UsageError(f"{what}: the NTFS volume is open read-only")
        detail = ""
    elif code == _errno.EINVAL and invalid is not None:
        e = invalid(f"{what}: {os.strerror(code)}")
    else:
        e = errors.from_errno(code, what)
    msg = e.message
    if detail and detail.lower() not in msg.lower():
        msg = f"{msg} (libntfs-3g: {detail})"
    raise type(e)(msg, hint=e.hint)


def _s(text: str | None) -> bytes:
    return (text or "").encode("utf-8")


def _norm(path: str) -> str:
    """For messages: the path as Windows shows it."""
    p = path.replace("/", "\\")
    return p if p.startswith("\\") else "\\" + p


class NtfsVolume:
    """An NTFS volume opened for file access.  Use as a context manager."""

    CHUNK = 4 << 20

    def __init__(self, device: str | os.PathLike, readonly: bool = False):
        ffi, lib = _lib()
        self.device = os.fspath(device)
        self.readonly = readonly
        handle = lib.w2v_ntfsvol_mount(_s(self.device), lib.W2V_NTFSVOL_READONLY if readonly else 0)
        if handle == ffi.NULL:
            self._mount_failed(ffi.errno or _errno.EIO)
        self._h = handle
        from wim2vhd.ntfs.window import window_named
        self._window = window_named(self.device)
        if self._window is not None:
            self._window.volumes += 1

    def _mount_failed(self, code: int) -> None:
        detail = _detail()
        why = f" (libntfs-3g: {detail})" if detail else ""
        if code == _errno.ENOENT:
            raise errors.InputError(f"cannot open NTFS volume {self.device}: no such file")
        if code == _errno.EINVAL:
            raise errors.CorruptInput(f"{self.device} is not an NTFS volume, or it is damaged{why}",
                                      hint="check it with ntfsfix -n")
        if code in (_errno.EPERM, _errno.EBUSY) and not self.readonly:
            raise errors.InputError(f"NTFS volume {self.device} cannot be opened for writing{why}",
                                    hint="it may be hibernated or have an unclean journal: shut Windows down "
                                         "fully (no Fast Startup), or run ntfsfix")
        _raise_for(-code, f"cannot open NTFS volume {self.device}")

    # context management
    def __enter__(self) -> "NtfsVolume":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except errors.Wim2VhdError:
                pass  # the first error is the one to report

    def close(self) -> None:
        """Unmount, writing all changes back."""
        h, self._h = getattr(self, "_h", None), None
        if h is None:
            return
        _, lib = _lib()
        try:
            _raise_for(lib.w2v_ntfsvol_umount(h), f"cannot close NTFS volume {self.device}")
        finally:
            if self._window is not None:
                self._window.volumes -= 1

    def __del__(self):  # pragma: no cover - a safety net only
        try:
            self.close()
        except Exception:
            pass

    @property
    def _handle(self):
        if self._h is None:
            raise errors.InternalError("NTFS volume used after close")
        return self._h

    # -- information
    def stat(self, path: str) -> NtfsStat:
        ffi, lib = _lib()
        info = ffi.new("struct w2v_ntfs_info *")
        _raise_for(lib.w2v_ntfsvol_stat(self._handle, _s(path), info), f"cannot stat {_norm(path)} on {self.device}")
        return NtfsStat(
            mft_no=info.mft_no, is_dir=bool(info.is_dir), size=info.size, alloc_size=info.alloc_size,
            attributes=FileAttr(info.attributes), nlink=info.nlink, reparse_tag=info.reparse_tag,
            security_id=info.security_id, n_streams=info.n_streams,
            creation_time=info.creation_time, write_time=info.write_time,
            access_time=info.access_time, change_time=info.change_time,
        )

    def exists(self, path: str) -> bool:
        ffi, lib = _lib()
        info = ffi.new("struct w2v_ntfs_info *")
        rc = lib.w2v_ntfsvol_stat(self._handle, _s(path), info)
        if rc in (-_errno.ENOENT, -_errno.ENOTDIR):
            return False
        _raise_for(rc, f"cannot stat {_norm(path)} on {self.device}")
        return True

    def is_dir(self, path: str) -> bool:
        return self.exists(path) and self.stat(path).is_dir

    def _list(self, fn, path: str, *args) -> list[tuple[str, str]]:
        ffi, lib = _lib()
        out = ffi.new("char **")
        n = ffi.new("size_t *")
        _raise_for(fn(self._handle, _s(path), *args, out, n), f"cannot list {_norm(path)} on {self.device}")
        try:
            raw = bytes(ffi.buffer(out[0], n[0])) if n[0] else b""
        finally:
            lib.w2v_ntfsvol_free(out[0])
        return [(rec[:1].decode(), rec[1:].decode("utf-8", "surrogateescape"))
                for rec in raw.split(b"\0")[:-1]]

    def scandir(self, path: str = "", *, system: bool = False) -> list[tuple[str, str]]:
        """[(name, kind)] with kind 'd' (directory), 'f' (file) or 'l' (reparse point)."""
        _, lib = _lib()
        return self._list(lib.w2v_ntfsvol_list, path, lib.W2V_NTFSVOL_LIST_SYSTEM if system else 0)

    def listdir(self, path: str = "", *, system: bool = False) -> list[str]:
        """The names in a directory (long names; NTFS metafiles only with system=True)."""
        return [name for _, name in self.scandir(path, system=system)]

    def streams(self, path: str) -> list[str]:
        """The names of a file's named data streams."""
        _, lib = _lib()
        return [name for _, name in self._list(lib.w2v_ntfsvol_list_streams, path)]

    def walk(self, top: str = "") -> Iterator[tuple[str, list[str], list[str]]]:
        """Like os.walk, top-down, with '\\'-joined paths."""
        dirs, files = [], []
        for kind, name in self.scandir(top):
            (dirs if kind == "d" else files).append(name)
        yield top, dirs, files
        for d in dirs:
            yield from self.walk(f"{top}\\{d}" if top else d)

    # -- directories
    def mkdir(self, path: str, *, parents: bool = False, exist_ok: bool = False) -> None:
        _, lib = _lib()
        rc = lib.w2v_ntfsvol_mkdir(self._handle, _s(path), 1 if parents else 0)
        if rc == -_errno.EEXIST and exist_ok and self.is_dir(path):
            return
        _raise_for(rc, f"cannot create directory {_norm(path)} on {self.device}")

    # -- data
    def write_file(self, path: str, data: bytes | bytearray | memoryview | BinaryIO = b"", *,
                   stream: str | None = None, attributes: int | None = None,
                   security_descriptor: bytes | None = None, short_name: str | None = None,
                   times: Sequence[Time | None] | None = None) -> int:
        """Create or replace a file (or one of its named streams) with ``data``.

        Optionally sets its attributes, security descriptor, DOS name and
        times (creation, write, access, change; None keeps one) afterwards.
        Returns the number of bytes written.
        """
        ffi, lib = _lib()
        what = f"cannot write {_norm(path)}{':' + stream if stream else ''} on {self.device}"
        h, sp = self._handle, _s(stream) if stream else ffi.NULL
        if isinstance(data, (bytes, bytearray, memoryview)):
            buf = ffi.from_buffer(data)
            _raise_for(lib.w2v_ntfsvol_write(h, _s(path), sp, buf, len(buf), 0, lib.W2V_NTFSVOL_TRUNCATE), what)
            total = len(buf)
        else:
            total = 0
            while True:
                chunk = data.read(self.CHUNK)
                if not chunk and total:
                    break
                flags = lib.W2V_NTFSVOL_TRUNCATE if total == 0 else lib.W2V_NTFSVOL_NOCREATE
                _raise_for(lib.w2v_ntfsvol_write(h, _s(path), sp, ffi.from_buffer(chunk), len(chunk), total, flags), what)
                total += len(chunk)
                if not chunk:
                    break
        if security_descriptor is not None:
            self.set_security(path, security_descriptor)
        if attributes is not None:
            self.set_attributes(path, attributes)
        if short_name is not None:
            self.set_short_name(path, short_name)
        if times is not None:
            self.set_times(path, *times)
        return total

    def write_stream(self, path: str, name: str, data: bytes) -> int:
        """Create or replace the named data stream ``path:name`` (an ADS)."""
        if not name:
            raise errors.UsageError("a named stream needs a name")
        return self.write_file(path, data, stream=name)

    def file_size(self, path: str, stream: str | None = None) -> int:
        ffi, lib = _lib()
        n = lib.w2v_ntfsvol_stream_size(self._handle, _s(path), _s(stream) if stream else ffi.NULL)
        _raise_for(n, f"cannot read {_norm(path)} on {self.device}")
        return n

    def read_file(self, path: str, stream: str | None = None, *, offset: int = 0, length: int | None = None) -> bytes:
        """A file's (or named stream's) contents, whole or a slice."""
        ffi, lib = _lib()
        size = self.file_size(path, stream)
        want = max(0, size - offset) if length is None else max(0, min(length, size - offset))
        buf = ffi.new("char[]", max(want, 1))
        n = lib.w2v_ntfsvol_read(self._handle, _s(path), _s(stream) if stream else ffi.NULL, buf, want, offset)
        _raise_for(n, f"cannot read {_norm(path)} on {self.device}")
        return bytes(ffi.buffer(buf, n))

    def copy_out(self, path: str, fileobj: BinaryIO, stream: str | None = None) -> int:
        """Stream a file's contents into ``fileobj``, in chunks."""
        size, done = self.file_size(path, stream), 0
        while done < size:
            chunk = self.read_file(path, stream, offset=done, length=self.CHUNK)
            if not chunk:
                break
            fileobj.write(chunk)
            done += len(chunk)
        return done

    def copy_in(self, src: str | os.PathLike, dest: str) -> int:
        """Copy a host file or directory tree into the volume at ``dest``
        (merging into directories that exist, replacing files).  Host
        symlinks are followed.  Returns the number of files written."""
        src = os.fspath(src)
        if not os.path.isdir(src):
            try:
                with open(src, "rb") as f:
                    self.write_file(dest, f)
            except OSError as e:
                raise errors.from_oserror(e) from None
            return 1
        count = 0
        self.mkdir(dest, parents=True, exist_ok=True)
        for name in sorted(os.listdir(src)):
            count += self.copy_in(os.path.join(src, name), f"{dest}\\{name}" if dest.strip("\\/") else name)
        return count

    def remove_stream(self, path: str, name: str) -> None:
        _, lib = _lib()
        _raise_for(lib.w2v_ntfsvol_remove_stream(self._handle, _s(path), _s(name)),
                   f"cannot remove stream {_norm(path)}:{name} on {self.device}")

    # -- metadata
    def get_attributes(self, path: str) -> FileAttr:
        ffi, lib = _lib()
        out = ffi.new("uint32_t *")
        _raise_for(lib.w2v_ntfsvol_get_attributes(self._handle, _s(path), out),
                   f"cannot read attributes of {_norm(path)} on {self.device}")
        return FileAttr(out[0])

    def set_attributes(self, path: str, attributes: int) -> None:
        """Set the settable FILE_ATTRIBUTE_* flags (read-only, hidden, system,
        archive, ...); DIRECTORY and REPARSE_POINT follow the file itself."""
        _, lib = _lib()
        _raise_for(lib.w2v_ntfsvol_set_attributes(self._handle, _s(path), int(attributes)),
                   f"cannot set attributes of {_norm(path)} on {self.device}", invalid=errors.UsageError)

    def get_security(self, path: str) -> bytes:
        ffi, lib = _lib()
        what = f"cannot read the security descriptor of {_norm(path)} on {self.device}"
        size = 256
        while True:
            buf = ffi.new("char[]", size)
            n = lib.w2v_ntfsvol_get_security(self._handle, _s(path), buf, size)
            _raise_for(n, what)
            if n <= size:
                return bytes(ffi.buffer(buf, n))
            size = n

    def set_security(self, path: str, descriptor: bytes) -> None:
        ffi, lib = _lib()
        _raise_for(lib.w2v_ntfsvol_set_security(self._handle, _s(path), ffi.from_buffer(descriptor), len(descriptor)),
                   f"cannot set the security descriptor of {_norm(path)} on {self.device}", invalid=errors.UsageError)

    def get_reparse(self, path: str) -> bytes | None:
        """The whole reparse buffer, or None if ``path`` is no reparse point."""
        ffi, lib = _lib()
        buf = ffi.new("char[]", 16 * 1024 + 8)
        n = lib.w2v_ntfsvol_get_reparse(self._handle, _s(path), buf, len(buf))
        if n == -_errno.ENODATA:
            return None
        _raise_for(n, f"cannot read reparse data of {_norm(path)} on {self.device}")
        return bytes(ffi.buffer(buf, n))

    def set_reparse(self, path: str, data: bytes) -> None:
        ffi, lib = _lib()
        _raise_for(lib.w2v_ntfsvol_set_reparse(self._handle, _s(path), ffi.from_buffer(data), len(data)),
                   f"cannot set reparse data of {_norm(path)} on {self.device}", invalid=errors.UsageError)

    def remove_reparse(self, path: str) -> None:
        _, lib = _lib()
        _raise_for(lib.w2v_ntfsvol_remove_reparse(self._handle, _s(path)),
                   f"cannot remove reparse data of {_norm(path)} on {self.device}")

    def symlink(self, path: str, target: str, *, directory: bool = False, relative: bool | None = None) -> None:
        """Create ``path`` as a symbolic link to ``target`` (a Windows path)."""
        if directory:
            self.mkdir(path)
        else:
            self.write_file(path, b"")
        self.set_reparse(path, symlink_reparse(target, relative=relative))

    def junction(self, path: str, target: str) -> None:
        """Create ``path`` as a directory junction to the absolute ``target``."""
        data = junction_reparse(target)
        self.mkdir(path)
        self.set_reparse(path, data)

    def get_short_name(self, path: str) -> str | None:
        ffi, lib = _lib()
        buf = ffi.new("char[]", 64)
        n = lib.w2v_ntfsvol_get_short_name(self._handle, _s(path), buf, 64)
        if n == -_errno.ENODATA:
            return None
        _raise_for(n, f"cannot read the short name of {_norm(path)} on {self.device}")
        return bytes(ffi.buffer(buf, n)).decode("utf-8")

    def set_short_name(self, path: str, short_name: str) -> None:
        """Give ``path`` a DOS 8.3 name, e.g. PROGRA~1."""
        _, lib = _lib()
        _raise_for(lib.w2v_ntfsvol_set_short_name(self._handle, _s(path), _s(short_name)),
                   f"cannot set short name {short_name!r} on {_norm(path)} on {self.device}", invalid=errors.UsageError)

    def set_times(self, path: str, creation: Time | None = None, write: Time | None = None,
                  access: Time | None = None, change: Time | None = None) -> None:
        """Set any of the four NTFS times; None leaves one as it is."""
        _, lib = _lib()
        t = [lib.W2V_NTFSVOL_KEEP_TIME if x is None else to_filetime(x) for x in (creation, write, access, change)]
        _raise_for(lib.w2v_ntfsvol_set_times(self._handle, _s(path), *t),
                   f"cannot set times of {_norm(path)} on {self.device}")

    # -- names
    def link(self, existing: str, new_path: str) -> None:
        """A hard link: ``new_path`` becomes another name of file ``existing``."""
        _, lib = _lib()
        _raise_for(lib.w2v_ntfsvol_link(self._handle, _s(existing), _s(new_path)),
                   f"cannot link {_norm(new_path)} to {_norm(existing)} on {self.device}")

    def unlink(self, path: str) -> None:
        """Remove a file name, or an empty directory."""
        _, lib = _lib()
        _raise_for(lib.w2v_ntfsvol_unlink(self._handle, _s(path)), f"cannot delete {_norm(path)} on {self.device}")

    def rmtree(self, path: str) -> None:
        """Remove a directory and everything in it (reparse points are not followed)."""
        for kind, name in self.scandir(path):
            child = f"{path}\\{name}"
            if kind == "d":
                self.rmtree(child)
            else:
                self.unlink(child)
        self.unlink(path)
