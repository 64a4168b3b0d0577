"""On-disk records of the qcow2 format (qemu's docs/interop/qcow2.txt).

All numbers big-endian.  Layout only: the logic is in qcow2.py.
"""
from wim2vhd.ondisk import Record

MAGIC = b"QFI\xfb"
VERSIONS = (2, 3)           # 3 is what `qemu-img create -o compat=1.1` (the default) writes; 2 is compat=0.10
V2_HEADER_LENGTH = 72       # version 2: the header ends after snapshots_offset
V3_MIN_HEADER_LENGTH = 104  # version 3: at least up to header_length
V3_HEADER_LENGTH = 112      # what we write (and qemu writes): compression_type, then padding to 8

MIN_CLUSTER_BITS, MAX_CLUSTER_BITS = 9, 21  # 512 bytes; qemu's implementation limit of 2 MiB
DEFAULT_CLUSTER_BITS = 16                   # 64 KiB, qemu's default
MAX_REFCOUNT_ORDER = 6                      # refcount_bits = 1 << order, at most 64
V2_REFCOUNT_ORDER = 4                       # version 2: always 16-bit refcounts
REFCOUNT_ORDER = 4                          # what we write (qemu's default)
MAX_BACKING_FILE_SIZE = 1023

CRYPT_NONE = 0  # crypt_method: 1 AES, 2 LUKS

# incompatible_features bits
INCOMPAT_DIRTY = 1 << 0        # refcounts may be inconsistent
INCOMPAT_CORRUPT = 1 << 1      # must not be written to
INCOMPAT_DATA_FILE = 1 << 2    # guest clusters in an external data file
INCOMPAT_COMPRESSION = 1 << 3  # compression_type is not zlib
INCOMPAT_EXTL2 = 1 << 4        # extended L2 entries (subclusters)
INCOMPAT_NAMES = {INCOMPAT_DIRTY: "dirty", INCOMPAT_CORRUPT: "corrupt", INCOMPAT_DATA_FILE: "external data file",
                  INCOMPAT_COMPRESSION: "compression type", INCOMPAT_EXTL2: "extended L2 entries"}

# Header extension types
EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_NAMES = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441

# The backing format names qemu writes in EXT_BACKING_FORMAT, and our format for each
BACKING_FORMATS = {"raw": "raw", "qcow2": "qcow2", "vpc": "vhd", "vhdx": "vhdx"}

# L1 and L2 entries, and refcount table entries
L1E_OFFSET_MASK = 0x00FFFFFFFFFFFE00   # bits 9-55: the L2 table
L2E_OFFSET_MASK = 0x00FFFFFFFFFFFE00   # bits 9-55: the host cluster
RT_OFFSET_MASK = 0xFFFFFFFFFFFFFE00    # bits 9-63: the refcount block
OFLAG_COPIED = 1 << 63                 # refcount exactly one
OFLAG_COMPRESSED = 1 << 62
OFLAG_ZERO = 1 << 0                    # version 3: the cluster reads as zeros

HEADER_V2 = Record("qcow2 header", ">", [
    ("magic", "4s"),
    ("version", "I"),
    ("backing_file_offset", "Q"),
    ("backing_file_size", "I"),
    ("cluster_bits", "I"),
    ("size", "Q"),
    ("crypt_method", "I"),
    ("l1_size", "I"),
    ("l1_table_offset", "Q"),
    ("refcount_table_offset", "Q"),
    ("refcount_table_clusters", "I"),
    ("nb_snapshots", "I"),
    ("snapshots_offset", "Q"),
])
assert HEADER_V2.size == V2_HEADER_LENGTH

HEADER_V3 = Record("qcow2 header", ">", [
    *HEADER_V2.fields,
    ("incompatible_features", "Q"),
    ("compatible_features", "Q"),
    ("autoclear_features", "Q"),
    ("refcount_order", "I"),
    ("header_length", "I"),
    ("compression_type", "B"),  # present when header_length > 104; 0 = zlib
], size=V3_HEADER_LENGTH)

EXTENSION = Record("qcow2 header extension", ">", [("type", "I"), ("length", "I")])  # data, padded to 8

# type 0 incompatible, 1 compatible, 2 autoclear
FEATURE_NAME = Record("qcow2 feature name", ">", [("type", "B"), ("bit", "B"), ("name", "46s")])
