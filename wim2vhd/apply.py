"""The apply pipeline: a WIM image into a partitioned, formatted, bootable virtual disk.

    create -> partition -> format -> apply -> boot -> finalize

Each stage is timed and reported through a progress callable
(stage, done, total).  Everything is written to a temporary file beside the
output, which is synced and renamed only when every stage has succeeded.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from wim2vhd import fs, partition, repro
from wim2vhd.atomic import AtomicOutput
from wim2vhd.disk import Disk, Qcow2Disk, RawDisk, VhdDisk, format_for_path
from wim2vhd.errors import InputError, NoSpace, UsageError
from wim2vhd.ntfs import NtfsWindow, fixed_clock
from wim2vhd.units import GiB, MiB, align_up, format_size
from wim2vhd.wim import ImageInfo, Wim

Progress = Callable[[str, int, int], None]
STAGES = ("create", "partition", "format", "apply", "boot", "finalize")
LAYOUTS = ("uefi", "bios", "native")

# Default disk size: room for the image and for Windows to run and update (Convert-WindowsImage's
# default is 25 GB), and never less than 1.5 x the image plus 4 GiB.
DEFAULT_MIN_SIZE = 25 * GiB
# Block size of dynamic disks made by apply.  NTFS spreads its metadata over the volume ($MFT, $MFTMirr,
# $LogFile, bitmaps), so large blocks (Hyper-V's 32 MiB) leave many mostly-empty blocks allocated;
# 2 MiB (VHD's only common size, and fine for Hyper-V's VHDX) keeps a dynamic disk close to its data.
# qcow2 keeps qemu's 64 KiB clusters (its own default, see disk/qcow2.py), smaller still.
APPLY_BLOCK_SIZE = 2 * MiB
# Measured on /usr/share (52k files): 16-32 MiB absorbs libntfs-3g's rewrites as well as 192 MiB
# does (within noise), and keeps peak RSS near 125 MiB (docs/performance.md).
DEFAULT_CACHE = 32 * MiB
# File writes queued for the writer thread, so that they overlap wimlib's decompression.
WRITER_QUEUE = 32 * MiB
# Read-ahead decompression helpers at most (native/w2v_readahead.c).
MAX_THREADS = 8


def default_size(img: ImageInfo) -> int:
    return max(DEFAULT_MIN_SIZE, align_up(int(img.total_bytes * 1.5) + 4 * GiB, GiB))


def ntfs_need(img: ImageInfo, cluster: int = 4096) -> int:
    """A conservative estimate of the NTFS space an image takes: data rounded to clusters,
    one 1 KiB MFT record per file and directory, index blocks, and the log and metadata."""
    n = img.files + img.directories
    return int(img.total_bytes * 1.02) + n * (cluster + 1024) + 128 * MiB


@dataclass
class ApplyOptions:
    image: str
    out: str
    index: int | None = None
    name: str | None = None
    refs: tuple[str, ...] = ()
    size: int | None = None
    disk_type: str = "dynamic"
    layout: str = "uefi"
    mbr: bool = False
    recovery_size: int = 0
    label: str = "Windows"
    seed: str | None = None
    force: bool = False
    sector_size: int = 512
    block_size: int | None = None
    cache_size: int = DEFAULT_CACHE
    locale: str = "en-US"
    bcd_devices: str = "locate"
    bios_boot_code: str | None = None
    boot: bool = True
    threads: int | None = None  # read-ahead decompression helpers (None: by CPU count; 0: none)
    sync: bool = True  # False: page-cache writes and no fsync (--no-sync; see wim2vhd.atomic)
    customize: Any = None  # wim2vhd.customize.Customizations, applied to the image before extraction


@dataclass
class Report:
    stages: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str, progress: Progress | None) -> Iterator[None]:
        t0 = time.monotonic()
        if progress:
            progress(name, 0, 0)
        yield
        self.stages[name] = round(time.monotonic() - t0, 3)


def _check_options(o: ApplyOptions) -> None:
    if o.layout not in LAYOUTS:
        raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, not {o.layout!r}")
    if o.disk_type not in ("fixed", "dynamic"):
        raise UsageError(f"--type must be fixed or dynamic, not {o.disk_type!r}")
    if o.mbr and o.layout != "native":
        raise UsageError("--mbr goes with --layout native (bios is always MBR, uefi always GPT)")
    if o.recovery_size and o.layout != "uefi":
        raise UsageError("--recovery goes with --layout uefi")
    if o.bcd_devices not in ("locate", "partition"):
        raise UsageError("--bcd-devices must be locate or partition")
    if o.sector_size not in (512, 4096):
        raise UsageError("--sector-size must be 512 or 4096")
    if o.threads is not None and not 0 <= o.threads <= MAX_THREADS:
        raise UsageError(f"--threads must be 0 to {MAX_THREADS}")
    if o.layout == "bios" and o.sector_size != 512:
        raise UsageError("BIOS boot needs 512-byte sectors")
    if o.bios_boot_code is not None:
        if o.layout != "bios" or not o.boot:
            raise UsageError("--bios-boot-code goes with --layout bios (and without --no-boot)")
        from wim2vhd.boot.biosboot import check_code_size
        try:  # checked before any work: the code itself is read by the boot stage
            size = os.stat(o.bios_boot_code).st_size
        except OSError as e:
            raise InputError(f"--bios-boot-code {o.bios_boot_code}: {e.strerror}") from None
        check_code_size(size)


def check_image_layout(layout: str, index: int, img: ImageInfo) -> None:
    """Refuse a layout the image's architecture cannot boot from: ARM64 Windows has no BIOS boot
    (no bootmgr or winload.exe for it), only UEFI."""
    if layout == "bios" and img.architecture == "arm64":
        raise UsageError(f"image {index} ({img.name!r}) is for ARM64, which boots only from UEFI: "
                         "use --layout uefi (or native)")


# The time a reproducible run stamps on what it creates when the image says nothing: 2000-01-01 UTC.
FALLBACK_EPOCH = 946684800


def reproducible_time(wim: Wim, index: int) -> int:
    """The time of a reproducible run (--seed): SOURCE_DATE_EPOCH, as reproducible-builds.org defines it,
    or else the image's own last modification time, so that the same image gives the same disk."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env is not None:
        try:
            t = int(env)
        except ValueError:
            raise UsageError(f"SOURCE_DATE_EPOCH must be whole seconds since 1970, not {env!r}") from None
        if t < 0:
            raise UsageError(f"SOURCE_DATE_EPOCH must not be negative, not {env!r}")
        return t
    return wim.image_time(index) or FALLBACK_EPOCH


