"""Atomic outputs: write beside the target under a temporary name, then sync and rename.

An error, Ctrl-C or SIGTERM leaves nothing under the target's name and no
temporary file.  Replacing an existing target needs force=True; without it the
final rename does not replace a target that appeared meanwhile (another run's
output): of two runs at once exactly one wins, and the other is refused.  With
sync=False (--no-sync) the rename is still atomic for every other process, but
nothing waits for the data to reach the device: a crash soon after may leave a
damaged file under the target's name.
"""
from __future__ import annotations

import atexit
import errno
import os
import secrets
import signal
import threading

from wim2vhd.errors import (HOST_ERRNOS, EnvironmentFault, InputError, Interrupted, OutputError, OutputExists,
                            Wim2VhdError, host_error)

_live: set[str] = set()
_lock = threading.Lock()


def _cleanup_all() -> None:
    with _lock:
        for p in list(_live):
            try:
                os.unlink(p)
            except OSError:
                pass
        _live.clear()


atexit.register(_cleanup_all)


def track(path: str) -> None:
    """Remove path at exit unless untrack(path) comes first (a temporary file that must not outlive us)."""
    with _lock:
        _live.add(path)


def untrack(path: str) -> None:
    with _lock:
        _live.discard(path)


def install_signal_handlers() -> None:
    """Turn SIGTERM (and SIGHUP) into an exception, so that temporary files are removed."""
    def handler(signum, frame):
        raise Interrupted(f"stopped by signal {signal.Signals(signum).name}")
    for s in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(s, handler)
        except (ValueError, OSError):  # not the main thread
            pass


_RENAME_NOREPLACE = 1  # linux/fs.h
_renameat2 = None


def _renameat2_fn():
    global _renameat2
    if _renameat2 is None:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        fn = getattr(libc, "renameat2", None)  # glibc 2.28 and later
        if fn is not None:
            fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
            fn.restype = ctypes.c_int
        _renameat2 = fn or False
    return _renameat2


def rename_noreplace(src: str, dst: str) -> bool:
    """Rename src to dst unless dst exists, atomically: True if renamed, False if dst exists.

    renameat2(RENAME_NOREPLACE) where the kernel and the file system have it; else a hard link
    (which fails on an existing name) and an unlink of src; else, on a file system without hard
    links either (FAT, some FUSE), a check and a rename, which is not atomic."""
    fn = _renameat2_fn()
    if fn:
        import ctypes
        at_fdcwd = -100
        if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return False
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), src)
    try:
        os.link(src, dst)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EINVAL):
            raise
        if os.path.lexists(dst):
            return False
        os.rename(src, dst)
        return True
    os.unlink(src)
    return True


