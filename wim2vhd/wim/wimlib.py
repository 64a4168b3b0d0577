"""wimlib, Pythonically: open WIM, ESD and split WIM files, list images, apply and capture in NTFS-3G mode.

wimlib's return codes become wim2vhd.errors exceptions in one place, _check().
Progress goes to a Python callable (stage, done, total); an exception raised
there aborts wimlib and is raised again, as itself, once wimlib has returned.
"""
from __future__ import annotations

import errno as _errno
import glob
import os
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

from wim2vhd import hooks
from wim2vhd._lib import ffi, lib
from wim2vhd.wim import header, view
from wim2vhd.errors import (CorruptInput, EnvironmentFault, ImageNotFound, InputError, InternalError, NoSpace,
                            UnsupportedInput, UsageError, Wim2VhdError, from_errno)

Progress = Callable[[str, int, int], None]

# Memory for the chunks the read-ahead helpers hold, compressed and decompressed.
READAHEAD_BYTES = 16 << 20


def default_threads() -> int:
    """Read-ahead helpers by default: one per CPU this process may use beyond the first, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, min(cpus - 1, 4))


class ReadAhead:
    """Helper threads that decompress an image's chunks ahead of wimlib (native/w2v_readahead.c).

    The plan lists the image's compressed resources in file order, which loads the image's
    metadata: with background=True it is made on a thread of its own, so that it overlaps what
    the caller does next (creating and formatting the disk), and the Wim must not be used until
    start().  start() runs the helpers for the calling thread's extraction; close() stops them
    and returns what they did."""

    STATS = ("threads", "resources", "hits", "misses", "skipped", "gave_up", "waits", "wait_ns", "helped", "served",
             "windowed")

    def __init__(self, wim: "Wim", index: int, threads: int | None, *, background: bool = False):
        self.threads = default_threads() if threads is None else threads
        self._ra = ffi.NULL
        self._thread: threading.Thread | None = None
        if self.threads <= 0:
            return
        # Without the hooks there is no plan (w2v_readahead_plan says NULL); say once what that costs.
        if hooks.need("readahead"):
            hooks.need("read-window")
        args = (wim._wim, index, wim.path.encode())
        if background:
            self._thread = threading.Thread(target=self._plan, args=args, name="wim2vhd-plan", daemon=True)
            self._thread.start()
        else:
            self._plan(*args)

    def _plan(self, wim: Any, index: int, path: bytes) -> None:
        self._ra = lib.w2v_readahead_plan(wim, index, path, READAHEAD_BYTES)

    def _join(self) -> None:
        # The plan reads the Wim: it must be finished before anything else does, Ctrl-C or not.
        interrupted = None
        while self._thread is not None and self._thread.is_alive():
            try:
                self._thread.join()
            except KeyboardInterrupt as e:
                interrupted = e
        self._thread = None
        if interrupted is not None:
            raise interrupted

    def start(self) -> int:
        """Run the helpers for this thread's wimlib calls; how many started."""
        self._join()
        return lib.w2v_readahead_run(self._ra, self.threads) if self._ra != ffi.NULL else 0

    def close(self) -> dict[str, int]:
        stats = ffi.new("struct w2v_readahead_stats *")
        try:
            self._join()
        finally:
            lib.w2v_readahead_stop(self._ra, stats)
            self._ra = ffi.NULL
        return {k: int(getattr(stats, k)) for k in self.STATS}


_init_lock = threading.Lock()
_initialised = False
# wimlib.h: WIMLIB_INIT_FLAG_DEFAULT_CASE_INSENSITIVE.  Paths in an image are looked up as Windows looks
# them up, without regard to case (wimlib's default on UNIX is case-sensitive): an image's
# \windows\system32\config\SYSTEM is found as \Windows\System32\config\SYSTEM.
WIMLIB_INIT_FLAGS = 0x00000020


