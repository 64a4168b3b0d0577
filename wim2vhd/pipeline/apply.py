"""The apply pipeline: a WIM image into a partitioned, formatted, bootable virtual disk.

    create -> partition -> format -> apply -> boot -> finalize

Each stage is timed and reported through a progress callable
(stage, done, total).  Everything is written to a temporary file beside the
output, which is synced and renamed only when every stage has succeeded.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from wim2vhd import fs, partition, repro
from wim2vhd.atomic import AtomicOutput
from wim2vhd.disk import Qcow2Disk, RawDisk, VhdDisk, output_format
from wim2vhd._lib import lib
from wim2vhd.errors import InternalError, NoSpace, UsageError, Wim2VhdError, host_error
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
# qcow2 keeps qemu's 64 KiB clusters (its own default, see disk/qcow2.py), smaller still.
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


def boot_locale(given: str | None, img: ImageInfo) -> str:
    """The boot manager's locale: --locale, else the image's default language (as Setup leaves the
    store: bcdboot takes the image's), else en-US when the image names none that reads as one."""
    from wim2vhd.options import DEFAULT_LOCALE, LOCALE_RE
    if given is not None:
        return given
    lang = (img.language or "").strip()
    return lang if LOCALE_RE.fullmatch(lang) else DEFAULT_LOCALE


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
    winre_source: Any = None  # boot.winre.WinreSource: the image's WinRE, for the recovery partition
    report: Report = field(default_factory=Report)
    t_start: float = field(default_factory=time.monotonic)


def apply(job: ApplyJob, opts: ApplyOptions, progress: Progress | None = None, *,
          wim: Wim | None = None) -> dict[str, Any]:
    """Run the pipeline for one image; returns the summary that --json prints.  The options are
    checked by the caller (ApplyOptions.check, as api.apply_image does).  `wim`: job.source already
    open (several editions from one source share it), left open; with a recovery partition, image
    job.index of it no longer holds Winre.wim afterwards (boot.winre.stage takes it out, in memory)."""
    with contextlib.nullcontext(wim) if wim is not None else Wim(job.source, refs=opts.refs) as wim:
        return Steps(job, opts, wim, progress).run()


class Steps:
    """One image's pipeline in two steps: prepare() creates, partitions and formats the disk, which
    uses nothing of the Wim, and finish() applies the image, makes it bootable and commits the disk.
    Several editions of one source overlap the next one's prepare() with this one's finish() (on
    another thread: see run_all).  Both steps run in one contextvars context of the job's own, so that
    its reproducible identifiers (repro.pinned) are the same whichever thread runs them."""

    def __init__(self, job: ApplyJob, opts: ApplyOptions, wim: Wim, progress: Progress | None, *,
                 overlapped: bool = False):
        fmt = output_format(job.out, opts.disk_format)
        if fmt is VhdDisk and opts.sector_size != 512:
            raise UsageError("VHD supports only 512-byte sectors; use .vhdx for 4096")
        if fmt is Qcow2Disk and opts.sector_size != 512:
            raise UsageError("qcow2 records no sector size, so its disks have 512-byte sectors; use .vhdx for 4096")
        # What reads the Wim (its XML) is settled here, on the caller's thread.
        img = wim.image(job.index)
        check_image_layout(opts.layout, job.index, img)
        size = opts.size if opts.size is not None else default_size(img)
        pinned = reproducible_time(wim, job.index) if opts.seed is not None else None
        self._ctx = contextvars.copy_context()
        self._gen = _steps(job, opts, wim, img, size, pinned, progress, overlapped)
        self._prepared = False

    def prepare(self) -> None:
        if not self._prepared:
            self._prepared = True
            self._ctx.run(next, self._gen)

    def finish(self) -> dict[str, Any]:
        self.prepare()
        try:
            self._ctx.run(next, self._gen)
        except StopIteration as done:
            return done.value
        raise InternalError("the apply pipeline did not end")

    def abandon(self) -> None:
        """Drop a prepared disk that will not be finished (its temporary file goes)."""
        if self._prepared:
            self._ctx.run(self._gen.close)

    def run(self) -> dict[str, Any]:
        try:
            return self.finish()
        finally:
            self.abandon()  # a no-op once finished


def _steps(job: ApplyJob, opts: ApplyOptions, wim: Wim, img: ImageInfo, size: int, pinned: int | None,
           progress: Progress | None, overlapped: bool) -> Iterator[None]:
    """The pipeline as a generator: the checks and prepare() up to its yield, finish() after it."""
    t_start = time.monotonic()  # (a job prepared ahead counts from then: its seconds overlap the last's)
    # With --seed every identifier and time the run makes up is derived (wim2vhd.repro), so the
    # same image, options and seed give the same bytes.
    with repro.pinned(opts.seed, pinned or 0):
        # Everything is checked before anything is written.
        plan = partition.plan_layout(size, opts.sector_size, opts.layout, recovery_size=opts.recovery_size,
                                     mbr=opts.mbr)
        win = plan.role("windows")
        need = ntfs_need(img)
        if win.size < need:
            enough = format_size(align_up(size + need - win.size, GiB)).replace(" GiB", "G")
            what = (f"image {job.index} ({img.name}) needs about {format_size(need)} of NTFS space, "
                    f"but the Windows partition would be {format_size(win.size)}")
            if opts.size is not None:  # the user's --size: a usage error, told before anything is made
                raise UsageError(f"--size {format_size(size)} is too small: {what}", hint=f"use --size {enough} or more")
            raise NoSpace(what, hint=f"use --size {enough} or more")  # (the default size always fits)
        winre_source = None
        if opts.boot and plan.role("recovery") is not None:  # (never overlapped: see apply_several)
            from wim2vhd.boot import winre
            winre_source = winre.find_winre(wim, job.index, plan)  # Winre.wim must fit: checked now
        run = _Run(job, opts, wim, img, size, plan, winre_source, t_start=t_start)
        if not overlapped and opts.customize is not None:
            opts.customize.apply_to_image(wim, job.index)
        return (yield from _write(run, progress, overlapped, pinned))


def _write(run: _Run, progress: Progress | None, overlapped: bool, pinned: int | None) -> Iterator[None]:
    """The stages that write, from create to finalize, under OUT's temporary name; yields once the disk
    is formatted.  overlapped: the stages before the yield run while another job uses the Wim, so the
    image's customizations and the read-ahead plan wait until after it."""
    job, opts, wim, plan, rep = run.job, run.opts, run.wim, run.plan, run.report
    win = plan.role("windows")
    fmt = output_format(job.out, opts.disk_format)
    quiet = None if overlapped else progress  # (another job's progress is on the screen meanwhile)
    with AtomicOutput(job.out, force=opts.force, inputs=(job.source, *opts.refs), sync=opts.sync) as ao:
        disk = None
        tmp_dir = os.path.dirname(ao.temp)
        # The read-ahead plan loads the image's metadata on a thread while the disk is created and
        # formatted (nothing below uses the Wim before the apply stage).  With WinRE to move, the plan
        # waits for Winre.wim to leave the image (winre.stage, after the format stage).
        ra = None if overlapped or run.winre_source is not None else wim.readahead(job.index, opts.threads)
        try:
            with rep.stage("create", quiet):
                disk = fmt.create(ao.temp, run.size, dynamic=opts.disk_type == "dynamic",
                                  block_size=opts.block_size or (APPLY_BLOCK_SIZE if fmt not in (RawDisk, Qcow2Disk) else None),
                                  sector_size=opts.sector_size)
                if opts.cache_size:
                    disk.set_cache(opts.cache_size)
                # Large writes go straight to the device when the disk is to be synced anyway.
                disk.set_writer(WRITER_QUEUE, direct=opts.sync)
            with rep.stage("partition", quiet):
                partition.write_table(disk, plan)
            with rep.stage("format", quiet):
                formatted = fs.format_layout(disk, plan, windows_label=opts.label, tmp_dir=tmp_dir,
                                             target_zeroed=True)
            yield
            # libntfs-3g's clock (process-wide) is pinned from here: nothing before used libntfs-3g.
            with fixed_clock(pinned):
                if overlapped:
                    if opts.customize is not None:
                        opts.customize.apply_to_image(wim, job.index)
                    ra = wim.readahead(job.index, opts.threads)
                with rep.stage("apply", progress):
                    if run.winre_source is not None:
                        from wim2vhd.boot import winre
                        winre.stage(wim, job.index, disk, plan, run.winre_source)
                        ra = wim.readahead(job.index, opts.threads)
                    window = NtfsWindow(disk, win.start, win.size, compact=True)
                    with window as dev:
                        try:
                            rep.data["readahead"] = wim.extract_ntfs(job.index, dev, progress, readahead=ra)
                        except Wim2VhdError:
                            # wimlib says only that NTFS-3G failed; the device layer saw why.  A host
                            # error wins (below): a volume cannot fill while its writes fail.
                            if window.full and not lib.w2v_host_error(disk.handle):
                                raise NoSpace(f"applying image {job.index} of {job.source}: the Windows "
                                              "partition is full", hint="choose a larger --size") from None
                            raise
                    if opts.customize is not None:
                        opts.customize.apply_to_volume(disk, win)
                if opts.boot:
                    with rep.stage("boot", progress):
                        from wim2vhd.boot import bcdboot
                        settings = bcdboot.BootSettings(locale=boot_locale(opts.locale, run.img),
                                                        bcd_devices=opts.bcd_devices,
                                                        bios_boot_code=opts.bios_boot_code,
                                                        debug=opts.debug_settings())
                        rep.data["boot"] = bcdboot.make_bootable(disk, plan, wim, job.index, run.img, settings,
                                                                 tmp_dir=tmp_dir, winre_source=run.winre_source)
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
        except GeneratorExit:
            # abandoned between the steps (the job before it failed): no error to translate
            if disk is not None:
                disk.abandon()
            raise
        except BaseException as e:
            # What the block layer saw of the host (EIO, a full file system) is the cause, whatever
            # wimlib or libntfs-3g said of it: read before the disk goes.
            ao.abandon(e, disk)
            raise
        finally:
            if ra is not None:
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


def _can_overlap() -> bool:
    """Another job's create and format may run beside an apply: with two CPUs or more to run on."""
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except (AttributeError, OSError):
        return (os.cpu_count() or 1) >= 2


def apply_several(jobs: list[tuple[ApplyJob, ApplyOptions]], wim: Wim,
                  progress: Progress | None = None) -> Iterator[dict[str, Any]]:
    """Each job's summary in turn, for jobs of one open Wim (several editions of one source): while one
    job applies its image (wimlib's thread, I/O-bound on a disk), the next one's disk is created,
    partitioned and formatted on a thread (where two CPUs allow), as nothing of that uses the Wim.  Errors
    come in the order the jobs do; a disk made ahead for a job that is not reached is removed."""
    # Moving WinRE reads and edits the image's metadata before its disk is written: no overlap then.
    overlap = _can_overlap() and not any(opts.boot and opts.recovery_size for _, opts in jobs)
    # Every job's image facts (the Wim's XML) are read here, before any thread uses the Wim.
    steps = [Steps(job, opts, wim, progress, overlapped=overlap and k > 0) for k, (job, opts) in enumerate(jobs)]
    ahead: tuple[threading.Thread, list[BaseException]] | None = None

    def prepare(s: Steps, errors: list[BaseException]) -> None:
        try:
            s.prepare()
        except BaseException as e:  # noqa: BLE001 - raised on the caller's thread, in the job's turn
            errors.append(e)

    try:
        for k, s in enumerate(steps):
            if ahead is not None:
                thread, errors = ahead
                thread.join()
                ahead = None
                if errors:
                    raise errors[0]
            else:
                s.prepare()
            if overlap and k + 1 < len(steps):
                errors = []
                thread = threading.Thread(target=prepare, args=(steps[k + 1], errors), name="wim2vhd-prepare",
                                          daemon=True)
                thread.start()
                ahead = (thread, errors)
            yield s.run()
    finally:
        if ahead is not None:
            ahead[0].join()
        for s in steps:
            s.abandon()
