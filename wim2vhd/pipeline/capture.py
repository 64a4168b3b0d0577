"""The capture pipeline: a disk's Windows volume back into a WIM (or appended to one), through
the native device layer and wimlib's NTFS-3G mode, unprivileged.  Every Windows attribute is kept:
security descriptors, alternate streams, reparse points, short names, times."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from wim2vhd import partition
from wim2vhd.atomic import AtomicOutput
from wim2vhd.disk import Disk, named_format, open_disk
from wim2vhd.errors import InputError, OutputError, UnsupportedInput, UsageError, Wim2VhdError
from wim2vhd.ntfs import NtfsVolume, NtfsWindow
from wim2vhd.wim import COMPRESSIONS, Wim, capture_ntfs, compression_name
from wim2vhd.wim.wimlib import ImageNaming

Progress = Callable[[str, int, int], None]


def _holds_ntfs(disk: Disk, p) -> bool:
    return p.size >= 512 and disk.read(p.start + 3, 8) == b"NTFS    "


def find_windows_partition(disk: Disk, number: int | None = None):
    """The partition to capture: number N (which must hold NTFS), or the NTFS partition that holds \\Windows."""
    layout = partition.read_table(disk)
    if layout is None:
        raise InputError(f"{disk.path} has no partition table: is it a disk image?")
    parts = list(layout.partitions)
    numbers = ", ".join(str(p.number) for p in parts) or "none"
    if number is not None:
        for p in parts:
            if p.number == number:
                if not _holds_ntfs(disk, p):
                    raise InputError(f"partition {number} of {disk.path} does not hold NTFS: capture takes an "
                                     f"NTFS volume (partitions: {numbers})")
                return p
        raise UsageError(f"{disk.path} has no partition {number}; it has {numbers}")
    found = []
    for p in parts:
        if not _holds_ntfs(disk, p):
            continue
        with NtfsWindow(disk, p.start, p.size, writable=False) as dev:
            try:
                with NtfsVolume(dev, readonly=True) as vol:
                    if vol.is_dir("Windows"):
                        found.append(p)
            except Wim2VhdError:  # a damaged NTFS: not this one
                continue
    if not found:
        raise InputError(f"{disk.path}: no NTFS partition holds \\Windows; choose one with --partition N "
                         f"(partitions: {numbers})")
    return found[0]


@dataclass
class CaptureOptions:
    partition: int | None = None   # None: the NTFS partition that holds \\Windows
    name: str | None = None        # None: the product name in the image's hives, made unique in OUT
    description: str | None = None
    compress: str | None = None    # None: lzx, or lzms for *.esd, or OUT's own with append
    append: bool = False           # add the image to the existing WIM or ESD OUT
    force: bool = False
    sync: bool = True
    format: str | None = None      # the disk's format (raw, vhd, vhdx, qcow2); None: by its content


def capture(disk_path: str, out: str, opts: CaptureOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Capture the Windows volume of a disk (raw, VHD, VHDX, qcow2, a child) into a WIM; the summary
    that --json prints."""
    name, description, compress, append = opts.name, opts.description, opts.compress, opts.append
    t0 = time.monotonic()
    if compress is not None and compress not in COMPRESSIONS:
        raise UsageError(f"--compress must be one of {', '.join(COMPRESSIONS)}, not {compress!r}")
    if name is not None and not name.strip():
        raise UsageError("--name must not be empty")
    if opts.format is not None:
        named_format(opts.format)
    if append:
        if not os.path.exists(out):
            raise InputError(f"--append: {out} does not exist (leave out --append to create it)")
        with Wim(out) as w:
            if w.total_parts > 1:
                raise UnsupportedInput(f"{out} is part of a split WIM, which cannot take another image: join "
                                       f"it first (wimjoin) or capture into a new WIM")
            have = compression_name(w.compression)
            names = {i.name for i in w.images()}
        if compress is not None and compress != have:
            raise UsageError(f"{out} uses {have} compression and an appended image gets it too: "
                             f"leave out --compress {compress}")
        if name is not None and name in names:
            raise UsageError(f"{out} already has an image named {name!r}: choose another --name")
        if not os.access(out, os.W_OK):
            raise OutputError(f"cannot append to {out}: permission denied")
        if os.path.exists(disk_path) and os.path.samefile(disk_path, out):
            raise InputError(f"{out} is also the disk to capture")
        compress = have
    elif compress is None:
        compress = "lzms" if out.lower().endswith(".esd") else "lzx"
    d = open_disk(disk_path, format=opts.format)
    try:
        part = find_windows_partition(d, opts.partition)
        shown = f"partition {part.number} of {disk_path}"
        fallback = f"{os.path.splitext(os.path.basename(disk_path))[0]} partition {part.number}"
        with NtfsWindow(d, part.start, part.size, writable=False) as dev:
            if append:
                idx = capture_ntfs(dev, out, ImageNaming(name, description, fallback), compression=compress,
                                   append_to=out, shown=shown, fsync=opts.sync, progress=progress)
            else:
                with AtomicOutput(out, force=opts.force, inputs=(disk_path,), sync=opts.sync) as ao:
                    idx = capture_ntfs(dev, ao.temp, ImageNaming(name, description, fallback),
                                       compression=compress, shown=shown, progress=progress)
                    ao.commit()
    finally:
        d.close()
    with Wim(out) as w:
        img = w.image(idx)
        total = w.image_count
    return {"output": os.path.abspath(out), "source": os.path.abspath(disk_path), "partition": part.number,
            "compression": compress, "appended": append, "images_in_output": total,
            "image": img.to_dict(), "seconds": round(time.monotonic() - t0, 3)}