def apply(o: ApplyOptions, progress: Progress | None = None, *, wim: Wim | None = None) -> dict[str, Any]:
    """Run the pipeline; returns the summary that --json prints.  `wim`: o.image already open (several
    editions from one source share it), left open."""
    _check_options(o)
    fmt = format_for_path(o.out)
    if fmt is VhdDisk and o.sector_size != 512:
        raise UsageError("VHD supports only 512-byte sectors; use .vhdx for 4096")
    if fmt is Qcow2Disk and o.sector_size != 512:
        raise UsageError("qcow2 records no sector size, so its disks have 512-byte sectors; use .vhdx for 4096")
    rep = Report()
    t_start = time.monotonic()
    with contextlib.nullcontext(wim) if wim is not None else Wim(o.image, refs=o.refs) as wim:
        index = wim.resolve(o.index, o.name)
        img = wim.image(index)
        check_image_layout(o.layout, index, img)
        size = o.size or default_size(img)
        pinned = reproducible_time(wim, index) if o.seed is not None else None
        # With --seed every identifier and time the run makes up is derived (wim2vhd.repro), so the
        # same image, options and seed give the same bytes.
        with repro.pinned(o.seed, pinned or 0), fixed_clock(pinned):
            # Everything is checked before anything is written.
            plan = partition.plan_layout(size, o.sector_size, o.layout, recovery_size=o.recovery_size,
                                         mbr=o.mbr)
            win = plan.role("windows")
            need = ntfs_need(img)
            if win.size < need:
                raise NoSpace(f"image {index} ({img.name}) needs about {format_size(need)} of NTFS space, but "
                              f"the Windows partition would be {format_size(win.size)}",
                              hint=f"use --size {format_size(align_up(size + need - win.size, GiB)).replace(' GiB', 'G')} or more")
            if o.customize is not None:
                o.customize.apply_to_image(wim, index)
            return _write(o, fmt, progress, wim, index, img, size, plan, win, rep, t_start)


