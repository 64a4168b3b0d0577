"""On-disk records of the VHDX format ([MS-VHDX]).  All fields little-endian; GUIDs in
Windows' mixed-endian form (uuid.UUID.bytes_le).  Layout only: the logic is in vhdx.py."""
import uuid

from wim2vhd.ondisk import Record

KiB, MiB = 1 << 10, 1 << 20

FILE_ID_SIGNATURE = b"vhdxfile"
HEADER_SIGNATURE = b"head"
REGION_SIGNATURE = b"regi"
METADATA_SIGNATURE = b"metadata"

# Fixed places in the file (MS-VHDX 2.1)
FILE_ID_OFFSET = 0
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
HEADER_SIZE = 4 * KiB
REGION_OFFSETS = (192 * KiB, 256 * KiB)
REGION_SIZE = 64 * KiB
REGION_MAX_ENTRIES = 2047    # [MS-VHDX] 2.2.3.1
METADATA_TABLE_SIZE = 64 * KiB  # items start after the table ([MS-VHDX] 2.6.1.2: offset at least 64 KB)
METADATA_MAX_ENTRIES = 2047  # [MS-VHDX] 2.6.1.1

HEADER_AREA = 1 * MiB  # file identifier, both headers and both region tables, then reserved

# Where wim2vhd puts the variable regions in a new file (all 1 MiB aligned)
LOG_OFFSET, LOG_LENGTH = 1 * MiB, 1 * MiB
METADATA_OFFSET, METADATA_LENGTH = 2 * MiB, 1 * MiB
BAT_OFFSET = 3 * MiB

BAT_REGION = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")

# Metadata items ([MS-VHDX] 2.6.2; checked against the spec's table and against qemu, dissect.hypervisor
# and libvhdi, which agree).  The flags each item must carry are in META_FLAGS below.
META_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
META_VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
META_VIRTUAL_DISK_ID = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
META_LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
META_PHYSICAL_SECTOR_SIZE = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
META_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")  # ...2D, not ...2B: an unknown required item
PARENT_LOCATOR_TYPE_VHDX = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
REGION_NAMES = {BAT_REGION: "the BAT", METADATA_REGION: "the metadata region"}
KNOWN_METADATA = {META_FILE_PARAMETERS, META_VIRTUAL_DISK_SIZE, META_VIRTUAL_DISK_ID,
                  META_LOGICAL_SECTOR_SIZE, META_PHYSICAL_SECTOR_SIZE, META_PARENT_LOCATOR}

# Metadata entry flags ([MS-VHDX] 2.6.1.2: bit 0 IsUser, bit 1 IsVirtualDisk, bit 2 IsRequired)
META_IS_USER, META_IS_VIRTUAL_DISK, META_IS_REQUIRED = 1, 2, 4
# The flags of each known item ([MS-VHDX] 2.6.2's table): none is user metadata, all are required, and
# the ones that describe the virtual disk (not the file) are IsVirtualDisk.
META_FLAGS = {
    META_FILE_PARAMETERS: META_IS_REQUIRED,
    META_VIRTUAL_DISK_SIZE: META_IS_VIRTUAL_DISK | META_IS_REQUIRED,
    META_VIRTUAL_DISK_ID: META_IS_VIRTUAL_DISK | META_IS_REQUIRED,
    META_LOGICAL_SECTOR_SIZE: META_IS_VIRTUAL_DISK | META_IS_REQUIRED,
    META_PHYSICAL_SECTOR_SIZE: META_IS_VIRTUAL_DISK | META_IS_REQUIRED,
    META_PARENT_LOCATOR: META_IS_REQUIRED,
}
# The length of each known item's data ([MS-VHDX] 2.6.2.1-2.6.2.5; the parent locator varies)
META_LENGTHS = {META_FILE_PARAMETERS: 8, META_VIRTUAL_DISK_SIZE: 8, META_VIRTUAL_DISK_ID: 16,
                META_LOGICAL_SECTOR_SIZE: 4, META_PHYSICAL_SECTOR_SIZE: 4}
META_NAMES = {META_FILE_PARAMETERS: "file parameters", META_VIRTUAL_DISK_SIZE: "virtual disk size",
              META_VIRTUAL_DISK_ID: "virtual disk ID", META_LOGICAL_SECTOR_SIZE: "logical sector size",
              META_PHYSICAL_SECTOR_SIZE: "physical sector size", META_PARENT_LOCATOR: "parent locator"}
