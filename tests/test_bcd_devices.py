"""BCD element and device codecs against the stores Windows wrote (read with regipy)."""
from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wim2vhd.boot import elements as el
from wim2vhd.boot.store import BcdStore
from wim2vhd.boot.values import PaddedStr, RawValue, decode_element, encode_element, format_value
from wim2vhd.boot.devices import (Boot, File, GptPartition, Locate, MbrPartition, Ramdisk, RawDevice, Vhd,
                                  VirtualDisk, decode_device, encode_device, parse_device, parse_host)
from wim2vhd.errors import UsageError
from wim2vhd.registry.hive import RegType, Value

from tests.support import REF_STORES, ref, regipy_store

REG_TYPES = {"REG_SZ": RegType.SZ, "REG_BINARY": RegType.BINARY, "REG_MULTI_SZ": RegType.MULTI_SZ,
             "REG_DWORD": RegType.DWORD}


def raw_element(store: str, obj: str, element: str) -> bytes:
    return regipy_store(ref(store))[obj]["elements"][element][1]


# -- every element of every reference store ------------------------------------------------
@pytest.mark.parametrize("name", REF_STORES)
def test_every_reference_element_round_trips(name):
    """Decode each element with wim2vhd, re-encode it from the decoded value,
    and compare with the bytes regipy reads: identical, and fully modelled."""
    seen = 0
    independent = regipy_store(ref(name))
    with BcdStore.open(ref(name)) as store:
        objs = {"{%s}" % o.id: o for o in store.objects()}
        assert set(objs) == set(independent)
        for key, info in independent.items():
            o = objs[key]
            assert o.type == info["type"]
            assert {f"{e:08x}" for e in o.element_ids()} == set(info["elements"])
            for ename, (rtype, rval) in info["elements"].items():
                e = int(ename, 16)
                stored = o.raw(e)
                assert stored.type == REG_TYPES[rtype]
                value = decode_element(e, stored)
                assert not isinstance(value, (RawValue, RawDevice)), (key, ename, value)
                again = encode_element(e, value)
                assert again == stored
                # the same bytes as an independent parser reads
                if rtype == "REG_BINARY":
                    assert again.data == rval
                elif rtype == "REG_SZ":
                    assert again.data.decode("utf-16-le").rstrip("\0") == rval.rstrip("\0")
                elif rtype == "REG_MULTI_SZ":
                    assert [str(x) if isinstance(x, str) else "{%s}" % x for x in value] == rval
                seen += 1
    assert seen == {"pybcd-BCDTest": 13, "windeploy-BCD": 42, "windeploy-BCD-efi": 20, "bcdsys-BCD-NEW": 0}[name]


# -- what they say --------------------------------------------------------------------------
PYBCD_DEVICES = {
    ("{150e57bb-8333-11e3-a0d2-000c2994873a}", "11000001"): "boot",
    ("{150e57bb-8333-11e3-a0d2-000c2994873a}", "21000001"): "partition=mbr:0x36234da4:0x100000",
    ("{33238d8c-8333-11e3-a0d2-000c2994873a}", "11000001"): "partition=mbr:0x36234da4:0xb13300000",
    ("{c66dfa6e-8332-11e3-a0d2-000c2994873a}", "11000001"):
        "partition=gpt:984c884b-4218-4f07-aa93-5ede4c7c5384:76cc3abd-2782-4839-af5c-5fc8e6659147",
    ("{d99dfa6e-8442-22f3-b2d5-323c2953813d}", "11000001"): "file=[boot]\\Workspace\\metadeploy\\boot.wim",
    ("{d99dfa6e-8442-22f3-b2d5-323c2953813d}", "21000001"):
        "file=[mbr:0x36234da4:0x100000]\\Workspace\\metadeploy\\boot.wim.aoeu",
    ("{effdfa6e-8442-22f3-b2d5-323c2953814e}", "11000001"): "ramdisk=[boot]\\boot\\boot.wim,{ramdiskoptions}",
    ("{effdfa6e-8442-22f3-b2d5-323c2953814e}", "21000001"):
        "ramdisk=[mbr:0x36234da4:0x100000]\\boot\\boot.wimaoeu,{ramdiskoptions}",
    ("{fffdfa6e-8442-22f3-b2d5-323c2953814f}", "11000001"): "vhd=[locate]\\test.vhd",
    ("{fffdfa6e-8442-22f3-b2d5-323c2953814f}", "21000001"):
        "vhd=[mbr:0x36234da4:0x100000]\\test.vhd,locate=custom:12345678",
}


