"""Partition tables: plan a layout, write it (GPT or MBR), read it back.

Three parts, kept apart:

* on-disk records: declarative field tables (name, offset, struct format) for the
  MBR, its partition entries, the GPT header and GPT entries;
* planning: pure functions from (disk size, sector size, layout name) to a
  :class:`DiskLayout` whose partitions start and end on 1 MiB boundaries;
* I/O: :func:`write_table` and :func:`read_table`, through a minimal *target*
  (anything with ``read(offset, n)``, ``write(offset, data)``, ``size`` and
  ``sector_size``) so the same code serves a raw file and a virtual disk.

GUIDs and the MBR disk signature are random, or, within ``repro.pinned(seed, ...)``, derived from
the seed and what each value is for (same seed, same identifiers).
"""
from __future__ import annotations

import os
import uuid
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from wim2vhd import repro
from wim2vhd.errors import CorruptInput, NoSpace, UsageError
from wim2vhd.ondisk import Record
from wim2vhd.units import MiB, align_down, format_size

# ===========================================================================
# On-disk records (declarative, see wim2vhd.ondisk): fields at offsets from
# the start of the record, little-endian.  No logic here.
# ===========================================================================


# Master boot record, sector 0 (first 512 bytes even on 4K-sector disks).
MBR = Record("MBR", "<", [
    # 0..439: boot code, never written here (BIOS boot code is installed separately)
    ("disk_signature", 440, "I"),
    ("copy_protect", 444, "H"),
    ("entries", 446, "64s"),
    ("boot_signature", 510, "H"),
], size=512)
MBR_BOOT_CODE_SIZE = 440
MBR_SIGNATURE = 0xAA55

MBR_ENTRY = Record("MBR partition entry", "<", [
    ("status", 0, "B"),       # 0x80 active, 0x00 inactive
    ("chs_first", 1, "3s"),
    ("type", 4, "B"),
    ("chs_last", 5, "3s"),
    ("lba_first", 8, "I"),
    ("sectors", 12, "I"),
], size=16)

# GPT header (UEFI spec, "GPT Header"); the rest of its sector is zero.
GPT_HEADER = Record("GPT header", "<", [
    ("signature", 0, "8s"),
    ("revision", 8, "I"),
    ("header_size", 12, "I"),
    ("header_crc32", 16, "I"),
    ("reserved", 20, "I"),
    ("my_lba", 24, "Q"),
    ("alternate_lba", 32, "Q"),
    ("first_usable_lba", 40, "Q"),
    ("last_usable_lba", 48, "Q"),
    ("disk_guid", 56, "16s"),       # mixed-endian (uuid.bytes_le)
    ("entries_lba", 72, "Q"),
    ("num_entries", 80, "I"),
    ("entry_size", 84, "I"),
    ("entries_crc32", 88, "I"),
], size=92)
GPT_SIGNATURE = b"EFI PART"
GPT_REVISION = 0x00010000

GPT_ENTRY = Record("GPT partition entry", "<", [
    ("type_guid", 0, "16s"),
    ("unique_guid", 16, "16s"),
    ("first_lba", 32, "Q"),
    ("last_lba", 40, "Q"),          # inclusive
    ("attributes", 48, "Q"),
    ("name", 56, "72s"),            # UTF-16LE, NUL-padded, 36 code units
], size=128)
GPT_NUM_ENTRIES = 128
GPT_ENTRIES_BYTES = GPT_NUM_ENTRIES * GPT_ENTRY.size  # 16 KiB
GPT_MAX_ENTRIES_BYTES = 16 << 20  # what the reader accepts: 65536 entries of 256 bytes

# ===========================================================================
# Constants: partition types, attributes, names, sizes
# ===========================================================================

TYPE_ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
TYPE_MSR = "e3c9e316-0b5c-4db8-817d-f92df00215ae"
TYPE_BASIC_DATA = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"
TYPE_WINRE = "de94bba4-06d1-4d40-a16a-bfd50179d6ac"

GPT_TYPE_NAMES = {
    TYPE_ESP: "EFI system",
    TYPE_MSR: "Microsoft reserved",
    TYPE_BASIC_DATA: "Microsoft basic data",
    TYPE_WINRE: "Windows recovery environment",
}

