"""wim2vhd's on-disk constants and records (disk/vhd_layout.py, disk/vhdx_layout.py) against those of an
implementation nobody here wrote: dissect.hypervisor's c_vhd and c_vhdx, field by field and offset by
offset, so that a mistyped GUID, state or field order fails here and not in Hyper-V."""
import pytest

from wim2vhd.disk import vhd_layout as V
from wim2vhd.disk import vhdx_layout as X

c_vhdx_mod = pytest.importorskip("dissect.hypervisor.disk.c_vhdx", reason="dissect.hypervisor not installed")
c_vhd_mod = pytest.importorskip("dissect.hypervisor.disk.c_vhd", reason="dissect.hypervisor not installed")
c_vhdx, c_vhd = c_vhdx_mod.c_vhdx, c_vhd_mod.c_vhd


def offsets(struct, rename=None):
    """{field: offset} of a dissect structure, bit fields and reserved fields left out."""
    rename = rename or {}
    return {rename.get(f.name, f.name): f.offset for f in struct.__fields__
            if f.offset is not None and not f.name.startswith("reserved")}


def ours(record):
    return {n: record.offset_of(n) for n in record.names if not n.startswith("reserved")}


def test_vhdx_guids_match_dissect():
    assert X.BAT_REGION == c_vhdx_mod.BAT_REGION_GUID
    assert X.METADATA_REGION == c_vhdx_mod.METADATA_REGION_GUID
    assert X.META_FILE_PARAMETERS == c_vhdx_mod.FILE_PARAMETERS_GUID
    assert X.META_VIRTUAL_DISK_SIZE == c_vhdx_mod.VIRTUAL_DISK_SIZE_GUID
    assert X.META_VIRTUAL_DISK_ID == c_vhdx_mod.VIRTUAL_DISK_ID_GUID
    assert X.META_LOGICAL_SECTOR_SIZE == c_vhdx_mod.LOGICAL_SECTOR_SIZE_GUID
    assert X.META_PHYSICAL_SECTOR_SIZE == c_vhdx_mod.PHYSICAL_SECTOR_SIZE_GUID
    assert X.META_PARENT_LOCATOR == c_vhdx_mod.PARENT_LOCATOR_GUID
    assert X.PARENT_LOCATOR_TYPE_VHDX == c_vhdx_mod.VHDX_PARENT_LOCATOR_GUID


def test_vhdx_block_states_match_dissect():
    # qemu's block/vhdx.h has PAYLOAD_BLOCK_UNMAPPED 5, from the 2012 v1.00 document; [MS-VHDX] 2.5.1.1
    # and dissect say 3, and 4 and 5 are reserved.
    for name in ("PAYLOAD_BLOCK_NOT_PRESENT", "PAYLOAD_BLOCK_UNDEFINED", "PAYLOAD_BLOCK_ZERO",
                 "PAYLOAD_BLOCK_UNMAPPED", "PAYLOAD_BLOCK_PARTIALLY_PRESENT", "SB_BLOCK_NOT_PRESENT",
                 "SB_BLOCK_PRESENT"):
        assert getattr(X, name) == c_vhdx.consts[name], name
    assert X.PAYLOAD_BLOCK_FULLY_PRESENT == c_vhdx.consts["PAYLOAD_BLOCK_FULLY_PRESENT"]
    # FileOffsetMB: the upper 44 bits; the state: the lower 3 (dissect's bat_entry bit fields)
    e = c_vhdx.bat_entry((((123 << X.BAT_OFFSET_SHIFT) | 6)).to_bytes(8, "little"))
    assert (e.state, e.file_offset_mb) == (6, 123)


