"""Atomic outputs: write beside the target under a temporary name, then sync and rename.

An error, Ctrl-C or SIGTERM leaves nothing under the target's name and no
temporary file.  Replacing an existing target needs force=True.  With
sync=False (--no-sync) the rename is still atomic for every other process, but
nothing waits for the data to reach the device: a crash soon after may leave a
damaged file under the target's name.
"""
from __future__ import annotations

import atexit
import os
import secrets
import signal
import threading

from wim2vhd.errors import InputError, Interrupted, OutputError, OutputExists

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


class AtomicOutput:
    """with AtomicOutput(target, force=...) as out: write out.temp; out.commit()"""

    def __init__(self, target: str, *, force: bool = False, inputs: tuple[str, ...] = (), sync: bool = True):
        self.target = os.path.abspath(target)
        self.sync = sync
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
        os.replace(self.temp, self.target)
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

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            try:
                os.unlink(self.temp)
            except FileNotFoundError:
                pass
            with _lock:
                _live.discard(self.temp)
