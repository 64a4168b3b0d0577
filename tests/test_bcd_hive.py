"""The empty regf hive and the hivex wrapper, checked with regipy and hivexml."""
from __future__ import annotations

import os
import struct
import subprocess
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wim2vhd.registry.hive import Hive, RegType, Value, decode_multi_sz, encode_multi_sz
from wim2vhd.registry.regf import empty_hive
from wim2vhd.errors import CorruptInput, InputError, InternalError

from tests.support import ref, regipy_values, sha


def hivexml(path) -> ET.Element:
    out = subprocess.run(["hivexml", str(path)], check=True, capture_output=True).stdout
    return ET.fromstring(out)


# -- the empty hive ------------------------------------------------------------------
def test_empty_hive_layout():
    data = empty_hive("NewStoreRoot", 133_000_000_000_000_000)
    assert len(data) == 8192
    assert data[:4] == b"regf" and data[4096:4100] == b"hbin"
    csum = 0
    for (d,) in struct.iter_unpack("<I", data[:0x1FC]):
        csum ^= d
    assert struct.unpack_from("<I", data, 0x1FC)[0] == csum
    seq1, seq2 = struct.unpack_from("<II", data, 4)
    assert seq1 == seq2  # a cleanly written hive: no log to replay
    assert struct.unpack_from("<I", data, 0x28)[0] == 4096  # hbins size


def test_empty_hive_read_by_regipy_and_hivexml(tmp_path):
    p = tmp_path / "e.hive"
    p.write_bytes(empty_hive("NewStoreRoot", 133_000_000_000_000_000))
    from regipy.registry import RegistryHive

    h = RegistryHive(str(p))
    assert h.root.name == "NewStoreRoot"
    assert h.root.header.subkey_count == 0
    root = hivexml(p).find("node")
    assert root.get("name") == "NewStoreRoot" and root.get("root") == "1"
    assert list(root.iter("node")) == [root]


def test_empty_hive_security_descriptor():
    data = empty_hive()
    # the sk cell follows the root nk; its SD has owner Administrators and a DACL of two ACEs
    i = data.index(b"sk\0\0", 4096)
    flink, blink, refcount, sdlen = struct.unpack_from("<IIII", data, i + 4)
    assert flink == blink == i - 4 - 4096 and refcount == 1
    sd = data[i + 20:i + 20 + sdlen]
    rev, _, control, owner, group, sacl, dacl = struct.unpack_from("<BBHIIII", sd)
    assert rev == 1 and control == 0x8004 and sacl == 0
    assert sd[owner:owner + 16] == bytes([1, 2, 0, 0, 0, 0, 0, 5]) + struct.pack("<II", 32, 544)
    assert sd[group:group + 12] == bytes([1, 1, 0, 0, 0, 0, 0, 5]) + struct.pack("<I", 18)
    assert struct.unpack_from("<BBHH", sd, dacl) == (2, 0, 0x34, 2)


@settings(max_examples=25, deadline=None)
@given(name=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="\\"),
                    min_size=1, max_size=64),
       ts=st.integers(0, 2**63 - 1))
def test_empty_hive_any_name_opens_in_hivex(tmp_path_factory, name, ts):
    p = tmp_path_factory.mktemp("h") / "h"
    p.write_bytes(empty_hive(name, ts))
    with Hive.open(p) as h:
        assert h.root.name == name
        assert h.root.timestamp == ts
        assert h.root.children() == [] and h.root.values() == []


def test_empty_hive_rejects_bad_names():
    with pytest.raises(ValueError):
        empty_hive("")
    with pytest.raises(ValueError):
        empty_hive("x" * 256)


