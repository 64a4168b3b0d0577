"""File systems for new partitions: NTFS with mkntfs, FAT32 (the ESP) with mkfs.fat + mtools.

The tools never see the virtual disk.  Each volume is made in a SPARSE
temporary file of exactly the partition's size, checked, and then only the
temporary file's data extents (SEEK_DATA/SEEK_HOLE) are copied into the target
at the partition's offset; the temporary file is always removed.  Formatting a
2 TiB NTFS partition this way writes ~70 MiB (most of it the 64 MiB $LogFile,
which NTFS fills with 0xFF), not 2 TiB.

Holes of the temporary file are never written to the target: mkntfs and
mkfs.fat write every metadata byte they rely on as data, so holes only cover
free space, whose old content does not matter.  Inside the data extents:

* by default only the 4 KiB units that differ from what the target already
  holds are written, which is right over any old content (re-building the ESP
  in place) and writes no zeros to a fresh disk;
* with ``target_zeroed=True`` (the partition's range reads as zeros: a disk
  just created) the reads of the target are skipped: all-zero 64 KiB runs are
  dropped and the rest goes to ``target.copy_from_file(path, src_offset,
  dst_offset, length)`` when the target has it (the virtual disk's C copier),
  else to ``target.write``.

A *target* is anything with ``read(offset, n)``, ``write(offset, data)``,
``size`` and ``sector_size``.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Callable, Mapping, Union

from wim2vhd import repro
from wim2vhd.errors import (EnvironmentFault, InputError, NoSpace, ToolFailed, UsageError,
                            from_errno, from_oserror)
from wim2vhd.partition import CHS_HEADS, CHS_SECTORS, DiskLayout, Target, derived_bytes, read_table
from wim2vhd.record import Record
from wim2vhd.units import KiB, MiB, align_up, format_size

# ===========================================================================
# On-disk records (declarative): the boot sectors we check after formatting.
# ===========================================================================

NTFS_BOOT = Record("NTFS boot sector", "<", [
    ("jump", 0x00, "3s"),
    ("oem_id", 0x03, "8s"),              # "NTFS    "
    ("bytes_per_sector", 0x0B, "H"),
    ("sectors_per_cluster", 0x0D, "B"),  # or -log2(cluster size) as a negative byte
    ("media", 0x15, "B"),
    ("sectors_per_track", 0x18, "H"),
    ("heads", 0x1A, "H"),
    ("hidden_sectors", 0x1C, "I"),       # partition start, in sectors: needed to boot
    ("total_sectors", 0x28, "Q"),
    ("mft_lcn", 0x30, "Q"),
    ("mftmirr_lcn", 0x38, "Q"),
    ("serial", 0x48, "Q"),
    ("end_marker", 0x1FE, "H"),
], size=512)
NTFS_OEM = b"NTFS    "

FAT32_BOOT = Record("FAT32 boot sector", "<", [
    ("jump", 0x00, "3s"),
    ("oem_id", 0x03, "8s"),
    ("bytes_per_sector", 0x0B, "H"),
    ("sectors_per_cluster", 0x0D, "B"),
    ("reserved_sectors", 0x0E, "H"),
    ("num_fats", 0x10, "B"),
    ("root_entries", 0x11, "H"),         # 0 on FAT32
    ("total_sectors16", 0x13, "H"),
    ("media", 0x15, "B"),
    ("fat_size16", 0x16, "H"),           # 0 on FAT32
    ("sectors_per_track", 0x18, "H"),
    ("heads", 0x1A, "H"),
    ("hidden_sectors", 0x1C, "I"),
    ("total_sectors32", 0x20, "I"),
    ("fat_size32", 0x24, "I"),
    ("root_cluster", 0x2C, "I"),
    ("fsinfo_sector", 0x30, "H"),
    ("backup_boot_sector", 0x32, "H"),
    ("drive_number", 0x40, "B"),
    ("boot_signature", 0x42, "B"),       # 0x29: the next three fields are valid
    ("volume_id", 0x43, "I"),
    ("volume_label", 0x47, "11s"),
    ("fs_type", 0x52, "8s"),             # "FAT32   "
    ("end_marker", 0x1FE, "H"),
], size=512)
FAT32_MIN_CLUSTERS = 65525  # fewer, and every reader (UEFI, Windows) takes it for FAT16

# Disk geometry written into the boot sectors.  Windows, fdisk and every BIOS
# with LBA translation use 255 heads x 63 sectors per track; Windows' NTFS boot
# code reads these (and the hidden-sector count) to find its partition, so they
# must be set for BIOS boot.  Same values as the MBR's CHS fields.
HEADS = CHS_HEADS
SECTORS_PER_TRACK = CHS_SECTORS

TOOL_PACKAGES = {"mkntfs": "ntfs-3g", "mkfs.fat": "dosfstools", "mcopy": "mtools", "mattrib": "mtools"}

ZERO_GRANULE = 64 * KiB
COPY_CHUNK = 4 * MiB
UNIT = 4 * KiB

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


# ===========================================================================
# Tools
# ===========================================================================

_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_tool(name: str) -> str:
    """The tool's path; EnvironmentFault naming the Debian package when it is missing."""
    # mkfs.fat lives in /usr/sbin, which is not on an ordinary user's PATH on Debian.
    path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if not path:
        pkg = TOOL_PACKAGES.get(name, name)
        raise EnvironmentFault(f"{name} not found: install the Debian package {pkg} (apt-get install {pkg})")
    return path