MBR_TYPE_NTFS = 0x07
MBR_TYPE_WINRE = 0x27   # what Windows Setup gives the WinRE partition of an MBR disk
MBR_TYPE_FAT32_LBA = 0x0C
MBR_TYPE_PROTECTIVE = 0xEE
MBR_TYPE_NAMES = {0x07: "NTFS/exFAT", 0x0B: "FAT32", 0x0C: "FAT32 (LBA)", 0xEF: "EFI system",
                  0xEE: "GPT protective", 0x27: "Windows recovery", 0x05: "extended", 0x0F: "extended (LBA)"}

# Attribute bits.  Windows marks its WinRE partition "required by the platform"
# (bit 0) and "no drive letter" (bit 63): diskpart's documented gpt attributes=0x8000000000000001.
ATTR_PLATFORM_REQUIRED = 1 << 0
ATTR_NO_DRIVE_LETTER = 1 << 63
ATTR_WINRE = ATTR_PLATFORM_REQUIRED | ATTR_NO_DRIVE_LETTER

# Partition names as Windows writes them.  The recovery partition is made by
# diskpart as a basic data partition whose type is then changed (set id=...),
# so it keeps the basic-data name.
NAME_ESP = "EFI system partition"
NAME_MSR = "Microsoft reserved partition"
NAME_BASIC_DATA = "Basic data partition"

ALIGN = 1 * MiB
ESP_SIZE = 260 * MiB   # Microsoft's minimum for FAT32 on 4Kn disks, used for both sector sizes
MSR_SIZE = 16 * MiB    # what Windows 10/11 Setup creates
MIN_NTFS_SIZE = 8 * MiB  # smallest Windows/data partition we plan (mkntfs itself needs ~1 MiB)
MBR_MAX_SECTORS = 0xFFFFFFFF

LAYOUTS = ("uefi", "bios", "hybrid", "native")
RECOVERY_LAYOUTS = ("uefi", "bios", "hybrid")  # the layouts that may have a WinRE partition
# Other names a layout is known by: Convert-WindowsImage calls the hybrid one WindowsToGo.
LAYOUT_ALIASES = {"windowstogo": "hybrid"}

# CHS geometry for LBA disks: 255 heads, 63 sectors per track, as Windows and
# fdisk assume; CHS past cylinder 1023 is written as (1023, 254, 63) = FE FF FF.
CHS_HEADS = 255
CHS_SECTORS = 63
CHS_MAX = b"\xfe\xff\xff"


# ===========================================================================
# The target interface
# ===========================================================================


class Target(Protocol):
    size: int
    sector_size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> Any: ...