def _init() -> None:
    global _initialised
    with _init_lock:
        if not _initialised:
            lib.wimlib_global_init(WIMLIB_INIT_FLAGS)
            lib.wimlib_set_print_errors(False)
            lib.w2v_quiet_xml()  # libxml2's messages too, for threads started from now on
            # Before any WIM is read, so that wimlib's decompressors are all known to it.
            lib.w2v_readahead_install()
            _initialised = True


# ---- wimlib's error codes -------------------------------------------------------
#
# The one table of what wimlib's return codes mean here (the names are declared in
# native/cdefs/10_wimlib.h, their values come from wimlib.h): the error class, the message
# ({what}: the file or the operation, {why}: wimlib's own text) and a hint.  Codes it does not
# list are the environment's fault, with wimlib's text.

_DAMAGED = "{what}: the WIM is damaged or truncated ({why})"
_E = lib
_ERRORS: dict[int, tuple[type[Wim2VhdError], str, str | None]] = {
    # a bad input: the file is not a WIM, or a part of it does not read as one
    _E.WIMLIB_ERR_NOT_A_WIM_FILE: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_UNEXPECTED_END_OF_FILE: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_INVALID_HEADER: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_DECOMPRESSION: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_INVALID_RESOURCE_HASH: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_INVALID_METADATA_RESOURCE: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_METADATA_NOT_FOUND: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_INVALID_LOOKUP_TABLE_ENTRY: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_INVALID_CHUNK_SIZE: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_INVALID_COMPRESSION_TYPE: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_INVALID_PART_NUMBER: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_INVALID_INTEGRITY_TABLE: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_INTEGRITY: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_INVALID_PIPABLE_WIM: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_INVALID_REPARSE_DATA: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_READ: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_SPLIT_INVALID: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_XML: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_IMAGE_COUNT: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_WIM_IS_INCOMPLETE: (CorruptInput, _DAMAGED, None),
    _E.WIMLIB_ERR_RESOURCE_NOT_FOUND: (InputError, "{what}: {why}",
                                       "for a split WIM, pass the other parts with --ref 'install*.swm'"),
    _E.WIMLIB_ERR_OPEN: (InputError, "{what}: {why}", None),
    _E.WIMLIB_ERR_STAT: (InputError, "{what}: {why}", None),
    _E.WIMLIB_ERR_INVALID_IMAGE: (ImageNotFound, "{what}: {why}", None),
    # valid, but not something wimlib or wim2vhd handles
    _E.WIMLIB_ERR_WIM_IS_ENCRYPTED: (UnsupportedInput, "{what}: {why}", None),
    _E.WIMLIB_ERR_UNSUPPORTED: (UnsupportedInput, "{what}: {why}", None),
    _E.WIMLIB_ERR_UNKNOWN_VERSION: (UnsupportedInput, "{what}: {why}", None),
    _E.WIMLIB_ERR_WIM_IS_READONLY: (UnsupportedInput, "{what}: the WIM cannot be changed (it is part of a split "
                                    "WIM, marked read-only in its header, or not writable)", None),
    # the user's
    _E.WIMLIB_ERR_IMAGE_NAME_COLLISION: (UsageError, "{what}: the WIM already has an image of that name: "
                                         "choose another --name", None),
    # ours
    _E.WIMLIB_ERR_INVALID_PARAM: (InternalError, "{what}: {why}", None),
    _E.WIMLIB_ERR_NOMEM: (EnvironmentFault, "{what}: {why}", None),
}


def _check(ret: int, what: str, *, hint: str | None = None) -> None:
    """The one place where wimlib's return codes become exceptions (see _ERRORS)."""
    if ret == 0:
        return
    why = ffi.string(lib.wimlib_get_error_string(ret)).decode()
    err = ffi.errno  # what the system call that failed said, where one did
    if ret == lib.WIMLIB_ERR_NTFS_3G:
        # libntfs-3g failed; wimlib passes on its errno, when it still holds it (wim2vhd.pipeline.apply asks
        # the device layer, which knows better: the host's errno, or a volume out of clusters).
        if err == _errno.ENOSPC:
            raise NoSpace(f"{what}: the Windows partition is full", hint="choose a larger --size")
        raise EnvironmentFault(f"{what}: {why} ({os.strerror(err) if err else 'libntfs-3g error'})")
    if ret == lib.WIMLIB_ERR_WRITE and err:
        # wimlib failed to write a file of ours (a new or appended WIM): the errno is the host's.
        raise from_errno(err, what, output=True, host=True)
    cls, text, default_hint = _ERRORS.get(ret, (EnvironmentFault, "{what}: {why}", None))
    raise cls(text.format(what=what, why=why), hint=hint or default_hint)