# -- the wrapper ---------------------------------------------------------------------
def test_new_hive_edit_commit_read_back(tmp_path):
    h = Hive.new("NewStoreRoot")
    root = h.root
    k = root.add_child("Description")
    k.set_value(Value.sz("KeyName", "BCD00000001"))
    k.set_value(Value.dword("System", 1))
    k.set_value(Value.multi_sz("List", ["a", "bé", "{x}"]))
    k.set_value(Value.binary("Blob", bytes(range(200))))
    k.set_value(Value("Empty", RegType.BINARY, b""))
    sub = root.add_child("Objects").add_child("{9dea862c-5cdd-4e70-acc1-f32b344d4795}")
    sub.add_child("Elements")
    assert root.get_key("objects\\{9DEA862C-5CDD-4E70-ACC1-F32B344D4795}") == sub  # case-insensitive
    out = tmp_path / "out.hive"
    h.commit(out)
    h.close()

    vals = regipy_values(out, "\\Description")
    assert vals["KeyName"] == ("REG_SZ", "BCD00000001")
    assert vals["System"] == ("REG_DWORD", 1)
    assert vals["List"][0] == "REG_MULTI_SZ" and vals["List"][1] == ["a", "bé", "{x}"]
    assert vals["Blob"] == ("REG_BINARY", bytes(range(200)))
    x = hivexml(out)
    names = [n.get("name") for n in x.iter("node")]
    assert names == ["NewStoreRoot", "Description", "Objects", "{9dea862c-5cdd-4e70-acc1-f32b344d4795}", "Elements"]

    with Hive.open(out) as h2:
        d = h2.get_key("Description")
        assert d.value("keyname").as_str() == "BCD00000001"
        assert d.value("System").as_dword() == 1
        assert d.value("List").as_multi_sz() == ["a", "bé", "{x}"]
        assert d.value("Empty").data == b""
        assert d.value("missing") is None
        assert h2.get_key("Nope\\Deeper") is None


def test_delete_value_and_key(tmp_path):
    h = Hive.new()
    k = h.root.add_child("K")
    k.set_values([Value.dword("a", 1), Value.dword("b", 2), Value.dword("c", 3)])
    assert k.delete_value("B") is True
    assert k.delete_value("zz") is False
    assert [v.name for v in k.values()] == ["a", "c"]
    gone = h.root.add_child("Gone")
    gone.add_child("Child").set_value(Value.sz("x", "y"))
    gone.delete()
    assert [c.name for c in h.root.children()] == ["K"]
    with pytest.raises(InternalError):
        h.root.add_child("K")  # exists
    h.commit(tmp_path / "o")
    h.close()
    x = hivexml(tmp_path / "o")
    assert [n.get("name") for n in x.iter("node")] == ["NewStoreRoot", "K"]


def test_read_only_hive_refuses_edits():
    with Hive.open(ref("windeploy-BCD")) as h:
        with pytest.raises(InternalError):
            h.root.add_child("X")
        with pytest.raises(InternalError):
            h.root.set_value(Value.dword("x", 1))
    with pytest.raises(InternalError):
        h.root  # closed


def test_multi_sz_codec():
    for items in ([], ["a"], ["a", "b", ""], ["é€"]):
        if items and items[-1] == "":
            continue  # an empty last item cannot be told from the terminator
        assert decode_multi_sz(encode_multi_sz(items)) == items
    for bad in (b"a\0", b"a\0\0\0", b"\x00\xd8\0\0\0\0"):  # odd, no second NUL, a lone surrogate
        with pytest.raises(CorruptInput):
            decode_multi_sz(bad)


# -- errors: one place, one line --------------------------------------------------------------
def test_open_missing(tmp_path):
    with pytest.raises(InputError):
        Hive.open(tmp_path / "nope")


def test_open_directory(tmp_path):
    with pytest.raises(InputError, match="directory"):
        Hive.open(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"\0" * 9000, b"REGF" + bytes(9000)])
def test_open_not_a_hive(tmp_path, content):
    p = tmp_path / "f"
    p.write_bytes(content)
    with pytest.raises(CorruptInput, match="is not a registry hive"):
        Hive.open(p)


def test_open_damaged_hives(tmp_path):
    good = ref("windeploy-BCD").read_bytes()
    cases = {
        "truncated-header": good[:0x1800],
        "truncated-hbin": good[:0x3000],
        "bad-checksum": good[:0x1FC] + bytes([good[0x1FC] ^ 0xFF]) + good[0x1FD:],
        "bad-version": good[:0x14] + struct.pack("<I", 2) + good[0x18:],
        "no-hbin": good[:0x1000] + b"xbin" + good[0x1004:],
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        before = sha(p)
        with pytest.raises(CorruptInput, match="damaged registry hive") as ei:
            Hive.open(p, write=True)
        assert "\n" not in str(ei.value)
        assert sha(p) == before, name


def test_commit_to_missing_directory(tmp_path):
    from wim2vhd.errors import Wim2VhdError

    h = Hive.new()
    with pytest.raises(Wim2VhdError):
        h.commit(tmp_path / "no" / "such" / "dir" / "x")
    assert not os.path.exists(tmp_path / "no")