class RawFileTarget:
    """A raw disk image in a (sparse) regular file: the simplest target.

    ``RawFileTarget.create(path, size)`` makes a new sparse file of ``size`` bytes.
    """

    def __init__(self, path: str | os.PathLike, *, sector_size: int = 512, writable: bool = True):
        if sector_size not in (512, 4096):
            raise UsageError(f"sector size {sector_size} not supported: use 512 or 4096")
        self.path = os.fspath(path)
        self.sector_size = sector_size
        self._fd = os.open(self.path, os.O_RDWR if writable else os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    @classmethod
    def create(cls, path: str | os.PathLike, size: int, *, sector_size: int = 512) -> "RawFileTarget":
        fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        return cls(path, sector_size=sector_size)

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        return data + bytes(length - len(data))  # past EOF reads as zero

    def write(self, offset: int, data: bytes) -> None:
        mv = memoryview(data)
        while mv:
            n = os.pwrite(self._fd, mv, offset)
            mv, offset = mv[n:], offset + n

    def copy_from_file(self, path: str | os.PathLike, src_offset: int, dst_offset: int, length: int) -> None:
        with open(path, "rb") as src:
            sfd = src.fileno()
            while length > 0:
                try:
                    n = os.copy_file_range(sfd, self._fd, length, src_offset, dst_offset)
                except OSError:
                    n = 0
                if n <= 0:  # not supported across these file systems: plain read/write
                    chunk = os.pread(sfd, min(length, 4 * MiB), src_offset)
                    if not chunk:
                        raise CorruptInput(f"{path}: ends before offset {src_offset}")
                    self.write(dst_offset, chunk)
                    n = len(chunk)
                src_offset, dst_offset, length = src_offset + n, dst_offset + n, length - n

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "RawFileTarget":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ===========================================================================
# Plans
# ===========================================================================


@dataclass(frozen=True)
class Partition:
    number: int            # 1-based, as in the table
    start: int             # bytes from the start of the disk
    size: int              # bytes
    role: str = "data"     # esp | msr | windows | recovery | data | other
    fs: str | None = None  # fat32 | ntfs | None (nothing to format)
    type_guid: str | None = None   # GPT type (lowercase canonical form)
    guid: str | None = None        # GPT unique partition GUID
    mbr_type: int | None = None    # MBR type byte
    name: str = ""
    attributes: int = 0
    active: bool = False

    @property
    def end(self) -> int:
        return self.start + self.size

    def first_lba(self, sector_size: int) -> int:
        return self.start // sector_size

    def last_lba(self, sector_size: int) -> int:
        return self.end // sector_size - 1

    def to_dict(self) -> dict[str, Any]:
        d = {"number": self.number, "role": self.role, "start": self.start, "size": self.size,
             "fs": self.fs, "name": self.name, "attributes": self.attributes, "active": self.active}
        if self.type_guid is not None:
            d["type_guid"] = self.type_guid
            d["type_name"] = GPT_TYPE_NAMES.get(self.type_guid, "")
            d["guid"] = self.guid
        if self.mbr_type is not None:
            d["mbr_type"] = self.mbr_type
            d["type_name"] = MBR_TYPE_NAMES.get(self.mbr_type, "")
        return d


@dataclass(frozen=True)
class DiskLayout:
    scheme: str                 # "gpt" | "mbr"
    disk_size: int
    sector_size: int
    partitions: tuple[Partition, ...]
    disk_guid: str | None = None        # GPT
    disk_signature: int | None = None   # MBR
    layout: str | None = None           # the plan's name, when planned
    warnings: tuple[str, ...] = field(default=())

    def role(self, role: str) -> Partition | None:
        return next((p for p in self.partitions if p.role == role), None)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"scheme": self.scheme, "disk_size": self.disk_size, "sector_size": self.sector_size}
        if self.layout:
            d["layout"] = self.layout
        if self.scheme == "gpt":
            d["disk_guid"] = self.disk_guid
        else:
            d["disk_signature"] = f"{self.disk_signature:08x}" if self.disk_signature is not None else None
        d["partitions"] = [p.to_dict() for p in self.partitions]
        if self.warnings:
            d["warnings"] = list(self.warnings)
        return d


def derived_signature(purpose: str = "mbr-signature") -> int:
    """A non-zero 32-bit MBR disk signature (random, or derived from the pinned seed: wim2vhd.repro)."""
    for i in range(64):
        sig = int.from_bytes(repro.derived(f"{purpose}:{i}" if i else purpose, 4), "little")
        if sig:
            return sig
    return 1  # unreachable in practice


