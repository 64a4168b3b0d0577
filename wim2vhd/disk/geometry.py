"""Pure functions of the disk formats: CHS geometry, checksums, CRC-32C, VHDX sizing."""
from __future__ import annotations

import datetime as _dt

# ---- VHD ---------------------------------------------------------------------

VHD_MAX_SIZE = 2040 << 30  # Hyper-V's limit for VHD; BAT entries are 32-bit sector numbers


def vhd_chs(total_sectors: int) -> tuple[int, int, int]:
    """CHS geometry for a VHD of total_sectors 512-byte sectors (VHD spec, appendix: CHS calculation).

    Returns (cylinders, heads, sectors_per_track).  Past 65535*16*255 sectors the
    geometry is capped, and readers must use the footer's current size instead.
    """
    total = min(total_sectors, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def vhd_checksum(data: bytes, checksum_offset: int) -> int:
    """One's complement of the byte sum, with the 4-byte checksum field taken as zero."""
    s = sum(data) - sum(data[checksum_offset:checksum_offset + 4])
    return ~s & 0xFFFFFFFF


_VHD_EPOCH = _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc)


def vhd_timestamp(when: float) -> int:
    """Seconds since 2000-01-01 00:00 UTC, as VHD footers and headers store time."""
    return max(0, int(when - _VHD_EPOCH.timestamp())) & 0xFFFFFFFF


def vhd_bitmap_bytes(block_size: int) -> int:
    """A VHD block's sector bitmap, one bit per sector, padded to a 512-byte sector."""
    return -(-(block_size // 512 // 8) // 512) * 512


# ---- CRC-32C (Castagnoli), as MS-VHDX uses for headers, region and metadata tables ----

def _crc32c_table() -> list[int]:
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    c = crc ^ 0xFFFFFFFF
    t = _CRC32C
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc32c_with_zero_field(data: bytes, field_offset: int) -> int:
    """CRC-32C of data with its 4-byte checksum field taken as zero."""
    return crc32c(bytes(data[:field_offset]) + b"\0\0\0\0" + bytes(data[field_offset + 4:]))


# ---- VHDX sizing --------------------------------------------------------------

MiB = 1 << 20
VHDX_MAX_SIZE = 64 << 40


def vhdx_chunk_ratio(logical_sector_size: int, block_size: int) -> int:
    """Payload blocks per sector-bitmap block (MS-VHDX 2.5: 2^23 sectors per bitmap block)."""
    return (1 << 23) * logical_sector_size // block_size


def vhdx_bat_entries(virtual_size: int, block_size: int, logical_sector_size: int, differencing: bool) -> int:
    """Entries in the BAT, payload and sector-bitmap interleaved (MS-VHDX 2.5)."""
    ratio = vhdx_chunk_ratio(logical_sector_size, block_size)
    data_blocks = -(-virtual_size // block_size)
    sb_blocks = -(-data_blocks // ratio)
    if differencing:
        return sb_blocks * (ratio + 1)
    return data_blocks + (data_blocks - 1) // ratio if data_blocks else 0


def vhdx_payload_entry(block: int, chunk_ratio: int) -> int:
    """BAT index of payload block `block`."""
    return block + block // chunk_ratio


def vhdx_bitmap_entry(chunk: int, chunk_ratio: int) -> int:
    """BAT index of the sector bitmap block of chunk `chunk`."""
    return chunk * (chunk_ratio + 1) + chunk_ratio


# ---- qcow2 sizing -------------------------------------------------------------

def qcow2_l1_entries(virtual_size: int, cluster_bits: int) -> int:
    """L1 entries needed: one L2 table (a cluster of 8-byte entries) per cluster_size**2/8 bytes."""
    cs = 1 << cluster_bits
    return -(-(-(-virtual_size // cs)) // (cs // 8))


def qcow2_plan(virtual_size: int, cluster_bits: int, refcount_order: int, data_clusters: int) -> dict[str, int]:
    """Where a new qcow2 file's tables go, in clusters: the header, the L1 table, the refcount table,
    every refcount block the finished file can need, every L2 table, then data.

    The refcount blocks cover the metadata and `data_clusters` more (every virtual cluster, for a
    disk that can be written anywhere): the file can then never outgrow its refcounts, and new data
    clusters are appended past the end without new metadata.  Returns cluster indices and counts.
    """
    cs = 1 << cluster_bits
    l1_entries = qcow2_l1_entries(virtual_size, cluster_bits)
    l1 = max(1, -(-l1_entries * 8 // cs))
    rb_entries = cs * 8 >> refcount_order
    rb = rt = 1
    while True:
        total = 1 + l1 + rt + rb + l1_entries + data_clusters
        need_rb = -(-total // rb_entries)
        need_rt = -(-need_rb * 8 // cs)
        if (need_rb, need_rt) == (rb, rt):
            break
        rb, rt = max(rb, need_rb), max(rt, need_rt)
    plan = {"l1_entries": l1_entries, "l1": 1, "l1_clusters": l1, "rt": 1 + l1, "rt_clusters": rt,
            "rb": 1 + l1 + rt, "rb_count": rb, "l2": 1 + l1 + rt + rb, "l2_count": l1_entries}
    plan["data"] = plan["l2"] + l1_entries
    return plan