# ---- progress ----------------------------------------------------------------

_MSG_STAGE = {
    lib.WIMLIB_PROGRESS_MSG_EXTRACT_STREAMS: "apply",
    lib.WIMLIB_PROGRESS_MSG_EXTRACT_FILE_STRUCTURE: "apply",
    lib.WIMLIB_PROGRESS_MSG_EXTRACT_METADATA: "metadata",
    lib.WIMLIB_PROGRESS_MSG_WRITE_STREAMS: "write",
    lib.WIMLIB_PROGRESS_MSG_SCAN_DENTRY: "scan",
    lib.WIMLIB_PROGRESS_MSG_VERIFY_STREAMS: "verify",
}


class _ProgressCtx:
    def __init__(self, fn: Progress | None):
        self.fn = fn
        self.error: BaseException | None = None
        self.handle = ffi.new_handle(self)


_active = threading.local()  # the _ProgressCtx of the wimlib call running on this thread


def _progress_error(exc_type, exc_value, tb) -> int:
    """An exception that escaped w2v_py_progress's own try: a signal handler's (SIGTERM, Ctrl-C),
    which Python runs at the callback's first or last instruction.  Without this cffi would print
    it, return 0 and let wimlib go on.  Keep it for after wimlib returns, and abort."""
    c = getattr(_active, "ctx", None)
    if c is not None and c.error is None:
        c.error = exc_value
    return 1


@ffi.def_extern(onerror=_progress_error, error=1)
def w2v_py_progress(p, ctx):  # called by native/w2v_wim.c for each progress message
    c: _ProgressCtx = ffi.from_handle(ctx)
    try:
        stage = _MSG_STAGE.get(p.msg)
        if stage and c.fn:
            c.fn(stage, p.done if stage != "scan" else p.done2, p.total)
        return 0
    except BaseException as e:  # noqa: BLE001 - re-raised after wimlib returns
        c.error = e
        return 1


class _progress:
    """with _progress(wim, fn): ... registers fn for the call and re-raises what it raised."""

    def __init__(self, wim_ptr, fn: Progress | None):
        self.ptr, self.ctx = wim_ptr, _ProgressCtx(fn)

    def __enter__(self) -> _ProgressCtx:
        self.outer = getattr(_active, "ctx", None)
        _active.ctx = self.ctx
        lib.w2v_wim_set_progress(self.ptr, self.ctx.handle)
        return self.ctx

    def __exit__(self, *exc) -> None:
        lib.w2v_wim_set_progress(self.ptr, ffi.NULL)
        _active.ctx = self.outer


def _run(ptr, fn: Progress | None, call: Callable[[], int], what: str) -> None:
    with _progress(ptr, fn) as ctx:
        try:
            ret = call()
        except KeyboardInterrupt:
            raise
    if ctx.error is not None:
        raise ctx.error
    _check(ret, what)


# ---- images ------------------------------------------------------------------

@dataclass
class ImageInfo:
    index: int
    name: str
    description: str | None
    display_name: str | None
    edition: str | None
    architecture: str | None
    build: str | None
    version: str | None
    total_bytes: int
    files: int
    directories: int
    language: str | None = None  # the default language (WINDOWS/LANGUAGES/DEFAULT), e.g. "de-DE"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_ARCH = {"0": "x86", "5": "arm", "6": "ia64", "9": "x64", "12": "arm64"}


