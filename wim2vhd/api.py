"""wim2vhd's Python API.  The CLI is a thin layer over these functions.

Every function that writes a file writes it atomically (see atomic.py) and
returns a plain dict that the CLI prints as text or JSON.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from typing import TYPE_CHECKING, Any, Callable

from wim2vhd.atomic import AtomicOutput
from wim2vhd.disk import Disk, RawDisk, VhdDisk, create_disk, format_for_path, open_disk
from wim2vhd.errors import UsageError
from wim2vhd.units import MiB, align_up, parse_size

if TYPE_CHECKING:
    from wim2vhd.options import ApplyOptions

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


def _disk_type(t: str | None, default: str = "dynamic") -> bool:
    t = (t or default).lower()
    if t not in ("fixed", "dynamic"):
        raise UsageError(f"--type must be fixed or dynamic, not {t!r}")
    return t == "dynamic"


def disk_create(out: str, size: str | int, *, type: str | None = None, block_size: str | int | None = None,
                sector_size: int = 512, force: bool = False, sync: bool = True) -> dict[str, Any]:
    """Create an empty disk; the format comes from OUT's extension.  sync=False: no fsync (see
    wim2vhd.atomic)."""
    fmt = format_for_path(out)
    nbytes = parse_size(size)
    bs = parse_size(block_size, what="block size") if block_size else None
    if fmt is RawDisk and bs:
        raise UsageError("--block-size applies to VHD and VHDX only")
    with AtomicOutput(out, force=force, sync=sync) as ao:
        disk = create_disk(ao.temp, nbytes, fmt=fmt, dynamic=_disk_type(type), block_size=bs, sector_size=sector_size)
        try:
            disk.flush()  # ao.commit() fsyncs the file (unless sync=False)
            info = disk.info()
        except BaseException as e:
            ao.abandon(e, disk)  # raises what a host error means for OUT
            raise
        disk.close()
        ao.commit()
    info["path"] = os.path.abspath(out)
    return info


def disk_diff(parent: str, child: str, *, force: bool = False, sync: bool = True) -> dict[str, Any]:
    """A differencing child of PARENT (VHD or VHDX), in the same format."""
    p = open_disk(parent)
    try:
        fmt = type(p)
        if fmt is RawDisk:
            raise UsageError(f"{parent} is a raw image: differencing disks need a VHD or VHDX parent")
        if format_for_path(child) is not fmt:
            raise UsageError(f"the child must have the parent's format: name it *{fmt.extensions[0]}")
        if os.path.dirname(os.path.abspath(child)) != os.path.dirname(os.path.abspath(parent)):
            # The child records the parent relative to itself (.\name) and by absolute path.
            pass
        with AtomicOutput(child, force=force, inputs=(parent,), sync=sync) as ao:
            c = fmt.create(ao.temp, p.size, parent=p)
            p = None  # the child owns it now
            try:
                c.flush()  # ao.commit() fsyncs the file (unless sync=False)
                info = c.info()
            except BaseException as e:
                ao.abandon(e, c)  # raises what a host error means for CHILD
                raise
            c.close()
            ao.commit()
    finally:
        if p is not None:
            p.close()
    info["path"] = os.path.abspath(child)
    return info


def disk_info(path: str) -> dict[str, Any]:
    d = open_disk(path)
    try:
        info = d.info()
        info["partitions"] = _partition_table(d)
        return info
    finally:
        d.close()


def _partition_table(d: Disk) -> Any:
    from wim2vhd import partition
    layout = partition.read_table(d)
    return layout.to_dict() if layout is not None else None


CONVERT_WRITER_QUEUE = 64 << 20
CONVERT_WRITERS = 2


def disk_convert(src: str, out: str, *, type: str | None = None, force: bool = False,
                 block_size: str | int | None = None, sync: bool = True,
                 progress: ProgressFn | None = None) -> dict[str, Any]:
    """Convert between raw, VHD and VHDX, copying only allocated, non-zero data.  sync=False: the
    output is left in the page cache for the kernel to write (no O_DIRECT, no fsync; see wim2vhd.atomic)."""
    t0 = time.monotonic()
    fmt = format_for_path(out)
    bs = parse_size(block_size, what="block size") if block_size else None
    s = open_disk(src)
    try:
        sector = s.sector_size if fmt is not VhdDisk else 512
        # A VHD is a whole number of MiB (vhd.check_size), any disk a whole number of sectors: a raw
        # image of another size becomes the next size up, zeros after its data, as qemu-img does.
        size = align_up(s.size, MiB if fmt is VhdDisk else sector)
        with AtomicOutput(out, force=force, inputs=(src,), sync=sync) as ao:
            dst = create_disk(ao.temp, size, fmt=fmt, dynamic=_disk_type(type), block_size=bs,
                              sector_size=sector)
            try:
                dst.set_cache(0)  # each byte is written once: nothing for a cache to absorb
                if sync:
                    # Reading the source overlaps writing the target: two threads write, large writes
                    # straight to the device (O_DIRECT), which bounds a convert, not the read.
                    dst.set_writer(CONVERT_WRITER_QUEUE, threads=CONVERT_WRITERS, direct=True)
                else:
                    # Into the page cache, left for the kernel to write back: one thread (two
                    # measured no better, see docs/performance.md).
                    dst.set_writer(CONVERT_WRITER_QUEUE, threads=1, direct=False)
                total = sum(n for _, n in s.extents())
                done = 0
                for off, n in s.extents():
                    step = 256 << 20
                    for o in range(off, off + n, step):
                        ln = min(step, off + n - o)
                        dst.copy_from(s, o, o, ln)
                        done += ln
                        if progress:
                            progress("convert", done, total)
                dst.flush()  # ao.commit() fsyncs the file (unless sync=False)
                info = dst.info()
            except BaseException as e:
                ao.abandon(e, dst)  # raises what a host error means for OUT
                raise
            dst.close()
            ao.commit()
    finally:
        s.close()
    info["path"] = os.path.abspath(out)
    info["seconds"] = round(time.monotonic() - t0, 3)
    info["data_bytes_read"] = total
    if size != s.size:
        info["rounded_up_from"] = s.size
        what = "a VHD's size is a whole number of MiB" if fmt is VhdDisk else f"{sector}-byte sectors"
        info["note"] = (f"the disk is {size} bytes, rounded up from the input's {s.size} ({what}); "
                        f"its last {size - s.size} bytes are zeros")
    return info


def image_info(image: str, *, refs: tuple[str, ...] = ()) -> dict[str, Any]:
    """The images of a WIM, ESD, split WIM or Windows ISO (its \\sources\\install.wim or .esd)."""
    from wim2vhd.wim import Wim, compression_name
    with _source(image, metadata_only=True) as (src, inner), Wim(src, refs=refs) as w:
        res = {"path": os.path.abspath(image), "parts": w.total_parts,
               "compression": compression_name(w.compression),
               "images": [i.to_dict() for i in w.images()]}
    if inner:
        res["install_image"] = inner
    return res


@contextlib.contextmanager
def _source(image: str, *, temp_dir: str | None = None, metadata_only: bool = False):
    """(path wimlib opens, path inside the ISO or None): a Windows ISO's install.wim/esd comes through
    wim2vhd.wim.iso as a temporary copy (removed when the block ends); anything else is passed on."""
    if os.fspath(image).lower().endswith(".iso"):
        from wim2vhd.wim import iso
        found = iso.find_install_image(image)
        with iso.install_image(image, temp_dir=temp_dir, metadata_only=metadata_only, found=found) as p:
            yield p, found.path
    else:
        yield image, None


ALL_IMAGES = "all"


def _parse_index(index: str | int | None) -> tuple[list[int] | str | None, bool]:
    """--index as (None | [numbers] | "all", whether several images were asked for): "2", "1,3,6", "all"."""
    if index is None or isinstance(index, int):
        return (None if index is None else [index]), False
    text = str(index).strip()
    if text.lower() == ALL_IMAGES:
        return ALL_IMAGES, True
    parts = [p.strip() for p in text.split(",")]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"--index must be a number, numbers like 1,3,6, or all; not {index!r}") from None
    if len(set(nums)) != len(nums):
        raise UsageError(f"--index {index}: an image is named twice")
    return nums, len(nums) > 1 or "," in text


_PLACEHOLDERS = ("{index}", "{name}")


def file_component(text: str, fallback: str) -> str:
    """text made safe as one file name component (no slashes or control characters), else fallback."""
    return re.sub(r"[/\\\x00-\x1f]", "_", text).strip() or fallback


def output_name(template: str, index: int, name: str) -> str:
    """OUT with {index} and {name} filled in (the name made safe as one file name component)."""
    return template.replace("{index}", str(index)).replace("{name}", file_component(name, f"image{index}"))


def check_parts(image: str, wim: Any, refs: tuple[str, ...]) -> None:
    """Refuse a later part of a split WIM, or its first part without the others (--ref)."""
    from wim2vhd.errors import InputError
    if wim.part_number > 1:
        raise InputError(f"{image} is part {wim.part_number} of a split WIM of {wim.total_parts} parts: give the "
                         f"first part as IMAGE and the others with --ref")
    if wim.total_parts > 1 and not refs:
        stem = os.path.splitext(image)[0]
        raise InputError(f"{image} is part 1 of a split WIM of {wim.total_parts} parts: pass the others too",
                         hint=f"--ref '{stem}*.swm'")


def apply_image(image: str, out: str, options: "ApplyOptions | None" = None, *,
                progress: ProgressFn | None = None, **keywords: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """Apply images of a WIM, ESD, split WIM or Windows ISO to new virtual disks (see wim2vhd.apply).

    options: a wim2vhd.options.ApplyOptions; or, instead, its options as keywords by their CLI names
    (index="1,3,6", size="64G", type="fixed", recovery="1G", customize=..., ...: see
    ApplyOptions.from_keywords).  index: a number, "1,3,6" or "all"; with several, OUT must hold
    {index} or {name} (one disk per image) and a list of summaries is returned.  The source is
    opened once for all of them.  Everything is checked before anything is read or written."""
    from wim2vhd.apply import ApplyJob, apply, check_image_layout
    from wim2vhd.errors import InputError, OutputError, OutputExists, Wim2VhdError
    from wim2vhd.options import ApplyOptions
    from wim2vhd.wim import Wim
    if options is not None and keywords:
        raise UsageError("give apply_image either options or keywords, not both")
    opts = options if options is not None else ApplyOptions.from_keywords(**keywords)
    wanted, several = _parse_index(opts.index)
    if wanted is not None and opts.name is not None:
        raise UsageError("give --index or --name, not both")
    if several and not any(p in out for p in _PLACEHOLDERS):
        raise UsageError(f"several images need one disk each: put {{index}} or {{name}} in OUT "
                         f"(e.g. win-{{index}}{os.path.splitext(out)[1] or '.vhdx'})")
    opts.check()
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise OutputError(f"cannot write {out}: directory {out_dir} does not exist")
    results: list[dict[str, Any]] = []
    with _source(image, temp_dir=out_dir) as (src, inner), Wim(src, refs=opts.refs) as wim:
        # every image and every output name settled before the first disk is made
        check_parts(image, wim, opts.refs)
        if wanted == ALL_IMAGES:
            indexes = list(range(1, wim.image_count + 1))
        elif wanted is None:
            indexes = [wim.resolve(None, opts.name)]
        else:
            indexes = [wim.resolve(i) for i in wanted]
        targets = [(i, output_name(out, i, wim.image(i).name)) for i in indexes]
        for i in indexes:  # before the first disk: an image later in the list may not fit the layout
            check_image_layout(opts.layout, i, wim.image(i))
        seen: dict[str, int] = {}
        for i, target in targets:
            key = os.path.abspath(target)
            if key in seen:
                raise UsageError(f"images {seen[key]} and {i} would both be written to {target}: use {{index}} in OUT")
            seen[key] = i
            if len(targets) > 1 and os.path.lexists(target) and not opts.force:
                raise OutputExists(f"{target} exists: use --force to replace it")
        for i, target in targets:
            edition = opts
            if opts.seed is not None:
                # Each edition gets its own identifiers: two disks of one run may meet in one VM, and
                # Windows takes a disk whose GUID it has already seen offline.  The same edition with the
                # same seed gives the same disk, whether applied alone or with others.
                edition = dataclasses.replace(opts, seed=f"{opts.seed}:image{i}")
            try:
                res = apply(ApplyJob(src, target, i), edition, progress, wim=wim)
            except Wim2VhdError as e:
                if results:  # the disks already made are complete: say which they are
                    done = ", ".join(r["output"] for r in results)
                    e.message = f"image {i}: {e.message} (already written: {done})"
                    e.args = (e.message if not e.hint else f"{e.message} ({e.hint})",)
                raise
            res["image"]["source"] = os.path.abspath(image)
            if inner:
                res["image"]["install_image"] = inner
            if opts.customize is not None:
                res["customizations"] = opts.customize.last_report
            results.append(res)
    return results if several else results[0]


def _holds_ntfs(disk: Disk, p) -> bool:
    return p.size >= 512 and disk.read(p.start + 3, 8) == b"NTFS    "


def find_windows_partition(disk: Disk, number: int | None = None):
    """The partition to capture: number N (which must hold NTFS), or the NTFS partition that holds \\Windows."""
    from wim2vhd import partition
    from wim2vhd.ntfs import NtfsWindow
    from wim2vhd.errors import InputError, Wim2VhdError
    from wim2vhd.ntfs import NtfsVolume
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


def capture(disk_path: str, out: str, *, partition_number: int | None = None, name: str | None = None,
            description: str | None = None, compress: str | None = None, append: bool = False,
            force: bool = False, sync: bool = True, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Capture the Windows volume of a VHD(X) (differencing too) or a raw disk image into a WIM, through
    the native layer, unprivileged.

    compress: lzx (the default), xpress, lzms (solid, as an ESD; the default when OUT ends in .esd) or none.
    append: add the image to the existing WIM or ESD OUT, in its own compression; a split WIM cannot take
    one.  name: default the product name wimlib reads from the image's hives (else "DISK partition N"), made
    unique in OUT."""
    from wim2vhd.ntfs import NtfsWindow
    from wim2vhd.errors import InputError, OutputError, UnsupportedInput
    from wim2vhd.wim import COMPRESSIONS, Wim, capture_ntfs, compression_name
    t0 = time.monotonic()
    if compress is not None and compress not in COMPRESSIONS:
        raise UsageError(f"--compress must be one of {', '.join(COMPRESSIONS)}, not {compress!r}")
    if name is not None and not name.strip():
        raise UsageError("--name must not be empty")
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
    d = open_disk(disk_path)
    try:
        part = find_windows_partition(d, partition_number)
        shown = f"partition {part.number} of {disk_path}"
        fallback = f"{os.path.splitext(os.path.basename(disk_path))[0]} partition {part.number}"
        with NtfsWindow(d, part.start, part.size, writable=False) as dev:
            if append:
                idx = capture_ntfs(dev, out, name=name, description=description, compression=compress,
                                   append_to=out, shown=shown, fallback_name=fallback, fsync=sync,
                                   progress=progress)
            else:
                with AtomicOutput(out, force=force, inputs=(disk_path,), sync=sync) as ao:
                    idx = capture_ntfs(dev, ao.temp, name=name, description=description,
                                       compression=compress, shown=shown, fallback_name=fallback,
                                       progress=progress)
                    ao.commit()
    finally:
        d.close()
    with Wim(out) as w:
        img = w.image(idx)
        total = w.image_count
    return {"output": os.path.abspath(out), "source": os.path.abspath(disk_path), "partition": part.number,
            "compression": compress, "appended": append, "images_in_output": total,
            "image": img.to_dict(), "seconds": round(time.monotonic() - t0, 3)}


