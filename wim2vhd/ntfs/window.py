"""A partition of a virtual disk as a libntfs-3g device ("w2v:N", native/w2v_ntfs_device.c), and the
pinned clock libntfs-3g reads in a reproducible run."""
from __future__ import annotations

import contextlib
from typing import Iterator

from wim2vhd import hooks
from wim2vhd._lib import lib
from wim2vhd.disk import Disk
from wim2vhd.errors import UsageError, from_errno

# The windows registered now, by device name: a volume mounted on one holds it open.
_open: dict[str, "NtfsWindow"] = {}


class NtfsWindow:
    """A partition of a disk as the libntfs-3g device name "w2v:N" (see native/w2v_ntfs_device.c)."""

    def __init__(self, disk: Disk, offset: int, length: int, *, writable: bool = True, compact: bool = False):
        self.id = lib.w2v_ntfsdev_register(disk.handle, offset, length, disk.sector_size, int(writable))
        if self.id < 0:
            raise from_errno(self.id, "registering the NTFS device")
        self.name = f"w2v:{self.id}"
        self.disk = disk
        self.volumes = 0  # NtfsVolumes mounted on this window (wim2vhd.ntfs.volume)
        disk.windows += 1
        _open[self.name] = self
        # Contiguous allocation keeps dynamic disks small; where it cannot be installed,
        # libntfs-3g's own allocator is used, only the file size differs, and hooks.need says so.
        self.compact = bool(compact) and hooks.need("compact-allocation") and \
            lib.w2v_ntfsdev_set_compact(self.id, 1) == 0

    @property
    def full(self) -> bool:
        """Whether the volume ran out of room (native/w2v_ntfs_device.c), as opposed to the host."""
        return bool(lib.w2v_ntfsdev_full(self.id))

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Unregister the device: refused while a volume is mounted on it (libntfs-3g would go on
        reading and writing through a window that no longer is)."""
        if _open.get(self.name) is not self:
            return
        if self.volumes:
            raise UsageError(f"cannot close NTFS device {self.name} of {self.disk.path} while "
                             f"{self.volumes} volume{'s are' if self.volumes > 1 else ' is'} mounted on it")
        lib.w2v_ntfsdev_unregister(self.id)
        del _open[self.name]
        self.disk.windows -= 1


def window_named(name: str) -> NtfsWindow | None:
    """The window registered as device `name` ("w2v:N"), if any."""
    return _open.get(name)


@contextlib.contextmanager
def fixed_clock(unix_time: int | None) -> Iterator[None]:
    """libntfs-3g reads unix_time as now, within the block (see native/w2v_ntfs_device.c); None: no change.
    Without the clock hook (hooks.need says so) libntfs-3g keeps its own clock: the run still derives
    every identifier, and only the times libntfs-3g stamps differ from run to run."""
    if unix_time is None or not hooks.need("clock"):
        yield
        return
    r = lib.w2v_ntfsdev_fix_clock(1, unix_time)
    if r < 0:
        raise from_errno(r, "pinning libntfs-3g's clock for a reproducible volume")
    try:
        yield
    finally:
        lib.w2v_ntfsdev_fix_clock(0, 0)
