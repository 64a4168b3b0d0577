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
from wim2vhd.disk import RawDisk, VhdDisk, format_for_path
from wim2vhd._lib import lib
from wim2vhd.errors import NoSpace, UsageError, Wim2VhdError, host_error
from wim2vhd.ntfs import NtfsWindow, fixed_clock
from wim2vhd.options import ApplyOptions
from wim2vhd.units import GiB, MiB, align_up, format_size
from wim2vhd.wim import ImageInfo, Wim

Progress = Callable[[str, int, int], None]
STAGES = ("create", "partition", "format", "apply", "boot", "finalize")

# Default disk size: room for the image and for Windows to run and update (Convert-WindowsImage's
# default is 25 GB), and never less than 1.5 x the image plus 4 GiB.
DEFAULT_MIN_SIZE = 25 * GiB
# Block size of dynamic disks made by apply.  NTFS spreads its metadata over the volume ($MFT, $MFTMirr,
# $LogFile, bitmaps), so large blocks (Hyper-V's 32 MiB) leave many mostly-empty blocks allocated;
# 2 MiB (VHD's only common size, and fine for Hyper-V's VHDX) keeps a dynamic disk close to its data.
APPLY_BLOCK_SIZE = 2 * MiB
# File writes queued for the writer thread, so that they overlap wimlib's decompression.
WRITER_QUEUE = 32 * MiB


def default_size(img: ImageInfo) -> int:
    return max(DEFAULT_MIN_SIZE, align_up(int(img.total_bytes * 1.5) + 4 * GiB, GiB))


def ntfs_need(img: ImageInfo, cluster: int = 4096) -> int:
    """A conservative estimate of the NTFS space an image takes: data rounded to clusters,
    one 1 KiB MFT record per file and directory, index blocks, and the log and metadata."""
    n = img.files + img.directories
    return int(img.total_bytes * 1.02) + n * (cluster + 1024) + 128 * MiB


@dataclass(frozen=True)
class ApplyJob:
    """One disk to make: image `index` of `source` (what wimlib opens) into `out`."""
    source: str
    out: str
    index: int


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


def check_image_layout(layout: str, index: int, img: ImageInfo) -> None:
    """Refuse a layout the image's architecture cannot boot from: ARM64 Windows has no BIOS boot
    (no bootmgr or winload.exe for it), only UEFI."""
    if partition.layout_name(layout) in ("bios", "hybrid") and img.architecture == "arm64":
        raise UsageError(f"image {index} ({img.name!r}) is for ARM64, which boots only from UEFI: "
                         f"--layout {layout} needs BIOS boot files; use --layout uefi (or native)")


def _size_arg(n: int) -> str:
    """A size as --size takes it: whole GiB as 3G, else whole MiB as 290M (rounded up)."""
    return f"{n // GiB}G" if n % GiB == 0 else f"{-(-n // MiB)}M"


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


@dataclass
class _Run:
    """What the writing stages share: the job, its options, and what was settled before writing."""
    job: ApplyJob
    opts: ApplyOptions
    wim: Wim
    img: ImageInfo
    size: int
    plan: partition.DiskLayout
    report: Report = field(default_factory=Report)
    t_start: float = field(default_factory=time.monotonic)


def apply(job: ApplyJob, opts: ApplyOptions, progress: Progress | None = None, *,
          wim: Wim | None = None) -> dict[str, Any]:
    """Run the pipeline for one image; returns the summary that --json prints.  The options are
    checked by the caller (ApplyOptions.check, as api.apply_image does).  `wim`: job.source already
    open (several editions from one source share it), left open."""
    t_start = time.monotonic()
    if format_for_path(job.out) is VhdDisk and opts.sector_size != 512:
        raise UsageError("VHD supports only 512-byte sectors; use .vhdx for 4096")
    with contextlib.nullcontext(wim) if wim is not None else Wim(job.source, refs=opts.refs) as wim:
        img = wim.image(job.index)
        check_image_layout(opts.layout, job.index, img)
        size = opts.size if opts.size is not None else default_size(img)
        pinned = reproducible_time(wim, job.index) if opts.seed is not None else None
        # With --seed every identifier and time the run makes up is derived (wim2vhd.repro), so the
        # same image, options and seed give the same bytes.
        with repro.pinned(opts.seed, pinned or 0), fixed_clock(pinned):
            # Everything is checked before anything is written.
            layout_min = partition.min_disk_size(opts.layout, opts.sector_size, recovery_size=opts.recovery_size,
                                                 mbr=opts.mbr)
            if size < layout_min:
                # A --size too small for the layout is the user's to change: a usage error, not a full disk.
                raise UsageError(f"--size {format_size(size)} is too small for the {opts.layout} layout: "
                                 f"use --size {_size_arg(layout_min)} or more")
            plan = partition.plan_layout(size, opts.sector_size, opts.layout, recovery_size=opts.recovery_size,
                                         mbr=opts.mbr)
            win = plan.role("windows")
            need = ntfs_need(img)
            if win.size < need:
                raise UsageError(f"--size {format_size(size)} is too small for image {job.index} ({img.name!r}): "
                                 f"it needs about {format_size(need)} of NTFS space, but the Windows partition "
                                 f"would be {format_size(win.size)}; use --size "
                                 f"{_size_arg(align_up(size + need - win.size, GiB))} or more")
            if opts.customize is not None:
                opts.customize.apply_to_image(wim, job.index)
            return _write(_Run(job, opts, wim, img, size, plan, t_start=t_start), progress)


