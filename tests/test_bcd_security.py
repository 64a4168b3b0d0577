"""The security descriptors of a store's keys: Windows' own, whatever a template held.

Read with regipy (its key walk and its sk structs, not wim2vhd's reader) and compared byte for byte
with windeploy-BCD, the system store bcdboot wrote; the ACEs also with pybcd-BCDTest (bcdedit).
"""
from __future__ import annotations

import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from wim2vhd.boot import bcdboot
from wim2vhd.boot.edit import add_vhd_entry
from wim2vhd.boot.store import BcdStore
from wim2vhd.boot.devices import Boot, Locate
from wim2vhd.boot.elements import E
from wim2vhd.registry.regf import set_key_security

from tests.support import ref, ref_copy, regipy_key_security, sha


def key_class(path: str) -> str:
    """root, Description, Objects, object, object\\Description, object\\Elements, element."""
    parts = path.split("\\") if path else []
    if not parts:
        return "root"
    if parts[0] != "Objects":
        return parts[0]
    return ["Objects", "object", "object\\" + (parts[2] if len(parts) > 2 else ""), "element"][len(parts) - 1] \
        if len(parts) <= 4 else "deeper"


def by_class(security: dict, field: int) -> dict[str, object]:
    """{key class: the one value of `field` its keys have} (a class with two values is a failure)."""
    out: dict[str, set] = {}
    for path, info in security.items():
        v = info[field]
        out.setdefault(key_class(path), set()).add(repr(v) if isinstance(v, list) else v)
    for cls, vals in out.items():
        assert len(vals) == 1, f"keys of class {cls} have {len(vals)} different descriptors"
    return {cls: next(iter(vals)) for cls, vals in out.items()}


def windows_classes() -> tuple[dict, dict]:
    bcdboot_sd = by_class(regipy_key_security(ref("windeploy-BCD")), 0)
    bcdedit_aces = by_class(regipy_key_security(ref("pybcd-BCDTest")), 4)
    return bcdboot_sd, bcdedit_aces


def check_windows_security(path: Path) -> None:
    ours = regipy_key_security(path)
    want_sd, want_aces = windows_classes()
    got_sd = by_class(ours, 0)
    got_aces = by_class(ours, 4)
    assert {"root", "Description", "Objects", "object", "object\\Description", "object\\Elements",
            "element"} <= set(got_sd)
    for cls, sd in got_sd.items():
        assert sd == want_sd[cls], cls             # bcdboot's bytes
        assert got_aces[cls] == want_aces[cls], cls  # bcdedit's ACEs (its DACLs carry 8 stray bytes)
    assert got_sd["root"] != got_sd["Objects"]      # the two kinds really differ
    for _, (_, _, owner, group, _) in ours.items():
        assert (owner, group) == ("S-1-5-32-544", "S-1-5-18")
    check_sk_list(path, ours)
    subprocess.run(["hivexml", str(path)], check=True, capture_output=True)  # libhivex reads it all


def check_sk_list(path: Path, security: dict) -> None:
    """The sk cells the keys use form one circular list, each counting the keys that use it
    (read with regipy's sk struct)."""
    from regipy.structs import SECURITY_KEY_v1_1

    data = path.read_bytes()
    uses = Counter(info[1] for info in security.values())
    cells = {off: SECURITY_KEY_v1_1.parse(data[0x1000 + off:]) for off in uses}
    for off, sk in cells.items():
        assert sk.reference_count == uses[off]
        assert struct.unpack_from("<i", data, 0x1000 + off)[0] < 0  # in use
    start = next(iter(cells))
    seen, at = [], start
    while True:
        seen.append(at)
        nxt = cells[at].next_sk_offset
        assert cells[nxt].prev_sk_offset == at
        at = nxt
        if at == start:
            break
    assert sorted(seen) == sorted(cells)


def permissive(template: bytes) -> bytes:
    """A template whose every key lets Everyone (S-1-1-0) do anything."""
    everyone = bytes([1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])
    ace = struct.pack("<BBHI", 0, 0, 8 + len(everyone), 0x000F003F) + everyone
    dacl = struct.pack("<BBHHH", 2, 0, 8 + len(ace), 1, 0) + ace
    sd = struct.pack("<BBHIIII", 1, 0, 0x8004, 20 + len(dacl), 20 + len(dacl), 0, 20) + dacl + everyone
    return set_key_security(template, lambda path: sd)


def test_new_store_has_windows_security(tmp_path):
    p = tmp_path / "BCD"
    with BcdStore.new_system_store("uefi") as store:
        store.add_os_loader("Windows", Locate.by_element(E.PATH), Locate.by_element(E.SYSTEMROOT))
        store.save(p)
    check_windows_security(p)


@pytest.mark.parametrize("name", ["permissive", "windeploy-BCD-efi", "pybcd-BCDTest", "bcdsys-BCD-NEW"])
def test_store_from_a_template_gets_windows_security(tmp_path, name):
    """bcdboot's store keeps a template's objects but not its keys' security."""
    source = ref("bcdsys-BCD-NEW" if name == "permissive" else name).read_bytes()
    template = permissive(source) if name == "permissive" else source
    if name == "permissive":  # the input really is permissive, as regipy reads it
        t = tmp_path / "template"
        t.write_bytes(template)
        assert {info[4][0][3] for info in regipy_key_security(t).values()} == {"S-1-1-0"}
    store = bcdboot.build_store(template, "uefi", "Windows",
                                {"bootmgr": Boot(), "device": Locate.by_element(E.PATH),
                                 "osdevice": Locate.by_element(E.SYSTEMROOT)},
                                locale="en-US", memdiag=True)
    p = tmp_path / "BCD"
    try:
        p.write_bytes(store.to_bytes())
    finally:
        store.close()
    check_windows_security(p)


def test_an_opened_store_keeps_its_security(tmp_path):
    """Editing a user's store changes no descriptor; a new object shares its parent's."""
    p = ref_copy("windeploy-BCD-efi", tmp_path)
    before = regipy_key_security(p)
    info = add_vhd_entry(p, "\\x.vhdx")
    after = regipy_key_security(p)
    assert sha(p) != sha(ref("windeploy-BCD-efi"))
    objects_sd = before["Objects"][0]
    for path, v in after.items():
        if path in before:
            assert v[0] == before[path][0], path
        else:
            assert path.lower().startswith("objects\\") and v[0] == objects_sd, path
    assert any(info["id"] in path.lower() for path in after)


def test_bcd_create_then_add_vhd_keeps_windows_security(tmp_path):
    """hivex edits the store we wrote (sk cells in the appended hbin, the old one freed)."""
    from wim2vhd.boot.edit import create_store_file

    p = tmp_path / "BCD"
    create_store_file(p, firmware="bios")
    check_windows_security(p)
    add_vhd_entry(p, "\\vhds\\win.vhdx")
    check_windows_security(p)