def verify(disk_path: str) -> dict[str, Any]:
    """Is the disk bootable, as far as can be known without Windows?  Every check and its result
    (wim2vhd.verify); "sound" is False when any check found a problem.  The disk is only read."""
    from wim2vhd.verify import verify_disk
    return verify_disk(disk_path)


# -- BCD stores (the `wim2vhd bcd` commands) ------------------------------------------------------
def bcd_create(path: str, *, firmware: str = "uefi", force: bool = False, locale: str = "en-US") -> dict[str, Any]:
    """A new system store at path, as bcdboot writes one: {bootmgr}, {memdiag} and the settings."""
    from wim2vhd.boot.edit import create_store_file
    return create_store_file(path, firmware=firmware, force=force, locale=locale)


def bcd_show(path: str, *, verbose: bool = False) -> dict[str, Any]:
    """Every object and element of the store (never modified); "text" is bcdedit /enum all's view."""
    from wim2vhd.boot.store import BcdStore
    from wim2vhd.boot.view import describe, render_text
    with BcdStore.open(path) as s:
        objects = describe(s, verbose=verbose)
        return {"store": s.path, "system": s.is_system_store, "firmware": s.firmware, "objects": objects,
                "text": render_text(objects)}


def bcd_add_vhd(path: str, vhd_path: str, *, host: Any = None, description: str = "Windows",
                default: bool = False, firmware: str | None = None, locale: str = "en-US") -> dict[str, Any]:
    """Add a loader (+ resume) that boots Windows from a VHD/VHDX on `host` (a boot.devices.Device;
    None: bcdedit's [locate]) to the store at path, replaced atomically (the old one kept as .bak)."""
    from wim2vhd.boot.edit import add_vhd_entry
    return add_vhd_entry(path, vhd_path, host=host, description=description, default=default,
                         firmware=firmware, locale=locale)


