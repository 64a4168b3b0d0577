"""`wim2vhd bcd create|show|add-vhd`, driven like a user, results read back with regipy."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wim2vhd.boot.devices import decode_device
from wim2vhd.registry.hive import Hive, Value

from tests.support import cli, ref, ref_copy, regipy_store, sha

BOOTMGR = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"
GUID_RE = re.compile(r"^\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}$")


run = cli  # the CLI in this process (tests.support)


def wim2vhd_exe() -> list[str]:
    exe = Path(sys.executable).with_name("wim2vhd")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "wim2vhd"]


# -- create -------------------------------------------------------------------------------
def test_create_and_show(tmp_path, capsys):
    p = tmp_path / "BCD"
    code, out, err = run(capsys, "bcd", "create", p, "--firmware", "uefi")
    assert code == 0, err
    assert "created" in out
    s = regipy_store(p)
    assert s[BOOTMGR]["elements"]["12000002"] == ("REG_SZ", "\\EFI\\Microsoft\\Boot\\bootmgfw.efi")

    code, out, err = run(capsys, "bcd", "show", p)
    assert code == 0, err
    assert out.startswith("Firmware Boot Manager\n---------------------\nidentifier              {fwbootmgr}\n")
    assert "Windows Boot Manager" in out and "toolsdisplayorder       {memdiag}" in out

    code, out, _ = run(capsys, "bcd", "show", p, "--json")
    doc = json.loads(out)
    assert doc["firmware"] == "uefi" and doc["system"] is True
    titles = [o["title"] for o in doc["objects"]]
    assert titles[:2] == ["Firmware Boot Manager", "Windows Boot Manager"]
    bm = doc["objects"][1]
    assert bm["id"] == BOOTMGR and bm["alias"] == "{bootmgr}"
    dev = next(e for e in bm["elements"] if e["name"] == "device")
    assert dev["value"] == {"kind": "boot", "text": "boot"} and dev["id"] == "0x11000001"


def test_create_refuses_existing_then_force_keeps_bak(tmp_path, capsys):
    p = tmp_path / "BCD"
    p.write_bytes(b"user data")
    code, out, err = run(capsys, "bcd", "create", p, "--firmware", "bios")
    assert code == 4 and "exists" in err and err.count("\n") == 1
    assert p.read_bytes() == b"user data"
    code, _, err = run(capsys, "bcd", "create", p, "--firmware", "bios", "--force")
    assert code == 0, err
    assert (tmp_path / "BCD.bak").read_bytes() == b"user data"
    assert "12000002" not in regipy_store(p)[BOOTMGR]["elements"]  # BIOS bootmgr has no path


def test_create_bad_firmware(tmp_path, capsys):
    code, _, err = run(capsys, "bcd", "create", tmp_path / "BCD", "--firmware", "coreboot")
    assert code == 2 and "uefi or bios" in err
    assert not (tmp_path / "BCD").exists()


def test_create_in_missing_directory(tmp_path, capsys):
    code, _, err = run(capsys, "bcd", "create", tmp_path / "nope" / "BCD")
    assert code == 4 and "does not exist" in err


# -- add-vhd -------------------------------------------------------------------------------
PYBCD_VHD = "{fffdfa6e-8442-22f3-b2d5-323c2953814f}"  # pybcd-BCDTest's bcdedit-made VHD entry
# In a vhd= device value, the element the outer locate record searches by: after the 16-byte
# qualifier, the 16-byte device header and the locate record's 4-byte kind.
LOCATE_ELEMENT_AT = 16 + 16 + 4


def with_locate_element(windows: bytes, was: int, element: int) -> bytes:
    """bcdedit's bytes for the same vhd= with the locate element `element` instead of `was`."""
    assert int.from_bytes(windows[LOCATE_ELEMENT_AT:LOCATE_ELEMENT_AT + 4], "little") == was
    return windows[:LOCATE_ELEMENT_AT] + element.to_bytes(4, "little") + windows[LOCATE_ELEMENT_AT + 4:]


