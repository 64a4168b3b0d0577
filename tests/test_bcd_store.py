"""BcdStore: new system stores, edits, atomic saves; results read back with regipy and hivexml."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from wim2vhd.boot import elements as el
from wim2vhd.boot.edit import add_vhd_entry, create_store_file, normalize_windows_path
from wim2vhd.boot.store import BcdStore
from wim2vhd.boot.values import RawValue, encode_element, parse_object_id
from wim2vhd.boot.view import describe, render_text
from wim2vhd.boot.devices import Boot, GptPartition, Locate, MbrPartition, Vhd, decode_device, encode_device
from wim2vhd.boot.elements import E
from wim2vhd.registry.hive import Hive, RegType, Value
from wim2vhd.errors import (CorruptInput, InputError, InternalError, OutputExists, UnsupportedInput,
                            UsageError)

from tests.support import ref, ref_copy, regipy_store, regipy_values, sha

BOOTMGR = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"
FWBOOTMGR = "{a5a30fa2-3d06-4e9f-b5f4-a01df9d1fcba}"
MEMDIAG = "{b2721d73-1db4-4c62-bf78-c548a880142d}"


def guids(lst) -> list[str]:
    return [x.lower() for x in lst]


@pytest.mark.parametrize("firmware", ["uefi", "bios"])
def test_new_system_store(tmp_path, firmware):
    out = tmp_path / "BCD"
    store = BcdStore.new_system_store(firmware)
    vhd = Vhd.located("\\vhds\\win.vhdx")
    loader = store.add_os_loader("Windows 11", vhd, default=True)
    store.save(out)
    store.close()

    s = regipy_store(out)
    assert regipy_values(out, "\\Description")["System"] == ("REG_DWORD", 1)
    assert s[BOOTMGR]["type"] == 0x10100002
    assert s[MEMDIAG]["type"] == 0x10200005
    assert (FWBOOTMGR in s) == (firmware == "uefi")
    for name, t in [("{7ea2e1ac-2e61-4728-aaa3-896d9d0a9f0e}", 0x20100000),
                    ("{6efb52bf-1766-41db-a6b3-0ee5eff72bd7}", 0x20200003),
                    ("{1afa9c49-16ab-4a5c-901b-212802da9460}", 0x20200004),
                    ("{7ff607e0-4395-11db-b0de-0800200c9a66}", 0x20200003)]:
        assert s[name]["type"] == t
    bm = s[BOOTMGR]["elements"]
    lid = "{%s}" % loader
    assert bm["23000003"] == ("REG_SZ", lid)                       # default
    assert guids(bm["24000001"][1]) == [lid]                        # displayorder
    assert guids(bm["24000010"][1]) == [MEMDIAG]                    # toolsdisplayorder
    assert bm["25000004"] == ("REG_BINARY", (30).to_bytes(8, "little"))
    assert decode_device(bm["11000001"][1]) == Boot()
    if firmware == "uefi":
        assert bm["12000002"] == ("REG_SZ", "\\EFI\\Microsoft\\Boot\\bootmgfw.efi")
        assert guids(s[FWBOOTMGR]["elements"]["24000001"][1]) == [BOOTMGR]
    else:
        assert "12000002" not in bm
    le = s[lid]["elements"]
    assert s[lid]["type"] == 0x10200003
    assert le["12000004"] == ("REG_SZ", "Windows 11")
    winload = {"uefi": "\\Windows\\system32\\winload.efi", "bios": "\\Windows\\system32\\winload.exe"}[firmware]
    assert le["12000002"] == ("REG_SZ", winload)
    assert le["22000002"] == ("REG_SZ", "\\Windows")
    assert le["11000001"][1] == le["21000001"][1] == encode_device(vhd)
    assert le["250000c2"] == ("REG_BINARY", (1).to_bytes(8, "little"))     # bootmenupolicy Standard
    assert le["25000020"] == ("REG_BINARY", bytes(8))                      # nx OptIn
    assert le["17000077"] == ("REG_BINARY", (0x15000075).to_bytes(8, "little"))
    rid = le["23000003"][1].lower()
    assert s[rid]["type"] == 0x10200004
    assert s[rid]["elements"]["11000001"][1] == encode_device(vhd)
    assert "21000001" not in s[rid]["elements"]                             # no filedevice (as bcdboot)
    assert s[rid]["elements"]["22000002"] == ("REG_SZ", "\\hiberfil.sys")
    assert bm["23000006"] == ("REG_SZ", rid)                                 # bootmgr resumeobject
    assert s[MEMDIAG]["elements"]["1600000b"] == ("REG_BINARY", b"\x01")

    # hivexml (libhivex's own reader) agrees the file is sound
    subprocess.run(["hivexml", str(out)], check=True, capture_output=True)


def test_reopen_and_edit(tmp_path):
    out = tmp_path / "BCD"
    with BcdStore.new_system_store("uefi") as st:
        st.save(out)
    with BcdStore.open(out, write=True) as st:
        assert st.firmware == "uefi" and st.is_system_store
        bm = st.object("{bootmgr}")
        bm.set(E.TIMEOUT, 5)
        bm.set(0x12345678, "custom string")
        assert bm.delete(E.TOOLSDISPLAYORDER) is True
        assert bm.delete(E.TOOLSDISPLAYORDER) is False
        a = st.add_os_loader("A", Vhd("\\a.vhdx", MbrPartition(1, 2)))
        b = st.add_os_loader("B", Vhd("\\b.vhdx", Boot()), display_first=True, resume=False)
        assert st.resolve("{default}") == a  # the first entry became the default
        st.set_default(b)
        st.save()
    s = regipy_store(out)
    bm = s[BOOTMGR]["elements"]
    assert bm["25000004"][1] == (5).to_bytes(8, "little")
    assert bm["12345678"] == ("REG_SZ", "custom string")
    assert "24000010" not in bm
    assert guids(bm["24000001"][1]) == ["{%s}" % b, "{%s}" % a]
    assert bm["23000003"][1] == "{%s}" % b
    assert "23000003" not in s["{%s}" % b]["elements"]  # no resume object asked for
    assert sha(out.with_name("BCD.bak")) != sha(out)
    with BcdStore.open(out.with_name("BCD.bak")) as old:
        assert old.object("{bootmgr}").get(E.TIMEOUT) == 30


def test_editing_a_windows_store_keeps_everything_else(tmp_path):
    p = ref_copy("pybcd-BCDTest", tmp_path)
    before = regipy_store(p)
    original = p.read_bytes()
    with BcdStore.open(p, write=True) as st:
        assert st.firmware is None  # no boot manager in this store
        with pytest.raises(UsageError, match="UEFI or BIOS"):
            st.add_os_loader("x", Boot())
        g = st.add_os_loader("x", Boot(), firmware="bios", resume=False)
        st.save()
    after = regipy_store(p)
    added = set(after) - set(before)
    assert added == {"{%s}" % g}
    for k, v in before.items():
        assert after[k] == v  # every byte of every element is unchanged
    assert p.with_name(p.name + ".bak").read_bytes() == original


def test_save_is_atomic_and_keeps_mode(tmp_path):
    p = tmp_path / "BCD"
    with BcdStore.new_system_store("bios") as st:
        st.save(p)
    os.chmod(p, 0o640)
    with BcdStore.open(p, write=True) as st:
        st.object("{bootmgr}").set(E.TIMEOUT, 1)
        st.save()
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["BCD", "BCD.bak"]  # no temporary files left
    with BcdStore.open(p, write=True) as st:
        st.object("{bootmgr}").set(E.TIMEOUT, 2)
        st.save(backup=False)
    with BcdStore.open(p.with_name("BCD.bak")) as bak:
        assert bak.object("{bootmgr}").get(E.TIMEOUT) == 30


def test_save_refuses_existing_target(tmp_path):
    p = tmp_path / "BCD"
    p.write_bytes(b"precious")
    with BcdStore.new_system_store("uefi") as st:
        with pytest.raises(OutputExists):
            st.save(p)
        assert p.read_bytes() == b"precious"
        st.save(p, overwrite=True)
    assert p.with_name("BCD.bak").read_bytes() == b"precious"


def test_read_only_store_refuses_edits():
    with BcdStore.open(ref("windeploy-BCD")) as st:
        with pytest.raises(InternalError):
            st.object("{bootmgr}").set(E.TIMEOUT, 3)
        with pytest.raises(InternalError):
            st.save()


def test_open_refuses_non_bcd(tmp_path):
    h = Hive.new("ROOT")
    h.root.add_child("Software").set_value(Value.sz("x", "y"))
    p = tmp_path / "SOFTWARE"
    h.commit(p)
    h.close()
    before = sha(p)
    with pytest.raises(UnsupportedInput, match="not a BCD store"):
        BcdStore.open(p, write=True)
    assert sha(p) == before
    q = tmp_path / "text"
    q.write_text("not a hive\n")
    with pytest.raises(CorruptInput, match="not a registry hive"):
        BcdStore.open(q)
    with pytest.raises(InputError, match="does not exist"):
        BcdStore.open(tmp_path / "missing")


def test_objects_lookup_and_ids(tmp_path):
    with BcdStore.new_system_store("uefi") as st:
        assert st.find("{memdiag}").id == el.MEMDIAG
        assert st.find("b2721d73-1db4-4c62-bf78-c548a880142d").id == el.MEMDIAG
        assert st.find(uuid.uuid4()) is None
        with pytest.raises(InputError, match="no object"):
            st.object("{ntldr}")
        with pytest.raises(InputError, match="no default"):
            st.resolve("{default}")
        with pytest.raises(UsageError, match="already has"):
            st.add_boot_manager(firmware="uefi")
        with pytest.raises(UsageError):
            parse_object_id("{current}")
        with pytest.raises(UsageError):
            parse_object_id("nonsense")
        g = st.add_object(0x10200003)
        g.set(E.DESCRIPTION, "x")
        st.delete_object(g.id)
        assert st.find(g.id) is None
        # an element stored oddly stays as it was, through get/set
        o = st.object("{bootmgr}")
        o.set(0x25000004, RawValue(RegType.BINARY, b"\x05\0\0\0"))
        assert o.get(0x25000004) == RawValue(RegType.BINARY, b"\x05\0\0\0")


def test_describe_reference_store():
    with BcdStore.open(ref("windeploy-BCD")) as st:
        text = render_text(describe(st))
        verbose = render_text(describe(st, verbose=True))
    assert text.startswith("Windows Boot Manager\n--------------------\nidentifier              {bootmgr}\n")
    assert "device                  partition=mbr:0xddba6bbb:0x100000" in text
    assert "default                 {default}" in text
    assert "identifier              {default}" in text
    assert "locale                  cs-cz" in text
    assert "nx                      OptIn" in text
    assert "hypervisorbaudrate      115200" in text
    assert "debugtype               Local" in text
    assert "inherit                 {dbgsettings}\n                        {emssettings}\n" in text
    assert "identifier              {9dea862c-5cdd-4e70-acc1-f32b344d4795}" in verbose
    assert "{default}" not in verbose


def test_add_vhd_entry_and_path_rules(tmp_path):
    p = tmp_path / "BCD"
    create_store_file(p, firmware="bios")
    with pytest.raises(OutputExists):
        create_store_file(p, firmware="bios")
    info = add_vhd_entry(p, "vhds/win.vhdx", host=GptPartition(uuid.UUID(int=1), uuid.UUID(int=2)))
    assert info["device"] == ("vhd=[gpt:00000000-0000-0000-0000-000000000001:"
                              "00000000-0000-0000-0000-000000000002]\\vhds\\win.vhdx")
    assert info["firmware"] == "bios" and info["default"] is True
    assert normalize_windows_path("\\a\\b") == "\\a\\b"
    for bad in ("C:\\x.vhdx", "\\", "\\dir\\", ""):
        with pytest.raises(UsageError):
            normalize_windows_path(bad)
    q = tmp_path / "empty"
    with BcdStore.new() as st:
        st.save(q)
    before = sha(q)
    with pytest.raises(InputError, match="no Windows Boot Manager"):
        add_vhd_entry(q, "\\x.vhdx")
    assert sha(q) == before


def test_save_through_a_symlink_edits_the_store(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    p = real / "BCD"
    with BcdStore.new_system_store("uefi") as st:
        st.save(p)
    link = tmp_path / "BCD"
    link.symlink_to(p)
    with BcdStore.open(link, write=True) as st:
        st.object("{bootmgr}").set(E.TIMEOUT, 7)
        st.save()
    assert link.is_symlink()
    with BcdStore.open(p) as st:
        assert st.object("{bootmgr}").get(E.TIMEOUT) == 7
    assert (real / "BCD.bak").exists()


def test_bytes_round_trip(tmp_path):
    with BcdStore.new_system_store("bios") as st:
        g = st.add_os_loader("W", MbrPartition(0xDEADBEEF, 0x100000))
        data = st.to_bytes()
    assert data[:4] == b"regf"
    with BcdStore.from_bytes(data) as st2:
        assert st2.object(g).get(E.DESCRIPTION) == "W"
        assert st2.resolve("{default}") == g
    with pytest.raises(CorruptInput, match="^BCD is not a registry hive"):
        BcdStore.from_bytes(b"nope" * 3000)
    with pytest.raises(UnsupportedInput, match="^image:/EFI/BCD is a registry hive"):
        h = Hive.new()
        h.root.add_child("x")
        BcdStore.from_bytes(_hive_bytes(h, tmp_path), name="image:/EFI/BCD")


def _hive_bytes(h: Hive, tmp_path) -> bytes:
    h.commit(tmp_path / "h")
    h.close()
    return (tmp_path / "h").read_bytes()


_values = {
    0x12000004: hst.text(hst.characters(min_codepoint=1, max_codepoint=0xD7FF), max_size=300),
    0x24000001: hst.lists(hst.uuids(), max_size=8),
    0x25000004: hst.integers(0, 2**64 - 1),
    0x16000009: hst.booleans(),
    0x17000077: hst.lists(hst.integers(0, 2**64 - 1), max_size=8),
    0x23000003: hst.uuids(),
    0x11000001: hst.builds(lambda s, o: MbrPartition(s, o), hst.integers(0, 2**32 - 1), hst.integers(0, 2**64 - 1)),
}


@settings(max_examples=30, deadline=None)
@given(hst.dictionaries(hst.sampled_from(sorted(_values)), hst.none(), min_size=1).flatmap(
    lambda d: hst.fixed_dictionaries({k: _values[k] for k in d})))
def test_any_elements_written_are_read_back_by_regipy(tmp_path_factory, elements):
    out = tmp_path_factory.mktemp("s") / "BCD"
    with BcdStore.new() as st_:
        o = st_.add_object(0x10100002, el.BOOTMGR)
        for e, v in elements.items():
            o.set(e, v)
        st_.save(out)
    got = regipy_store(out)[BOOTMGR]["elements"]
    assert set(got) == {f"{e:08x}" for e in elements}
    for e, v in elements.items():
        enc = encode_element(e, v)
        rtype, rval = got[f"{e:08x}"]
        if enc.type == RegType.BINARY:
            assert rval == enc.data
        elif enc.type == RegType.MULTI_SZ:
            assert [x.lower() for x in rval] == ["{%s}" % g for g in v]
        else:
            assert rval == enc.data[:-2].decode("utf-16-le")
    with BcdStore.open(out) as back:
        assert back.object(el.BOOTMGR).elements() == elements


@settings(max_examples=60, deadline=None)
@given(hst.sampled_from(["windeploy-BCD", "pybcd-BCDTest"]),
       hst.lists(hst.tuples(hst.integers(0x1000, 0x3FFF), hst.integers(0, 255)), min_size=1, max_size=16))
def test_damaged_stores_give_one_clean_error(tmp_path_factory, name, flips):
    """Random damage past the header: the store reads, or a one-line input error; never a crash."""
    data = bytearray(ref(name).read_bytes())
    for pos, byte in flips:
        data[pos % len(data)] = byte
    p = tmp_path_factory.mktemp("f") / "BCD"
    p.write_bytes(bytes(data))
    try:
        with BcdStore.open(p, write=True) as st_:
            render_text(describe(st_))
    except (CorruptInput, UnsupportedInput) as e:
        assert "\n" not in str(e)
        assert str(p) in str(e)
    assert p.read_bytes() == bytes(data)


@pytest.mark.skipif(not shutil.which("regfexport"), reason="regfexport (libregf-utils) is not installed")
def test_libregf_reads_a_new_store(tmp_path):
    """libregf, a third independent reader, walks a store wim2vhd made and sees every element."""
    p = tmp_path / "BCD"
    with BcdStore.new_system_store("uefi") as st_:
        g = st_.add_os_loader("Windows", Vhd.located("\\v.vhdx"))
        st_.save(p)
    out = subprocess.run(["regfexport", str(p)], check=True, capture_output=True, text=True).stdout
    assert "Data: \\Windows\\system32\\winload.efi" in out
    assert f"Key path: NewStoreRoot\\Objects\\{{{g}}}\\Elements\\21000001" in out
    info = subprocess.run(["regfinfo", str(p)], check=True, capture_output=True, text=True).stdout
    assert "Version:\t1.5" in info
    with BcdStore.open(p) as back:
        assert info.count("(value: 0) Element") == sum(len(o.element_ids()) for o in back.objects())


# -- the resume object, as bcdboot writes it --------------------------------------------------
WINDEPLOY_RESUME = "{1b67bffc-e290-11eb-8ffa-f459a0d9b879}"   # bcdboot's, in windeploy-BCD
WINDEPLOY_EFI_LOADER = "{d65367c7-3fb7-11ec-8288-eab76d76405a}"  # `device locate`, in windeploy-BCD-efi


def _resume_of(path, loader_id):
    s = regipy_store(path)
    return s[s["{%s}" % loader_id]["elements"]["23000003"][1].lower()]


@pytest.mark.parametrize("kind", ["partition", "locate", "vhd"])
def test_resume_object_as_bcdboot_writes_it(tmp_path, kind):
    """The resume object has bcdboot's elements (windeploy-BCD, read with regipy): a device that
    holds winresume, \\hiberfil.sys, and no filedevice, so nothing searches the volumes for a
    hibernation file.  Its device bytes are Windows' own for each kind."""
    windows = regipy_store(ref("windeploy-BCD"))[WINDEPLOY_RESUME]["elements"]
    if kind == "partition":
        dev = osdev = MbrPartition(0xDDBA6BBB, 0x100000)   # the partition windeploy-BCD names
        want_device = windows["11000001"][1]
    elif kind == "locate":
        dev, osdev = Locate.by_element(E.PATH), Locate.by_element(E.SYSTEMROOT)
        want_device = regipy_store(ref("windeploy-BCD-efi"))[WINDEPLOY_EFI_LOADER]["elements"]["11000001"][1]
    else:
        dev = Vhd.for_element("\\test.vhd", Locate.by_path("\\test.vhd"), E.DEVICE)
        osdev = Vhd.for_element("\\test.vhd", Locate.by_path("\\test.vhd"), E.OSDEVICE)
        want_device = regipy_store(ref("pybcd-BCDTest"))["{fffdfa6e-8442-22f3-b2d5-323c2953814f}"][
            "elements"]["11000001"][1]
    p = tmp_path / "BCD"
    with BcdStore.new_system_store("bios") as st:
        g = st.add_os_loader("Windows", dev, osdev)
        st.save(p)
    resume = _resume_of(p, g)
    assert resume["type"] == 0x10200004
    assert set(resume["elements"]) == set(windows)
    assert resume["elements"]["11000001"][1] == want_device
    for e in ("14000006", "17000077", "25000008"):
        assert resume["elements"][e] == windows[e], e
    for e in ("12000002", "22000002"):  # paths: bcdboot wrote this one's in lower case
        assert resume["elements"][e][1].lower() == windows[e][1].lower(), e