class Wim:
    """An open WIM (or ESD, or split WIM with refs)."""

    def __init__(self, path: str, *, refs: Iterable[str] = (), write: bool = False):
        _init()
        self.path = os.fspath(path)
        if view.lookup(self.path) is None:  # (a view's name is wimlib's only: wim2vhd.wim.view)
            if not os.path.exists(self.path):
                raise InputError(f"{self.path}: no such file")
            if os.path.isdir(self.path):
                raise InputError(f"{self.path}: is a directory, not a WIM")
        pp = ffi.new("WIMStruct **")
        flags = lib.WIMLIB_OPEN_FLAG_WRITE_ACCESS if write else 0
        lib.w2v_quiet_xml()  # libxml2 keeps its handlers per thread: this one's too
        ret = lib.wimlib_open_wim(self.path.encode(), flags, pp)
        if ret == lib.WIMLIB_ERR_NOMEM:
            header.check_sizes(self.path, view.lookup(self.path))
        _check(ret, self.path)
        self._wim = pp[0]
        try:
            info = ffi.new("struct wimlib_wim_info *")
            _check(lib.wimlib_get_wim_info(self._wim, info), self.path)
            self.image_count = info.image_count
            self.total_parts = info.total_parts
            self.part_number = info.part_number
            self.compression = info.compression_type
            refs = [r for r in refs if r]
            if refs:
                self._reference(refs)
        except BaseException:
            lib.wimlib_free(self._wim)
            raise

    def _reference(self, refs: list[str]) -> None:
        paths: list[str] = []
        for r in refs:
            found = sorted(glob.glob(r)) if any(c in r for c in "*?[") else [r]
            if not found or not all(os.path.exists(p) for p in found):
                raise InputError(f"--ref {r}: no such file")
            paths.extend(p for p in found if os.path.abspath(p) != os.path.abspath(self.path))
        if not paths:
            return
        arr = [ffi.new("char[]", p.encode()) for p in paths]
        cp = ffi.new("char *[]", arr)
        _check(lib.wimlib_reference_resource_files(self._wim, cp, len(paths), 0, 0), "referencing " + ", ".join(paths))

    @property
    def ptr(self):
        return self._wim

    def close(self) -> None:
        if self._wim is not None:
            lib.wimlib_free(self._wim)
            self._wim = None

    def __enter__(self) -> "Wim":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _prop(self, index: int, name: str) -> str | None:
        s = lib.wimlib_get_image_property(self._wim, index, name.encode())
        return ffi.string(s).decode() if s != ffi.NULL else None

    def image(self, index: int) -> ImageInfo:
        p = self._prop
        ver = [p(index, f"WINDOWS/VERSION/{k}") for k in ("MAJOR", "MINOR", "BUILD", "SPBUILD")]
        return ImageInfo(
            index=index,
            name=p(index, "NAME") or "",
            description=p(index, "DESCRIPTION"),
            display_name=p(index, "DISPLAYNAME"),
            edition=p(index, "WINDOWS/EDITIONID") or p(index, "FLAGS"),
            architecture=_ARCH.get(p(index, "WINDOWS/ARCH") or "", p(index, "WINDOWS/ARCH")),
            build=ver[2],
            version=".".join(v for v in ver if v) or None,
            total_bytes=int(p(index, "TOTALBYTES") or 0),
            files=int(p(index, "FILECOUNT") or 0),
            directories=int(p(index, "DIRCOUNT") or 0),
            language=p(index, "WINDOWS/LANGUAGES/DEFAULT"),
        )

    def image_time(self, index: int) -> int | None:
        """The image's last modification time from its XML info, in Unix seconds (None if absent)."""
        hi, lo = (self._prop(index, f"LASTMODIFICATIONTIME/{k}") for k in ("HIGHPART", "LOWPART"))
        try:
            filetime = (int(hi, 0) << 32) | int(lo, 0)
        except (TypeError, ValueError):
            return None
        unix = (filetime - 116444736000000000) // 10_000_000
        return unix if unix > 0 else None

    def images(self) -> list[ImageInfo]:
        return [self.image(i) for i in range(1, self.image_count + 1)]

    def resolve(self, index: int | None = None, name: str | None = None) -> int:
        """The image number for --index or --name; an error listing the images otherwise."""
        imgs = self.images()
        listing = "; ".join(f"{i.index}: {i.name}" for i in imgs) or "none"
        if index is not None and name is not None:
            raise UsageError("give --index or --name, not both")
        if name is not None:
            return self._by_name(imgs, name)
        if index is None:
            if len(imgs) == 1:
                return 1
            raise UsageError(f"{self.path} holds {len(imgs)} images: choose one with --index or --name ({listing})")
        if not 1 <= index <= len(imgs):
            raise ImageNotFound(f"{self.path} has no image {index}; images: {listing}")
        return index

    def find_file(self, index: int, folder: str, name: str, *, recursive: bool = False) -> tuple[str, int] | None:
        """The file called `name` (without regard to case) in `folder` of image `index` (with
        recursive, in its subfolders too; of several, the first by path): (its path, '\\'-separated
        without a leading one, and its size), from the image's metadata; None if there is none."""
        path = ffi.new("char[]", 4096)
        size = ffi.new("uint64_t *")
        wim_folder = "/" + folder.replace("\\", "/").strip("/")
        ret = lib.w2v_wim_find_file(self._wim, index, wim_folder.encode(), name.encode(), int(recursive),
                                    path, 4096, size)
        if ret == -1:
            return None
        _check(ret, f"looking for {name} in image {index} of {self.path}")
        return ffi.string(path).decode().replace("/", "\\").strip("\\"), int(size[0])

    def _by_name(self, imgs: list[ImageInfo], name: str) -> int:
        """--name as Convert-WindowsImage's -Edition takes it: the image whose name or display name it
        is, without regard to case; else the one image whose name or display name holds it ("pro",
        "Enterprise N").  None or several such images is a usage error (exit 2) listing them."""
        want = name.strip().casefold()
        if not want:
            raise UsageError("--name must not be empty")
        listing = "; ".join(f"{i.index}: {i.name!r}" + (f" ({i.display_name!r})" if i.display_name and
                                                         i.display_name != i.name else "") for i in imgs) or "none"

        def names(i: ImageInfo) -> list[str]:
            return [n.casefold() for n in (i.name, i.display_name) if n]

        for found in ([i for i in imgs if want in names(i)], [i for i in imgs if any(want in n for n in names(i))]):
            if len(found) == 1:
                return found[0].index
            if found:
                which = ", ".join(f"{i.index} ({i.name!r})" for i in found)
                raise UsageError(f"--name {name!r} matches images {which} of {self.path}: give more of the name, "
                                 f"or --index", hint=f"images: {listing}")
        raise UsageError(f"{self.path} has no image whose name or display name holds {name!r}; images: {listing}")

    # -- extraction ------------------------------------------------------------
    def readahead(self, index: int, threads: int | None = None) -> "ReadAhead":
        """Read-ahead decompression for extracting image `index`, planned at once on a thread (see
        ReadAhead): pass it to extract_ntfs, and do not use this Wim until then."""
        return ReadAhead(self, index, threads, background=True)

    def extract_ntfs(self, index: int, device: str, progress: Progress | None = None, *,
                     threads: int | None = None, readahead: "ReadAhead | None" = None) -> dict[str, int]:
        """Apply image `index` to the NTFS volume on `device` (a file, or a w2v:N window), with every
        Windows attribute: security descriptors, streams, reparse points, links, short names, times.

        `threads` helper threads decompress ahead of wimlib (native/w2v_readahead.c); None: one per
        CPU beyond the first, at most 4; 0: none.  Or `readahead`, planned earlier by
        self.readahead(index, threads), which this takes over.  Returns what the helpers did."""
        flags = lib.WIMLIB_EXTRACT_FLAG_NTFS | lib.WIMLIB_EXTRACT_FLAG_STRICT_ACLS
        ra = readahead or ReadAhead(self, index, threads)
        try:
            ra.start()
            _run(self._wim, progress, lambda: lib.wimlib_extract_image(self._wim, index, device.encode(), flags),
                 f"applying image {index} of {self.path}")
        finally:
            stats = ra.close()
        return stats

    def extract_paths(self, index: int, paths: list[str], target_dir: str) -> None:
        """Copy files out of the image into a host directory (no attributes), keeping their folders."""
        arr = [ffi.new("char[]", p.encode()) for p in paths]
        _check(lib.wimlib_extract_paths(self._wim, index, target_dir.encode(), ffi.new("char *[]", arr),
                                        len(arr), lib.WIMLIB_EXTRACT_FLAG_GLOB_PATHS),
               f"extracting {', '.join(paths)} from image {index}")

    def extract_file_ntfs(self, index: int, path: str, device: str) -> None:
        """Extract one file of image `index` to the NTFS volume on `device`, at the same path (its
        data, attributes and times; not its security descriptor, which the caller sets).  (wimlib 1.13
        fails in NTFS mode with WIMLIB_EXTRACT_FLAG_NO_PRESERVE_DIR_STRUCTURE: the folders come too.)"""
        flags = lib.WIMLIB_EXTRACT_FLAG_NTFS | lib.WIMLIB_EXTRACT_FLAG_NO_ACLS
        wim_path = ffi.new("char[]", ("/" + path.replace("\\", "/").strip("/")).encode())
        _check(lib.wimlib_extract_paths(self._wim, index, device.encode(), ffi.new("char *[]", [wim_path]), 1, flags),
               f"extracting \\{path} from image {index} of {self.path}")

    def delete_path(self, index: int, path: str) -> None:
        """Take a file out of image `index` in memory (the WIM file is not changed): extracting the
        image then leaves it out."""
        cmd = ffi.new("struct wimlib_update_command *")
        wim_path = ffi.new("char[]", ("/" + path.replace("\\", "/").strip("/")).encode())
        cmd.op = lib.WIMLIB_UPDATE_OP_DELETE
        cmd.delete_.wim_path = wim_path
        cmd.delete_.delete_flags = 0
        _check(lib.wimlib_update_image(self._wim, index, cmd, 1, 0), f"leaving \\{path} out of image {index}")

    def add_files(self, index: int, items: list[tuple[str, str]]) -> None:
        """Add host files or folders to the image in memory (not written back): (host path, image path)."""
        if not items:
            return
        cmds = ffi.new("struct wimlib_update_command[]", len(items))
        keep = []
        for c, (src, dst) in zip(cmds, items):
            s, d = ffi.new("char[]", src.encode()), ffi.new("char[]", dst.encode())
            keep += [s, d]
            c.op = lib.WIMLIB_UPDATE_OP_ADD
            c.add.fs_source_path = s
            c.add.wim_target_path = d
            c.add.config_file = ffi.NULL
            c.add.add_flags = lib.WIMLIB_ADD_FLAG_NO_ACLS
        _check(lib.wimlib_update_image(self._wim, index, cmds, len(items), 0), f"updating image {index}")


