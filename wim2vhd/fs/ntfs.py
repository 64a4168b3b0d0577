"""NTFS for a new partition, made by mkntfs with the geometry Windows' boot code needs."""
from __future__ import annotations

from typing import Any, Callable
import os

from wim2vhd import repro
from wim2vhd.errors import EnvironmentFault, NoSpace, UsageError
from wim2vhd.fs import tools
from wim2vhd.fs.volume import (HEADS, SECTORS_PER_TRACK, FormatResult, TempVolume, check_geometry_fields,
                               check_span, copy_volume, default_tmp_dir)
from wim2vhd.partition import Target
from wim2vhd.ondisk import Record
from wim2vhd.units import MiB, format_size

# On-disk record (declarative): the boot sector we check after formatting.
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
    ("clusters_per_mft_record", 0x40, "b"),  # negative: 2 ** -value bytes
    ("serial", 0x48, "Q"),
    ("end_marker", 0x1FE, "H"),
], size=512)
NTFS_OEM = b"NTFS    "


def make_ntfs(target: Target, part_offset: int, part_size: int, *, label: str = "Windows",
              cluster_size: int = 4096, sector_size: int | None = None,
              tmp_dir: str | os.PathLike | None = None, target_zeroed: bool = False,
              progress: Callable[[int], None] | None = None) -> FormatResult:
    """Quick-format an NTFS volume for the partition at ``part_offset`` (bytes) of ``part_size`` bytes.

    The boot sector gets what Windows needs to boot from it: hidden sectors =
    partition start, 255 heads, 63 sectors per track.  In a reproducible run (wim2vhd.repro) the
    volume serial number is derived from the seed (otherwise mkntfs picks one).
    """
    ss = check_span(target, part_offset, part_size, sector_size)
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
    d = default_tmp_dir(target, tmp_dir)
    with TempVolume(d, part_size, "ntfs") as vol:
        args = ["-Q", "-F", "-q",
                "-s", str(ss), "-c", str(cluster_size),
                "-H", str(HEADS), "-S", str(SECTORS_PER_TRACK),  # LBA geometry, as Windows and fdisk use
                "-L", label]
        if hidden:
            args += ["-p", str(hidden)]
        if repro.active():
            # mkntfs stamps its system files with the clock; -T stamps them 1970-01-01 instead (libntfs-3g's
            # own clock is pinned for the rest: see ntfs.fixed_clock).
            args += ["-T"]
        tools.run("mkntfs", args + [vol.path])
        bs = NTFS_BOOT.parse(vol.read(0, 512))
        if bs["oem_id"] != NTFS_OEM:
            raise EnvironmentFault("mkntfs finished but wrote no NTFS boot sector")
        check_geometry_fields("NTFS", bs, ss, hidden)
        serial = bs["serial"]
        if repro.active():
            serial = int.from_bytes(repro.derived(f"ntfs-serial:{part_offset}", 8), "little")
            _set_ntfs_serial(vol, ss, part_size, serial)
        extents = copy_volume(target, vol, part_offset, target_zeroed, progress)
    return FormatResult("ntfs", part_offset, part_size, label, serial, cluster_size, extents)


def _set_ntfs_serial(vol: TempVolume, ss: int, part_size: int, serial: int) -> None:
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


