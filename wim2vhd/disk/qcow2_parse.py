"""The qcow2 header, its extensions and feature bits, and the decoding of table entries: what
Qcow2Disk (qcow2.py) refuses at open and `disk check` (qcow2_check.py) reports, read the same way.
Every offset and length read from the file goes through base.read_exact's checks before os.pread."""
from __future__ import annotations

import array
import os
import sys
from typing import Any

from wim2vhd.disk import qcow2_layout as layout
from wim2vhd.disk.base import read_exact
from wim2vhd.errors import CorruptInput, UnsupportedInput


def u64s(raw: bytes) -> array.array:
    a = array.array("Q")
    a.frombytes(raw)
    if sys.byteorder == "little":
        a.byteswap()
    return a


def be(a: array.array) -> bytes:
    if sys.byteorder == "little":
        a = array.array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def read_header(fd: int, path: str, file_size: int) -> dict[str, Any]:
    h = layout.HEADER_V2.parse(read_exact(fd, layout.V2_HEADER_LENGTH, 0, "qcow2 header", path, file_size))
    if h["magic"] != layout.MAGIC:
        raise CorruptInput(f"{path}: not a qcow2 file (no QFI\\xfb magic)")
    if h["version"] not in layout.VERSIONS:
        raise UnsupportedInput(f"{path}: qcow2 version {h['version']} is not supported (2 and 3 are)")
    h.update(incompatible_features=0, compatible_features=0, autoclear_features=0,
             refcount_order=layout.V2_REFCOUNT_ORDER, header_length=layout.V2_HEADER_LENGTH, compression_type=0)
    if h["version"] == 3:
        raw = read_exact(fd, layout.V3_MIN_HEADER_LENGTH, 0, "qcow2 header", path, file_size)
        at = layout.HEADER_V3.offset_of("header_length")
        length = int.from_bytes(raw[at:at + 4], "big")
        if length < layout.V3_MIN_HEADER_LENGTH or length % 8:
            raise CorruptInput(f"{path}: bad qcow2 header length {length}")
        raw = read_exact(fd, length, 0, "qcow2 header", path, file_size).ljust(layout.HEADER_V3.size, b"\0")
        h = layout.HEADER_V3.parse(raw)
    bits, order = h["cluster_bits"], h["refcount_order"]
    if not layout.MIN_CLUSTER_BITS <= bits <= layout.MAX_CLUSTER_BITS:
        raise UnsupportedInput(f"{path}: qcow2 cluster size 2^{bits} is out of range (512 bytes to 2 MiB)")
    if order > layout.MAX_REFCOUNT_ORDER:
        raise CorruptInput(f"{path}: qcow2 refcount order {order} is out of range (0 to {layout.MAX_REFCOUNT_ORDER})")
    if h["header_length"] > 1 << bits:
        raise CorruptInput(f"{path}: the qcow2 header is longer than its cluster")
    if h["backing_file_offset"] and (h["backing_file_size"] > layout.MAX_BACKING_FILE_SIZE or
                                     h["backing_file_offset"] + h["backing_file_size"] > 1 << bits):
        raise CorruptInput(f"{path}: the qcow2 backing file name lies outside the first cluster or is longer "
                           f"than {layout.MAX_BACKING_FILE_SIZE} bytes")
    return h


def read_extensions(fd: int, path: str, h: dict[str, Any]) -> dict[int, bytes]:
    cs = 1 << h["cluster_bits"]
    first = os.pread(fd, cs, 0)
    stop = h["backing_file_offset"] or cs
    off, out = h["header_length"], {}
    while off + layout.EXTENSION.size <= min(stop, len(first)):
        e = layout.EXTENSION.parse(first, off)
        if e["type"] == layout.EXT_END:
            break
        data_at = off + layout.EXTENSION.size
        if data_at + e["length"] > len(first):
            raise CorruptInput(f"{path}: qcow2 header extension {e['type']:#x} runs past the first cluster")
        out[e["type"]] = first[data_at:data_at + e["length"]]
        off = data_at + e["length"] + (-e["length"] % 8)
    return out


def feature_names(exts: dict[int, bytes]) -> dict[tuple[int, int], str]:
    names = {}
    raw = exts.get(layout.EXT_FEATURE_NAMES, b"")
    for k in range(len(raw) // layout.FEATURE_NAME.size):
        f = layout.FEATURE_NAME.parse(raw, k * layout.FEATURE_NAME.size)
        names[(f["type"], f["bit"])] = f["name"].rstrip(b"\0").decode("utf-8", "replace")
    return names


def check_features(h: dict[str, Any], exts: dict[int, bytes], path: str) -> None:
    """Refuse what wim2vhd does not read: unknown incompatible features, extended L2 entries, external
    data files, other compression types, encryption."""
    inc = h["incompatible_features"]
    unknown = inc & ~sum(layout.INCOMPAT_NAMES)
    if unknown:
        bit = (unknown & -unknown).bit_length() - 1
        name = feature_names(exts).get((0, bit))
        raise UnsupportedInput(f"{path}: the qcow2 image uses an unknown incompatible feature (bit {bit}"
                               + (f", {name!r}" if name else "") + ")")
    for flag, what in ((layout.INCOMPAT_DATA_FILE, "an external data file"),
                       (layout.INCOMPAT_COMPRESSION, "a non-zlib compression type"),
                       (layout.INCOMPAT_EXTL2, "extended L2 entries (subclusters)")):
        if inc & flag:
            raise UnsupportedInput(f"{path}: the qcow2 image uses {what}, which wim2vhd does not support: "
                                   "`qemu-img convert -O qcow2` makes a plain copy")
    if h["crypt_method"] != layout.CRYPT_NONE:
        raise UnsupportedInput(f"{path}: the qcow2 image is encrypted, which wim2vhd does not support: "
                               "`qemu-img convert --object secret,... -O qcow2` makes a plain copy")
    if layout.EXT_DATA_FILE in exts or layout.EXT_CRYPTO in exts:
        raise UnsupportedInput(f"{path}: the qcow2 image has an external data file or encryption header, "
                               "which wim2vhd does not support")


def compressed_range(entry: int, bits: int) -> tuple[int, int]:
    """(host offset, bytes that may hold the deflate stream) of a compressed L2 entry: with
    x = 62 - (cluster_bits - 8), the offset is in bits 0..x-1 and the number of 512-byte sectors after
    the one the offset lies in, in bits x..61 (docs/interop/qcow2.txt, "Compressed Clusters Descriptor")."""
    x = 62 - (bits - 8)
    off = entry & ((1 << x) - 1)
    sectors = ((entry & ((1 << 62) - 1)) >> x) + 1
    return off, sectors * 512 - (off & 511)


def compressed_clusters(entry: int, bits: int) -> range:
    """The host clusters a compressed entry's sectors touch (each one reference, as qemu counts them)."""
    off, n = compressed_range(entry, bits)
    return range(off >> bits, (off + n - 1 >> bits) + 1)
