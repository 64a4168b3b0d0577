"""wim2vhd's Python API.  The CLI is a thin layer over these functions.

Every function that writes a file writes it atomically (see atomic.py) and
returns a plain dict that the CLI prints as text or JSON.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any, Callable

from wim2vhd.atomic import AtomicOutput
from wim2vhd.disk import Disk, Qcow2Disk, RawDisk, VhdDisk, create_disk, open_disk, output_format
from wim2vhd.errors import UsageError
from wim2vhd.units import MiB, align_up, parse_size
from wim2vhd.wim import sources

if TYPE_CHECKING:
    from wim2vhd.options import ApplyOptions
    from wim2vhd.pipeline.capture import CaptureOptions

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


def _is_dynamic(t: str | None, default: str = "dynamic") -> bool:
    t = (t or default).lower()
    if t not in ("fixed", "dynamic"):
        raise UsageError(f"--type must be fixed or dynamic, not {t!r}")
    return t == "dynamic"


def disk_create(out: str, size: str | int, *, type: str | None = None, block_size: str | int | None = None,
                sector_size: int = 512, force: bool = False, sync: bool = True,
                format: str | None = None) -> dict[str, Any]:
    """Create an empty disk; format: raw, vhd, vhdx or qcow2 (any case), else OUT's extension says it.
    sync=False: no fsync (see wim2vhd.atomic)."""
    fmt = output_format(out, format)
    nbytes = parse_size(size)
    bs = parse_size(block_size, what="block size") if block_size else None
    if fmt is RawDisk and bs:
        raise UsageError("--block-size applies to VHD, VHDX and qcow2 only")
    with AtomicOutput(out, force=force, sync=sync) as ao:
        disk = create_disk(ao.temp, nbytes, fmt=fmt, dynamic=_is_dynamic(type), block_size=bs, sector_size=sector_size)
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


def disk_diff(parent: str, child: str, *, force: bool = False, sync: bool = True,
              format: str | None = None) -> dict[str, Any]:
    """A differencing child of PARENT: a VHD or VHDX child in the parent's format, or a qcow2 child
    with PARENT of any format as its backing file.  The child's format: format (raw, vhd, vhdx,
    qcow2, any case), else CHILD's extension; the parent's is found from its content."""
    wanted = output_format(child, format)
    p = open_disk(parent)
    try:
        fmt = type(p)
        if wanted is Qcow2Disk:
            fmt = Qcow2Disk  # a qcow2 backing file may be raw, VHD, VHDX or qcow2, as qemu reads them
        elif fmt is RawDisk:
            raise UsageError(f"{parent} is a raw image: differencing disks need a VHD or VHDX parent "
                             "(or make a qcow2 child: CHILD.qcow2, or -f qcow2)")
        elif wanted is not fmt:
            how = f"-f {fmt.format_name}" if format is not None else f"name it *{fmt.extensions[0]}"
            raise UsageError(f"the child must have the parent's format ({fmt.format_name}): {how} "
                             "(or make a qcow2 child, whose backing file may be of any format)")
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


def disk_info(path: str, *, format: str | None = None) -> dict[str, Any]:
    """The disk's format, type, sizes, IDs, parent chain and partition table.  format: read it as
    that format (raw, vhd, vhdx, qcow2, any case); a file of another is refused (CorruptInput)."""
    d = open_disk(path, format=format)
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


@dataclasses.dataclass
class ConvertOptions:
    """disk_convert's options, by the CLI's names."""
    type: str | None = None                 # OUT's: fixed or dynamic (the default)
    block_size: str | int | None = None     # of a dynamic OUT; None: its format's default
    format: str | None = None               # OUT's: raw, vhd, vhdx, qcow2 (any case); None: its extension's
    source_format: str | None = None        # SRC's, refused when its content is another's; None: its content's
    force: bool = False
    sync: bool = True                       # False: page cache, no O_DIRECT, no fsync (wim2vhd.atomic)


def _options(cls, options, keywords: dict[str, Any], what: str):
    """A function's options record: the one given, or one made from its keywords (not both)."""
    if options is not None and keywords:
        raise UsageError(f"give {what} either options or keywords, not both")
    try:
        return options if options is not None else cls(**keywords)
    except TypeError as e:
        raise UsageError(f"{what}: {e}") from None


