"""On-disk records of the VHD format (Microsoft's Virtual Hard Disk Image Format Specification).

All fields are big-endian.  Layout only: the logic is in vhd.py.
"""
from wim2vhd.ondisk import Record

FOOTER_COOKIE = b"conectix"
DYNHDR_COOKIE = b"cxsparse"
FORMAT_VERSION = 0x00010000
HEADER_VERSION = 0x00010000
NO_OFFSET = 0xFFFFFFFFFFFFFFFF
BAT_UNUSED = 0xFFFFFFFF

TYPE_FIXED, TYPE_DYNAMIC, TYPE_DIFFERENCING = 2, 3, 4
TYPE_NAMES = {TYPE_FIXED: "fixed", TYPE_DYNAMIC: "dynamic", TYPE_DIFFERENCING: "differencing"}

# Parent locator platform codes
PLAT_W2KU = b"W2ku"  # absolute Windows path, UTF-16LE
PLAT_W2RU = b"W2ru"  # relative Windows path, UTF-16LE

FOOTER = Record("VHD footer", ">", [
    ("cookie", "8s"),
    ("features", "I"),
    ("format_version", "I"),
    ("data_offset", "Q"),
    ("timestamp", "I"),
    ("creator_app", "4s"),
    ("creator_version", "I"),
    ("creator_os", "4s"),
    ("original_size", "Q"),
    ("current_size", "Q"),
    ("cylinders", "H"),
    ("heads", "B"),
    ("sectors_per_track", "B"),
    ("disk_type", "I"),
    ("checksum", "I"),
    ("unique_id", "16s"),
    ("saved_state", "B"),
    ("reserved", "427s"),
])
assert FOOTER.size == 512

PARENT_LOCATOR = Record("VHD parent locator", ">", [
    ("platform_code", "4s"),
    ("data_space", "I"),
    ("data_length", "I"),
    ("reserved", "I"),
    ("data_offset", "Q"),
])

DYNAMIC_HEADER = Record("VHD dynamic header", ">", [
    ("cookie", "8s"),
    ("data_offset", "Q"),
    ("table_offset", "Q"),
    ("header_version", "I"),
    ("max_table_entries", "I"),
    ("block_size", "I"),
    ("checksum", "I"),
    ("parent_unique_id", "16s"),
    ("parent_timestamp", "I"),
    ("reserved1", "I"),
    ("parent_unicode_name", "512s"),
    ("parent_locators", "192s"),  # 8 x PARENT_LOCATOR
    ("reserved2", "256s"),
])
assert DYNAMIC_HEADER.size == 1024
