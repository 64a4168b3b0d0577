"""The facts of a WIM file's layout that reading one in place needs, without wimlib: where its
header, blob table, XML and solid-resource headers lie."""
from __future__ import annotations

import os
import struct

from wim2vhd.errors import CorruptInput, Wim2VhdError

# WIM layout (as wimlib and Microsoft write it): a 208-byte header whose resource headers are a 7-byte stored
# size and a flags byte, the offset, and the original size; blob table entries are such a resource header,
# a part number, a reference count and a SHA-1 (50 bytes).  A solid resource (ESD) starts with 16 bytes
# (original size, chunk size, compression) that wimlib reads while it loads the blob table.
WIM_HEADER_SIZE = 208
BLOB_ENTRY = 50
RESHDR_SOLID = 0x10
SOLID_MAGIC = 0x100000000
SOLID_HEADER = 16


def resource_header(b: bytes, at: int) -> tuple[int, int, int, int]:
    """(stored size, flags, offset, original size) of the resource header at `at`."""
    stored = int.from_bytes(b[at:at + 7], "little")
    return stored, b[at + 7], struct.unpack_from("<Q", b, at + 8)[0], struct.unpack_from("<Q", b, at + 16)[0]


def metadata_ranges(read, size: int) -> list[tuple[int, int]] | None:
    """The byte ranges of a WIM that wimlib reads when it opens one: the header, the blob table, the XML and
    the headers of solid resources.  `read(offset, length)` reads the WIM.  None for a WIM this does not
    understand (then the whole file is copied)."""
    head = read(0, min(WIM_HEADER_SIZE, size))
    if len(head) < WIM_HEADER_SIZE or head[:8] != b"MSWIM\0\0\0":
        return None
    ranges = [(0, WIM_HEADER_SIZE)]
    blob = resource_header(head, 48)
    for stored, flags, offset, _ in (blob, resource_header(head, 72)):  # blob table, XML
        if offset + stored > size or (flags & ~0x06):  # only plain (metadata/no-flag) resources
            return None
        if stored:
            ranges.append((offset, stored))
    stored, _, offset, original = blob
    if stored != original or stored > (64 << 20):
        return None  # a compressed blob table: not something Microsoft or wimlib write
    table = read(offset, stored)
    for p in range(0, len(table) - BLOB_ENTRY + 1, BLOB_ENTRY):
        st, fl, off, orig = resource_header(table, p)
        if fl & RESHDR_SOLID and orig == SOLID_MAGIC:
            if off + SOLID_HEADER > size:
                return None
            ranges.append((off, SOLID_HEADER))
    return ranges


# The WIM header's resource headers: (offset in the header, what it holds).
HEADER_RESOURCES = ((48, "lookup table"), (72, "XML data"), (96, "boot metadata"), (124, "integrity table"))


def check_sizes(path: str, view=None) -> None:
    """After wimlib ran out of memory opening `path` (read through `view`, a wim.view.View, when it
    is one): a CorruptInput if the header asks for more memory for one of its tables than this
    machine has (a damaged field such as 2^64-1, which wimlib tries to allocate), else nothing (the
    memory did run out)."""
    try:
        if view is not None:
            head = view.read(0, WIM_HEADER_SIZE)
        else:
            with open(path, "rb") as f:
                head = f.read(WIM_HEADER_SIZE)
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, Wim2VhdError):
        return
    if len(head) < WIM_HEADER_SIZE:
        return
    for off, name in HEADER_RESOURCES:
        original = resource_header(head, off)[3]
        if original > memory:
            raise CorruptInput(f"{path}: the WIM is damaged: its header gives the {name} a size of {original} "
                               f"bytes, more than this machine's memory")