@pytest.mark.parametrize("key", sorted(PYBCD_DEVICES))
def test_pybcd_device_texts(key):
    obj, element = key
    d = decode_device(raw_element("pybcd-BCDTest", obj, element))
    assert d.text() == PYBCD_DEVICES[key]
    assert parse_device(d.text()) == d


def test_windeploy_devices():
    s = regipy_store(ref("windeploy-BCD"))
    bootmgr = s["{9dea862c-5cdd-4e70-acc1-f32b344d4795}"]["elements"]
    assert decode_device(bootmgr["11000001"][1]) == Boot()
    resume = s["{1b67bffc-e290-11eb-8ffa-f459a0d9b879}"]["elements"]
    assert decode_device(resume["11000001"][1]) == MbrPartition(0xDDBA6BBB, 0x100000)
    efi = regipy_store(ref("windeploy-BCD-efi"))
    loader = efi["{d65367c7-3fb7-11ec-8288-eab76d76405a}"]["elements"]
    assert decode_device(loader["11000001"][1]) == Locate.by_element(0x12000002)
    assert decode_device(loader["21000001"][1]) == Locate.by_element(0x22000002)
    assert decode_device(loader["21000001"][1]).text() == "locate=custom:22000002"
    bm = efi["{9dea862c-5cdd-4e70-acc1-f32b344d4795}"]["elements"]
    assert decode_device(bm["11000001"][1]) == GptPartition(
        uuid.UUID("20ac3077-f7cd-4c47-95d5-53fbf8b752b5"), uuid.UUID("85c434af-7860-49b3-85c3-b70316081b7b"))


# -- encoding from our own values gives Windows' bytes -------------------------------------------
def test_encode_matches_windows_bytes():
    mbr = MbrPartition(0x36234DA4, 0x100000)
    cases = [
        (Vhd.located("\\test.vhd"), "pybcd-BCDTest", "{fffdfa6e-8442-22f3-b2d5-323c2953814f}", "11000001"),
        (Vhd("\\test.vhd", mbr, 0x12345678), "pybcd-BCDTest", "{fffdfa6e-8442-22f3-b2d5-323c2953814f}", "21000001"),
        (Boot(), "pybcd-BCDTest", "{150e57bb-8333-11e3-a0d2-000c2994873a}", "11000001"),
        (mbr, "pybcd-BCDTest", "{150e57bb-8333-11e3-a0d2-000c2994873a}", "21000001"),
        (GptPartition(uuid.UUID("984c884b-4218-4f07-aa93-5ede4c7c5384"),
                      uuid.UUID("76cc3abd-2782-4839-af5c-5fc8e6659147")),
         "pybcd-BCDTest", "{c66dfa6e-8332-11e3-a0d2-000c2994873a}", "11000001"),
        (File("\\Workspace\\metadeploy\\boot.wim", Boot()),
         "pybcd-BCDTest", "{d99dfa6e-8442-22f3-b2d5-323c2953813d}", "11000001"),
        (Ramdisk("\\boot\\boot.wim", Boot()), "pybcd-BCDTest", "{effdfa6e-8442-22f3-b2d5-323c2953814e}", "11000001"),
        (Ramdisk("\\boot\\boot.wimaoeu", mbr), "pybcd-BCDTest", "{effdfa6e-8442-22f3-b2d5-323c2953814e}", "21000001"),
        (Locate.by_element(), "windeploy-BCD-efi", "{d65367c7-3fb7-11ec-8288-eab76d76405a}", "11000001"),
    ]
    for dev, store, obj, element in cases:
        assert encode_device(dev) == raw_element(store, obj, element), dev.text()


def test_vhd_layout_facts():
    """The nested layout, checked field by field on our own encoding."""
    data = encode_device(Vhd("\\v.vhdx", MbrPartition(0x11223344, 0x200000)))
    assert data[:16] == bytes(16)                                    # no options object
    typ, flags, size, _ = struct.unpack_from("<IIII", data, 16)
    assert (typ, flags, size) == (8, 0, len(data) - 16)              # locate, covering the rest
    kind, element, parent = struct.unpack_from("<III", data, 32)
    assert (kind, element) == (0, 0x12000002) and parent == 16 + 12 + 2  # by element `path`; parent after ""
    vd = 16 + parent
    assert struct.unpack_from("<I", data, vd)[0] == 0 and struct.unpack_from("<I", data, vd + 16)[0] == 6  # block-io VHD
    inner = vd + 20 + 20
    assert struct.unpack_from("<I", data, inner + 16)[0] == 5        # block-io file
    assert data.endswith("\\v.vhdx\0".encode("utf-16-le"))