def _write(o: ApplyOptions, fmt: type[Disk], progress: Progress | None, wim: Wim, index: int, img: ImageInfo,
           size: int, plan: partition.DiskLayout, win: partition.Partition, rep: "Report",
           t_start: float) -> dict[str, Any]:
    """The stages that write, from create to finalize, under OUT's temporary name."""
    with AtomicOutput(o.out, force=o.force, inputs=(o.image, *o.refs), sync=o.sync) as ao:
        disk = None
        # The read-ahead plan loads the image's metadata on a thread while the disk is created and
        # formatted (nothing below uses the Wim before the apply stage).
        ra = wim.readahead(index, o.threads)
        try:
            with rep.stage("create", progress):
                disk = fmt.create(ao.temp, size, dynamic=o.disk_type == "dynamic",
                                  block_size=o.block_size or (APPLY_BLOCK_SIZE if fmt not in (RawDisk, Qcow2Disk) else None),
                                  sector_size=o.sector_size)
                if o.cache_size:
                    disk.set_cache(o.cache_size)
                # Large writes go straight to the device when the disk is to be synced anyway.
                disk.set_writer(WRITER_QUEUE, direct=o.sync)
            with rep.stage("partition", progress):
                partition.write_table(disk, plan)
            with rep.stage("format", progress):
                formatted = fs.format_layout(disk, plan, windows_label=o.label,
                                                   tmp_dir=os.path.dirname(ao.temp), target_zeroed=True)
            with rep.stage("apply", progress):
                with NtfsWindow(disk, win.start, win.size, compact=True) as dev:
                    rep.data["readahead"] = wim.extract_ntfs(index, dev, progress, readahead=ra)
                if o.customize is not None:
                    o.customize.apply_to_volume(disk, win)
            if o.boot:
                with rep.stage("boot", progress):
                    from wim2vhd.boot import bcdboot
                    rep.data["boot"] = bcdboot.make_bootable(disk, plan, wim, index, img, o,
                                                             tmp_dir=os.path.dirname(ao.temp))
            with rep.stage("finalize", progress):
                disk.flush()  # ao.commit() fsyncs the file (unless --no-sync)
                stats = disk.stats()
                info = disk.info()
                disk.close()
                disk = None
                ao.commit()
        except BaseException:
            if disk is not None:
                disk.abandon()
            raise
        finally:
            ra.close()   # after extract_ntfs has closed it, a no-op
    return {
        "output": os.path.abspath(o.out),
        "image": {**img.to_dict(), "source": os.path.abspath(o.image)},
        "disk": {k: info[k] for k in ("format", "type", "virtual_size", "file_size", "allocated_bytes",
                                      "block_size", "logical_sector_size") if k in info}
                | {"id": info.get("disk_id") or info.get("unique_id")},
        "layout": plan.to_dict(),
        "formatted": {str(k): v.to_dict() for k, v in formatted.items()},
        "boot": rep.data.get("boot"),
        "stages": rep.stages,
        "seconds": round(time.monotonic() - t_start, 3),
        "io": {k: stats[k] for k in ("reads", "writes", "read_bytes", "write_bytes", "cache_hits",
                                     "cache_misses", "cache_writebacks", "allocations", "direct_writes",
                                     "direct_bytes", "writer_waits", "writer_wait_ns")}
              | {"readahead": rep.data.get("readahead")},
    }