def _run(name: str, args: list[str], *, env: Mapping[str, str] | None = None) -> str:
    exe = find_tool(name)
    full_env = dict(os.environ)
    full_env["LC_ALL"] = "C"
    if env:
        full_env.update(env)
    try:
        cp = subprocess.run([exe, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            errors="replace", env=full_env)
    except OSError as e:
        raise EnvironmentFault(f"cannot run {name}: {e.strerror}") from None
    if cp.returncode != 0:
        raise ToolFailed(name, cp.returncode, cp.stderr.strip() or cp.stdout)
    return cp.stdout


def _mtools_env() -> dict[str, str]:
    # Skip mtools' sanity checks (it would complain about the hidden sectors of
    # a partition image), and ignore any ~/.mtoolsrc drive definitions.
    return {"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}


# ===========================================================================
# Extents and copying (pure-ish helpers)
# ===========================================================================


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
            except OSError as e:
                if e.errno == errno.ENXIO:  # no more data
                    break
                if e.errno == errno.EINVAL:  # SEEK_DATA unsupported: all data
                    return [(0, size)] if size else []
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
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


# ===========================================================================
# Shared checks and the temporary volume file
# ===========================================================================


def _check_span(target: Target, part_offset: int, part_size: int, sector_size: int | None) -> int:
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


def _default_tmp_dir(target: Target, tmp_dir: str | os.PathLike | None) -> str:
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


def _nearly_full(directory: str) -> bool:
    """Less than a mebibyte free for us in the file system that holds directory."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < MiB


class _TempVolume:
    """A sparse temporary file of exactly ``size`` bytes, removed on exit."""

    def __init__(self, tmp_dir: str, size: int, kind: str):
        self.tmp_dir, self.size, self.kind = tmp_dir, size, kind
        self.path = ""

    def __enter__(self) -> "_TempVolume":
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
            if isinstance(exc, ToolFailed) and _nearly_full(self.tmp_dir):
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


def _copy_volume(target: Target, vol: _TempVolume, part_offset: int, target_zeroed: bool,
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


def _check_geometry_fields(kind: str, bs: dict[str, Any], ss: int, hidden: int) -> None:
    for name, want in (("bytes_per_sector", ss), ("hidden_sectors", hidden),
                       ("heads", HEADS), ("sectors_per_track", SECTORS_PER_TRACK)):
        if bs[name] != want:
            raise EnvironmentFault(f"{kind} boot sector has {name}={bs[name]}, expected {want}: "
                                   f"the installed formatter ignored an option")


# ===========================================================================
# NTFS
# ===========================================================================


def make_ntfs(target: Target, part_offset: int, part_size: int, *, label: str = "Windows",
              cluster_size: int = 4096, sector_size: int | None = None, seed: str | None = None,
              tmp_dir: str | os.PathLike | None = None, target_zeroed: bool = False,
              progress: Callable[[int], None] | None = None) -> FormatResult:
    """Quick-format an NTFS volume for the partition at ``part_offset`` (bytes) of ``part_size`` bytes.

    The boot sector gets what Windows needs to boot from it: hidden sectors =
    partition start, 255 heads, 63 sectors per track.  With a ``seed`` the
    volume serial number is derived from it (otherwise mkntfs picks one).
    """
    ss = _check_span(target, part_offset, part_size, sector_size)
    if cluster_size & (cluster_size - 1) or not (ss <= cluster_size <= 2 * MiB):
        raise UsageError(f"NTFS cluster size {cluster_size} must be a power of two from {ss} to 2 MiB")
    if len(label) > 32:
        raise UsageError(f"NTFS label {label!r} is longer than 32 characters")
    if part_size < 2 * MiB:
        raise NoSpace(f"a {format_size(part_size)} partition is too small for NTFS: it needs at least 2 MiB")
    start_sector = part_offset // ss
    # The BPB holds 32 bits of hidden sectors.  Past that (only for a partition
    # beyond 2 TiB on 512-byte sectors, never the boot volume) leave it at 0,
    # which is what mkntfs does itself when it cannot tell the start.
    hidden = start_sector if start_sector <= 0xFFFFFFFF else 0
    d = _default_tmp_dir(target, tmp_dir)
    with _TempVolume(d, part_size, "ntfs") as vol:
        args = ["-Q", "-F", "-q",
                "-s", str(ss), "-c", str(cluster_size),
                "-H", str(HEADS), "-S", str(SECTORS_PER_TRACK),  # LBA geometry, as Windows and fdisk use
                "-L", label]
        if hidden:
            args += ["-p", str(hidden)]
        if repro.active():
            # mkntfs stamps its system files with the clock; -T stamps them 1970-01-01 instead (libntfs-3g's
            # own clock is pinned for the rest: see apply._fixed_ntfs_clock).
            args += ["-T"]
        _run("mkntfs", args + [vol.path])
        bs = NTFS_BOOT.parse(vol.read(0, 512))
        if bs["oem_id"] != NTFS_OEM:
            raise EnvironmentFault("mkntfs finished but wrote no NTFS boot sector")
        _check_geometry_fields("NTFS", bs, ss, hidden)
        serial = bs["serial"]
        if seed is not None:
            serial = int.from_bytes(derived_bytes(seed, f"ntfs-serial:{part_offset}", 8), "little")
            _set_ntfs_serial(vol, ss, part_size, serial)
        extents = _copy_volume(target, vol, part_offset, target_zeroed, progress)
    return FormatResult("ntfs", part_offset, part_size, label, serial, cluster_size, extents)


def _set_ntfs_serial(vol: _TempVolume, ss: int, part_size: int, serial: int) -> None:
    # The serial is in the boot sector and in its backup, which mkntfs puts in
    # the partition's last sector (outside the volume it reports).
    for off in (0, part_size - ss):
        sec = bytearray(vol.read(off, 512))
        if sec[3:11] == NTFS_OEM:
            NTFS_BOOT.pack_into(sec, 0, serial=serial)
            vol.write(off, bytes(sec))


def read_ntfs_boot(target: Target, part_offset: int) -> dict[str, Any] | None:
    """The NTFS boot sector fields at ``part_offset``, or None when there is no NTFS there."""
    bs = NTFS_BOOT.parse(target.read(part_offset, 512))
    return bs if bs["oem_id"] == NTFS_OEM else None


# ===========================================================================
# FAT32
# ===========================================================================

_FAT_LABEL_BAD = set('"*+,./:;<=>?[\\]|')
_FAT_NAME_BAD = set('"*/:<>?\\|')


def _fat_label(label: str) -> str:
    # Windows stores FAT labels in upper case; mkfs.fat warns about lower case.
    up = label.upper()
    try:
        raw = up.encode("ascii")
    except UnicodeEncodeError:
        raise UsageError(f"FAT label {label!r} must be ASCII") from None
    if not up.strip() or len(raw) > 11 or any(c in _FAT_LABEL_BAD or ord(c) < 0x20 for c in up):
        raise UsageError(f"FAT label {label!r} must be 1 to 11 characters, none of {''.join(sorted(_FAT_LABEL_BAD))}")
    return up


def _fat_path(name: str) -> PurePosixPath:
    p = PurePosixPath(str(name).replace("\\", "/").strip("/"))
    parts = p.parts
    if not parts or any(x in ("", ".", "..") for x in parts):
        raise UsageError(f"ESP path {name!r} is not a plain relative path")
    for x in parts:
        if any(c in _FAT_NAME_BAD or ord(c) < 0x20 for c in x) or x.endswith((" ", ".")) or len(x) > 255:
            raise UsageError(f"ESP path {name!r}: {x!r} is not a valid FAT file name")
    return p


@dataclass
class _Staged:
    root: str
    top: list[str]
    count: int
    dirs: int
    data_bytes: list[int]


def _stage(files: Mapping[str, FileSource], stage: str) -> _Staged:
    """Lay the files out under ``stage`` (symlinks to source paths, bytes written out).

    FAT is case-insensitive: directories that differ only in case are merged
    (first spelling wins); two files that would collide are an error.
    """
    canon: dict[str, str] = {}  # lower-case path -> spelling used
    kinds: dict[str, str] = {}  # lower-case path -> "dir" | "file"
    sizes: list[int] = []
    n_files = 0

    def ensure_dir(p: PurePosixPath) -> PurePosixPath:
        out = PurePosixPath()
        for part in p.parts:
            cand = out / part
            key = str(cand).lower()
            if key in kinds and kinds[key] != "dir":
                raise UsageError(f"ESP path {str(p)!r}: {canon[key]!r} is a file, not a directory")
            if key not in kinds:
                kinds[key], canon[key] = "dir", str(cand)
                os.mkdir(os.path.join(stage, str(cand)))
            out = PurePosixPath(canon[key])
        return out

    for name, src in files.items():
        p = _fat_path(name)
        if src is None:
            ensure_dir(p)
            continue
        parent = ensure_dir(p.parent) if len(p.parts) > 1 else PurePosixPath()
        dst = parent / p.name
        key = str(dst).lower()
        if key in kinds:
            raise UsageError(f"ESP path {name!r} collides with {canon[key]!r} (FAT names ignore case)")
        kinds[key], canon[key] = "file", str(dst)
        full = os.path.join(stage, str(dst))
        if isinstance(src, (bytes, bytearray, memoryview)):
            with open(full, "wb") as f:
                f.write(src)
            sizes.append(len(src))
        else:
            sp = os.path.abspath(os.fspath(src))
            if not os.path.isfile(sp):
                raise InputError(f"file for the ESP not found: {sp}")
            os.symlink(sp, full)
            sizes.append(os.path.getsize(sp))
        n_files += 1
    top = sorted(os.listdir(stage))
    return _Staged(stage, top, n_files, sum(1 for k in kinds.values() if k == "dir"), sizes)


def _resolve_attr_path(name: str, files: Mapping[str, FileSource]) -> str:
    p = _fat_path(name)
    key = str(p).lower()
    known = set()
    for f in files:
        q = _fat_path(f)
        for i in range(1, len(q.parts) + 1):
            known.add(str(PurePosixPath(*q.parts[:i])).lower())
    if key not in known:
        raise UsageError(f"attribute given for {name!r}, which is not among the ESP files")
    return "::/" + str(p)


def _attr_flags(spec: str) -> list[str]:
    letters = spec.replace("+", "").replace(" ", "").lower()
    if not letters or set(letters) - set("rash"):
        raise UsageError(f"FAT attributes {spec!r}: use letters from r (read-only), a (archive), s (system), h (hidden)")
    return [f"+{c}" for c in dict.fromkeys(letters)]


def fat32_geometry(bs: Mapping[str, Any]) -> tuple[int, int, int]:
    """(cluster size, number of data clusters, byte offset of the data area) from a FAT32 boot sector."""
    ss, spc = bs["bytes_per_sector"], bs["sectors_per_cluster"]
    data_start = bs["reserved_sectors"] + bs["num_fats"] * bs["fat_size32"]
    clusters = (bs["total_sectors32"] - data_start) // spc if spc else 0
    return ss * spc, clusters, data_start * ss


# A FAT directory entry (32 bytes): its time stamps lie in two runs, 13..19 (creation tenths, creation
# time and date, access date) and 22..25 (write time and date), around the cluster's high half at 20.
FAT_DIRENT = 32
FAT_CREATED_ACCESSED, FAT_WRITTEN = 13, 22
FAT_ATTR_LFN, FAT_ATTR_DIR = 0x0F, 0x10
FAT_FREE, FAT_END_OF_DIR = 0xE5, 0x00


def fat_datetime(unix_time: float) -> tuple[int, int]:
    """(date, time) as FAT directory entries hold them, in UTC; 1980-01-01 at the earliest, 2-second steps."""
    t = time.gmtime(max(unix_time, 315532800))
    return (((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday,
            (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2))


def pin_fat32_times(vol: Target, bs: Mapping[str, Any], unix_time: float) -> int:
    """Set every time stamp of every directory entry of a FAT32 volume to unix_time; returns the count.

    For reproducible ESPs: the creation, access and write times mtools recorded become one fixed time."""
    ss = bs["bytes_per_sector"]
    csize, clusters, data_off = fat32_geometry(bs)
    fat_off = bs["reserved_sectors"] * ss
    date, tm = (v.to_bytes(2, "little") for v in fat_datetime(unix_time))
    created_accessed, written = b"\0" + tm + date + date, tm + date

    def chain(first: int) -> list[int]:
        out, c = [], first
        while 2 <= c < clusters + 2 and len(out) <= clusters:
            out.append(c)
            c = int.from_bytes(vol.read(fat_off + 4 * c, 4), "little") & 0x0FFFFFFF
        return out

    count, todo = 0, [bs["root_cluster"]]
    while todo:
        for c in chain(todo.pop()):
            off = data_off + (c - 2) * csize
            data = bytearray(vol.read(off, csize))
            changed = False
            for e in range(0, csize, FAT_DIRENT):
                first, attr = data[e], data[e + 11]
                if first == FAT_END_OF_DIR:
                    break
                if first == FAT_FREE or attr == FAT_ATTR_LFN:
                    continue
                at = e + FAT_CREATED_ACCESSED
                data[at:at + len(created_accessed)] = created_accessed
                at = e + FAT_WRITTEN
                data[at:at + len(written)] = written
                changed, count = True, count + 1
                name = bytes(data[e:e + 11])
                if attr & FAT_ATTR_DIR and name not in (b".          ", b"..         "):
                    todo.append(int.from_bytes(data[e + 20:e + 22], "little") << 16
                                | int.from_bytes(data[e + 26:e + 28], "little"))
            if changed:
                vol.write(off, bytes(data))
    return count


def read_fat32_boot(target: Target, part_offset: int) -> dict[str, Any] | None:
    """The FAT32 boot sector fields at ``part_offset``, or None when there is no FAT32 there."""
    bs = FAT32_BOOT.parse(target.read(part_offset, 512))
    if bs["end_marker"] != 0xAA55 or bs["fs_type"] != b"FAT32   " or bs["boot_signature"] != 0x29:
        return None
    return bs


def make_fat32(target: Target, part_offset: int, part_size: int, *, label: str = "SYSTEM",
               files: Mapping[str, FileSource] | None = None, attributes: Mapping[str, str] | None = None,
               cluster_size: int | None = None, sector_size: int | None = None, volume_id: int | None = None,
               seed: str | None = None, tmp_dir: str | os.PathLike | None = None, target_zeroed: bool = False,
               progress: Callable[[int], None] | None = None) -> FormatResult:
    """Format the partition FAT32 and fill it with ``files``, in one go.

    ``files`` maps paths inside the volume ("EFI/Boot/bootx64.efi") to bytes,
    to a host file path, or to None for an (empty) directory; parent
    directories are made as needed.  ``attributes`` maps some of those paths
    (files or directories) to FAT attribute letters, e.g. {"EFI": "hs"}.

    Calling it again on the same partition rebuilds the volume: the old volume
    id is kept unless ``volume_id`` or ``seed`` says otherwise.
    """
    ss = _check_span(target, part_offset, part_size, sector_size)
    label = _fat_label(label)
    files = dict(files or {})
    attributes = dict(attributes or {})
    attr_args = [(_attr_flags(spec), _resolve_attr_path(p, files)) for p, spec in attributes.items()]
    spc = None
    if cluster_size is not None:
        if cluster_size & (cluster_size - 1) or not (ss <= cluster_size <= 64 * KiB):
            raise UsageError(f"FAT32 cluster size {cluster_size} must be a power of two from {ss} to 64 KiB")
        spc = cluster_size // ss
    if volume_id is None and seed is not None:
        volume_id = int.from_bytes(derived_bytes(seed, f"fat-volume-id:{part_offset}", 4), "little")
    if volume_id is None:
        old = read_fat32_boot(target, part_offset)
        if old is not None:
            volume_id = old["volume_id"]
    if volume_id is not None and not (0 <= volume_id <= 0xFFFFFFFF):
        raise UsageError(f"FAT volume id {volume_id} does not fit in 32 bits")
    start_sector = part_offset // ss
    if start_sector > 0xFFFFFFFF:
        raise UsageError("an ESP must start within the first 2^32 sectors of the disk")
    d = _default_tmp_dir(target, tmp_dir)
    with _TempVolume(d, part_size, "fat") as vol, tempfile.TemporaryDirectory(prefix=".wim2vhd-esp-", dir=d) as stage:
        try:
            staged = _stage(files, stage)
        except OSError as e:
            raise from_oserror(e, "staging the ESP files", output=True) from None
        # --invariant (fixed timestamps) must come first: it resets the volume id that -i sets.
        args = ["--invariant"] if seed is not None else []
        args += ["-F", "32", "-S", str(ss), "-h", str(start_sector),
                "-g", f"{HEADS}/{SECTORS_PER_TRACK}",  # LBA geometry, as Windows and fdisk use
                "-n", label]
        if spc:
            args += ["-s", str(spc)]
        if volume_id is not None:
            args += ["-i", f"{volume_id:08x}"]
        _run("mkfs.fat", args + [vol.path])
        bs = FAT32_BOOT.parse(vol.read(0, 512))
        _check_geometry_fields("FAT32", bs, ss, start_sector)
        csize, clusters, _ = fat32_geometry(bs)
        if clusters < FAT32_MIN_CLUSTERS:
            raise NoSpace(f"a {format_size(part_size)} partition holds {clusters} clusters of {csize} bytes, "
                          f"fewer than the {FAT32_MIN_CLUSTERS} FAT32 needs",
                          hint="make the ESP larger or use smaller clusters")
        # One cluster per file at least, plus one per directory: a lower bound
        # of what the files need, to fail with a clear message before mcopy does.
        need = sum(align_up(max(n, 1), csize) for n in staged.data_bytes) + staged.dirs * csize
        free = (clusters - 1) * csize
        if need > free:
            raise NoSpace(f"the ESP files need at least {format_size(need)} but the "
                          f"{format_size(part_size)} ESP has {format_size(free)} free",
                          hint="make the ESP larger")
        env = _mtools_env()
        img = f"{vol.path}@@0"
        if staged.top:
            # -s recursive, -o overwrite without asking, -Q stop at the first error.
            _run("mcopy", ["-i", img, "-s", "-o", "-Q", *[os.path.join(stage, t) for t in staged.top], "::/"],
                 env=env)
        for flags, path in attr_args:
            _run("mattrib", ["-i", img, *flags, path], env=env)
        if repro.active():
            # mtools stamps what it writes with the clock (Debian 12's ignores SOURCE_DATE_EPOCH).
            pin_fat32_times(vol, bs, repro.unix_time())
        extents = _copy_volume(target, vol, part_offset, target_zeroed, progress)
    return FormatResult("fat32", part_offset, part_size, label, bs["volume_id"], csize, extents, staged.count)


# ===========================================================================
# Whole layouts
# ===========================================================================


def rebuild_esp(target: Target, files: Mapping[str, FileSource], *, attributes: Mapping[str, str] | None = None,
                layout: DiskLayout | None = None, label: str = "SYSTEM", seed: str | None = None,
                tmp_dir: str | os.PathLike | None = None) -> FormatResult:
    """Re-make the disk's ESP with exactly ``files`` (e.g. at the boot stage, after the NTFS apply).

    The ESP is found in ``layout`` or, without one, in the disk's partition table.
    """
    if layout is None:
        layout = read_table(target)
    esp = layout.role("esp") if layout is not None else None
    if esp is None:
        raise UsageError("the disk has no EFI system partition to fill: use the uefi layout")
    return make_fat32(target, esp.start, esp.size, label=label, files=files, attributes=attributes,
                      seed=seed, tmp_dir=tmp_dir, target_zeroed=False)


def format_layout(target: Target, layout: DiskLayout, *, windows_label: str = "Windows",
                  recovery_label: str = "Recovery", esp_label: str = "SYSTEM",
                  esp_files: Mapping[str, FileSource] | None = None,
                  esp_attributes: Mapping[str, str] | None = None, cluster_size: int = 4096,
                  seed: str | None = None, tmp_dir: str | os.PathLike | None = None,
                  target_zeroed: bool = False) -> dict[int, FormatResult]:
    """Format every partition of a planned layout that has a file system; {partition number: result}."""
    out: dict[int, FormatResult] = {}
    for p in layout.partitions:
        if p.fs == "ntfs":
            lab = recovery_label if p.role == "recovery" else windows_label
            out[p.number] = make_ntfs(target, p.start, p.size, label=lab, cluster_size=cluster_size,
                                      seed=seed, tmp_dir=tmp_dir, target_zeroed=target_zeroed)
        elif p.fs == "fat32":
            out[p.number] = make_fat32(target, p.start, p.size, label=esp_label, files=esp_files,
                                       attributes=esp_attributes, seed=seed, tmp_dir=tmp_dir,
                                       target_zeroed=target_zeroed)
    return out


__all__ = ["FormatResult", "make_ntfs", "make_fat32", "rebuild_esp", "format_layout", "data_extents",
           "nonzero_extents", "copy_extents", "find_tool", "read_ntfs_boot", "read_fat32_boot",
           "fat32_geometry", "NTFS_BOOT", "FAT32_BOOT"]
