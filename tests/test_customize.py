"""apply's customizations (--unattend, --merge, --reg-import, --enable-rdp, --driver), read back from the
applied disk with tools nobody here wrote: qemu-img, sfdisk, dd, ntfscat/ntfsls, hivexget, regipy,
wimcapture + wimdir --detailed.  The .reg parser on its own at the end."""
import codecs
import json
import os
import struct

import pytest
from hypothesis import example, given, settings, strategies as st

from fixtures.wimdir import wimdir_detailed
from tests.support import (CONFIG, fails, hive_out, hivexget, leftovers, ntfs_partition, ntfscat, ntfsls, run,
                           stream_ids, w2v)
from wim2vhd.registry import regedit
from wim2vhd.errors import InputError
from wim2vhd.security import (OBJECT_INHERIT, SID_ADMINISTRATORS, SID_CREATOR_OWNER, SID_EVERYONE,
                              SecurityDescriptor)



# ---- helpers: out of the disk with other people's tools ----------------------------------------------------

def regipy_values(hive, key):
    from regipy.registry import RegistryHive
    k = RegistryHive(str(hive)).get_key(key)
    return {v.name: (v.value_type, v.value) for v in k.iter_values()}


def regipy_has_key(hive, key):
    from regipy.exceptions import RegistryKeyNotFoundException
    from regipy.registry import RegistryHive
    try:
        RegistryHive(str(hive)).get_key(key)
        return True
    except RegistryKeyNotFoundException:
        return False


_GENERIC = {0x10000000: 0x1F01FF, 0x80000000: 0x120089, 0x40000000: 0x120116, 0x20000000: 0x1200A0}


def _mapped(mask):
    out = mask & 0x0FFFFFFF
    for bit, m in _GENERIC.items():
        if mask & bit:
            out |= m
    return out


def grants(sd_hex):
    sd = SecurityDescriptor.from_bytes(bytes.fromhex(sd_hex))
    g = {}
    for a in sd.dacl:
        assert a.type == 0, "only allow ACEs are expected"
        g[a.sid] = g.get(a.sid, 0) | _mapped(a.mask)
    return sd, g


def inherited_by_file(parent_sd_hex, owner):
    """What a new file gets from its folder's inheritable ACEs, as Windows computes it (CREATOR OWNER
    becomes the owner, generic rights are mapped to file rights)."""
    parent = SecurityDescriptor.from_bytes(bytes.fromhex(parent_sd_hex))
    g = {}
    for a in parent.dacl:
        if a.flags & OBJECT_INHERIT:
            sid = owner if a.sid == SID_CREATOR_OWNER else a.sid
            g[sid] = g.get(sid, 0) | _mapped(a.mask)
    return g


# ---- the inputs ----------------------------------------------------------------------------------------------

UNATTEND = b"""<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend">
  <settings pass="oobeSystem"><component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64"
    publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS"/></settings>
</unattend>
"""

# UTF-16LE with a BOM and CRLF, as regedit writes it; a comment, a continued line, every data form.
REG1 = r"""Windows Registry Editor Version 5.00

; every kind of value, under the control set Windows will boot with
[HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\w2vtest]
"Start"=dword:00000003
"ImagePath"=hex(2):25,00,53,00,79,00,73,00,74,00,65,00,6d,00,52,00,6f,00,6f,00,74,00,25,00,5c,00,\
  78,00,2e,00,73,00,79,00,73,00,00,00
"Groups"=hex(7):61,00,00,00,62,00,00,00,00,00
"Big"=hex(b):01,00,00,00,02,00,00,00
"Blob"=hex:de,ad,be,ef
"Quote"="a \"quoted\" C:\\path"
@="default"

[HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\Terminal Server]
"TSUserEnabled"=-

[-HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\Tcpip]

[HKEY_LOCAL_MACHINE\SOFTWARE\Vendor\Ünïcode ✓]
"Name"="Grüße ✓"
"Order"="first"

[HKEY_LOCAL_MACHINE\SOFTWARE\Vendor\Grüße]
"Latin"="1"

[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows\CurrentVersion]
"DevicePath"=hex(2):25,00,53,00,79,00,73,00,74,00,65,00,6d,00,52,00,6f,00,6f,00,74,00,25,00,5c,00,\
  69,00,6e,00,66,00,3b,00,43,00,3a,00,5c,00,43,00,75,00,73,00,74,00,6f,00,6d,00,00,00

[HKEY_USERS\.DEFAULT\Control Panel\International]
"LocaleName"="de-DE"
"sShortDate"=-

[HKEY_CLASSES_ROOT\.w2v]
@="w2vfile"
""".replace("\n", "\r\n")

