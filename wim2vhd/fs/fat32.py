"""FAT32 for the ESP: mkfs.fat makes the volume, mtools fills it, and a reproducible run pins
every directory entry's time stamps."""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Callable, Mapping

from wim2vhd import repro
from wim2vhd.errors import InputError, NoSpace, UsageError, from_oserror
from wim2vhd.fs import tools
from wim2vhd.fs.volume import (HEADS, SECTORS_PER_TRACK, FileSource, FormatResult, TempVolume,
                               check_geometry_fields, check_span, copy_volume, default_tmp_dir)
from wim2vhd.partition import Target
from wim2vhd.ondisk import Record
from wim2vhd.units import KiB, align_up, format_size

# On-disk record (declarative): the boot sector we check after formatting.
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
               tmp_dir: str | os.PathLike | None = None, target_zeroed: bool = False,
               progress: Callable[[int], None] | None = None) -> FormatResult:
    """Format the partition FAT32 and fill it with ``files``, in one go.

    ``files`` maps paths inside the volume ("EFI/Boot/bootx64.efi") to bytes,
    to a host file path, or to None for an (empty) directory; parent
    directories are made as needed.  ``attributes`` maps some of those paths
    (files or directories) to FAT attribute letters, e.g. {"EFI": "hs"}.

    Calling it again on the same partition rebuilds the volume: the old volume
    id is kept unless ``volume_id`` or a reproducible run (wim2vhd.repro) says otherwise.
    """
    ss = check_span(target, part_offset, part_size, sector_size)
    label = _fat_label(label)
    files = dict(files or {})
    attributes = dict(attributes or {})
    attr_args = [(_attr_flags(spec), _resolve_attr_path(p, files)) for p, spec in attributes.items()]
    spc = None
    if cluster_size is not None:
        if cluster_size & (cluster_size - 1) or not (ss <= cluster_size <= 64 * KiB):
            raise UsageError(f"FAT32 cluster size {cluster_size} must be a power of two from {ss} to 64 KiB")
        spc = cluster_size // ss
    if volume_id is None and repro.active():
        volume_id = int.from_bytes(repro.derived(f"fat-volume-id:{part_offset}", 4), "little")
    if volume_id is None:
        old = read_fat32_boot(target, part_offset)
        if old is not None:
            volume_id = old["volume_id"]
    if volume_id is not None and not (0 <= volume_id <= 0xFFFFFFFF):
        raise UsageError(f"FAT volume id {volume_id} does not fit in 32 bits")
    start_sector = part_offset // ss
    if start_sector > 0xFFFFFFFF:
        raise UsageError("an ESP must start within the first 2^32 sectors of the disk")
    d = default_tmp_dir(target, tmp_dir)
    with TempVolume(d, part_size, "fat") as vol, tempfile.TemporaryDirectory(prefix=".wim2vhd-esp-", dir=d) as stage:
        try:
            staged = _stage(files, stage)
        except OSError as e:
            raise from_oserror(e, "staging the ESP files", output=True) from None
        # --invariant (fixed timestamps) must come first: it resets the volume id that -i sets.
        args = ["--invariant"] if repro.active() else []
        args += ["-F", "32", "-S", str(ss), "-h", str(start_sector),
                "-g", f"{HEADS}/{SECTORS_PER_TRACK}",  # LBA geometry, as Windows and fdisk use
                "-n", label]
        if spc:
            args += ["-s", str(spc)]
        if volume_id is not None:
            args += ["-i", f"{volume_id:08x}"]
        tools.run("mkfs.fat", args + [vol.path])
        bs = FAT32_BOOT.parse(vol.read(0, 512))
        check_geometry_fields("FAT32", bs, ss, start_sector)
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
        env = tools.mtools_env()
        img = f"{vol.path}@@0"
        if staged.top:
            # -s recursive, -o overwrite without asking, -Q stop at the first error.
            tools.run("mcopy", ["-i", img, "-s", "-o", "-Q", *[os.path.join(stage, t) for t in staged.top], "::/"],
                 env=env)
        for flags, path in attr_args:
            tools.run("mattrib", ["-i", img, *flags, path], env=env)
        if repro.active():
            # mtools stamps what it writes with the clock (Debian 12's ignores SOURCE_DATE_EPOCH).
            pin_fat32_times(vol, bs, repro.unix_time())
        extents = copy_volume(target, vol, part_offset, target_zeroed, progress)
    return FormatResult("fat32", part_offset, part_size, label, bs["volume_id"], csize, extents, staged.count)


