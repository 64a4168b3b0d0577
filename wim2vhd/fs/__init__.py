"""File systems for new partitions: NTFS with mkntfs (wim2vhd.fs.ntfs), FAT32 for the ESP with
mkfs.fat and mtools (wim2vhd.fs.fat32), both made in a temporary sparse file whose data extents
are copied into the disk (wim2vhd.fs.volume, wim2vhd.fs.extents); and whole planned layouts.
"""
from __future__ import annotations

import os
from typing import Mapping

from wim2vhd.errors import UsageError
from wim2vhd.fs.extents import copy_extents, data_extents, nonzero_extents
from wim2vhd.fs.fat32 import FAT32_BOOT, fat32_geometry, make_fat32, read_fat32_boot
from wim2vhd.fs.ntfs import NTFS_BOOT, make_ntfs, read_ntfs_boot
from wim2vhd.fs.tools import find_tool
from wim2vhd.fs.volume import FileSource, FormatResult
from wim2vhd.partition import DiskLayout, Target, read_table

def rebuild_esp(target: Target, files: Mapping[str, FileSource], *, attributes: Mapping[str, str] | None = None,
                layout: DiskLayout | None = None, label: str = "SYSTEM",
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
                      tmp_dir=tmp_dir, target_zeroed=False)


def format_layout(target: Target, layout: DiskLayout, *, windows_label: str = "Windows",
                  recovery_label: str = "Recovery", esp_label: str = "SYSTEM",
                  esp_files: Mapping[str, FileSource] | None = None,
                  esp_attributes: Mapping[str, str] | None = None, cluster_size: int = 4096,
                  tmp_dir: str | os.PathLike | None = None,
                  target_zeroed: bool = False) -> dict[int, FormatResult]:
    """Format every partition of a planned layout that has a file system; {partition number: result}."""
    out: dict[int, FormatResult] = {}
    for p in layout.partitions:
        if p.fs == "ntfs":
            lab = recovery_label if p.role == "recovery" else windows_label
            out[p.number] = make_ntfs(target, p.start, p.size, label=lab, cluster_size=cluster_size,
                                      tmp_dir=tmp_dir, target_zeroed=target_zeroed)
        elif p.fs == "fat32":
            out[p.number] = make_fat32(target, p.start, p.size, label=esp_label, files=esp_files,
                                       attributes=esp_attributes, tmp_dir=tmp_dir,
                                       target_zeroed=target_zeroed)
    return out


__all__ = ["FormatResult", "make_ntfs", "make_fat32", "rebuild_esp", "format_layout", "data_extents",
           "nonzero_extents", "copy_extents", "find_tool", "read_ntfs_boot", "read_fat32_boot",
           "fat32_geometry", "NTFS_BOOT", "FAT32_BOOT"]