def _write(run: _Run, progress: Progress | None) -> dict[str, Any]:
    """The stages that write, from create to finalize, under OUT's temporary name."""
    job, opts, wim, plan, rep = run.job, run.opts, run.wim, run.plan, run.report
    win = plan.role("windows")
    fmt = format_for_path(job.out)
    with AtomicOutput(job.out, force=opts.force, inputs=(job.source, *opts.refs), sync=opts.sync) as ao:
        disk = None
        tmp_dir = os.path.dirname(ao.temp)
        # The read-ahead plan loads the image's metadata on a thread while the disk is created and
        # formatted (nothing below uses the Wim before the apply stage).
        ra = wim.readahead(job.index, opts.threads)
        try:
            with rep.stage("create", progress):
                disk = fmt.create(ao.temp, run.size, dynamic=opts.disk_type == "dynamic",
                                  block_size=opts.block_size or (APPLY_BLOCK_SIZE if fmt is not RawDisk else None),
                                  sector_size=opts.sector_size)
                if opts.cache_size:
                    disk.set_cache(opts.cache_size)
                # Large writes go straight to the device when the disk is to be synced anyway.
                disk.set_writer(WRITER_QUEUE, direct=opts.sync)
            with rep.stage("partition", progress):
                partition.write_table(disk, plan)
            with rep.stage("format", progress):
                formatted = fs.format_layout(disk, plan, windows_label=opts.label, tmp_dir=tmp_dir,
                                             target_zeroed=True)
            with rep.stage("apply", progress):
                window = NtfsWindow(disk, win.start, win.size, compact=True)
                with window as dev:
                    try:
                        rep.data["readahead"] = wim.extract_ntfs(job.index, dev, progress, readahead=ra)
                    except Wim2VhdError:
                        # wimlib says only that NTFS-3G failed; the device layer saw why.  A host
                        # error wins (below): a volume cannot fill while its writes fail.
                        if window.full and not lib.w2v_host_error(disk.handle):
                            raise NoSpace(f"applying image {job.index} of {job.source}: the Windows partition "
                                          "is full", hint="choose a larger --size") from None
                        raise
                if opts.customize is not None:
                    opts.customize.apply_to_volume(disk, win)
            if opts.boot:
                with rep.stage("boot", progress):
                    from wim2vhd.boot import bcdboot
                    settings = bcdboot.BootSettings(locale=opts.locale, bcd_devices=opts.bcd_devices,
                                                    bios_boot_code=opts.bios_boot_code)
                    rep.data["boot"] = bcdboot.make_bootable(disk, plan, wim, job.index, run.img, settings,
                                                             tmp_dir=tmp_dir)
            with rep.stage("finalize", progress):
                disk.flush()  # ao.commit() fsyncs the file (unless --no-sync)
                # A write that failed where libntfs-3g did not pass the error on still fails the run.
                host = lib.w2v_host_error(disk.handle)
                if host:
                    raise host_error(host, ao.target)
                stats = disk.stats()
                info = disk.info()
                disk.close()
                disk = None
                ao.commit()
        except BaseException as e:
            # What the block layer saw of the host (EIO, a full file system) is the cause, whatever
            # wimlib or libntfs-3g said of it: read before the disk goes.
            ao.abandon(e, disk)
            raise
        finally:
            ra.close()   # after extract_ntfs has closed it, a no-op
    return {
        "output": os.path.abspath(job.out),
        "image": {**run.img.to_dict(), "source": os.path.abspath(job.source)},
        "disk": {k: info[k] for k in ("format", "type", "virtual_size", "file_size", "allocated_bytes",
                                      "block_size", "logical_sector_size") if k in info}
                | {"id": info.get("disk_id") or info.get("unique_id")},
        "layout": plan.to_dict(),
        "formatted": {str(k): v.to_dict() for k, v in formatted.items()},
        "boot": rep.data.get("boot"),
        "stages": rep.stages,
        "seconds": round(time.monotonic() - run.t_start, 3),
        "io": {k: stats[k] for k in ("reads", "writes", "read_bytes", "write_bytes", "cache_hits",
                                     "cache_misses", "cache_writebacks", "allocations", "direct_writes",
                                     "direct_bytes", "writer_waits", "writer_wait_ns")}
              | {"readahead": rep.data.get("readahead")},
    }