# -- robustness ---------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [
    b"", bytes(16), bytes(40), bytes(range(200)),
    bytes(16) + struct.pack("<IIII", 7, 0, 16, 0),            # unknown device type
    bytes(16) + struct.pack("<IIII", 6, 0, 0x48, 0),          # partition cut short
    bytes(16) + struct.pack("<IIII", 5, 0, 0x48, 0) + b"\1" + bytes(0x37),  # type 5 with an identity
])
def test_unknown_device_bytes_stay_raw(data):
    d = decode_device(data)
    assert isinstance(d, RawDevice)
    assert encode_device(d) == data
    assert d.text() == "hex:" + data.hex()


def test_truncations_of_real_devices_stay_raw():
    full = encode_device(Vhd("\\a\\b.vhdx", GptPartition(uuid.uuid4(), uuid.uuid4()), 0x22000002))
    for n in range(len(full)):
        d = decode_device(full[:n])
        assert isinstance(d, RawDevice) and encode_device(d) == full[:n]


def test_mismatched_registry_types_stay_raw():
    cases = [
        (0x12000004, Value("Element", RegType.BINARY, b"ab")),           # string stored as binary
        (0x25000004, Value("Element", RegType.BINARY, b"\1\0\0\0")),      # 4-byte integer
        (0x16000009, Value("Element", RegType.BINARY, b"\2")),            # boolean 2
        (0x23000003, Value("Element", RegType.SZ, "not-a-guid\0".encode("utf-16-le"))),
        (0x17000077, Value("Element", RegType.BINARY, b"\1\2\3")),
        (0x12000004, Value("Element", RegType.SZ, b"a\0")),              # no terminator
        (0x8F000001, Value("Element", RegType.BINARY, b"\1")),            # unknown format nibble
    ]
    for e, v in cases:
        d = decode_element(e, v)
        assert isinstance(d, RawValue), (hex(e), d)
        assert encode_element(e, d) == v
        assert format_value(e, d) == ["hex:" + v.data.hex()]


@pytest.mark.parametrize("tail", [b"\0\0", b"\xc2\x01", b"x\0y\0\0\0"])
def test_strings_with_bytes_after_the_nul_round_trip(tail):
    # Windows wrote both: a doubled NUL (windeploy-BCD-efi) and leftovers of an older value
    v = Value("Element", RegType.SZ, "\\EFI\\x.efi\0".encode("utf-16-le") + tail)
    d = decode_element(0x12000002, v)
    assert d == "\\EFI\\x.efi" and isinstance(d, PaddedStr)
    assert encode_element(0x12000002, d) == v
    assert format_value(0x12000002, d) == ["\\EFI\\x.efi"]


def test_element_names_and_values():
    assert el.element_name(0x11000001) == "device"
    assert el.element_name(0x21000001, 0x10200003) == "osdevice"
    assert el.element_name(0x21000001, 0x10200004) == "filedevice"
    assert el.element_name(0x23000003, 0x10100002) == "default"
    assert el.element_name(0x23000003, 0x10200003) == "resumeobject"
    assert el.element_name(0x250000F5, 0x20200003) == "hypervisorbaudrate"  # inherited by loaders
    assert el.element_name(0x12345678, 0x10200003) == "custom:12345678"
    assert el.element_name(0x24000001, 0x20100000) == "custom:24000001"
    assert el.element_by_name("bootmenupolicy", 0x10200003) == 0x250000C2
    assert el.element_by_name("description") == 0x12000004
    assert format_value(0x25000020, 0, 0x10200003) == ["OptIn"]
    assert format_value(0x250000C2, 1, 0x10200003) == ["Standard"]
    assert format_value(0x25000004, 30, 0x10100002) == ["30"]
    assert format_value(0x16000009, True) == ["Yes"]
    assert format_value(0x17000077, [0x15000075]) == ["0x15000075"]
    assert format_value(0x24000001, [el.BOOTMGR], 0x10100001, el.ALIAS_OF) == ["{bootmgr}"]
    assert format_value(0x12345678, "\\hello\\test.boot") == ["\\hello\\test.boot"]


