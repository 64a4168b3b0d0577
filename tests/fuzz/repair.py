"""Checksums made right again after the fuzzer's mutations, for the sparse images whose size word has bit 63
set (targets.REPAIR_BIT) and for hives whose checksum field is 0: a mutation of a header field then reaches
the code past the checksum check instead of stopping at it.  Other inputs keep their checksums as they are,
so the checks themselves are fuzzed too.

The offsets are the specifications', written here from them (not from wim2vhd's layouts):
  VHD  (Virtual Hard Disk Image Format Specification, Microsoft 2006): the footer is the last 512 bytes (a copy
       at 0 in dynamic disks), cookie "conectix", Checksum at 64: the one's complement of the sum of all its
       bytes with the field as zero; Data Offset at 16 (u64 big-endian) locates the dynamic disk header,
       cookie "cxsparse", 1024 bytes, Checksum at 36, the same sum.
  VHDX ([MS-VHDX] 2.2.2, 2.2.3): headers of 4 KiB at 64 KiB and 128 KiB, signature "head"; region tables of
       64 KiB at 192 KiB and 256 KiB, signature "regi"; each has a CRC-32C of itself, the field as zero, at 4.
"""
from __future__ import annotations

import struct

import crc32c

KiB = 1024


def _ones_sum(buf: bytearray, at: int) -> None:
    buf[at:at + 4] = bytes(4)
    struct.pack_into(">I", buf, at, ~sum(buf) & 0xFFFFFFFF)


def vhd(f) -> None:
    size = f.seek(0, 2)
    if size < 512:
        return
    for off in sorted({0, size - 512}):
        f.seek(off)
        foot = bytearray(f.read(512))
        if foot[:8] != b"conectix":
            continue
        _ones_sum(foot, 64)
        f.seek(off)
        f.write(foot)
        dyn = struct.unpack_from(">Q", foot, 16)[0]
        if dyn + 1024 <= size:
            f.seek(dyn)
            head = bytearray(f.read(1024))
            if head[:8] == b"cxsparse":
                _ones_sum(head, 36)
                f.seek(dyn)
                f.write(head)


def vhdx(f) -> None:
    size = f.seek(0, 2)
    for off, n, sig in ((64 * KiB, 4 * KiB, b"head"), (128 * KiB, 4 * KiB, b"head"),
                        (192 * KiB, 64 * KiB, b"regi"), (256 * KiB, 64 * KiB, b"regi")):
        if off + n > size:
            continue
        f.seek(off)
        buf = bytearray(f.read(n))
        if buf[:4] != sig:
            continue
        buf[4:8] = bytes(4)
        struct.pack_into("<I", buf, 4, crc32c.crc32c(bytes(buf)))
        f.seek(off)
        f.write(buf)


def hive(f) -> None:
    """A regf base block whose Checksum (at 508) is 0 gets the right one (a raw input has no flag bit: 0 is the
    ask).  The checksum is the XOR of the block's first 127 little-endian dwords; 0 becomes 1 and 0xFFFFFFFF
    becomes 0xFFFFFFFE (Windows Internals; libregf's format notes)."""
    f.seek(0)
    block = f.read(512)
    if len(block) < 512 or block[:4] != b"regf" or block[508:512] != bytes(4):
        return
    x = 0
    for (d,) in struct.iter_unpack("<I", block[:508]):
        x ^= d
    x = {0: 1, 0xFFFFFFFF: 0xFFFFFFFE}.get(x, x)
    f.seek(508)
    f.write(struct.pack("<I", x))