# UTF-8 without a BOM: applied after REG1, so its value wins.
REG2 = r"""Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\SOFTWARE\Vendor\Ünïcode ✓]
"Order"="second"

[HKEY_CURRENT_USER\Control Panel\Desktop]
"Wallpaper"="C:\\w2v.bmp"
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "unattend.xml").write_bytes(UNATTEND)
    m1 = d / "m1"
    (m1 / "Setup" / "Scripts").mkdir(parents=True)
    (m1 / "Setup" / "Scripts" / "SetupComplete.cmd").write_bytes(b"@echo first\r\n")
    (m1 / "windows").mkdir()  # merges into \Windows whatever the case
    (m1 / "windows" / "win.ini").write_bytes(b"; replaced by a merge\r\n")
    (m1 / "Users" / "Public" / "Documents").mkdir(parents=True)
    (m1 / "Users" / "Public" / "Documents" / "readme.txt").write_bytes(b"merged\r\n")
    m2 = d / "m2"
    (m2 / "Setup" / "Scripts").mkdir(parents=True)
    (m2 / "Setup" / "Scripts" / "SetupComplete.cmd").write_bytes(b"@echo second wins\r\n")
    drv = d / "viostor"
    (drv / "amd64").mkdir(parents=True)
    (drv / "amd64" / "viostor.inf").write_bytes(b'[Version]\r\nSignature="$Windows NT$"\r\nClass=SCSIAdapter\r\n')
    (drv / "amd64" / "viostor.sys").write_bytes(os.urandom(70000))
    (drv / "amd64" / "viostor.cat").write_bytes(b"cat")
    net = d / "NetKVM"
    net.mkdir()
    (net / "netkvm.inf").write_bytes(b'[Version]\r\nSignature="$Windows NT$"\r\nClass=Net\r\n')
    (d / "one.reg").write_bytes(codecs.BOM_UTF16_LE + REG1.encode("utf-16-le"))
    (d / "two.reg").write_bytes(REG2.encode("utf-8"))
    return d


@pytest.fixture(scope="module")
def customized(fixture_wim, inputs, tmp_path_factory):
    """One disk with every customization, its NTFS partition, and the apply summary."""
    tmp = tmp_path_factory.mktemp("custom")
    out = tmp / "c.vhdx"
    res = json.loads(w2v("apply", fixture_wim, out, "--index", "1", "--size", "1G", "--layout", "native",
                         "--no-boot", "--unattend", inputs / "unattend.xml",
                         "--merge", inputs / "m1", "--merge", inputs / "m2",
                         "--reg-import", inputs / "one.reg", "--reg-import", inputs / "two.reg",
                         "--enable-rdp", "--driver", inputs / "viostor", "--driver", inputs / "NetKVM",
                         "--json").stdout)
    assert not leftovers(tmp)
    assert "processed successfully" in run("ntfsfix", "-n", ntfs_partition(out, tmp)).stdout
    img = ntfs_partition(out, tmp)
    run("wimcapture", img, tmp / "back.wim", "back")  # wimlib's own capture of the result
    return {"res": res, "img": img, "tmp": tmp, "back": wimdir_detailed(str(tmp / "back.wim"), 1),
            "src": wimdir_detailed(fixture_wim, 1)}


def test_files_are_where_windows_looks(customized, inputs):
    img = customized["img"]
    assert ntfscat(img, "/Windows/Panther/unattend.xml") == UNATTEND
    assert ntfscat(img, "/Setup/Scripts/SetupComplete.cmd") == b"@echo second wins\r\n"
    assert ntfscat(img, "/Windows/win.ini") == b"; replaced by a merge\r\n"
    assert ntfscat(img, "/Users/Public/Documents/readme.txt") == b"merged\r\n"
    # the merge went into the image's folders, not beside them
    assert "windows" not in ntfsls(img, "/") and "Windows" in ntfsls(img, "/")
    assert "desktop.ini" in ntfsls(img, "/Users/Public/Documents")
    # drivers staged in order, with their tree
    assert set(ntfsls(img, "/Windows/wim2vhd/Drivers")) >= {"1-viostor", "2-NetKVM"}
    assert ntfscat(img, "/Windows/wim2vhd/Drivers/1-viostor/amd64/viostor.sys") == \
        (inputs / "viostor" / "amd64" / "viostor.sys").read_bytes()
    assert ntfscat(img, "/Windows/wim2vhd/Drivers/2-NetKVM/netkvm.inf").startswith(b"[Version]")
    c = customized["res"]["customizations"]
    assert c["unattend"] == "\\Windows\\Panther\\unattend.xml" and c["enable_rdp"]
    assert c["drivers"] == ["\\Windows\\wim2vhd\\Drivers\\1-viostor\\amd64", "\\Windows\\wim2vhd\\Drivers\\2-NetKVM"]


def test_registry_read_back(customized):
    img, tmp = customized["img"], customized["tmp"]
    system, software, default = (hive_out(img, n, tmp) for n in ("SYSTEM", "SOFTWARE", "DEFAULT"))
    # --enable-rdp, as Convert-WindowsImage: under the control set Select\Current names (ControlSet001)
    assert hivexget(system, r"ControlSet001\Control\Terminal Server", "fDenyTSConnections") == "0"
    ts = regipy_values(system, r"\ControlSet001\Control\Terminal Server")
    assert ts["fDenyTSConnections"] == ("REG_DWORD", 0)
    assert "TSUserEnabled" not in ts  # "name"=- deleted it
    assert not regipy_has_key(system, r"\CurrentControlSet")  # resolved, not created
    assert not regipy_has_key(system, r"\ControlSet001\Services\Tcpip")  # [-KEY]
    assert regipy_has_key(system, r"\ControlSet001\Control\ProductOptions")  # untouched siblings stay
    v = regipy_values(system, r"\ControlSet001\Services\w2vtest")
    assert v["Start"] == ("REG_DWORD", 3)
    assert v["ImagePath"] == ("REG_EXPAND_SZ", "%SystemRoot%\\x.sys")
    assert v["Groups"] == ("REG_MULTI_SZ", ["a", "b"])
    assert v["Big"] == ("REG_QWORD", 0x0000000200000001)
    assert v["Quote"] == ("REG_SZ", 'a "quoted" C:\\path')
    assert v["(default)"] == ("REG_SZ", "default")
    assert v["Blob"][0] == "REG_BINARY"
    assert hivexget(system, r"ControlSet001\Services\w2vtest", "Blob", raw=True) == b"\xde\xad\xbe\xef"
    # SOFTWARE: imports in order (two.reg wins), Unicode names, HKCR = SOFTWARE\Classes, DevicePath extended
    u = regipy_values(software, r"\Vendor\Ünïcode ✓")  # a name hives keep in UTF-16
    assert u["Name"] == ("REG_SZ", "Grüße ✓") and u["Order"] == ("REG_SZ", "second")
    assert hivexget(software, r"Vendor\Grüße", "Latin") == "1"  # one kept in Latin-1 ("compressed")
    assert regipy_values(software, r"\Classes\.w2v")["(default)"] == ("REG_SZ", "w2vfile")
    dp = regipy_values(software, r"\Microsoft\Windows\CurrentVersion")["DevicePath"]
    assert dp == ("REG_EXPAND_SZ", "%SystemRoot%\\inf;C:\\Custom;%SystemRoot%\\wim2vhd\\Drivers\\1-viostor\\amd64;"
                                   "%SystemRoot%\\wim2vhd\\Drivers\\2-NetKVM")
    # HKU\.DEFAULT is config\DEFAULT
    intl = regipy_values(default, r"\Control Panel\International")
    assert intl["LocaleName"] == ("REG_SZ", "de-DE") and "sShortDate" not in intl
    # HKCU is the default user profile's hive, which new users start from
    ntuser = tmp / "NTUSER.hive"
    ntuser.write_bytes(ntfscat(img, "/Users/Default/NTUSER.DAT"))
    assert hivexget(ntuser, r"Control Panel\Desktop", "Wallpaper") == "C:\\w2v.bmp"
    assert regipy_values(ntuser, r"\Control Panel\Desktop")["Wallpaper"] == ("REG_SZ", "C:\\w2v.bmp")
    assert customized["res"]["customizations"]["registry"] == {"DEFAULT": 3, "NTUSER": 2, "SOFTWARE": 12,
                                                               "SYSTEM": 12}


def test_security_descriptors(customized):
    src, back = customized["src"], customized["back"]
    # replaced files keep what they had: descriptor and attributes
    for p in ("/Windows/win.ini", f"{CONFIG}/SYSTEM", f"{CONFIG}/SOFTWARE", f"{CONFIG}/DEFAULT"):
        assert back[p]["Security Descriptor"] == src[p]["Security Descriptor"], p
        assert back[p]["Attributes"] == src[p]["Attributes"], p
    # new files inherit from their folder, as on Windows; never the grant-everyone fallback
    for path, folder_in_source in (("/Windows/Panther/unattend.xml", "/Windows"),
                                   ("/Windows/wim2vhd/Drivers/1-viostor/amd64/viostor.sys", "/Windows"),
                                   ("/Setup/Scripts/SetupComplete.cmd", "/"),
                                   ("/Users/Public/Documents/readme.txt", "/Users/Public")):
        sd, got = grants(back[path]["Security Descriptor"])
        assert SID_EVERYONE not in got or folder_in_source == "/Users/Public", path
        assert got == inherited_by_file(src[folder_in_source]["Security Descriptor"], sd.owner), path
        assert sd.owner == SID_ADMINISTRATORS
        assert all(not (a.flags & 0x0F) for a in sd.dacl), f"{path}: a file's ACEs do not propagate"


def test_everything_else_round_trips(customized, inputs):
    """wimcapture of the customized volume against the source: what was not customized is as it was."""
    src, back = customized["src"], customized["back"]
    replaced = {"/Windows/win.ini", f"{CONFIG}/SYSTEM", f"{CONFIG}/SOFTWARE", f"{CONFIG}/DEFAULT",
                "/Users/Default/NTUSER.DAT"}
    # folders that got new entries have new times, nothing else new
    grown = {"/", "/Windows", "/Users/Public/Documents"}
    new = {p for p in back if p not in src and not p.startswith("/System Volume Information")}
    assert new == {"/Setup", "/Setup/Scripts", "/Setup/Scripts/SetupComplete.cmd", "/Windows/Panther",
                   "/Windows/Panther/unattend.xml", "/Users/Public/Documents/readme.txt", "/Windows/wim2vhd",
                   "/Windows/wim2vhd/Drivers", "/Windows/wim2vhd/Drivers/1-viostor",
                   "/Windows/wim2vhd/Drivers/1-viostor/amd64", "/Windows/wim2vhd/Drivers/2-NetKVM",
                   "/Windows/wim2vhd/Drivers/2-NetKVM/netkvm.inf",
                   *(f"/Windows/wim2vhd/Drivers/1-viostor/amd64/viostor.{x}" for x in ("inf", "sys", "cat"))}
    ignore = {"Index", "Subdir Count", "Link Group ID"}
    times = {"Creation Time", "Last Write Time", "Last Access Time"}
    checked = 0
    for path, e in src.items():
        assert path in back, path
        b = back[path]
        for k, v in e.items():
            if k in ignore or (path in grown and k in times) or (path in replaced and (k in times or k == "streams")):
                continue
            if k == "streams":
                assert stream_ids(b[k]) == stream_ids(v), path
                continue
            assert b.get(k) == v, f"{path}: {k}: {v!r} != {b.get(k)!r}"
        checked += 1
    assert checked == len(src) > 50


def test_every_edition_can_be_customized(fixture_wim, inputs, tmp):
    """Edition 2 too; the JSON summary says what was done."""
    out = tmp / "e2.vhdx"
    res = json.loads(w2v("apply", fixture_wim, out, "--index", "2", "--size", "1G", "--layout", "native",
                         "--no-boot", "--enable-rdp", "--json").stdout)
    assert res["customizations"]["registry"] == {"SYSTEM": 1}
    img = ntfs_partition(out, tmp)
    assert hivexget(hive_out(img, "SYSTEM", tmp), r"ControlSet001\Control\Terminal Server", "fDenyTSConnections") == "0"
    assert "enterprise.txt" in ntfsls(img, "/Windows/System32/AppLocker")


# ---- bad inputs: one line, the right exit code, nothing left behind ----------------------------------------

def test_bad_inputs(fixture_wim, inputs, tmp):
    out = tmp / "o.vhdx"
    base = ["apply", fixture_wim, out, "--index", "1", "--size", "1G", "--layout", "native", "--no-boot"]
    fails(base + ["--unattend", tmp / "nope.xml"], 3, "nope.xml: no such file", tmp, out)
    (tmp / "bad.xml").write_text("<unattend>\n<settings>\n</unattend>\n")
    fails(base + ["--unattend", tmp / "bad.xml"], 3, "bad.xml:3: not well-formed XML", tmp, out)
    (tmp / "other.xml").write_text("<html/>")
    fails(base + ["--unattend", tmp / "other.xml"], 3, "not <unattend>", tmp, out)
    fails(base + ["--merge", tmp / "nodir"], 3, "nodir: no such folder", tmp, out)
    fails(base + ["--merge", inputs / "unattend.xml"], 3, "not a folder", tmp, out)
    fails(base + ["--driver", inputs / "m1"], 3, "no .inf file", tmp, out)
    fails(base + ["--reg-import", tmp / "none.reg"], 3, "none.reg: no such file", tmp, out)
    (tmp / "syntax.reg").write_text("Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\n"
                                    "\"a\"=dword:123456789\n")
    fails(base + ["--reg-import", tmp / "syntax.reg"], 3, "syntax.reg:4: bad dword", tmp, out)
    (tmp / "hkcc.reg").write_text("Windows Registry Editor Version 5.00\n\n[HKEY_CURRENT_CONFIG\\Software\\X]\n")
    fails(base + ["--reg-import", tmp / "hkcc.reg"], 3,
          "hkcc.reg:3: key 'HKEY_CURRENT_CONFIG\\\\Software\\\\X' is in no hive",
           tmp, out)
    (tmp / "notreg.reg").write_text("[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\n")
    fails(base + ["--reg-import", tmp / "notreg.reg"], 3, "notreg.reg:1: not a .reg file", tmp, out)


def test_merge_conflicts(fixture_wim, inputs, tmp):
    out = tmp / "o.vhdx"
    base = ["apply", fixture_wim, out, "--index", "1", "--size", "1G", "--layout", "native", "--no-boot"]

    def tree(name, files):
        d = tmp / name
        for rel, data in files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(data)
        return d
    # a file where the image has a folder, and the reverse: found before the volume is changed
    fails(base + ["--merge", tree("a", {"Windows/System32": b"x"})], 2,
           "would replace the folder \\Windows\\System32 of the image with a file", tmp, out)
    fails(base + ["--merge", tree("b", {"Windows/win.ini/x": b"x"})], 2,
           "would replace the file \\Windows\\win.ini of the image with a folder", tmp, out)
    # nothing is written through the image's junctions and symlinks
    fails(base + ["--merge", tree("c", {"Documents and Settings/x.txt": b"x"})], 2, "is a link", tmp, out)
    # two merges that disagree, and a merge of a hive that is also edited: found up front
    fails(base + ["--merge", tree("d", {"Setup": b"x"}), "--merge", inputs / "m1"], 2,
           "puts a file there", tmp, out)
    fails(base + ["--merge", tree("e", {"Windows/System32/config/SYSTEM": b"x"}), "--enable-rdp"], 2,
           "merge a hive, or edit it, not both", tmp, out)
    fails(base + ["--merge", tree("f", {"bad:name.txt": b"x"})], 2, "does not allow", tmp, out)
    fails(base + ["--merge", tree("g", {"NUL.txt": b"x"})], 2, "reserves", tmp, out)


def _wim_from_tree(tmp, name, files):
    d = tmp / f"{name}-tree"
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    run("wimcapture", d, tmp / f"{name}.wim", name)
    return tmp / f"{name}.wim"


def test_dirty_hive_is_refused(tmp):
    """A hive whose sequence numbers differ has changes only in its logs: editing it would drop them."""
    from fixtures.hives import build_hive
    hive = bytearray(build_hive({"ControlSet001\\Control": {}, "Select": {}}, "SYSTEM"))
    hive[8:12] = (int.from_bytes(hive[4:8], "little") - 1).to_bytes(4, "little")  # secondary behind primary
    checksum = 0
    for i in range(0, 508, 4):
        checksum ^= int.from_bytes(hive[i:i + 4], "little")
    hive[508:512] = checksum.to_bytes(4, "little")  # a valid base block otherwise
    out = tmp / "o.vhdx"
    dirty = _wim_from_tree(tmp, "dirty", {"Windows/System32/config/SYSTEM": bytes(hive)})
    fails(["apply", dirty, out, "--size", "1G", "--layout", "native", "--no-boot", "--enable-rdp"], 3,
           "config\\SYSTEM of image 1 is dirty", tmp, out)
    # the same image without registry changes applies
    w2v("apply", dirty, out, "--size", "1G", "--layout", "native", "--no-boot")


def test_images_without_usable_hives(tmp):
    from fixtures.hives import build_hive
    out = tmp / "o.vhdx"
    no_hives = _wim_from_tree(tmp, "bare", {"Windows/notepad.exe": b"MZ"})
    fails(["apply", no_hives, out, "--size", "1G", "--layout", "native", "--no-boot", "--enable-rdp"], 3,
           "image 1 has no \\Windows\\System32\\config\\SYSTEM", tmp, out)
    no_select = _wim_from_tree(tmp, "nosel", {"Windows/System32/config/SYSTEM":
                                              build_hive({"ControlSet001\\Control": {}}, "SYSTEM")})
    fails(["apply", no_select, out, "--size", "1G", "--layout", "native", "--no-boot", "--enable-rdp"], 3,
           "has no Select\\Current", tmp, out)
    junk = _wim_from_tree(tmp, "junk", {"Windows/System32/config/SOFTWARE": b"not a hive" * 100})
    fails(["apply", junk, out, "--size", "1G", "--layout", "native", "--no-boot", "--reg-import",
            _reg(tmp, '[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\n"a"="b"\n')], 3, "not a usable registry hive", tmp, out)


def test_current_control_set_follows_select(tmp):
    """CurrentControlSet is the set Select\\Current names, here the second; the first is left alone and no
    CurrentControlSet key is made (Windows links it at boot)."""
    from fixtures.hives import build_hive
    ts = {"fDenyTSConnections": 1}
    spec = {"Select": {"Current": 2, "Default": 2, "LastKnownGood": 1},
            "ControlSet001\\Control\\Terminal Server": ts, "ControlSet002\\Control\\Terminal Server": ts}
    wim = _wim_from_tree(tmp, "cs2", {"Windows/System32/config/SYSTEM": build_hive(spec, "SYSTEM")})
    reg = _reg(tmp, '[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\w2v]\n"Start"=dword:00000002\n')
    out = tmp / "cs.vhdx"
    w2v("apply", wim, out, "--size", "1G", "--layout", "native", "--no-boot", "--enable-rdp", "--reg-import", reg)
    system = hive_out(ntfs_partition(out, tmp), "SYSTEM", tmp)
    assert hivexget(system, r"ControlSet002\Control\Terminal Server", "fDenyTSConnections") == "0"
    assert hivexget(system, r"ControlSet001\Control\Terminal Server", "fDenyTSConnections") == "1"
    assert hivexget(system, r"ControlSet002\Services\w2v", "Start") == "2"
    assert not regipy_has_key(system, r"\ControlSet001\Services\w2v")
    assert not regipy_has_key(system, r"\CurrentControlSet")
    # Select\Current naming a set that is not there, and an HKU\.DEFAULT import into an image without
    # config\DEFAULT: found before the disk is made
    spec["Select"] = {"Current": 3}
    bad = _wim_from_tree(tmp, "cs3", {"Windows/System32/config/SYSTEM": build_hive(spec, "SYSTEM")})
    out2 = tmp / "bad.vhdx"
    fails(["apply", bad, out2, "--size", "1G", "--layout", "native", "--no-boot", "--enable-rdp"], 3,
           "Select\\Current is 3, but there is no ControlSet003", tmp, out2)
    fails(["apply", wim, out2, "--size", "1G", "--layout", "native", "--no-boot", "--reg-import",
            _reg(tmp, '[HKEY_USERS\\.DEFAULT\\Control Panel]\n"a"="b"\n')], 3,
           "image 1 has no \\Windows\\System32\\config\\DEFAULT", tmp, out2)


def test_help_says_what_driver_staging_is():
    """--driver is staging for Plug and Play, and --help says so plainly."""
    text = " ".join(w2v("apply", "--help", env={**os.environ, "COLUMNS": "400", "TERM": "dumb"}).stdout.split())
    assert "Staging, not DISM's offline install" in text
    assert "DevicePath" in text


def _reg(tmp, body):
    p = tmp / "x.reg"
    p.write_text("Windows Registry Editor Version 5.00\n\n" + body)
    return p


# ---- the .reg parser -----------------------------------------------------------------------------------------

def test_reg_encodings_and_forms():
    text = REG1
    a = regedit.parse(codecs.BOM_UTF16_LE + text.encode("utf-16-le"), "a.reg")
    b = regedit.parse(codecs.BOM_UTF8 + text.encode("utf-8"), "b.reg")
    c = regedit.parse(text.encode("utf-16-le"), "c.reg")  # no BOM
    assert a.ops == b.ops == c.ops
    ops = {}
    for o in a.ops:  # the first of each kind and name
        ops.setdefault((type(o).__name__, getattr(o, "name", None)), o)
    assert ops[("SetValue", "ImagePath")].data == "%SystemRoot%\\x.sys\0".encode("utf-16-le")
    assert ops[("SetValue", "ImagePath")].line == 6
    assert ops[("SetValue", "")].data == "default\0".encode("utf-16-le")
    assert ops[("DeleteValue", "TSUserEnabled")].key.endswith("Terminal Server")
    assert regedit.locate(ops[("SetValue", "Start")].key) == regedit.Location(
        "SYSTEM", "CurrentControlSet\\Services\\w2vtest", True)
    v4 = regedit.parse(b'REGEDIT4\r\n\r\n[HKLM\\SOFTWARE\\X]\r\n"p"=hex(2):41,42,00\r\n', "v4.reg")
    assert v4.ops[1].data == "AB\0".encode("utf-16-le")  # REGEDIT4's ANSI strings become UTF-16


@pytest.mark.parametrize("body,line,words", [
    ('"a"="b"\n', 3, "before any [KEY]"),
    ('[HKEY_LOCAL_MACHINE\\SOFTWARE\\X\n', 3, "must end with ]"),
    ('[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\n"a"="unterminated\n', 4, "no closing quote"),
    ('[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\n"a"="x\\ny"\n', 4, "unknown escape"),
    ('[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\n"a"=hex:zz\n', 4, "bad hex data"),
    ('[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\n"a"=qword:1\n', 4, "unknown value data"),
    ('[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\n"a"=hex:01,\\\n', 4, "ends inside continued hex"),
    ('[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\n"a" "b"\n', 4, "expected ="),
    ('[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\nrandom\n', 4, "unexpected"),
])
def test_reg_syntax_errors_name_the_line(body, line, words):
    with pytest.raises(InputError) as e:
        regedit.parse(("Windows Registry Editor Version 5.00\n\n" + body).encode(), "t.reg")
    assert f"t.reg:{line}: " in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("key,words", [
    ("HKEY_LOCAL_MACHINE\\SAM\\X", "in no hive"),
    ("HKEY_LOCAL_MACHINE", "in no hive"),
    ("HKEY_USERS\\S-1-5-21-1\\X", "in no hive"),
    ("-HKEY_LOCAL_MACHINE\\SYSTEM", "root of the SYSTEM hive"),
])
def test_reg_keys_without_a_hive(key, words):
    """A key the image has no hive for is a bad input (exit 3), like any other fault in the file."""
    with pytest.raises(InputError) as e:
        regedit.parse(f"Windows Registry Editor Version 5.00\n\n[{key}]\n".encode(), "k.reg")
    assert "k.reg:3: " in str(e.value) and words in str(e.value)


_names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
_values = st.one_of(
    st.builds(lambda n, s: regedit.SetValue("K", n, regedit.REG_SZ, (s + "\0").encode("utf-16-le"), 0),
              _names, st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)),
    st.builds(lambda n, x: regedit.SetValue("K", n, regedit.REG_DWORD, struct.pack("<I", x), 0),
              _names, st.integers(0, 2**32 - 1)),
    st.builds(lambda n, t, b: regedit.SetValue("K", n, t, b, 0), _names, st.integers(0, 2**32 - 1),
              st.binary(max_size=200)),
    st.builds(lambda n: regedit.DeleteValue("K", n, 0), _names),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_values, max_size=8))
@example([regedit.SetValue("K", "line\u2028sep\x85", regedit.REG_SZ, "a\u2029b\0".encode("utf-16-le"), 0)])
def test_reg_round_trip(values):
    """What dumps writes (regedit's forms, long hex split over lines as regedit does), parse reads back."""
    key = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Vendor\\Key"
    ops = [regedit.CreateKey(key, 0)] + [type(v)(key, *[getattr(v, f) for f in v.__dataclass_fields__
                                                           if f not in ("key", "line")], 0) for v in values]
    text = regedit.dumps(ops)
    # regedit wraps hex data at about 80 columns with a trailing backslash
    wrapped = "\r\n".join(_wrap(line) for line in text.split("\r\n"))
    back = regedit.parse(codecs.BOM_UTF16_LE + wrapped.encode("utf-16-le"), "rt.reg")
    strip = [(type(o).__name__, o.key, getattr(o, "name", None), getattr(o, "type", None), getattr(o, "data", None))
             for o in ops]
    got = [(type(o).__name__, o.key, getattr(o, "name", None), getattr(o, "type", None), getattr(o, "data", None))
           for o in back.ops]
    assert got == strip


def _wrap(line):
    if "=hex" not in line or len(line) <= 80:
        return line
    out, cur = [], line
    while len(cur) > 80:
        cut = cur.rfind(",", 0, 78) + 1
        if cut <= 0:
            break
        out.append(cur[:cut] + "\\")
        cur = "  " + cur[cut:]
    return "\r\n".join(out + [cur])


def test_hives_found_whatever_the_case_of_their_path(tmp):
    """Windows' names are case-insensitive: an image whose hive lives at \\windows\\system32\\CONFIG\\system
    is edited in place (read back with ntfscat and hivexget), not refused, and no second copy is made."""
    from fixtures.hives import build_hive
    spec = {"Select": {"Current": 1}, "ControlSet001\\Control\\Terminal Server": {"fDenyTSConnections": 1}}
    wim = _wim_from_tree(tmp, "lower", {"windows/system32/CONFIG/system": build_hive(spec, "SYSTEM")})
    out = tmp / "l.vhdx"
    w2v("apply", wim, out, "--size", "1G", "--layout", "native", "--no-boot", "--enable-rdp")
    img = ntfs_partition(out, tmp)
    assert [n for n in ntfsls(img, "/") if n not in ("", ".", "..")] == ["windows"]
    assert [n for n in ntfsls(img, "/windows/system32/CONFIG") if n not in ("", ".", "..")] == ["system"]
    hive = tmp / "system.hive"
    hive.write_bytes(ntfscat(img, "/windows/system32/CONFIG/system"))
    assert hivexget(hive, r"ControlSet001\Control\Terminal Server", "fDenyTSConnections") == "0"


# ---- --no-expand-on-native-boot ----------------------------------------------------------------------------

def test_no_expand_on_native_boot_in_the_current_control_set(tmp):
    """FsDepends\\Parameters\\VirtualDiskExpandOnMount = 4 (REG_DWORD), as Convert-WindowsImage's
    -ExpandOnNativeBoot:$false, in the control set Select\\Current names: here ControlSet002, so that the
    value cannot land in ControlSet001 by chance.  Read back by hivexget and regipy."""
    from fixtures import hives
    from fixtures.build import build_fixture_wim
    spec = {k.replace("ControlSet001", "ControlSet002"): v for k, v in hives.SYSTEM.items()}
    spec["Select"] = {**hives.SYSTEM["Select"], "Current": 2, "Default": 2}
    spec["ControlSet001\\Control"] = {}
    wim = build_fixture_wim(tmp / "cs2.wim", overrides={"Windows/System32/config/SYSTEM": hives.build_hive(spec)})
    out = tmp / "n.vhdx"
    res = json.loads(w2v("apply", wim, out, "--index", "1", "--size", "1G", "--layout", "native", "--no-boot",
                         "--no-expand-on-native-boot", "--enable-rdp", "--json").stdout)
    assert res["customizations"]["expand_on_native_boot"] is False
    assert res["customizations"]["registry"] == {"SYSTEM": 2}
    system = hive_out(ntfs_partition(out, tmp), "SYSTEM", tmp)
    key = r"ControlSet002\Services\FsDepends\Parameters"
    assert hivexget(system, key, "VirtualDiskExpandOnMount") == "4"
    assert regipy_values(system, "\\" + key)["VirtualDiskExpandOnMount"] == ("REG_DWORD", 4)
    assert hivexget(system, r"ControlSet002\Control\Terminal Server", "fDenyTSConnections") == "0"
    assert not regipy_has_key(system, r"\ControlSet001\Services\FsDepends")


def test_expand_on_native_boot_by_default(fixture_wim, tmp):
    out = tmp / "d.vhdx"
    w2v("apply", fixture_wim, out, "--index", "1", "--size", "1G", "--layout", "native", "--no-boot", "--enable-rdp")
    system = hive_out(ntfs_partition(out, tmp), "SYSTEM", tmp)
    assert hivexget(system, r"ControlSet001\Services\FsDepends\Parameters", "VirtualDiskExpandOnMount") is None