def disk_convert(src: str, out: str, options: ConvertOptions | None = None, *,
                 progress: ProgressFn | None = None, **keywords: Any) -> dict[str, Any]:
    """Convert between raw, VHD, VHDX and qcow2, copying only allocated, non-zero data.

    options: a ConvertOptions, or its fields as keywords (type, block_size, format, source_format,
    force, sync).  format: OUT's format (else its extension says it); source_format: read SRC as
    that format (else its content says it; a file of another is refused).  sync=False: the output is
    left in the page cache for the kernel to write (no O_DIRECT, no fsync; see wim2vhd.atomic)."""
    t0 = time.monotonic()
    o = _options(ConvertOptions, options, keywords, "disk_convert")
    sync = o.sync
    fmt = output_format(out, o.format)
    bs = parse_size(o.block_size, what="block size") if o.block_size else None
    s = open_disk(src, format=o.source_format, flag="-F/--source-format")
    try:
        sector = s.sector_size if fmt is not VhdDisk else 512
        # A VHD is a whole number of MiB (vhd.check_size), any disk a whole number of sectors: a raw
        # image of another size becomes the next size up, zeros after its data, as qemu-img does.
        size = align_up(s.size, MiB if fmt is VhdDisk else sector)
        with AtomicOutput(out, force=o.force, inputs=(src,), sync=sync) as ao:
            dst = create_disk(ao.temp, size, fmt=fmt, dynamic=_is_dynamic(o.type), block_size=bs,
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
    with sources.open_source(image, metadata_only=True) as (src, inner, how), Wim(src, refs=refs) as w:
        res = {"path": os.path.abspath(image), "parts": w.total_parts,
               "compression": compression_name(w.compression),
               "images": [i.to_dict() for i in w.images()]}
    if inner:
        res["install_image"] = inner
        res["install_image_read"] = how
    return res


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


def apply_image(image: str, out: str, options: "ApplyOptions | None" = None, *,
                progress: ProgressFn | None = None, **keywords: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """Apply images of a WIM, ESD, split WIM or Windows ISO to new virtual disks (see wim2vhd.pipeline.apply).

    options: a wim2vhd.options.ApplyOptions; or, instead, its options as keywords by their CLI names
    (index="1,3,6", size="64G", type="fixed", recovery="1G", customize=..., ...: see
    ApplyOptions.from_keywords).  index: a number, "1,3,6" or "all"; with several, OUT must hold
    {index} or {name} (one disk per image) and a list of summaries is returned.  The source is
    opened once for all of them.  Everything is checked before anything is read or written."""
    from wim2vhd.pipeline.apply import ApplyJob, apply_several, check_image_layout
    from wim2vhd.errors import OutputError, OutputExists, Wim2VhdError
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
    if opts.host_bcd is not None:
        _check_host_entry(opts, out, several)
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise OutputError(f"cannot write {out}: directory {out_dir} does not exist")
    results: list[dict[str, Any]] = []
    with sources.open_source(image, temp_dir=out_dir) as (src, inner, how), Wim(src, refs=opts.refs) as wim:
        # every image and every output name settled before the first disk is made
        sources.check_parts(image, wim, opts.refs)
        if wanted == ALL_IMAGES:
            indexes = list(range(1, wim.image_count + 1))
        elif wanted is None:
            indexes = [wim.resolve(None, opts.name)]
        else:
            indexes = [wim.resolve(i) for i in wanted]
        targets = [(i, sources.output_name(out, i, wim.image(i).name)) for i in indexes]
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
        jobs = []
        for i, target in targets:
            edition = opts
            if opts.seed is not None:
                # Each edition gets its own identifiers: two disks of one run may meet in one VM, and
                # Windows takes a disk whose GUID it has already seen offline.  The same edition with the
                # same seed gives the same disk, whether applied alone or with others.
                edition = dataclasses.replace(opts, seed=f"{opts.seed}:image{i}")
            jobs.append((ApplyJob(src, target, i), edition))
        made = apply_several(jobs, wim, progress)  # the next disk is formatted while one applies
        for i, _target in targets:
            try:
                res = next(made)
            except Wim2VhdError as e:
                made.close()
                if results:  # the disks already made are complete: say which they are
                    done = ", ".join(r["output"] for r in results)
                    e.message = f"image {i}: {e.message} (already written: {done})"
                    e.args = (e.message if not e.hint else f"{e.message} ({e.hint})",)
                raise
            except BaseException:
                made.close()
                raise
            res["image"]["source"] = os.path.abspath(image)
            if inner:
                res["image"]["install_image"] = inner
                res["image"]["install_image_read"] = how  # "in place", or "copied (why)"
            if opts.customize is not None:
                res["customizations"] = opts.customize.last_report
            results.append(res)
    if opts.host_bcd is not None:  # only now: the disk is complete
        results[0]["host_bcd"] = _add_host_entry(opts, results[0])
    return results if several else results[0]


_NATIVE_BOOT_FORMATS = ("vhd", "vhdx")


def _check_host_entry(opts: "ApplyOptions", out: str, several: bool) -> None:
    """--host-bcd: everything that could make the store's edit fail, checked before any disk is made
    (the edit itself runs in memory, the store is left as it is)."""
    from wim2vhd.boot.edit import add_vhd_entry
    if several:
        raise UsageError("--host-bcd adds one boot entry: apply one image (one --index or --name)")
    fmt = output_format(out, opts.disk_format).format_name
    vext = os.path.splitext(opts.vhd_path or "")[1].lower()
    if fmt not in _NATIVE_BOOT_FORMATS:
        raise UsageError(f"native VHD boot needs a .vhd or .vhdx disk, not {out!r} (a {fmt} disk)")
    if vext != "." + fmt:
        # Windows attaches a disk to boot by the extension of its path: .vhd or .vhdx, as it is one.
        raise UsageError(f"--vhd-path {opts.vhd_path!r} must name a .{fmt} file, as OUT is one")
    add_vhd_entry(opts.host_bcd, opts.vhd_path, host=opts.host_device(), dry_run=True)


def _add_host_entry(opts: "ApplyOptions", res: dict[str, Any]) -> dict[str, Any]:
    """The complete disk's boot entry in the host's store (replaced atomically, the old one kept as
    .bak).  Should that fail, the disk stays: the error names it and says how to add the entry."""
    from wim2vhd.boot.edit import add_vhd_entry
    from wim2vhd.errors import OutputError, Wim2VhdError
    try:
        return add_vhd_entry(opts.host_bcd, opts.vhd_path, host=opts.host_device(),
                             description=res["image"].get("name") or "Windows")
    except Wim2VhdError as e:
        host = f" --host-mbr {opts.host_mbr}" if opts.host_mbr else f" --host-gpt {opts.host_gpt}" if opts.host_gpt else ""
        raise OutputError(f"{res['output']} is complete, but its boot entry could not be added to "
                          f"{opts.host_bcd} (left as it was): {e.message}",
                          hint=f"add it with: wim2vhd bcd add-vhd {opts.host_bcd} --vhd-path '{opts.vhd_path}'{host}",
                          errno=e.errno, host=e.host) from None


def capture(disk_path: str, out: str, options: "CaptureOptions | None" = None, *,
            progress: ProgressFn | None = None, **keywords: Any) -> dict[str, Any]:
    """Capture the Windows volume of a disk (raw, VHD, VHDX, qcow2, a child) into a WIM, through the
    native layer, unprivileged (see wim2vhd.pipeline.capture).

    options: a CaptureOptions, or its fields as keywords (partition, name, description, compress,
    append, force, sync, format).  compress: lzx (the default), xpress, lzms (solid, as an ESD; the
    default when OUT ends in .esd) or none.  append: add the image to the existing WIM or ESD OUT, in
    its own compression; a split WIM cannot take one.  name: default the product name wimlib reads
    from the image's hives (else "DISK partition N"), made unique in OUT.  format: the disk's format
    (raw, vhd, vhdx, qcow2, any case), else its content says it; a file of another is refused."""
    from wim2vhd.pipeline.capture import CaptureOptions, capture as run
    opts = _options(CaptureOptions, options, keywords, "capture")
    return run(disk_path, out, opts, progress)


def verify(disk_path: str, *, format: str | None = None) -> dict[str, Any]:
    """Is the disk bootable, as far as can be known without Windows?  Every check and its result
    (wim2vhd.verify); "sound" is False when any check found a problem.  The disk is only read.
    format: read it as that format (raw, vhd, vhdx, qcow2); a file of another is refused."""
    from wim2vhd.verify import verify_disk
    return verify_disk(disk_path, format=format)


def disk_check(path: str, *, repair: bool = False, format: str | None = None) -> dict[str, Any]:
    """Every structure of the disk and its parents (wim2vhd.disk.check): "problems", "sound", "format",
    "type", "chain".  format: check it as that format (raw, vhd, vhdx, qcow2); a file whose content is
    another's is refused (CorruptInput)."""
    from wim2vhd.disk.check import check
    return check(path, repair=repair, format=format)


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


def version() -> dict[str, Any]:
    """wim2vhd's version, the libraries it runs with, and each native hook: installed or why not
    (wim2vhd.hooks; asking installs them, which changes nothing until they are used)."""
    from wim2vhd import __version__, hooks
    return {"version": __version__, "libraries": hooks.libraries(), "hooks": hooks.status()}


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