def test_add_vhd_locate_matches_windows_bytes(tmp_path, capsys):
    """--host locate writes exactly what bcdedit wrote for vhd=[locate]\\test.vhd: the device
    searches by the loader's path (0x12000002) and the osdevice by its systemroot (0x22000002),
    as bcdedit's `osdevice locate` does (windeploy-BCD-efi).  Reference and result read with regipy."""
    p = tmp_path / "BCD"
    assert run(capsys, "bcd", "create", p, "--firmware", "uefi")[0] == 0
    code, out, err = run(capsys, "bcd", "add-vhd", p, "--vhd-path", "\\test.vhd", "--description", "VHD boot")
    assert code == 0, err
    guid = out.strip()
    assert GUID_RE.match(guid)
    windows = regipy_store(ref("pybcd-BCDTest"))[PYBCD_VHD]["elements"]["11000001"][1]
    windows_os = with_locate_element(windows, 0x12000002, 0x22000002)
    assert regipy_store(ref("windeploy-BCD-efi"))["{d65367c7-3fb7-11ec-8288-eab76d76405a}"]["elements"][
        "21000001"][1][LOCATE_ELEMENT_AT:LOCATE_ELEMENT_AT + 4] == (0x22000002).to_bytes(4, "little")
    s = regipy_store(p)
    entry = s[guid]["elements"]
    assert s[guid]["type"] == 0x10200003
    assert entry["11000001"] == ("REG_BINARY", windows)
    assert entry["21000001"] == ("REG_BINARY", windows_os)
    assert entry["12000004"] == ("REG_SZ", "VHD boot")
    assert entry["12000002"] == ("REG_SZ", "\\Windows\\system32\\winload.efi")  # firmware read from the store
    assert entry["22000002"] == ("REG_SZ", "\\Windows")  # what the osdevice searches for
    bm = s[BOOTMGR]["elements"]
    assert guid in [g.lower() for g in bm["24000001"][1]]
    assert bm["23000003"] == ("REG_SZ", guid)  # the store had no default yet
    resume = entry["23000003"][1]
    assert s[resume]["type"] == 0x10200004
    assert (tmp_path / "BCD.bak").exists()

    code, out, _ = run(capsys, "bcd", "show", p)
    assert "device                  vhd=[locate]\\test.vhd\n" in out
    assert "osdevice                vhd=[locate]\\test.vhd\n" in out


def test_add_vhd_mbr_host_matches_windows_bytes(tmp_path, capsys):
    """--host-mbr: pybcd-BCDTest holds bcdedit's vhd=[MBR partition at 1 MiB]\\test.vhd with
    locate=custom:12345678; ours, with the usual elements, differs only in that element
    (regipy reads both stores)."""
    p = tmp_path / "BCD"
    assert run(capsys, "bcd", "create", p, "--firmware", "bios")[0] == 0
    code, out, err = run(capsys, "bcd", "add-vhd", p, "--vhd-path", "\\test.vhd",
                         "--host-mbr", "0x36234da4:0x100000")
    assert code == 0, err
    windows = regipy_store(ref("pybcd-BCDTest"))[PYBCD_VHD]["elements"]["21000001"][1]
    entry = regipy_store(p)[out.strip()]["elements"]
    assert entry["11000001"] == ("REG_BINARY", with_locate_element(windows, 0x12345678, 0x12000002))
    assert entry["21000001"] == ("REG_BINARY", with_locate_element(windows, 0x12345678, 0x22000002))
    code, out, _ = run(capsys, "bcd", "show", p)
    assert "osdevice                vhd=[mbr:0x36234da4:0x100000]\\test.vhd\n" in out