COMPRESSIONS = ("lzx", "xpress", "lzms", "none")
_COMPRESSION_NAMES = {0: "none", 1: "xpress", 2: "lzx", 3: "lzms"}


def compression_name(ctype: int) -> str:
    return _COMPRESSION_NAMES.get(ctype, str(ctype))


@dataclass(frozen=True)
class ImageNaming:
    """The name and description a captured image gets: `name`, or else the product name wimlib reads
    from its hives, or else `fallback`; made unique in the WIM."""
    name: str | None
    description: str | None = None
    fallback: str = "Windows"


def capture_ntfs(device: str, out: str, naming: ImageNaming, *, compression: str = "lzx",
                 append_to: str | None = None, shown: str | None = None, fsync: bool = False,
                 progress: Progress | None = None) -> int:
    """Capture the NTFS volume on `device` into a new WIM at `out` (or as a new image appended to
    `append_to`, which is then rewritten in place).  Returns the new image's index.  fsync: wimlib
    fsyncs the file before it closes it (an append; a new WIM is synced by wim2vhd.atomic).

    wimlib reads the image's hives while it captures and fills in its XML info (edition, build,
    architecture, product name, languages) as it does for any Windows image.  naming.name None: the
    product name wimlib found ("Windows 10 Enterprise"), or naming.fallback when it found none, made
    unique in the WIM with " (2)", " (3)"...; `shown`: how the volume is named in messages (device
    names like w2v:0 mean nothing to people)."""
    name, description, fallback_name = naming.name, naming.description, naming.fallback
    _init()
    lib.w2v_quiet_xml()
    shown = shown or device
    ctype = {"none": lib.WIMLIB_COMPRESSION_TYPE_NONE, "xpress": lib.WIMLIB_COMPRESSION_TYPE_XPRESS,
             "lzx": lib.WIMLIB_COMPRESSION_TYPE_LZX, "lzms": lib.WIMLIB_COMPRESSION_TYPE_LZMS}.get(compression)
    if ctype is None:
        raise UsageError(f"--compress must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
    pp = ffi.new("WIMStruct **")
    if append_to:
        _check(lib.wimlib_open_wim(append_to.encode(), lib.WIMLIB_OPEN_FLAG_WRITE_ACCESS, pp), append_to)
    else:
        _check(lib.wimlib_create_new_wim(ctype, pp), "creating a WIM")
    wim = pp[0]
    try:
        info = ffi.new("struct wimlib_wim_info *")
        _check(lib.wimlib_get_wim_info(wim, info), append_to or out)
        taken = set()
        for i in range(1, info.image_count + 1):
            s = lib.wimlib_get_image_name(wim, i)
            taken.add(ffi.string(s).decode() if s != ffi.NULL else "")
        if name is not None and name in taken:
            raise UsageError(f"{append_to} already has an image named {name!r}: choose another --name")
        # a name no image has, until wimlib has read the hives (names must be unique within a WIM)
        temp = name if name is not None else f"wim2vhd-capture-{os.getpid()}-{len(taken)}"
        flags = lib.WIMLIB_ADD_FLAG_NTFS | lib.WIMLIB_ADD_FLAG_WINCONFIG
        _run(wim, progress, lambda: lib.wimlib_add_image(wim, device.encode(), temp.encode(), ffi.NULL, flags),
             f"capturing {shown}")
        _check(lib.wimlib_get_wim_info(wim, info), out)
        idx = info.image_count
        if name is None:
            s = lib.wimlib_get_image_property(wim, idx, b"WINDOWS/PRODUCTNAME")
            base = (ffi.string(s).decode() if s != ffi.NULL else "").strip() or fallback_name
            name, n = base, 2
            while name in taken:
                name, n = f"{base} ({n})", n + 1
            _check(lib.wimlib_set_image_name(wim, idx, name.encode()), out)
        if description:
            _check(lib.wimlib_set_image_property(wim, idx, b"DESCRIPTION", description.encode()), out)
        if append_to:
            # wimlib appends the new image's data after the old and rewrites the header last,
            # so an interrupted append leaves the original images intact.  An ESD stays solid:
            # wimlib writes the new blobs in a solid resource when the WIM has them.
            oflags = lib.WIMLIB_WRITE_FLAG_FSYNC if fsync else 0
            _run(wim, progress, lambda: lib.wimlib_overwrite(wim, oflags, 0), f"appending to {append_to}")
        else:
            wflags = lib.WIMLIB_WRITE_FLAG_SOLID if compression == "lzms" else 0
            _run(wim, progress, lambda: lib.wimlib_write(wim, out.encode(), lib.WIMLIB_ALL_IMAGES, wflags, 0),
                 f"writing {out}")
        return idx
    finally:
        lib.wimlib_free(wim)