# -- builds from a recipe (the `wim2vhd build` command; wim2vhd.build) ---------------------------------
BuildEvent = Callable[[str, str, int, int], None]  # (job id, stage, done, total)


def build(recipe: str, *, jobs: int | None = None, only: tuple[str, ...] = (), rebuild: bool = False,
          fail_fast: bool = False, manifest: str | None = None, progress: BuildEvent | None = None) -> dict[str, Any]:
    """Build the recipe's jobs that are not up to date, `jobs` at once (None: by cores and memory), and
    write the manifest.  The summary's "failed" (and "stopped", "not run") count the jobs that did not
    succeed; wim2vhd.build.pipeline.failure(summary) is the error the CLI exits with."""
    from wim2vhd.build import pipeline
    return pipeline.build(recipe, parallel=jobs, only=only, rebuild=rebuild, fail_fast=fail_fast,
                          manifest_path=manifest, event=progress)


def list_jobs(recipe: str, *, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """The recipe's jobs, each with its stable id, output and inputs (for a CI matrix)."""
    from wim2vhd.build import pipeline
    return pipeline.list_jobs(recipe, only)


def merge_manifests(recipe: str, paths: list[str], *, manifest: str | None = None) -> dict[str, Any]:
    """Join the manifests found in paths (folders or files) into the recipe's manifest."""
    from wim2vhd.build import pipeline
    return pipeline.merge_manifests(recipe, paths, manifest_path=manifest)


def check_build(recipe: str, *, jobs: int | None = None, only: tuple[str, ...] = (), manifest: str | None = None,
                progress: BuildEvent | None = None) -> dict[str, Any]:
    """Rebuild the (seeded) jobs into a temporary folder and compare their sha256 with the manifest's."""
    from wim2vhd.build import pipeline
    return pipeline.check(recipe, parallel=jobs, only=only, manifest_path=manifest, event=progress)


def versions() -> dict[str, Any]:
    """The versions of wim2vhd, wimlib, libntfs-3g and hivex (and the packages of the tools it runs)."""
    from wim2vhd.versions import versions as v
    return v()
