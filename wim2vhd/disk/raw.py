"""Raw images: the virtual disk is the file.  Holes are found with SEEK_DATA/SEEK_HOLE."""
from __future__ import annotations

import os
from typing import Any

from wim2vhd.disk.base import Disk, file_size
from wim2vhd.errors import UsageError


class RawDisk(Disk):
    format_name = "raw"
    extensions = (".img", ".raw", ".bin")
    disk_type = "fixed"

    @classmethod
    def probe(cls, head: bytes, file_size: int) -> bool:
        return True  # anything is a raw image; tried last

    @classmethod
    def check(cls, path: str, fd: int):
        from wim2vhd.disk.check import Facts
        return Facts(path, "raw", "fixed")  # a raw image has no structures of its own

    @classmethod
    def create(cls, path: str, size: int, *, sector_size: int = 512, **options: Any) -> "RawDisk":
        if size % sector_size:
            raise UsageError(f"size {size} is not a multiple of the {sector_size}-byte sector")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, size)  # sparse: a raw image is "dynamic" through the host's holes
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, {"virtual_size": size, "sector_size": sector_size}, writable=True)

    @classmethod
    def _open_fd(cls, path: str, fd: int, writable: bool, parent: Disk | None) -> "RawDisk":
        return cls(path, fd, {"virtual_size": file_size(fd), "sector_size": 512}, writable=writable)

    def allocated_bytes(self) -> int:
        return os.fstat(self.fd).st_blocks * 512