@pytest.mark.parametrize("args, text", [
    (["--host-mbr", "0x36234da4:0x100000"], "vhd=[mbr:0x36234da4:0x100000]\\vhds\\win.vhdx"),
    (["--host-mbr", "908283300:1048576"], "vhd=[mbr:0x36234da4:0x100000]\\vhds\\win.vhdx"),
    (["--host-gpt", "984c884b-4218-4f07-aa93-5ede4c7c5384:{76cc3abd-2782-4839-af5c-5fc8e6659147}"],
     "vhd=[gpt:984c884b-4218-4f07-aa93-5ede4c7c5384:76cc3abd-2782-4839-af5c-5fc8e6659147]\\vhds\\win.vhdx"),
    (["--host", "boot"], "vhd=[boot]\\vhds\\win.vhdx"),
    (["--host", "locate"], "vhd=[locate]\\vhds\\win.vhdx"),
])
def test_add_vhd_hosts(tmp_path, capsys, args, text):
    p = tmp_path / "BCD"
    assert run(capsys, "bcd", "create", p, "--firmware", "bios")[0] == 0
    code, out, err = run(capsys, "bcd", "add-vhd", p, "--vhd-path", "/vhds/win.vhdx", *args, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["device"] == text and info["firmware"] == "bios"
    entry = regipy_store(p)[info["id"]]["elements"]
    assert decode_device(entry["11000001"][1]).text() == text
    assert entry["12000002"] == ("REG_SZ", "\\Windows\\system32\\winload.exe")


def test_add_vhd_default_and_order(tmp_path, capsys):
    p = tmp_path / "BCD"
    run(capsys, "bcd", "create", p)
    first = run(capsys, "bcd", "add-vhd", p, "--vhd-path", "\\a.vhdx")[1].strip()
    second = run(capsys, "bcd", "add-vhd", p, "--vhd-path", "\\b.vhdx")[1].strip()
    bm = regipy_store(p)[BOOTMGR]["elements"]
    assert [g.lower() for g in bm["24000001"][1]] == [first, second]
    assert bm["23000003"][1] == first
    third = run(capsys, "bcd", "add-vhd", p, "--vhd-path", "\\c.vhdx", "--default")[1].strip()
    bm = regipy_store(p)[BOOTMGR]["elements"]
    assert bm["23000003"][1] == third
    # the .bak is the store as it was before the last change
    assert regipy_store(tmp_path / "BCD.bak")[BOOTMGR]["elements"]["23000003"][1] == first


def test_add_vhd_to_windows_store(tmp_path, capsys):
    p = ref_copy("windeploy-BCD", tmp_path)
    before = regipy_store(p)
    code, out, err = run(capsys, "bcd", "add-vhd", p, "--vhd-path", "\\x.vhdx")
    assert code == 0, err
    after = regipy_store(p)
    assert after[BOOTMGR]["elements"]["23000003"] == before[BOOTMGR]["elements"]["23000003"]  # default kept
    assert after[out.strip()]["elements"]["12000002"][1] == "\\Windows\\system32\\winload.exe"  # BIOS store
    for k in before:
        if k != BOOTMGR:
            assert after[k] == before[k]


# -- bad input: one line, non-zero, nothing changed -------------------------------------------------
def _not_bcd_hive(path: Path) -> None:
    h = Hive.new("CMI-CreateHive{00000000}")
    h.root.add_child("ControlSet001").set_value(Value.dword("x", 1))
    h.commit(path)
    h.close()


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = ref("windeploy-BCD").read_bytes()
    files = {}
    (tmp_path / "text").write_text("hello\n")
    files["text"] = (tmp_path / "text", "is not a registry hive")
    (tmp_path / "empty").write_bytes(b"")
    files["empty"] = (tmp_path / "empty", "is not a registry hive")
    _not_bcd_hive(tmp_path / "SYSTEM")
    files["not-bcd"] = (tmp_path / "SYSTEM", "not a BCD store")
    (tmp_path / "truncated").write_bytes(good[:0x3000])
    files["truncated"] = (tmp_path / "truncated", "damaged registry hive")
    (tmp_path / "short").write_bytes(good[:0x1100])
    files["short"] = (tmp_path / "short", "damaged registry hive")
    bad = bytearray(good)
    bad[0x30] ^= 0x55  # inside the checksummed header
    (tmp_path / "checksum").write_bytes(bytes(bad))
    files["checksum"] = (tmp_path / "checksum", "damaged registry hive")
    return files


@pytest.mark.parametrize("command", [
    ["show"],
    ["add-vhd", "--vhd-path", "\\x.vhdx", "--firmware", "uefi"],
])
def test_bad_stores_refused_untouched(tmp_path, capsys, command):
    for name, (path, message) in _bad_files(tmp_path).items():
        before = sha(path)
        listing = sorted(os.listdir(tmp_path))
        code, out, err = run(capsys, "bcd", command[0], path, *command[1:])
        assert code == 3, (name, err)
        assert message in err, (name, err)
        assert err.startswith("wim2vhd: error: ") and err.count("\n") == 1, err
        assert out == ""
        assert sha(path) == before, name
        assert sorted(os.listdir(tmp_path)) == listing, name  # no .bak, no temporary file


def test_missing_store(tmp_path, capsys):
    code, _, err = run(capsys, "bcd", "show", tmp_path / "nope")
    assert code == 3 and "does not exist" in err


@pytest.mark.parametrize("args, message", [
    (["--host-mbr", "zz:1"], "not a number"),
    (["--host-mbr", "0x1"], "SIG"),
    (["--host-mbr", "0x1ffffffff:0"], "32 bits"),
    (["--host-gpt", "abc:def"], "DISK"),
    (["--host-gpt", "x", "--host-mbr", "1:2"], "only one"),
    (["--host", "floppy"], "locate or boot"),
    (["--firmware", "arm"], "uefi or bios"),
])
def test_add_vhd_bad_options(tmp_path, capsys, args, message):
    p = tmp_path / "BCD"
    run(capsys, "bcd", "create", p)
    before = sha(p)
    code, _, err = run(capsys, "bcd", "add-vhd", p, "--vhd-path", "\\x.vhdx", *args)
    assert code == 2, err
    assert message in err and err.count("\n") == 1
    assert sha(p) == before and not (tmp_path / "BCD.bak").exists()


def test_add_vhd_bad_paths(tmp_path, capsys):
    p = tmp_path / "BCD"
    run(capsys, "bcd", "create", p)
    before = sha(p)
    for bad in ("C:\\vhds\\win.vhdx", "\\vhds\\"):
        code, _, err = run(capsys, "bcd", "add-vhd", p, "--vhd-path", bad)
        assert code == 2, err
    assert sha(p) == before


# -- reference stores through the installed command --------------------------------------------------
def test_show_reference_stores_subprocess():
    out = subprocess.run(wim2vhd_exe() + ["bcd", "show", str(ref("pybcd-BCDTest"))],
                         check=True, capture_output=True, text=True).stdout
    for line in [
        "device                  vhd=[locate]\\test.vhd",
        "osdevice                vhd=[mbr:0x36234da4:0x100000]\\test.vhd,locate=custom:12345678",
        "custom:12345678         \\hello\\test.boot",
        "osdevice                partition=mbr:0x36234da4:0x100000",
        "osdevice                file=[mbr:0x36234da4:0x100000]\\Workspace\\metadeploy\\boot.wim.aoeu",
        "device                  partition=mbr:0x36234da4:0xb13300000",
        "device                  ramdisk=[boot]\\boot\\boot.wim,{ramdiskoptions}",
        "device                  file=[boot]\\Workspace\\metadeploy\\boot.wim",
        "ramdisksdipath          \\boot\\boot.sdi",
    ]:
        assert line in out.splitlines(), line
    efi = subprocess.run(wim2vhd_exe() + ["bcd", "show", "-v", str(ref("windeploy-BCD-efi"))],
                         check=True, capture_output=True, text=True).stdout
    assert "device                  locate=custom:12000002" in efi
    assert "osdevice                locate=custom:22000002" in efi
    assert "identifier              {9dea862c-5cdd-4e70-acc1-f32b344d4795}" in efi
    assert "path                    \\EFI\\Microsoft\\Boot\\bootmgfw.efi" in efi.splitlines()
    empty = subprocess.run(wim2vhd_exe() + ["bcd", "show", "--json", str(ref("bcdsys-BCD-NEW"))],
                           check=True, capture_output=True, text=True).stdout
    assert json.loads(empty)["objects"] == []


def test_cli_error_exit_code_subprocess(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("just text\n")
    r = subprocess.run(wim2vhd_exe() + ["bcd", "add-vhd", str(p), "--vhd-path", "\\x.vhdx"],
                       capture_output=True, text=True)
    assert r.returncode == 3
    assert r.stderr == f"wim2vhd: error: {p} is not a registry hive\n"
    assert p.read_text() == "just text\n"
