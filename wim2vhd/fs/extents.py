"""Sparse files' data extents (SEEK_DATA/SEEK_HOLE), and copying them into a target.

A *target* is anything with ``read(offset, n)``, ``write(offset, data)``, ``size`` and
``sector_size`` (wim2vhd.partition.Target); a virtual disk also has ``copy_from_file``, its C copier.
"""
from __future__ import annotations

import errno
import os
from typing import Callable

from wim2vhd.errors import InputError
from wim2vhd.partition import Target
from wim2vhd.units import KiB, MiB

ZERO_GRANULE = 64 * KiB
COPY_CHUNK = 4 * MiB
UNIT = 4 * KiB


def data_extents(path_or_fd: str | os.PathLike | int) -> list[tuple[int, int]]:
    """The (offset, length) data extents of a sparse file, by SEEK_DATA/SEEK_HOLE.

    On a file system that does not report holes, one extent covers the file.
    """
    own = not isinstance(path_or_fd, int)
    fd = os.open(os.fspath(path_or_fd), os.O_RDONLY) if own else path_or_fd
    try:
        size = os.fstat(fd).st_size
        out: list[tuple[int, int]] = []
        off = 0
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
                end = os.lseek(fd, start, os.SEEK_HOLE)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no more data
                    break
                # Any other answer (EINVAL or EOPNOTSUPP where SEEK_DATA is unsupported, or a failure
                # here) says nothing about holes: the rest of the file is data.
                out.append((off, size - off))
                break
            out.append((start, end - start))
            off = end
        return out
    finally:
        if own:
            os.close(fd)


def nonzero_extents(fd: int, extents: list[tuple[int, int]], granule: int = ZERO_GRANULE) -> list[tuple[int, int]]:
    """``extents`` without the granule-aligned runs that read as all zeros."""
    zero = bytes(granule)
    out: list[tuple[int, int]] = []
    for start, length in extents:
        end = start + length
        pos = start
        while pos < end:
            stop = min(end, (pos // granule + 1) * granule)
            buf = os.pread(fd, stop - pos, pos)
            if buf != zero[:len(buf)]:
                if out and out[-1][0] + out[-1][1] == pos:
                    out[-1] = (out[-1][0], out[-1][1] + (stop - pos))
                else:
                    out.append((pos, stop - pos))
            pos = stop
    return out


def _copy_changed(target: Target, fd: int, extents: list[tuple[int, int]], dst_offset: int,
                  progress: Callable[[int], None] | None) -> list[tuple[int, int]]:
    """Write only the 4 KiB units that differ from what the target holds; the ranges written.

    Right whatever the target held before (re-formatting in place), and on a
    fresh disk it writes no more than the non-zero data.
    """
    written: list[tuple[int, int]] = []
    for start, length in extents:
        pos, end = start, start + length
        while pos < end:
            n = min(COPY_CHUNK, end - pos)
            src = memoryview(os.pread(fd, n, pos))
            if len(src) != n:
                raise InputError(f"temporary volume shorter than expected at offset {pos}")
            dst = memoryview(target.read(dst_offset + pos, n))
            if src != dst:
                u = 0
                while u < n:
                    if src[u:u + UNIT] == dst[u:u + UNIT]:
                        u += UNIT
                        continue
                    e = min(u + UNIT, n)
                    while e < n and src[e:e + UNIT] != dst[e:e + UNIT]:
                        e = min(e + UNIT, n)
                    target.write(dst_offset + pos + u, bytes(src[u:e]))
                    if written and written[-1][0] + written[-1][1] == pos + u:
                        written[-1] = (written[-1][0], written[-1][1] + e - u)
                    else:
                        written.append((pos + u, e - u))
                    u = e
            if progress:
                progress(n)
            pos += n
    return written


def copy_extents(target: Target, path: str | os.PathLike, extents: list[tuple[int, int]], dst_offset: int,
                 *, target_zeroed: bool = False,
                 progress: Callable[[int], None] | None = None) -> list[tuple[int, int]]:
    """Copy the given extents of ``path`` into the target at ``dst_offset`` + their offset.

    With ``target_zeroed`` (the range reads as zeros: a fresh disk) the extents
    go to ``target.copy_from_file`` when it has one (the virtual disk's copier,
    in C, which skips zero 4 KiB units), else through ``target.write``.
    Otherwise only the units that differ from the target's content are
    written.  Returns the ranges handed over or written, relative to the file.
    """
    with open(path, "rb") as f:
        fd = f.fileno()
        if not target_zeroed:
            return _copy_changed(target, fd, extents, dst_offset, progress)
        copy_from_file = getattr(target, "copy_from_file", None)
        for start, length in extents:
            if copy_from_file is not None:
                copy_from_file(os.fspath(path), start, dst_offset + start, length)
            else:
                pos, end = start, start + length
                while pos < end:
                    buf = os.pread(fd, min(COPY_CHUNK, end - pos), pos)
                    if not buf:
                        raise InputError(f"{path}: shorter than expected at offset {pos}")
                    target.write(dst_offset + pos, buf)
                    pos += len(buf)
            if progress:
                progress(length)
    return list(extents)