class AtomicOutput:
    """with AtomicOutput(target, force=...) as out: write out.temp; out.commit()"""

    def __init__(self, target: str, *, force: bool = False, inputs: tuple[str, ...] = (), sync: bool = True):
        self.target = os.path.abspath(target)
        self.sync = sync
        self.force = force
        directory = os.path.dirname(self.target)
        if not os.path.isdir(directory):
            raise OutputError(f"cannot write {target}: directory {directory} does not exist")
        if os.path.isdir(self.target):
            raise OutputError(f"cannot write {target}: it is a directory")
        for i in inputs:
            if i and os.path.exists(i) and os.path.exists(self.target) and os.path.samefile(i, self.target):
                raise InputError(f"{target} is also an input: wim2vhd never modifies an input; choose another output")
        if os.path.lexists(self.target) and not force:
            raise OutputExists(f"{target} exists: use --force to replace it")
        if not os.access(directory, os.W_OK):
            raise OutputError(f"cannot write in {directory}: permission denied")
        base = os.path.basename(self.target)
        self.temp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.w2v-tmp")
        self.committed = False
        self._said: BaseException | None = None  # the error abandon() raised

    def __enter__(self) -> "AtomicOutput":
        with _lock:
            _live.add(self.temp)
        return self

    def commit(self) -> None:
        """fsync the temporary file, rename it over the target, fsync the directory (no fsyncs with
        sync=False)."""
        if self.sync:
            fd = os.open(self.temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if self.force:
            os.replace(self.temp, self.target)
        elif not rename_noreplace(self.temp, self.target):
            # Another run (or anyone) made the target while this one wrote: it is not ours to replace.
            raise OutputExists(f"{self.target} appeared while wim2vhd wrote it (another run?): it was left as it is; "
                               f"use --force to replace it")
        with _lock:
            _live.discard(self.temp)
        self.committed = True
        if not self.sync:
            return
        dfd = os.open(os.path.dirname(self.target), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # -- errors ------------------------------------------------------------------
    def probe(self) -> int:
        """Whether the host file system beside the target takes a small write now: 0, or the errno
        with which it fails.  For tools that say only that a write failed (mkfs.fat, mkntfs)."""
        path = self.temp + ".probe"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as e:
            return e.errno or 0
        try:
            os.write(fd, bytes(4096))
            os.fsync(fd)
            return 0
        except OSError as e:
            return e.errno or 0
        finally:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass

    def fault(self, exc: BaseException, *disks) -> Wim2VhdError | None:
        """The output error that says what `exc`, raised while the temporary file was written, means
        for the target, or None when it is not a fault of the host.  disks: native disks (still open)
        whose file is the temporary one: the host error their block layer kept (w2v_host_error) is the
        cause, whatever wimlib or libntfs-3g made of it ("NTFS-3G encountered an error", ENOSPC)."""
        from wim2vhd._lib import lib
        for d in disks:
            if d is not None and not getattr(d, "_closed", True):
                err = lib.w2v_host_error(d.handle)
                if err:
                    return host_error(err, self.target)
        if isinstance(exc, OSError) and not isinstance(exc, Wim2VhdError):
            # A system call of our own Python code on the temporary file (a header, a table).
            if exc.filename in (None, self.temp, self.target) and exc.filename2 is None:
                return host_error(exc.errno or 0, self.target)
            return None
        if not isinstance(exc, Wim2VhdError):
            return None
        code = exc.errno
        if exc.host and code and self._names_temp(exc):
            return host_error(code, self.target)
        if code in HOST_ERRNOS or isinstance(exc, EnvironmentFault):
            # A tool's or a library's failure to write (mkfs.fat says only "failed whilst writing
            # FAT"), or an errno whose file is not known: ask the host file system itself.
            err = self.probe()
            if err:
                return host_error(err, self.target)
            # The host takes writes again, yet one to the temporary file failed.  Not ENOSPC: a write
            # past the end of a virtual disk says that too.
            if code in HOST_ERRNOS - {errno.ENOSPC} and self._names_temp(exc):
                return host_error(code, self.target)
        return None

    def abandon(self, exc: BaseException, disk) -> None:
        """In an except block, while the temporary file is written through `disk` (a native disk, or
        None): abandon the disk, and raise instead what the error means for the target (fault()),
        read before the disk goes.  Returns when there is nothing better to say (re-raise then)."""
        fault = self.fault(exc, disk) if not isinstance(exc, (KeyboardInterrupt, Interrupted)) else None
        if disk is not None:
            disk.abandon()
        if fault is not None:
            self._said = fault  # __exit__ passes it on as it is
            raise fault from None

    def _names_temp(self, exc: BaseException) -> bool:
        return self.temp in str(exc) or os.path.basename(self.temp) in str(exc)

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            try:
                os.unlink(self.temp)
            except FileNotFoundError:
                pass
            with _lock:
                _live.discard(self.temp)
            if exc is not None and exc is not self._said and not isinstance(exc, (KeyboardInterrupt, Interrupted)):
                f = self.fault(exc)
                if f is not None:
                    raise f from None
                if isinstance(exc, Wim2VhdError) and self._names_temp(exc):
                    # The temporary name means nothing to the user, and it is gone: name the target.
                    raise exc.renamed(self.temp, self.target) from None