def gpt_reserved_lbas(sector_size: int) -> tuple[int, int]:
    """(LBAs before the first usable one, LBAs after the last usable one)."""
    entry_lbas = -(-GPT_ENTRIES_BYTES // sector_size)
    return 2 + entry_lbas, 1 + entry_lbas


def _check_geometry(disk_size: int, sector_size: int) -> int:
    if sector_size not in (512, 4096):
        raise UsageError(f"sector size {sector_size} not supported: use 512 or 4096")
    if disk_size <= 0:
        raise UsageError(f"disk size must be positive, not {disk_size}")
    return disk_size // sector_size  # a partial last sector is not usable


def _gpt_data_end(disk_size: int, sector_size: int) -> int:
    """Byte offset where the usable area ends, aligned down to 1 MiB."""
    n_lbas = disk_size // sector_size
    _, tail = gpt_reserved_lbas(sector_size)
    return align_down((n_lbas - tail) * sector_size, ALIGN)


def layout_name(name: str) -> str | None:
    """The layout a name means (one of LAYOUTS, an alias such as windowstogo, any case), or None."""
    low = name.lower() if isinstance(name, str) else name
    low = LAYOUT_ALIASES.get(low, low)
    return low if low in LAYOUTS else None


def _too_small(layout: str, disk_size: int, need: int) -> NoSpace:
    return NoSpace(f"a {format_size(disk_size)} disk is too small for the {layout} layout: "
                   f"it must be at least {format_size(need)}", hint="choose a larger --size")


def plan_layout(disk_size: int, sector_size: int = 512, layout: str = "uefi", *,
                recovery_size: int = 0, mbr: bool = False,
                esp_size: int = ESP_SIZE, msr_size: int = MSR_SIZE) -> DiskLayout:
    """Plan the partitions of a new disk.  Every start and size is a multiple of 1 MiB.

    * ``uefi``: GPT with ESP, MSR, Windows, and a WinRE partition after Windows
      when ``recovery_size`` > 0;
    * ``bios``: MBR with one active NTFS partition from 1 MiB to the end, or to a WinRE partition
      (type 0x27) at the end when ``recovery_size`` > 0;
    * ``hybrid`` (``windowstogo``): MBR with an active FAT32 system partition of ``esp_size``
      that holds the UEFI and the BIOS boot files, then NTFS for Windows to the end, or to a WinRE
      partition (type 0x27, as on bios) when ``recovery_size`` > 0;
    * ``native``: one NTFS partition, GPT (or MBR with ``mbr=True``), no ESP.

    Raises NoSpace when the disk is too small, UsageError for bad arguments.
    """
    n_lbas = _check_geometry(disk_size, sector_size)
    if layout_name(layout) is None:
        raise UsageError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    layout = layout_name(layout)
    for what, v in (("recovery size", recovery_size), ("ESP size", esp_size), ("MSR size", msr_size)):
        if v < 0 or v % ALIGN:
            raise UsageError(f"{what} must be a whole number of MiB, not {v} bytes")
    if layout not in RECOVERY_LAYOUTS and recovery_size:
        raise UsageError(f"a recovery partition is only planned in the {', '.join(RECOVERY_LAYOUTS)} layouts, "
                         f"not {layout}")
    if mbr and layout != "native":
        raise UsageError("mbr=True only applies to the native layout (bios and hybrid are always MBR, "
                         "uefi always GPT)")
    if layout in ("uefi", "hybrid") and esp_size < 33 * MiB:
        # FAT32 needs 65525 clusters; 512-byte clusters on 512-byte sectors need ~33 MiB.
        raise UsageError(f"an ESP of {format_size(esp_size)} cannot hold FAT32: use at least 33 MiB")

    scheme = "mbr" if (layout in ("bios", "hybrid") or mbr) else "gpt"
    parts: list[Partition] = []
    if scheme == "gpt":
        data_end = _gpt_data_end(disk_size, sector_size)
        head = ALIGN
        if layout == "uefi":
            fixed = esp_size + msr_size + recovery_size
            need_end = head + fixed + MIN_NTFS_SIZE
            if data_end < need_end:
                raise _too_small(layout, disk_size, min_disk_size(layout, sector_size, recovery_size=recovery_size,
                                                                  esp_size=esp_size, msr_size=msr_size))
            esp = Partition(1, head, esp_size, "esp", "fat32", TYPE_ESP, repro.derived_guid("partition:esp"),
                            name=NAME_ESP)
            msr = Partition(2, esp.end, msr_size, "msr", None, TYPE_MSR, repro.derived_guid("partition:msr"),
                            name=NAME_MSR)
            win_end = data_end - recovery_size
            win = Partition(3, msr.end, win_end - msr.end, "windows", "ntfs", TYPE_BASIC_DATA,
                            repro.derived_guid("partition:windows"), name=NAME_BASIC_DATA)
            parts = [esp, msr, win]
            if recovery_size:
                parts.append(Partition(4, win_end, recovery_size, "recovery", "ntfs", TYPE_WINRE,
                                       repro.derived_guid("partition:recovery"), name=NAME_BASIC_DATA,
                                       attributes=ATTR_WINRE))
        else:  # native on GPT
            if data_end < head + MIN_NTFS_SIZE:
                raise _too_small(layout, disk_size, min_disk_size(layout, sector_size))
            parts = [Partition(1, head, data_end - head, "windows", "ntfs", TYPE_BASIC_DATA,
                               repro.derived_guid("partition:windows"), name=NAME_BASIC_DATA)]
        return DiskLayout("gpt", disk_size, sector_size, tuple(parts),
                          disk_guid=repro.derived_guid("disk"), layout=layout)

    # MBR: the last partition ends at the last whole MiB of the disk.
    data_end = align_down(n_lbas * sector_size, ALIGN)
    mbr_limit = align_down(MBR_MAX_SECTORS * sector_size, ALIGN)
    if data_end > mbr_limit:
        raise UsageError(f"an MBR disk with {sector_size}-byte sectors cannot address past "
                         f"{format_size(mbr_limit)}: use the uefi layout (GPT) or a smaller --size")
    head = ALIGN + (esp_size if layout == "hybrid" else 0)
    if data_end < head + MIN_NTFS_SIZE + recovery_size:
        raise _too_small(layout, disk_size, min_disk_size(layout, sector_size, mbr=mbr, esp_size=esp_size,
                                                          recovery_size=recovery_size))
    parts = []
    if layout == "hybrid":
        # bcdboot /f ALL's system partition (Convert-WindowsImage's WindowsToGo: New-Partition -MbrType
        # FAT32 -IsActive): type 0x0C, not the ESP's 0xEF, because the BIOS side (the boot code, then
        # bootmgr) and Windows itself look for a FAT32 type; UEFI firmware finds its files by the
        # file system, whatever the type byte (edk2/OVMF, and the machines Windows To Go boots on).
        # Its role is esp: it is the EFI system partition of the disk for UEFI firmware.
        parts.append(Partition(1, ALIGN, esp_size, "esp", "fat32", mbr_type=MBR_TYPE_FAT32_LBA, active=True))
    # Native boot does not need the partition active; BIOS boot does (hybrid: the system partition is).
    win_end = data_end - recovery_size
    parts.append(Partition(len(parts) + 1, head, win_end - head, "windows", "ntfs", mbr_type=MBR_TYPE_NTFS,
                           active=(layout == "bios")))
    if recovery_size:
        # As Windows Setup leaves an MBR disk: WinRE in a primary NTFS partition of type 0x27 after Windows.
        parts.append(Partition(len(parts) + 1, win_end, recovery_size, "recovery", "ntfs", mbr_type=MBR_TYPE_WINRE))
    return DiskLayout("mbr", disk_size, sector_size, tuple(parts),
                      disk_signature=derived_signature(), layout=layout)


def min_disk_size(layout: str = "uefi", sector_size: int = 512, *, recovery_size: int = 0, mbr: bool = False,
                  esp_size: int = ESP_SIZE, msr_size: int = MSR_SIZE) -> int:
    """The smallest disk (a multiple of 1 MiB) that plan_layout accepts for this layout.

    GPT layouts keep their last MiB free for the backup table; MBR needs only the first.
    """
    layout = layout_name(layout) or layout
    if layout == "uefi":
        return ALIGN + esp_size + msr_size + MIN_NTFS_SIZE + recovery_size + ALIGN
    if layout == "hybrid":
        return ALIGN + esp_size + MIN_NTFS_SIZE + recovery_size
    if layout == "native" and not mbr:
        return ALIGN + MIN_NTFS_SIZE + ALIGN
    return ALIGN + MIN_NTFS_SIZE + recovery_size


# ===========================================================================
# CHS, GUID and CRC helpers (pure)
# ===========================================================================


def lba_to_chs(lba: int, heads: int = CHS_HEADS, sectors: int = CHS_SECTORS) -> bytes:
    """The 3-byte CHS form of an LBA, capped at (1023, 254, 63) as Windows/fdisk write it."""
    cyl, rem = divmod(lba, heads * sectors)
    head, sec = divmod(rem, sectors)
    if cyl > 1023:
        return CHS_MAX
    return bytes([head, ((cyl >> 2) & 0xC0) | (sec + 1), cyl & 0xFF])


def guid_to_disk(g: str) -> bytes:
    return uuid.UUID(g).bytes_le


def guid_from_disk(b: bytes) -> str:
    return str(uuid.UUID(bytes_le=bytes(b)))


def _crc(data: bytes | bytearray) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_name(name: str) -> bytes:
    raw = name.encode("utf-16-le")
    if len(raw) > 72:
        raise UsageError(f"partition name {name!r} is longer than 36 UTF-16 code units")
    return raw.ljust(72, b"\0")


def decode_name(raw: bytes) -> str:
    raw = bytes(raw)
    for i in range(0, len(raw), 2):
        if raw[i:i + 2] == b"\0\0":
            raw = raw[:i]
            break
    return raw.decode("utf-16-le", errors="replace")


# ===========================================================================
# Building tables (pure: layout in, sector images out)
# ===========================================================================


def _validate(layout: DiskLayout) -> None:
    ss = layout.sector_size
    _check_geometry(layout.disk_size, ss)
    n_lbas = layout.disk_size // ss
    if layout.scheme == "gpt":
        first, tail = gpt_reserved_lbas(ss)
        lo, hi = first * ss, (n_lbas - tail) * ss
    else:
        lo, hi = ss, min(n_lbas, MBR_MAX_SECTORS) * ss
        if len(layout.partitions) > 4:
            raise UsageError("an MBR holds at most 4 primary partitions")
    if layout.scheme == "gpt" and len(layout.partitions) > GPT_NUM_ENTRIES:
        raise UsageError(f"a GPT holds at most {GPT_NUM_ENTRIES} partitions")
    spans = []
    for p in layout.partitions:
        if p.start % ss or p.size % ss or p.size <= 0:
            raise UsageError(f"partition {p.number} is not a positive whole number of {ss}-byte sectors")
        if p.start < lo or p.end > hi:
            raise NoSpace(f"partition {p.number} ({format_size(p.start)}..{format_size(p.end)}) lies outside "
                          f"the usable area of a {format_size(layout.disk_size)} disk")
        spans.append((p.start, p.end, p.number))
    spans.sort()
    for (s1, e1, n1), (s2, _e2, n2) in zip(spans, spans[1:]):
        if s2 < e1:
            raise UsageError(f"partitions {n1} and {n2} overlap")


def build_mbr(layout: DiskLayout, existing: bytes = b"") -> bytes:
    """Sector 0 (512 bytes) for the layout; boot code (first 440 bytes) comes from ``existing``."""
    sec = bytearray(existing[:512].ljust(512, b"\0"))
    entries = bytearray(64)
    ss = layout.sector_size
    if layout.scheme == "gpt":
        # Protective MBR (UEFI spec): one 0xEE entry from LBA 1 over the whole
        # disk (capped at 32 bits); disk signature zero, nothing active.
        n_lbas = layout.disk_size // ss
        MBR_ENTRY.pack_into(entries, 0, status=0, chs_first=lba_to_chs(1), type=MBR_TYPE_PROTECTIVE,
                            chs_last=lba_to_chs(n_lbas - 1), lba_first=1,
                            sectors=min(n_lbas - 1, MBR_MAX_SECTORS))
        signature = 0
    else:
        for i, p in enumerate(layout.partitions):
            first, last = p.first_lba(ss), p.last_lba(ss)
            MBR_ENTRY.pack_into(entries, 16 * i, status=0x80 if p.active else 0,
                                chs_first=lba_to_chs(first), type=p.mbr_type or MBR_TYPE_NTFS,
                                chs_last=lba_to_chs(last), lba_first=first, sectors=last - first + 1)
        signature = layout.disk_signature if layout.disk_signature is not None else derived_signature()
    MBR.pack_into(sec, 0, disk_signature=signature, copy_protect=0, entries=bytes(entries),
                  boot_signature=MBR_SIGNATURE)
    return bytes(sec)


def build_gpt_entries(layout: DiskLayout) -> bytes:
    ss = layout.sector_size
    arr = bytearray(GPT_ENTRIES_BYTES)
    for i, p in enumerate(sorted(layout.partitions, key=lambda q: q.number)):
        if p.type_guid is None:
            raise UsageError(f"partition {p.number} has no GPT type")
        GPT_ENTRY.pack_into(arr, i * GPT_ENTRY.size, type_guid=guid_to_disk(p.type_guid),
                            unique_guid=guid_to_disk(p.guid or repro.derived_guid(f"partition:{p.number}")),
                            first_lba=p.first_lba(ss), last_lba=p.last_lba(ss),
                            attributes=p.attributes, name=encode_name(p.name))
    return bytes(arr)


def build_gpt_header(layout: DiskLayout, entries: bytes, *, backup: bool) -> bytes:
    """One header sector (sector_size bytes), with its CRC."""
    ss = layout.sector_size
    n_lbas = layout.disk_size // ss
    first, tail = gpt_reserved_lbas(ss)
    last_lba = n_lbas - 1
    entry_lbas = first - 2
    my, alt = (last_lba, 1) if backup else (1, last_lba)
    entries_lba = last_lba - entry_lbas if backup else 2
    hdr = bytearray(GPT_HEADER.pack(dict(
        signature=GPT_SIGNATURE, revision=GPT_REVISION, header_size=GPT_HEADER.size, header_crc32=0,
        my_lba=my, alternate_lba=alt, first_usable_lba=first, last_usable_lba=n_lbas - tail - 1,
        disk_guid=guid_to_disk(layout.disk_guid), entries_lba=entries_lba, num_entries=GPT_NUM_ENTRIES,
        entry_size=GPT_ENTRY.size, entries_crc32=_crc(entries))))
    GPT_HEADER.pack_into(hdr, 0, header_crc32=_crc(hdr))
    return bytes(hdr).ljust(ss, b"\0")


# ===========================================================================
# Writing
# ===========================================================================


def write_table(target: Target, layout: DiskLayout) -> None:
    """Write the layout's partition table (GPT or MBR) to the target.

    The MBR boot code (bytes 0..439) is kept.  Writing an MBR over a disk that
    had a GPT erases the GPT headers so no tool sees a stale table.
    """
    ss = layout.sector_size
    if target.sector_size != ss:
        raise UsageError(f"layout is for {ss}-byte sectors but the disk has {target.sector_size}-byte sectors")
    if layout.disk_size > target.size:
        raise NoSpace(f"layout is for a {format_size(layout.disk_size)} disk but the disk holds "
                      f"{format_size(target.size)}")
    if layout.scheme not in ("gpt", "mbr"):
        raise UsageError(f"unknown partition scheme {layout.scheme!r}")
    _validate(layout)
    n_lbas = layout.disk_size // ss
    mbr = build_mbr(layout, target.read(0, 512))
    if layout.scheme == "gpt":
        if layout.disk_guid is None:
            layout = replace(layout, disk_guid=repro.derived_guid("disk"))
        entries = build_gpt_entries(layout)
        primary = build_gpt_header(layout, entries, backup=False)
        backup = build_gpt_header(layout, entries, backup=True)
        entry_lbas = len(entries) // ss
        # Backup entries and header first, primary last: a half-written table
        # never looks valid at the front.
        target.write((n_lbas - 1 - entry_lbas) * ss, entries)
        target.write((n_lbas - 1) * ss, backup)
        target.write(2 * ss, entries)
        target.write(ss, primary)
        target.write(0, mbr)  # only the first 512 bytes, even of a 4K LBA 0
        return
    # MBR: clear any GPT headers left from an earlier table.
    for lba in (1, n_lbas - 1):
        if target.read(lba * ss, 8) == GPT_SIGNATURE:
            target.write(lba * ss, bytes(ss))
    target.write(0, mbr)


# ===========================================================================
# Reading
# ===========================================================================


def _parse_mbr_entries(sector0: bytes) -> list[dict[str, Any]]:
    ents = []
    for i in range(4):
        e = MBR_ENTRY.parse(sector0, 446 + 16 * i)
        if e["type"] != 0 and e["sectors"] != 0:
            e["index"] = i + 1
            ents.append(e)
    return ents


def _read_gpt_at(target: Target, ss: int, lba: int, n_lbas: int) -> tuple[dict[str, Any], bytes]:
    """Read and check one GPT header and its entry array; raise CorruptInput on a bad one."""
    where = "primary" if lba == 1 else "backup"
    sec = target.read(lba * ss, ss)
    hdr = GPT_HEADER.parse(sec)
    if hdr["signature"] != GPT_SIGNATURE:
        raise CorruptInput(f"{where} GPT header at LBA {lba}: no 'EFI PART' signature")
    if not (GPT_HEADER.size <= hdr["header_size"] <= ss):
        raise CorruptInput(f"{where} GPT header: bad header size {hdr['header_size']}")
    raw = bytearray(sec[:hdr["header_size"]])
    GPT_HEADER.pack_into(raw, 0, header_crc32=0)
    if _crc(raw) != hdr["header_crc32"]:
        raise CorruptInput(f"{where} GPT header: CRC32 mismatch (the table is damaged)")
    if hdr["my_lba"] != lba:
        raise CorruptInput(f"{where} GPT header says it is at LBA {hdr['my_lba']}, not {lba}")
    es = hdr["entry_size"]
    # UEFI 2.10, 5.3.2: SizeOfPartitionEntry is 128 x 2^n.  The array is read whole, so its size is
    # bounded too (a header on a disk of terabytes could otherwise ask for terabytes).
    if es < GPT_ENTRY.size or es % GPT_ENTRY.size or es & (es - 1) or hdr["num_entries"] > 65536:
        raise CorruptInput(f"{where} GPT header: bad entry size {es} or count {hdr['num_entries']}")
    nbytes = hdr["num_entries"] * es
    if nbytes > GPT_MAX_ENTRIES_BYTES:
        raise CorruptInput(f"{where} GPT header: an entry array of {nbytes} bytes ({hdr['num_entries']} entries "
                           f"of {es}) is more than the {GPT_MAX_ENTRIES_BYTES >> 20} MiB any table needs")
    if hdr["entries_lba"] + -(-nbytes // ss) > n_lbas:
        raise CorruptInput(f"{where} GPT entry array lies past the end of the disk")
    arr = target.read(hdr["entries_lba"] * ss, nbytes)
    if _crc(arr) != hdr["entries_crc32"]:
        raise CorruptInput(f"{where} GPT partition entries: CRC32 mismatch (the table is damaged)")
    return hdr, arr


def _gpt_layout(target: Target, ss: int, disk_size: int) -> DiskLayout:
    n_lbas = disk_size // ss
    warnings: list[str] = []
    try:
        hdr, arr = _read_gpt_at(target, ss, 1, n_lbas)
        try:
            _read_gpt_at(target, ss, hdr["alternate_lba"] if hdr["alternate_lba"] < n_lbas else n_lbas - 1, n_lbas)
        except CorruptInput as e:
            warnings.append(f"{e}; the primary table is intact")
    except CorruptInput as primary_error:
        try:
            hdr, arr = _read_gpt_at(target, ss, n_lbas - 1, n_lbas)
        except CorruptInput:
            raise primary_error from None
        warnings.append(f"{primary_error}; using the backup table")
    parts = []
    for i in range(hdr["num_entries"]):
        e = GPT_ENTRY.parse(arr, i * hdr["entry_size"])
        if e["type_guid"] == bytes(16):
            continue
        if e["last_lba"] < e["first_lba"]:
            raise CorruptInput(f"GPT entry {i + 1}: ends (LBA {e['last_lba']}) before it starts "
                               f"(LBA {e['first_lba']})")
        tg = guid_from_disk(e["type_guid"])
        role = {TYPE_ESP: "esp", TYPE_MSR: "msr", TYPE_WINRE: "recovery", TYPE_BASIC_DATA: "data"}.get(tg, "other")
        parts.append(Partition(i + 1, e["first_lba"] * ss, (e["last_lba"] - e["first_lba"] + 1) * ss, role,
                               None, tg, guid_from_disk(e["unique_guid"]), name=decode_name(e["name"]),
                               attributes=e["attributes"]))
    return DiskLayout("gpt", disk_size, ss, tuple(parts), disk_guid=guid_from_disk(hdr["disk_guid"]),
                      warnings=tuple(warnings))


def read_table(target: Target, *, sector_size: int | None = None) -> DiskLayout | None:
    """Read the partition table back.  None when the disk has none (no 0x55AA).

    A GPT is looked for at the target's sector size, then at the other one
    (a raw image does not say which it was made for).  A GPT whose primary
    copy is damaged is read from its backup, with a warning; when both are
    damaged, CorruptInput.
    """
    disk_size = target.size
    sector0 = target.read(0, 512)
    if len(sector0) < 512 or MBR.parse(sector0)["boot_signature"] != MBR_SIGNATURE:
        return None
    ents = _parse_mbr_entries(sector0)
    if any(e["type"] == MBR_TYPE_PROTECTIVE for e in ents):
        first = sector_size or target.sector_size
        sizes = [first] + [s for s in (512, 4096) if s != first]
        errors = []
        for ss in sizes:
            if disk_size // ss < 3:
                continue
            if target.read(ss, 8) == GPT_SIGNATURE or target.read((disk_size // ss - 1) * ss, 8) == GPT_SIGNATURE:
                return _gpt_layout(target, ss, disk_size)
            errors.append(ss)
        raise CorruptInput("the protective MBR announces a GPT, but there is no GPT header "
                           f"(looked with {' and '.join(map(str, errors))}-byte sectors)")
    ss = sector_size or target.sector_size
    parts = []
    for e in ents:
        if e["lba_first"] == 0:
            raise CorruptInput(f"MBR entry {e['index']} starts at sector 0, over the MBR itself")
        start, size = e["lba_first"] * ss, e["sectors"] * ss
        role = ("data" if e["type"] in (0x07, 0x0B, 0x0C) else
                "recovery" if e["type"] == MBR_TYPE_WINRE else "other")
        parts.append(Partition(e["index"], start, size, role, None, mbr_type=e["type"],
                               active=bool(e["status"] & 0x80)))
    warnings = []
    for p in parts:
        if p.end > disk_size:
            warnings.append(f"partition {p.number} ends past the end of the disk")
    return DiskLayout("mbr", disk_size, ss, tuple(parts),
                      disk_signature=MBR.parse(sector0)["disk_signature"], warnings=tuple(warnings))
