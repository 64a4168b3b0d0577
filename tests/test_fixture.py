"""The fixture WIM (fixtures/build.py), checked with wimlib's own tools.

wiminfo and wimdir --detailed say what the WIM holds; wimextract takes
files out for hivex, regipy and byte comparisons; wimapply + wimcapture
round-trip an edition through an NTFS volume.
"""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from fixtures.build import build_fixture_wim, entry_times
from fixtures.layout import EDITIONS, MARKER, SD_DENY, SD_ROOT, SD_SYSTEM_ONLY, SD_TI_FILE
from fixtures.wimdir import wimdir_detailed
from wim2vhd.ntfs import (IO_REPARSE_TAG_MOUNT_POINT, IO_REPARSE_TAG_SYMLINK, FileAttr, NtfsVolume,
                          parse_link_reparse)
from wim2vhd.security import ACCESS_DENIED, SID_SYSTEM, SecurityDescriptor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, check=True, **kw):
    p = subprocess.run([str(a) for a in args], capture_output=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({p.returncode}): {p.stderr}")
    return p


def extract(wim, image, path) -> bytes:
    return run("wimextract", wim, image, path, "--to-stdout").stdout


@pytest.fixture(scope="module")
def wim(tmp_path_factory):
    return str(build_fixture_wim(tmp_path_factory.mktemp("fx") / "fixture.wim"))


@pytest.fixture(scope="module")
def tree(wim):
    return {1: wimdir_detailed(wim, 1), 2: wimdir_detailed(wim, 2)}


def attrs(entry) -> FileAttr:
    return FileAttr(int(entry["Attributes"], 16))


def test_two_editions_with_windows_xml(wim):
    info = run("wiminfo", wim, text=True).stdout
    assert "Image Count:    2" in info
    xml = ET.fromstring(run("wiminfo", wim, "--xml").stdout.decode("utf-16"))
    images = {int(i.get("INDEX")): i for i in xml.findall("IMAGE")}
    assert sorted(images) == [1, 2]
    for idx, edition_id, name in ((1, "Professional", "Windows 10 Pro"), (2, "Enterprise", "Windows 10 Enterprise")):
        im = images[idx]
        assert im.findtext("NAME") == name and im.findtext("DISPLAYNAME") == name
        assert im.findtext("DESCRIPTION") == name
        assert im.findtext("FLAGS") == edition_id
        assert im.findtext("WINDOWS/EDITIONID") == edition_id
        assert im.findtext("WINDOWS/ARCH") == "9"
        assert im.findtext("WINDOWS/PRODUCTNAME") == "Microsoft\u00ae Windows\u00ae Operating System"
        assert im.findtext("WINDOWS/INSTALLATIONTYPE") == "Client"
        assert im.findtext("WINDOWS/PRODUCTTYPE") == "WinNT"
        assert (im.findtext("WINDOWS/VERSION/MAJOR"), im.findtext("WINDOWS/VERSION/MINOR"),
                im.findtext("WINDOWS/VERSION/BUILD")) == ("10", "0", "19045")
        assert im.findtext("WINDOWS/LANGUAGES/LANGUAGE") == "en-US"
        assert im.findtext("WINDOWS/SYSTEMROOT") == "WINDOWS"
    assert run("wimverify", wim).returncode == 0


def test_editions_differ(wim, tree):
    assert "/Windows/System32/pro-only.txt" in tree[1] and "/Windows/System32/pro-only.txt" not in tree[2]
    assert "/Windows/System32/AppLocker/enterprise.txt" in tree[2] and "/Windows/System32/AppLocker" not in tree[1]
    assert b"Professional" in extract(wim, 1, "/Windows/System32/license.rtf")
    assert b"Enterprise" in extract(wim, 2, "/Windows/System32/license.rtf")
    # what they share is stored once
    h1 = tree[1]["/Windows/System32/ntoskrnl.exe"]["streams"][""]["Hash"]
    assert h1 == tree[2]["/Windows/System32/ntoskrnl.exe"]["streams"][""]["Hash"]


@pytest.mark.parametrize("image", [1, 2])
def test_security_descriptors(tree, image):
    t = tree[image]
    for hive in ("SYSTEM", "SOFTWARE", "DEFAULT", "SECURITY"):
        assert t[f"/Windows/System32/config/{hive}"]["Security Descriptor"] == SD_SYSTEM_ONLY.hex()
    sam = SecurityDescriptor.from_bytes(bytes.fromhex(t["/Windows/System32/config/SAM"]["Security Descriptor"]))
    assert sam.dacl[0].type == ACCESS_DENIED and sam.owner == SID_SYSTEM
    assert t["/Windows/System32/config/SAM"]["Security Descriptor"] == SD_DENY.hex()
    assert t["/"]["Security Descriptor"] == SD_ROOT.hex()
    assert t["/Windows/System32/winload.efi"]["Security Descriptor"] == SD_TI_FILE.hex()
    # files without an explicit descriptor inherited one from their parents
    inherited = SecurityDescriptor.from_bytes(
        bytes.fromhex(t["/Users/Public/Downloads/setup.exe"]["Security Descriptor"]))
    assert inherited.dacl and all(a.flags & 0x10 for a in inherited.dacl)  # INHERITED_ACE
    assert len({e["Security Descriptor"] for e in t.values()}) >= 6


@pytest.mark.parametrize("image", [1, 2])
def test_streams_reparse_points_links_short_names(tree, image):
    t = tree[image]
    dl = t["/Users/Public/Downloads/setup.exe"]["streams"]
    assert set(dl) == {"", "Zone.Identifier"}
    doc = t["/Users/Public/Documents/Übersicht – Straße.txt"]
    assert set(doc["streams"]) == {"", "Zone.Identifier", "summary"}
    assert doc["Short Name"] == "BERSIC~1.TXT"

    assert t["/Users/All Users"]["Reparse Tag"] == f"{IO_REPARSE_TAG_SYMLINK:#010x}"
    assert t["/Documents and Settings"]["Reparse Tag"] == f"{IO_REPARSE_TAG_MOUNT_POINT:#010x}"
    assert "<reparse>" in t["/Documents and Settings"]["streams"]
    assert attrs(t["/Documents and Settings"]) & FileAttr.REPARSE_POINT

    names = ["/Windows/notepad.exe", "/Windows/System32/notepad.exe",
             "/Windows/WinSxS/amd64_microsoft-windows-notepad_31bf3856ad364e35_10.0.19041.1_none_7e5a1ff9a5e8a3b0"
             "/notepad.exe"]
    assert {t[n]["Link Count"] for n in names} == {"3"}
    assert len({t[n]["Link Group ID"] for n in names}) == 1 and t[names[0]]["Link Group ID"] != "0x" + "0" * 16

    shorts = {p: e["Short Name"] for p, e in t.items() if e["Short Name"]}
    assert shorts["/Program Files"] == "PROGRA~1"
    assert shorts["/Program Files (x86)"] == "PROGRA~2"
    assert shorts["/ProgramData"] == "PROGRA~3"
    assert shorts["/Documents and Settings"] == "DOCUME~1"


@pytest.mark.parametrize("image", [1, 2])
def test_attributes_and_times(tree, image):
    t = tree[image]
    assert attrs(t["/ProgramData"]) == FileAttr.HIDDEN | FileAttr.DIRECTORY
    assert attrs(t["/Program Files"]) == FileAttr.READONLY | FileAttr.DIRECTORY
    assert attrs(t["/Users/Public/Documents/desktop.ini"]) == FileAttr.HIDDEN | FileAttr.SYSTEM | FileAttr.ARCHIVE
    assert attrs(t["/Windows/System32/drivers/etc/hosts"]) == FileAttr.READONLY | FileAttr.ARCHIVE
    assert attrs(t["/Windows/Boot/PCAT/bootmgr"]) == (FileAttr.READONLY | FileAttr.HIDDEN | FileAttr.SYSTEM
                                                      | FileAttr.ARCHIVE)
    assert attrs(t["/"]) & (FileAttr.HIDDEN | FileAttr.SYSTEM) == FileAttr.HIDDEN | FileAttr.SYSTEM
    # every entry has its own times, from 2019, none from the build
    stamps = Counter((e["Creation Time"], e["Last Write Time"], e["Last Access Time"])
                     for p, e in t.items() if e["Link Count"] == "1")
    assert stamps.most_common(1)[0][1] == 1
    assert all(s[0].endswith("2019 UTC") for s in stamps)
    assert t["/"]["Creation Time"] == "Sat Dec 07 09:15:00 2019 UTC"
    creation, write, access, change = entry_times(0)
    assert creation < write < access and change > write


BOOT_FILES = ["EFI/bootmgfw.efi", "EFI/bootmgr.efi", "EFI/memtest.efi", "EFI/en-US/bootmgfw.efi.mui",
              "EFI/de-DE/bootmgfw.efi.mui", "PCAT/bootmgr", "PCAT/BOOTNXT", "PCAT/memtest.exe",
              "PCAT/en-US/bootmgr.exe.mui", "Fonts/wgl4_boot.ttf", "Fonts/segmono_boot.ttf",
              "Resources/bootres.dll"]


def test_boot_tree_and_system_files(wim, tree):
    for f in BOOT_FILES:
        assert f"/Windows/Boot/{f}" in tree[1], f
    for f in ("winload.efi", "winload.exe", "ntoskrnl.exe", "kernel32.dll"):
        data = extract(wim, 1, f"/Windows/System32/{f}")
        assert MARKER in data and data[:2] == b"MZ"
    assert MARKER in extract(wim, 1, "/Windows/Boot/EFI/bootmgfw.efi")
    assert MARKER in extract(wim, 1, "/Windows/Boot/PCAT/bootmgr")
    total = sum(int(e["streams"].get("", {}).get("Uncompressed size", "0 bytes").split()[0]) for e in tree[1].values())
    assert total > 50_000


def test_boot_programs_can_be_replaced(tmp_path):
    efi, pcat = b"MZ-probe-efi" + os.urandom(5000), b"\xeb\x3cprobe-bootmgr" + os.urandom(300)
    wim = build_fixture_wim(tmp_path / "probe.wim", bootmgfw_efi=efi, bootmgr_pcat=pcat,
                            overrides={"Windows/System32/winload.efi": b"custom winload"}, compression="xpress")
    for image in (1, 2):
        assert extract(wim, image, "/Windows/Boot/EFI/bootmgfw.efi") == efi
        assert extract(wim, image, "/Windows/Boot/PCAT/bootmgr") == pcat
        assert extract(wim, image, "/Windows/System32/winload.efi") == b"custom winload"
    assert "XPRESS" in run("wiminfo", wim, text=True).stdout


def test_hives_are_real(wim, tmp_path):
    from regipy.registry import RegistryHive

    for image in (1, 2):
        d = tmp_path / str(image)
        run("wimextract", wim, image, "/Windows/System32/config", "--dest-dir", d, "--no-acls")
        cfg = d / "config"
        assert run("hivexget", cfg / "SYSTEM", "Select", "Current", text=True).stdout.strip() == "1"
        run("hivexget", cfg / "SYSTEM", "ControlSet001\\Control\\Terminal Server")
        assert run("hivexget", cfg / "SOFTWARE", "Microsoft\\Windows\\CurrentVersion", "DevicePath",
                   text=True).stdout.strip() == "%SystemRoot%\\inf"
        edition = run("hivexget", cfg / "SOFTWARE", "Microsoft\\Windows NT\\CurrentVersion", "EditionID",
                      text=True).stdout.strip()
        assert edition == EDITIONS[image - 1].edition_id
        for hive in ("SYSTEM", "SOFTWARE", "DEFAULT", "SAM", "SECURITY", "BCD-Template"):
            assert run("hivexml", cfg / hive).returncode == 0
            assert RegistryHive(str(cfg / hive)).root is not None
        bcd = RegistryHive(str(cfg / "BCD-Template"))
        objects = {k.name for k in bcd.get_key("\\Objects").iter_subkeys()}
        assert "{9dea862c-5cdd-4e70-acc1-f32b344d4795}" in objects  # {bootmgr}
        elem = bcd.get_key("\\Objects\\{9dea862c-5cdd-4e70-acc1-f32b344d4795}\\Elements\\12000004")
        assert elem.get_value("Element") == "Windows Boot Manager"


def test_apply_and_recapture_through_ntfs(wim, tmp_path):
    """Edition 2 applied to an NTFS volume keeps its metadata, and wimlib's own reading of
    the hives and kernel32.dll on recapture finds the same Windows facts."""
    img = tmp_path / "vol.img"
    with open(img, "wb") as f:
        f.truncate(48 << 20)
    run("mkntfs", "-F", "-Q", "-q", img)
    run("wimapply", wim, "2", img)
    assert b"processed successfully" in run("ntfsfix", "-n", img).stdout
    with NtfsVolume(img, readonly=True) as vol:
        assert vol.get_security(r"Windows\System32\config\SYSTEM") == SD_SYSTEM_ONLY
        link = parse_link_reparse(vol.get_reparse("Documents and Settings"))
        assert link.substitute_name == "\\??\\C:\\Users"
        assert parse_link_reparse(vol.get_reparse(r"Users\All Users")).print_name == "C:\\ProgramData"
        assert vol.stat(r"Windows\notepad.exe").nlink == 3
        assert vol.get_short_name("Program Files") == "PROGRA~1"
        assert vol.read_file(r"Users\Public\Downloads\setup.exe", "Zone.Identifier").startswith(b"[ZoneTransfer]")
    again = tmp_path / "again.wim"
    run("wimcapture", img, again, "recaptured")
    info = run("wiminfo", again, "1", text=True).stdout
    assert "Edition ID:             Enterprise" in info
    assert "Architecture:           x86_64" in info
    assert "Build:                  19045" in info


def test_deterministic_except_guid_and_write_time(wim, tree, tmp_path):
    other = build_fixture_wim(tmp_path / "again.wim")
    assert wimdir_detailed(str(other), 1) == tree[1]
    assert wimdir_detailed(str(other), 2) == tree[2]


def test_cli(tmp_path):
    out = tmp_path / "cli.wim"
    efi = tmp_path / "probe.efi"
    efi.write_bytes(b"probe!")
    p = run(sys.executable, "-m", "fixtures.build", out, "--bootmgfw", efi, cwd=ROOT, text=True)
    assert p.stdout.strip() == str(out)
    assert extract(out, 1, "/Windows/Boot/EFI/bootmgfw.efi") == b"probe!"


def test_cli_errors_leave_nothing(tmp_path):
    p = run(sys.executable, "-m", "fixtures.build", tmp_path / "x.wim", "--bootmgr", tmp_path / "missing",
            cwd=ROOT, check=False, text=True)
    assert p.returncode == 3 and len(p.stderr.strip().splitlines()) == 1 and "missing" in p.stderr
    p = run(sys.executable, "-m", "fixtures.build", tmp_path / "no" / "dir" / "x.wim", cwd=ROOT, check=False,
            text=True)
    assert p.returncode == 4 and len(p.stderr.strip().splitlines()) == 1 and "does not exist" in p.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("starter", ["project", "fallback"])
def test_hive_builder_with_either_empty_hive(tmp_path, starter):
    from fixtures.hives import SYSTEM, build_hive, default_empty_hive, minimal_empty_hive

    data = build_hive(SYSTEM, "ROOT", empty_hive=default_empty_hive if starter == "project" else minimal_empty_hive)
    path = tmp_path / "SYSTEM"
    path.write_bytes(data)
    assert run("hivexget", path, "Select", "Current", text=True).stdout.strip() == "1"
    assert run("hivexget", path, "ControlSet001\\Control\\ProductOptions", "ProductType",
               text=True).stdout.strip() == "WinNT"
