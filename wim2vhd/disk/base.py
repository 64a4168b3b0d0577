"""The interface every disk format implements, and the handle to the native block layer.

Like qemu's block drivers: one module per format (raw.py, vhd.py, vhdx.py),
each a subclass of :class:`Disk` with the class methods ``probe``, ``create``
and ``open``, and the instance methods ``read``, ``write``, ``flush``,
``close`` and ``info``.  Python parses and writes the headers and BATs; the
per-I/O work happens in C (native/w2v_block.c) on the tables Python fills.
"""
from __future__ import annotations

import os
import stat
from typing import Any, ClassVar, Iterator

from wim2vhd._lib import ffi, lib
from wim2vhd.errors import InternalError, UsageError, from_errno

ABSENT, ZERO, PRESENT, PARTIAL = lib.W2V_ST_ABSENT, lib.W2V_ST_ZERO, lib.W2V_ST_PRESENT, lib.W2V_ST_PARTIAL
COMPRESSED = lib.W2V_ST_COMPRESSED


# The most writer threads native/w2v_writer.c runs (its MAX_THREADS).
WRITER_MAX_THREADS = 4


class Disk:
    """An open virtual disk."""

    format_name: ClassVar[str] = ""
    extensions: ClassVar[tuple[str, ...]] = ()
    #: disk type: "fixed", "dynamic" or "differencing"
    disk_type: str = "fixed"
    #: the format registry (the wim2vhd.disk package), set when it loads: how a driver opens a
    #: parent of any format without importing the registry that imports it
    formats: ClassVar[Any] = None

    def __init__(self, path: str, fd: int, params: dict[str, Any], *, writable: bool):
        self.path = os.fspath(path)
        self.fd = fd
        self.writable = writable
        self.size: int = params["virtual_size"]
        self.sector_size: int = params.get("sector_size", 512)
        self.block_size: int = params.get("block_size", 0)
        self.parent: Disk | None = None
        p = ffi.new("struct w2v_params *")
        p.fd = fd
        p.writable = int(writable)
        for k, v in params.items():
            setattr(p, k, v)
        self._h = lib.w2v_disk_new(p)
        #: NTFS device windows (wim2vhd.ntfs.NtfsWindow) that read and write through self._h
        self.windows = 0
        if self._h == ffi.NULL:
            raise InternalError(f"{path}: cannot allocate the block table (out of memory?)")
        self._closed = False

    # -- the driver operations a format provides ------------------------------
    @classmethod
    def probe(cls, head: bytes, file_size: int) -> bool:
        """Whether a file whose first bytes are `head` is of this format."""
        raise NotImplementedError

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> "Disk":
        """Create a new disk at `path` (which must not exist) and return it open for writing."""
        raise NotImplementedError

    @classmethod
    def open(cls, path: str, *, writable: bool = False, _parent: "Disk | None" = None) -> "Disk":
        """Open the disk at path and, for a differencing disk, its chain of parents (or link _parent)."""
        d = cls.open_one(path, writable=writable)
        try:
            if d.disk_type == "differencing":
                if _parent is not None:
                    d._link_parent(_parent)
                else:
                    d._open_chain()
        except BaseException:
            d.abandon()
            raise
        return d

    @classmethod
    def open_one(cls, path: str, *, writable: bool = False) -> "Disk":
        """Open this file alone: a differencing disk comes back with no parent linked."""
        fd = open_input(path, writable)
        try:
            return cls._open_fd(path, fd, writable, None)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _open_fd(cls, path: str, fd: int, writable: bool, parent: "Disk | None") -> "Disk":
        """Parse the file open on fd (which the caller closes if this raises)."""
        raise NotImplementedError

    @classmethod
    def check(cls, path: str, fd: int) -> Any:
        """Every structure of the file open on fd, read on its own and past what is damaged: a
        check.Facts with each problem, and how to repair those that have a sound copy."""
        raise NotImplementedError

    def _flush_metadata(self) -> None:
        """Write the format's tables and headers for what changed (after data and bitmaps)."""

    def _info(self) -> dict[str, Any]:
        return {}

    # -- I/O, common to all formats -------------------------------------------
    @property
    def handle(self):
        """The native w2v_disk*, for C users of this disk (libntfs-3g through w2v_ntfsdev)."""
        self._check_open()
        return self._h

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError(f"{self.path}: disk is closed")

    def read(self, offset: int, length: int) -> bytes:
        self._check_open()
        if offset < 0 or length < 0:
            raise UsageError("negative offset or length")
        length = max(0, min(length, self.size - offset))
        buf = ffi.new("uint8_t[]", length) if length else ffi.new("uint8_t[1]")
        r = lib.w2v_pread(self._h, buf, length, offset)
        if r < 0:
            raise from_errno(r, f"{self.path}: read at {offset}")
        return bytes(ffi.buffer(buf, r))

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._check_open()
        if not self.writable:
            raise UsageError(f"{self.path} is open read-only")
        if offset < 0 or offset + len(data) > self.size:
            raise from_errno(28, f"{self.path}: write of {len(data)} bytes at {offset} is past the end of the disk")
        r = lib.w2v_pwrite(self._h, ffi.from_buffer(data), len(data), offset)
        if r < 0:
            raise from_errno(r, f"{self.path}: write at {offset}")

    def flush(self) -> None:
        """Data, bitmaps, tables and headers to the file (no fsync)."""
        self._check_open()
        if not self.writable:
            return
        r = lib.w2v_flush(self._h)
        if r < 0:
            raise from_errno(r, f"{self.path}: flush")
        self._flush_metadata()

    def sync(self) -> None:
        """flush(), then fsync the file."""
        self.flush()
        if self.writable:
            os.fsync(self.fd)

    def close(self) -> None:
        if self._closed:
            return
        self._refuse_if_used()
        try:
            if self.writable:
                self.flush()
        finally:
            self._release()
            _release_chain(self.parent, Disk.close)

    def abandon(self) -> None:
        """Close without writing anything more (the file is about to be deleted)."""
        if self._closed:
            return
        self._refuse_if_used()
        self._release()
        _release_chain(self.parent, Disk.abandon)

    def _refuse_if_used(self) -> None:
        # The native disk is freed on close: a window registered on it would be left pointing at
        # freed memory, for libntfs-3g to write through.
        if self.windows:
            raise UsageError(f"{self.path}: cannot close the disk while {self.windows} NTFS device "
                             f"window{'s are' if self.windows > 1 else ' is'} open on it: close "
                             f"{'them' if self.windows > 1 else 'it'} first")

    def _release(self) -> None:
        self._closed = True
        lib.w2v_disk_free(self._h)
        self._h = ffi.NULL
        os.close(self.fd)

    def __enter__(self) -> "Disk":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()

    def identity(self) -> dict[str, Any]:
        """What a differencing child records about this disk as its parent."""
        return {}

    def parent_paths(self) -> list[str]:
        """Where this differencing disk's parent may be, most likely first."""
        return []

    def parent_mismatch(self, parent: "Disk") -> str | None:
        """Why parent is not the disk this child was made from (IDs, size), or None."""
        return None

    def find_parent_path(self) -> str:
        """The first existing candidate from parent_paths()."""
        from wim2vhd.errors import ParentError
        tried = self.parent_paths()
        for p in tried:
            if os.path.exists(p):
                return p
        looked = ", ".join(map(repr, tried)) or "nothing recorded"
        raise ParentError(f"{self.path}: parent disk not found (looked for: {looked})")

    def _link_parent(self, parent: "Disk") -> None:
        """Check that parent is the disk this child was made from, and read through it."""
        from wim2vhd.errors import ParentError
        why = self.parent_mismatch(parent)
        if why:
            raise ParentError(f"{self.path}: parent {parent.path!r} {why}: "
                              "it was changed or is not the disk this child was made from")
        self.set_parent(parent)

    def _open_chain(self) -> None:
        """Open the parents one level at a time (no recursion): a cycle, or a chain deeper than
        MAX_CHAIN_DEPTH, is an input error, not a RecursionError or a deadlock in the native layer."""
        from wim2vhd.errors import ParentError
        seen = {_file_key(self.fd): self.path}
        d: Disk = self
        depth = 0
        while d.disk_type == "differencing":
            depth += 1
            if depth > MAX_CHAIN_DEPTH:
                raise ParentError(f"{self.path}: the parent chain is more than {MAX_CHAIN_DEPTH} disks deep "
                                  "(a loop of parents, or merge some of them first)")
            p = d.find_parent_path()
            parent = self.formats.probe(p).open_one(p)
            key = _file_key(parent.fd)
            if key in seen:
                parent.close()
                raise ParentError(f"{d.path}: the parent chain loops: its parent {p!r} is {seen[key]!r}, "
                                  "already in the chain")
            seen[key] = parent.path
            try:
                d._link_parent(parent)
            except BaseException:
                parent.close()
                raise
            d = parent

    def set_parent(self, parent: "Disk") -> None:
        self.parent = parent
        lib.w2v_set_parent(self._h, parent.handle)

    def set_cache(self, nbytes: int) -> None:
        """A write-back cache of nbytes in the native layer (0 turns it off)."""
        r = lib.w2v_cache_configure(self._h, nbytes)
        if r < 0:
            raise from_errno(r, f"{self.path}: cache")

    def set_writer(self, max_pending: int, threads: int = 1, direct: bool = False) -> None:
        """Queue file writes to background threads, up to max_pending bytes (0 stops them).
        direct: large aligned writes bypass the page cache (O_DIRECT), where the file system allows."""
        if not 1 <= threads <= WRITER_MAX_THREADS:
            raise UsageError(f"writer threads must be 1 to {WRITER_MAX_THREADS}, not {threads}")
        r = lib.w2v_writer_configure(self._h, max_pending, threads, int(direct))
        if r < 0:
            raise from_errno(r, f"{self.path}: writer thread")

    def stats(self) -> dict[str, int]:
        s = ffi.new("struct w2v_stats *")
        lib.w2v_get_stats(self._h, s)
        return {k: getattr(s, k) for k in dir(s)}

    def extents(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
        """(offset, length) of the ranges that hold data, anywhere in the parent chain."""
        self._check_open()
        end = self.size if end is None else min(end, self.size)
        ln = ffi.new("uint64_t *")
        off = start
        while off < end:
            s = lib.w2v_next_data(self._h, off, ln)
            if s >= end or ln[0] == 0:
                return
            e = min(s + ln[0], end)
            yield s, e - s
            off = e

    def allocated_bytes(self) -> int:
        return lib.w2v_allocated_bytes(self._h)

    def copy_from(self, src: "Disk", src_offset: int = 0, dst_offset: int = 0, length: int | None = None) -> int:
        """Copy src's data extents into this disk, skipping zeros.  Returns bytes written."""
        total = 0
        end = src.size if length is None else src_offset + length
        for off, ln in src.extents(src_offset, end):
            r = lib.w2v_copy(src.handle, off, self._h, dst_offset + off - src_offset, ln)
            if r < 0:
                raise from_errno(r, f"copy {src.path} -> {self.path}")
            total += r
        return total

    def copy_from_file(self, path: str, src_offset: int, dst_offset: int, length: int) -> None:
        """Copy [src_offset, +length) of a host file into this disk, in C, skipping zeros."""
        src = self.formats.RawDisk.open(path)
        try:
            r = lib.w2v_copy(src.handle, src_offset, self._h, dst_offset, length)
            if r < 0:
                raise from_errno(r, f"copy {path} -> {self.path}")
        finally:
            src.close()

    def chain(self) -> list["Disk"]:
        d, out = self, []
        while d is not None:
            out.append(d)
            d = d.parent
        return out

    def info(self) -> dict[str, Any]:
        st = os.fstat(self.fd)
        out: dict[str, Any] = {
            "path": os.path.abspath(self.path),  # in full: `disk info` says which file it opened
            "format": self.format_name,
            "type": self.disk_type,
            "virtual_size": self.size,
            "file_size": file_size(self.fd),
            "allocated_on_host": st.st_blocks * 512,
            "allocated_bytes": self.allocated_bytes(),
            "block_size": self.block_size or None,
            "logical_sector_size": self.sector_size,
        }
        out.update(self._info())
        if self.parent is not None:
            out["parent"] = self.parent.info()
        return out

    # -- helpers for formats --------------------------------------------------
    def _free_native(self) -> None:
        """Undo __init__ after a failed open (the caller closes the fd)."""
        lib.w2v_disk_free(self._h)
        self._h = ffi.NULL
        self._closed = True

    def _file_end(self) -> int:
        return lib.w2v_file_end(self._h)

    def _set_trailer(self) -> None:
        lib.w2v_set_trailer(self._h, 1)

    def _tables(self):
        return lib.w2v_data_off(self._h), lib.w2v_state(self._h)

    def _take_dirty(self, groups: bool = False) -> list[int]:
        out: list[int] = []
        buf = ffi.new("uint64_t[]", 4096)
        take = lib.w2v_take_dirty_groups if groups else lib.w2v_take_dirty_blocks
        while True:
            n = take(self._h, buf, 4096)
            if not n:
                break
            out.extend(buf[0:n])
        return sorted(set(out))


#: The deepest parent chain opened.  Hyper-V keeps at most 50 checkpoints of a VM, each a level.
MAX_CHAIN_DEPTH = 128


def _release_chain(d: "Disk | None", how) -> None:
    """close or abandon each parent in turn (a loop, not recursion: chains can be deep)."""
    while d is not None:
        nxt, d.parent = d.parent, None
        how(d)
        d = nxt


def _file_key(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def open_input(path: str, writable: bool = False) -> int:
    """Open a disk file, refusing anything that is not a regular file or a block device before it
    can block (a FIFO, a terminal, a socket): O_NONBLOCK for the open, cleared once it is known."""
    from wim2vhd.errors import InputError
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a disk image") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as e:
        from wim2vhd.errors import from_oserror
        raise from_oserror(e, str(path)) from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise InputError(f"{path}: is {kind}, not a disk image (give a regular file or a block device)")
    os.set_blocking(fd, True)
    return fd


def file_size(fd: int) -> int:
    """Bytes in the file open on fd (a block device's st_size is 0: ask its end instead)."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return st.st_size


def check_range(offset: int, n: int, size: int, what: str, path: str) -> None:
    """The one check of an offset and length read from a header, before they are used."""
    from wim2vhd.errors import CorruptInput
    if offset < 0 or n < 0 or offset > size or n > size - offset:
        raise CorruptInput(f"{path}: truncated or damaged file: {what} at offset {offset} ({n} bytes) "
                           f"is past the end of the {size}-byte file")


def read_exact(fd: int, n: int, offset: int, what: str, path: str, size: int | None = None) -> bytes:
    """pread of a range named by the file's own headers: checked against the file first (so that
    no offset of 2^64-1 or length of 16 GiB reaches os.pread), a short read is a truncated file."""
    from wim2vhd.errors import CorruptInput
    check_range(offset, n, file_size(fd) if size is None else size, what, path)
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise CorruptInput(f"{path}: truncated file: {what} at offset {offset} is past the end")
    return data


def write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def overlaps(ranges: list[tuple[int, int, str]]) -> list[str]:
    """Each (start, end, name) range that overlaps one before it, in words ("X points into Y", "X and Y
    overlap").  Names of fixed structures start with "the " (the BAT, the dynamic header)."""
    out: list[str] = []
    ordered = sorted(r for r in ranges if r[1] > r[0])
    far: tuple[int, int, str] | None = None  # of those seen, the one that ends last
    for r in ordered:
        if far is not None and r[0] < far[1]:
            fixed_far, fixed_r = far[2].startswith("the "), r[2].startswith("the ")
            if fixed_far and not fixed_r:
                out.append(f"{r[2]} points into {far[2]} (offset {r[0]})")
            elif fixed_r and not fixed_far:
                out.append(f"{far[2]} points into {r[2]} (offset {far[0]})")
            else:
                out.append(f"{far[2]} and {r[2]} overlap (at offset {r[0]})")
        if far is None or r[1] > far[1]:
            far = r
    return out
