"""What every new file system shares: the result record, the checks of a partition's span, and the
temporary volume file that the tools format before its data extents are copied into the disk.

The tools never see the virtual disk.  Each volume is made in a SPARSE temporary file of exactly
the partition's size, checked, and then only its data extents are copied into the target at the
partition's offset (wim2vhd.fs.extents); the temporary file is always removed.  Formatting a 2 TiB
NTFS partition this way writes ~70 MiB (most of it the 64 MiB $LogFile, which NTFS fills with
0xFF), not 2 TiB.

Holes of the temporary file are never written to the target: mkntfs and mkfs.fat write every
metadata byte they rely on as data, so holes only cover free space, whose old content does not
matter.  Inside the data extents:

* by default only the 4 KiB units that differ from what the target already holds are written,
  which is right over any old content (re-building the ESP in place) and writes no zeros to a
  fresh disk;
* with ``target_zeroed=True`` (the partition's range reads as zeros: a disk just created) the
  reads of the target are skipped: all-zero 64 KiB runs are dropped and the rest goes to the
  target's C copier when it has one, else to ``target.write``.
"""
from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from wim2vhd.errors import EnvironmentFault, NoSpace, ToolFailed, UsageError, from_errno, from_oserror
from wim2vhd.fs.extents import copy_extents, data_extents, nonzero_extents
from wim2vhd.partition import CHS_HEADS, CHS_SECTORS, Target
from wim2vhd.units import MiB, format_size

# Disk geometry written into the boot sectors.  Windows, fdisk and every BIOS
# with LBA translation use 255 heads x 63 sectors per track; Windows' NTFS boot
# code reads these (and the hidden-sector count) to find its partition, so they
# must be set for BIOS boot.  Same values as the MBR's CHS fields.
HEADS = CHS_HEADS
SECTORS_PER_TRACK = CHS_SECTORS

FileSource = Union[bytes, bytearray, str, os.PathLike, None]


@dataclass
class FormatResult:
    fs: str                     # "ntfs" | "fat32"
    part_offset: int
    part_size: int
    label: str
    serial: int                 # NTFS volume serial (64-bit) or FAT volume id (32-bit)
    cluster_size: int
    extents: list[tuple[int, int]] = field(default_factory=list)  # copied, relative to part_offset
    files: int = 0              # FAT: files copied in

    @property
    def bytes_copied(self) -> int:
        return sum(n for _, n in self.extents)

    def to_dict(self) -> dict[str, Any]:
        return {"fs": self.fs, "offset": self.part_offset, "size": self.part_size, "label": self.label,
                "serial": f"{self.serial:x}", "cluster_size": self.cluster_size,
                "bytes_copied": self.bytes_copied, "files": self.files}


def check_span(target: Target, part_offset: int, part_size: int, sector_size: int | None) -> int:
    ss = target.sector_size if sector_size is None else sector_size
    if ss != target.sector_size:
        raise UsageError(f"sector size {ss} does not match the disk's {target.sector_size}-byte sectors")
    if ss not in (512, 4096):
        raise UsageError(f"sector size {ss} not supported: use 512 or 4096")
    if part_offset < 0 or part_size <= 0 or part_offset % ss or part_size % ss:
        raise UsageError(f"partition at {part_offset} of {part_size} bytes is not a positive whole number "
                         f"of {ss}-byte sectors")
    if part_offset + part_size > target.size:
        raise NoSpace(f"partition ends at {format_size(part_offset + part_size)}, past the end of the "
                      f"{format_size(target.size)} disk")
    return ss


def default_tmp_dir(target: Target, tmp_dir: str | os.PathLike | None) -> str:
    if tmp_dir is not None:
        d = os.fspath(tmp_dir)
        if not os.path.isdir(d):
            raise UsageError(f"temporary directory {d} does not exist")
        return d
    # Next to the output when we know where it is (same file system, likely
    # roomier than /tmp), else the system's temporary directory.
    path = getattr(target, "path", None)
    if isinstance(path, (str, os.PathLike)):
        d = os.path.dirname(os.path.abspath(os.fspath(path)))
        if os.access(d, os.W_OK):
            return d
    return tempfile.gettempdir()


def nearly_full(directory: str) -> bool:
    """Less than a mebibyte free for us in the file system that holds directory."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < MiB


class TempVolume:
    """A sparse temporary file of exactly ``size`` bytes, removed on exit."""

    def __init__(self, tmp_dir: str, size: int, kind: str):
        self.tmp_dir, self.size, self.kind = tmp_dir, size, kind
        self.path = ""

    def __enter__(self) -> "TempVolume":
        try:
            fd, self.path = tempfile.mkstemp(prefix=f".wim2vhd-{self.kind}-", suffix=".img", dir=self.tmp_dir)
            try:
                os.ftruncate(fd, self.size)
            finally:
                os.close(fd)
        except OSError as e:
            self._remove()
            raise from_oserror(e, f"temporary {self.kind} volume in {self.tmp_dir}", output=True) from None
        return self

    def _remove(self) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            # mkfs.fat and mkntfs say only that a write failed ("failed whilst writing FAT"), not
            # why: when the file system holding the volume is full, that is the reason to report.
            if isinstance(exc, ToolFailed) and nearly_full(self.tmp_dir):
                raise from_errno(errno.ENOSPC, f"{exc.tool} could not write the temporary {self.kind.upper()} "
                                               f"volume in {self.tmp_dir}") from None
        finally:
            self._remove()

    def read(self, offset: int, n: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(n)

    def write(self, offset: int, data: bytes) -> None:
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)


def copy_volume(target: Target, vol: TempVolume, part_offset: int, target_zeroed: bool,
                 progress: Callable[[int], None] | None) -> list[tuple[int, int]]:
    fd = os.open(vol.path, os.O_RDONLY)
    try:
        extents = data_extents(fd)
        if target_zeroed:
            extents = nonzero_extents(fd, extents)
    finally:
        os.close(fd)
    try:
        return copy_extents(target, vol.path, extents, part_offset, target_zeroed=target_zeroed, progress=progress)
    except OSError as e:
        raise from_oserror(e, "writing the volume into the disk", output=True) from None


def check_geometry_fields(kind: str, bs: dict[str, Any], ss: int, hidden: int) -> None:
    for name, want in (("bytes_per_sector", ss), ("hidden_sectors", hidden),
                       ("heads", HEADS), ("sectors_per_track", SECTORS_PER_TRACK)):
        if bs[name] != want:
            raise EnvironmentFault(f"{kind} boot sector has {name}={bs[name]}, expected {want}: "
                                   f"the installed formatter ignored an option")