# File parameters flags
FP_LEAVE_BLOCKS_ALLOCATED, FP_HAS_PARENT = 1, 2

# BAT entry states (MS-VHDX 2.5.1)
PAYLOAD_BLOCK_NOT_PRESENT = 0
PAYLOAD_BLOCK_UNDEFINED = 1
PAYLOAD_BLOCK_ZERO = 2
PAYLOAD_BLOCK_UNMAPPED = 3  # [MS-VHDX] 2.5.1.1; qemu's vhdx.h says 5, from the 2012 v1.00 draft (4, 5 reserved)
PAYLOAD_BLOCK_FULLY_PRESENT = 6
PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7
SB_BLOCK_NOT_PRESENT = 0
SB_BLOCK_PRESENT = 6
BAT_STATE_MASK = 0x7
BAT_OFFSET_SHIFT = 20  # FileOffsetMB occupies bits 20..63
BAT_RESERVED_MASK = ((1 << BAT_OFFSET_SHIFT) - 1) & ~BAT_STATE_MASK  # bits 3..19, reserved

SECTOR_BITMAP_BLOCK = 1 * MiB  # one sector bitmap block covers 2^23 sectors

FILE_IDENTIFIER = Record("VHDX file identifier", "<", [
    ("signature", "8s"),
    ("creator", "512s"),  # UTF-16LE
])

HEADER = Record("VHDX header", "<", [
    ("signature", "4s"),
    ("checksum", "I"),
    ("sequence_number", "Q"),
    ("file_write_guid", "16s"),
    ("data_write_guid", "16s"),
    ("log_guid", "16s"),
    ("log_version", "H"),
    ("version", "H"),
    ("log_length", "I"),
    ("log_offset", "Q"),
    ("reserved", "4016s"),
])
assert HEADER.size == HEADER_SIZE

REGION_TABLE_HEADER = Record("VHDX region table header", "<", [
    ("signature", "4s"),
    ("checksum", "I"),
    ("entry_count", "I"),
    ("reserved", "I"),
])

REGION_TABLE_ENTRY = Record("VHDX region table entry", "<", [
    ("guid", "16s"),
    ("file_offset", "Q"),
    ("length", "I"),
    ("required", "I"),
])

METADATA_TABLE_HEADER = Record("VHDX metadata table header", "<", [
    ("signature", "8s"),
    ("reserved", "H"),
    ("entry_count", "H"),
    ("reserved2", "20s"),
])

METADATA_TABLE_ENTRY = Record("VHDX metadata table entry", "<", [
    ("item_id", "16s"),
    ("offset", "I"),
    ("length", "I"),
    ("flags", "I"),
    ("reserved", "I"),
])

FILE_PARAMETERS = Record("VHDX file parameters", "<", [("block_size", "I"), ("flags", "I")])

PARENT_LOCATOR_HEADER = Record("VHDX parent locator header", "<", [
    ("locator_type", "16s"),
    ("reserved", "H"),
    ("key_value_count", "H"),
])

PARENT_LOCATOR_ENTRY = Record("VHDX parent locator entry", "<", [
    ("key_offset", "I"),
    ("value_offset", "I"),
    ("key_length", "H"),
    ("value_length", "H"),
])

# The log ([MS-VHDX] 2.3): entries of 4 KiB sectors, each a header and descriptors, then data sectors
LOG_SIGNATURE, LOG_DESC_SIGNATURE, LOG_ZERO_SIGNATURE, LOG_DATA_SIGNATURE = b"loge", b"desc", b"zero", b"data"
LOG_SECTOR = 4 * KiB

LOG_ENTRY_HEADER = Record("VHDX log entry header", "<", [
    ("signature", "4s"),
    ("checksum", "I"),
    ("entry_length", "I"),
    ("tail", "I"),
    ("sequence_number", "Q"),
    ("descriptor_count", "I"),
    ("reserved", "I"),
    ("log_guid", "16s"),
    ("flushed_file_offset", "Q"),
    ("last_file_offset", "Q"),
])
assert LOG_ENTRY_HEADER.size == 64

# A data descriptor ("desc"); a zero descriptor ("zero") has the same layout with trailing_bytes
# reserved and leading_bytes the length to zero.
LOG_DESCRIPTOR = Record("VHDX log descriptor", "<", [
    ("signature", "4s"),
    ("trailing_bytes", "I"),
    ("leading_bytes", "Q"),
    ("file_offset", "Q"),
    ("sequence_number", "Q"),
])
assert LOG_DESCRIPTOR.size == 32
