"""Views: a name that wimlib opens as a file whose bytes are extents of another file (native/w2v_vfile.c).

    with View(name, iso_path, size, [(offset in the ISO or None for zeros, length), ...]) as v:
        Wim(v.name)   # wimlib reads the extents in place, through its hooked file calls

The name exists for wimlib only (its open, realpath, read, pread and close of it are served from the
extents); os.path.exists(name) is False.  Wim and the read-ahead look names up here.
"""
from __future__ import annotations

import os
import threading
from typing import Iterable

from wim2vhd._lib import ffi, lib
from wim2vhd.errors import EnvironmentFault, InternalError, from_errno, from_oserror

_lock = threading.Lock()
_views: dict[str, "View"] = {}
_state: bool | None = None


def available() -> bool:
    """Whether libwim's file calls could be hooked (else an ISO is read through a copy)."""
    global _state
    with _lock:
        if _state is None:
            # (the read window shares libwim's pread64 slot: native/w2v_readahead.c chains the two)
            _state = lib.w2v_vfile_install() == 0
        return _state


def lookup(name: str) -> "View | None":
    with _lock:
        return _views.get(os.fspath(name))


class View:
    def __init__(self, name: str, path: str, size: int, extents: Iterable[tuple[int | None, int]]):
        if not available():
            raise EnvironmentFault("libwim's file calls cannot be hooked here: the view is unavailable")
        ext = [(-1 if off is None else off, n) for off, n in extents if n > 0]
        covered = sum(n for _, n in ext)
        if covered > size:
            raise InternalError(f"a view of {size} bytes given {covered} bytes of extents")
        if covered < size:
            ext.append((-1, size - covered))  # an unrecorded tail reads as zeros, as a copy's would
        self.name, self.path, self.size = name, path, size
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise from_oserror(e, path) from None
        try:
            src = ffi.new("int64_t[]", [o for o, _ in ext] or [0])
            lens = ffi.new("uint64_t[]", [n for _, n in ext] or [0])
            ffi.errno = 0
            v = lib.w2v_view_new(name.encode(), fd, size, src, lens, len(ext))
        finally:
            os.close(fd)
        if v == ffi.NULL:
            raise from_errno(ffi.errno or 12, f"{path}: a view of {name}")
        self._v = v
        with _lock:
            _views[name] = self

    def read(self, offset: int, length: int) -> bytes:
        buf = ffi.new("char[]", max(length, 1))
        n = lib.w2v_view_pread(self._v, buf, length, offset)
        if n < 0:
            raise from_errno(ffi.errno, self.path)
        return ffi.buffer(buf, n)[:]

    @property
    def open_count(self) -> int:
        return lib.w2v_view_open_count(self._v) if self._v is not None else 0

    def close(self) -> None:
        with _lock:
            if _views.get(self.name) is self:
                del _views[self.name]
        if self._v is not None:
            lib.w2v_view_close(self._v)  # freed once wimlib's last descriptor of it is closed
            self._v = None

    def __enter__(self) -> "View":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
