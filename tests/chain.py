"""Differencing chains for tests and `make bench`: made level by level in O(depth), each level opened
alone as the next one's parent (no chain reopened per level)."""
from __future__ import annotations

import os

MiB = 1 << 20


def pattern(level: int) -> bytes:
    return bytes([level % 251 + 1]) * 4096


def make_chain(folder, ext: str, depth: int, size: int = 64 * MiB) -> list[str]:
    """depth disks l0 (the base) .. l{depth-1}; level i writes pattern(i) at i * 256 KiB, and the base
    also a MiB at 32 MiB that every level reads through.  Returns the paths, base first."""
    from wim2vhd.disk import VhdDisk, VhdxDisk, create_disk
    fmt = VhdxDisk if ext == ".vhdx" else VhdDisk
    paths = [os.path.join(str(folder), f"l{i}{ext}") for i in range(depth)]
    d = create_disk(paths[0], size)
    d.write(0, pattern(0))
    d.write(32 * MiB, b"\xc3" * MiB)
    d.close()
    for i in range(1, depth):
        c = fmt.create(paths[i], size, parent=fmt.open_one(paths[i - 1]))
        c.write(i * 256 * 1024, pattern(i))
        c.close()
    return paths


def expected(depth: int, size: int = 64 * MiB) -> bytes:
    """What the top of make_chain(depth) reads."""
    out = bytearray(size)
    out[32 * MiB:33 * MiB] = b"\xc3" * MiB
    for i in range(depth):
        out[i * 256 * 1024:i * 256 * 1024 + 4096] = pattern(i)
    return bytes(out)