def test_parse_host_and_errors():
    assert parse_host("boot") == Boot()
    assert parse_host("mbr:0x36234da4:1048576") == MbrPartition(0x36234DA4, 0x100000)
    assert parse_host("mbr:908283300:0x100000") == MbrPartition(908283300, 0x100000)
    g1, g2 = uuid.uuid4(), uuid.uuid4()
    assert parse_host(f"gpt:{{{g1}}}:{g2}") == GptPartition(g1, g2)
    assert parse_host("locate", "\\x.vhd") == Locate.by_path("\\x.vhd")
    for bad in ("mbr:xyz:1", "mbr:1", "mbr:0x100000000:0", "gpt:1:2", "floppy", "mbr:-1:0", "locate",
                f"gpt:{'-' * 36}:{g2}"):
        with pytest.raises(UsageError):  # typed text: a usage error, not a ValueError to catch far away
            parse_host(bad)
    for bad in ("hex:0g", "locate=custom:zz", "ramdisk=[boot]\\x.wim,{not-a-guid}", "vhd=\\x", "file=[boot\\x",
                "floppy"):
        with pytest.raises(UsageError):
            parse_device(bad)


def test_nested_options_refused():
    with pytest.raises(ValueError):
        encode_device(File("\\x", Ramdisk("\\y", Boot())))


# -- properties ----------------------------------------------------------------------------------
paths = st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF, blacklist_categories=("Zs", "Cc"),
                                       blacklist_characters="\\[],"), min_size=1, max_size=12),
                 min_size=1, max_size=4).map(lambda parts: "\\" + "\\".join(parts))
guids = st.uuids()
partitions = st.one_of(
    st.builds(MbrPartition, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),
    st.builds(GptPartition, guids, guids),
)
hosts = st.one_of(st.just(Boot()), partitions)


@st.composite
def devices(draw):
    kind = draw(st.sampled_from(["boot", "part", "file", "ramdisk", "vhd", "vhd-locate", "locate", "locate-path"]))
    if kind == "boot":
        return Boot()
    if kind == "part":
        return draw(partitions)
    if kind == "file":
        return File(draw(paths), draw(hosts))
    if kind == "ramdisk":
        return Ramdisk(draw(paths), draw(hosts), draw(st.one_of(st.none(), guids)))
    if kind == "vhd":
        return Vhd(draw(paths), draw(hosts), draw(st.integers(0, 2**32 - 1)))
    if kind == "vhd-locate":
        return Vhd.located(draw(paths), draw(st.sampled_from([0x12000002, 0x22000002])))
    if kind == "locate":
        return Locate.by_element(draw(st.integers(1, 2**32 - 1)))
    return Locate.by_path(draw(paths))


@settings(max_examples=300, deadline=None)
@given(devices())
def test_device_round_trips(dev):
    data = encode_device(dev)
    assert decode_device(data) == dev
    assert parse_device(dev.text()) == dev
    # every record's size field covers exactly the bytes that follow the qualifier
    assert struct.unpack_from("<I", data, 24)[0] == len(data) - 16


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_and_re_encode(data):
    d = decode_device(data)
    assert encode_device(d) == data


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([0x12000004, 0x23000003, 0x24000001, 0x25000004, 0x16000009, 0x17000077]),
       st.data())
def test_element_values_round_trip(e, data):
    fmt = el.element_format(e)
    value = {
        2: st.text(st.characters(min_codepoint=1, max_codepoint=0xD7FF), max_size=40),
        3: guids,
        4: st.lists(guids, max_size=5),
        5: st.integers(0, 2**64 - 1),
        6: st.booleans(),
        7: st.lists(st.integers(0, 2**64 - 1), max_size=5),
    }[fmt]
    v = data.draw(value)
    stored = encode_element(e, v)
    assert decode_element(e, stored) == v
    with pytest.raises(TypeError):
        encode_element(e, object())


def test_virtual_disk_generic_form():
    # a virtual disk that is not wrapped the way bcdedit does it still round-trips
    d = Locate(0, 0x12000002, "\\x", VirtualDisk(File("\\v.vhd", Boot())))
    assert decode_device(encode_device(d)) == d
    assert not isinstance(decode_device(encode_device(d)), Vhd)