@pytest.mark.parametrize("record,name,rename", [
    (X.FILE_IDENTIFIER, "file_identifier", {}),
    (X.REGION_TABLE_HEADER, "region_table_header", {}),
    (X.REGION_TABLE_ENTRY, "region_table_entry", {}),
    (X.METADATA_TABLE_HEADER, "metadata_table_header", {}),
    (X.METADATA_TABLE_ENTRY, "metadata_table_entry", {"is_user": "flags"}),
    (X.FILE_PARAMETERS, "file_parameters", {"leave_block_allocated": "flags"}),
    (X.PARENT_LOCATOR_HEADER, "parent_locator_header", {}),
    (X.PARENT_LOCATOR_ENTRY, "parent_locator_entry", {}),
    (X.HEADER, "header", {}),
])
def test_vhdx_records_match_dissect(record, name, rename):
    theirs = getattr(c_vhdx, name)
    assert ours(record) == offsets(theirs, rename)
    if name != "header":  # dissect's header has 4096 reserved bytes after its 80: [MS-VHDX] 2.2.2 says 4016
        assert record.size == theirs.size
    else:
        assert record.size == 4096 and offsets(theirs)["log_offset"] + 8 == 80


def test_vhdx_metadata_flags_match_dissect_bits():
    for g, flags in X.META_FLAGS.items():
        raw = X.METADATA_TABLE_ENTRY.pack({"item_id": g.bytes_le, "offset": 65536, "length": 8, "flags": flags})
        e = c_vhdx.metadata_table_entry(raw)
        assert (e.is_user, e.is_virtual_disk, e.is_required) == (
            flags & X.META_IS_USER, bool(flags & X.META_IS_VIRTUAL_DISK), bool(flags & X.META_IS_REQUIRED))
        assert e.is_required and not e.is_user  # every known item is required, none is user metadata
    fp = c_vhdx.file_parameters(X.FILE_PARAMETERS.pack({"block_size": 1 << 20, "flags": X.FP_HAS_PARENT}))
    assert (fp.has_parent, fp.leave_block_allocated) == (1, 0)
    fp = c_vhdx.file_parameters(X.FILE_PARAMETERS.pack({"block_size": 1 << 20, "flags": X.FP_LEAVE_BLOCKS_ALLOCATED}))
    assert (fp.has_parent, fp.leave_block_allocated) == (0, 1)


@pytest.mark.parametrize("record,name,rename", [
    (V.FOOTER, "footer", {"version": "format_version", "creator_application": "creator_app",
                          "creator_host_os": "creator_os", "disk_geometry": "cylinders"}),
    (V.DYNAMIC_HEADER, "dynamic_header", {}),
    (V.PARENT_LOCATOR, "parent_locator", {"platform_data_space": "data_space", "platform_data_length": "data_length",
                                          "platform_data_offset": "data_offset"}),
])
def test_vhd_records_match_dissect(record, name, rename):
    theirs = getattr(c_vhd, name)
    mine = ours(record)
    # we split the geometry (cylinders, heads, sectors per track); dissect keeps it one uint32
    mine.pop("heads", None), mine.pop("sectors_per_track", None)
    assert mine == offsets(theirs, rename)
    if name != "footer":  # dissect's footer is 511 bytes on purpose (old files), the spec's 512
        assert record.size == theirs.size


def test_vhd_constants():
    # The VHD Image Format Specification (no constants in dissect for these): cookies, versions, types,
    # platform codes, as the 32-bit big-endian values the spec lists.
    assert V.FOOTER_COOKIE == b"conectix" and V.DYNHDR_COOKIE == b"cxsparse"
    assert (V.FORMAT_VERSION, V.HEADER_VERSION) == (0x00010000, 0x00010000)
    assert (V.TYPE_FIXED, V.TYPE_DYNAMIC, V.TYPE_DIFFERENCING) == (2, 3, 4)
    assert int.from_bytes(V.PLAT_W2RU, "big") == 0x57327275 and int.from_bytes(V.PLAT_W2KU, "big") == 0x57326B75
    assert (V.NO_OFFSET, V.BAT_UNUSED) == (2 ** 64 - 1, 2 ** 32 - 1)
