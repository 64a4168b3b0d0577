"""The facts of a WIM file's layout that reading one in place needs, without wimlib: where its
header, blob table, XML and solid-resource headers lie."""
from __future__ import annotations

import struct

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
