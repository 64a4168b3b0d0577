"""wim2vhd.ntfs (native/w2v_ntfs_files.c): files inside an NTFS volume through libntfs-3g.

Each test writes with our API into a fresh mkntfs image and checks the
result with ntfs-3g's own tools (ntfsls, ntfscat, ntfsinfo, ntfsfix -n) or
with wimlib (wimcapture in NTFS-3G mode, then wimdir --detailed).
"""
from __future__ import annotations

import datetime as dt
import io
import os
import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.wimdir import wimdir_detailed
from wim2vhd import errors
from wim2vhd.ntfs import (IO_REPARSE_TAG_MOUNT_POINT, IO_REPARSE_TAG_SYMLINK, FileAttr, NtfsVolume,
                          from_filetime, junction_reparse, parse_link_reparse, symlink_reparse, to_filetime)
from wim2vhd.security import (ACCESS_DENIED, FILE_ALL_ACCESS, FILE_READ_EXECUTE, OBJECT_INHERIT,
                              SID_ADMINISTRATORS, SID_EVERYONE, SID_SYSTEM, SID_USERS, WRITE_DAC, Ace,
                              SecurityDescriptor, allow, deny, security_descriptor, sid_from_bytes,
                              sid_to_bytes)


def run(*args, check=True):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({p.returncode}): {p.stderr}\n{p.stdout}")
    return p


def catbytes(img, path, stream=None):
    args = ["ntfscat"] + (["-n", stream] if stream else []) + [img, path]
    p = subprocess.run(args, capture_output=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def ntfsls(img, path="/"):
    out = run("ntfsls", "-f", img, "-p", path).stdout.splitlines()
    return [n for n in out if n not in (".", "..")]


def mkntfs(path, size=32 << 20):
    with open(path, "wb") as f:
        f.truncate(size)
    run("mkntfs", "-F", "-Q", "-q", path)
    return str(path)


@pytest.fixture
def img(tmp_path):
    """A fresh NTFS image; after the test, ntfs-3g must still find it consistent."""
    path = mkntfs(tmp_path / "vol.img")
    yield path
    r = run("ntfsfix", "-n", path, check=False)
    assert r.returncode == 0 and "processed successfully" in r.stdout, r.stdout + r.stderr


SD_SYSTEM_ONLY = security_descriptor(SID_SYSTEM, SID_SYSTEM, [allow(SID_SYSTEM, FILE_ALL_ACCESS)], protected=True)
SD_WITH_DENY = security_descriptor(SID_ADMINISTRATORS, SID_SYSTEM, [
    deny(SID_EVERYONE, WRITE_DAC),
    allow(SID_SYSTEM, FILE_ALL_ACCESS),
    allow(SID_USERS, FILE_READ_EXECUTE, OBJECT_INHERIT),
])


# -- data ------------------------------------------------------------------------

def test_write_read_roundtrip_checked_by_ntfscat(img):
    small, big = b"hello, NTFS\r\n", os.urandom(3 << 20)  # resident and non-resident
    with NtfsVolume(img) as vol:
        vol.mkdir(r"\Windows\System32", parents=True)
        assert vol.write_file(r"\Windows\System32\small.txt", small) == len(small)
        vol.write_file("Windows/System32/big.bin", big)
        assert vol.read_file(r"Windows\System32\small.txt") == small
        assert vol.read_file(r"\windows\system32\BIG.BIN") == big  # Windows-style: case-insensitive
        assert vol.file_size(r"\Windows\System32\big.bin") == len(big)
        assert vol.read_file(r"\Windows\System32\big.bin", offset=100, length=50) == big[100:150]
    assert catbytes(img, "/Windows/System32/small.txt") == small
    assert catbytes(img, "/Windows/System32/big.bin") == big


def test_replace_shrinks_and_grows(img):
    with NtfsVolume(img) as vol:
        vol.write_file("f", b"x" * 100_000)
        vol.write_file("f", b"short")
        assert vol.read_file("f") == b"short"
        vol.write_file("f", b"")
        assert vol.file_size("f") == 0
        vol.write_file("f", b"y" * 5000)
    assert catbytes(img, "/f") == b"y" * 5000


def test_write_from_file_object_in_chunks(img):
    data = os.urandom(10_000)
    with NtfsVolume(img) as vol:
        vol.CHUNK = 3000  # several writes at increasing offsets
        vol.write_file("old", b"z" * 50_000)
        assert vol.write_file("old", io.BytesIO(data)) == len(data)
        vol.write_file("empty", io.BytesIO(b""))
        out = io.BytesIO()
        assert vol.copy_out("old", out) == len(data)
        assert out.getvalue() == data
    assert catbytes(img, "/old") == data
    assert catbytes(img, "/empty") == b""


def test_persists_across_mounts_and_readonly(img):
    with NtfsVolume(img) as vol:
        vol.write_file(r"\a.txt", b"one")
    with NtfsVolume(img, readonly=True) as vol:
        assert vol.read_file("A.TXT") == b"one"
        for change in (lambda: vol.write_file("b.txt", b"two"), lambda: vol.mkdir("d"),
                       lambda: vol.set_attributes("a.txt", FileAttr.HIDDEN), lambda: vol.unlink("a.txt")):
            with pytest.raises(errors.UsageError, match="read-only"):
                change()
    with NtfsVolume(img) as vol:
        assert not vol.exists("b.txt")


# -- directories ---------------------------------------------------------------------

def test_copy_in_merges_a_host_tree(img, tmp_path):
    src = tmp_path / "src"
    (src / "Drivers" / "net").mkdir(parents=True)
    (src / "Drivers" / "net" / "e1000.inf").write_bytes(b"[Version]\r\n")
    (src / "Setup.cmd").write_bytes(b"@echo off\r\n")
    with NtfsVolume(img) as vol:
        vol.mkdir(r"Windows\Drivers", parents=True)
        vol.write_file(r"Windows\Setup.cmd", b"old")
        vol.write_file(r"Windows\keep.txt", b"kept")
        assert vol.copy_in(src, "Windows") == 2
        assert vol.read_file(r"Windows\Setup.cmd") == b"@echo off\r\n"
        assert vol.read_file(r"Windows\keep.txt") == b"kept"
        assert vol.listdir(r"Windows\Drivers") == ["net"]
        vol.copy_in(src / "Setup.cmd", "root.cmd")
        with pytest.raises(errors.InputError):
            vol.copy_in(tmp_path / "nope", "x")
    assert catbytes(img, "/Windows/Drivers/net/e1000.inf") == b"[Version]\r\n"
    assert catbytes(img, "/root.cmd") == b"@echo off\r\n"


def test_mkdir_and_listing_checked_by_ntfsls(img):
    with NtfsVolume(img) as vol:
        vol.mkdir(r"\Program Files\Common Files", parents=True)
        vol.mkdir("Program Files", exist_ok=True)
        with pytest.raises(errors.OutputExists):
            vol.mkdir("Program Files")
        with pytest.raises(errors.InputError, match="No such file"):
            vol.mkdir(r"\missing\child")
        vol.write_file(r"\Program Files\readme.TXT", b"r")
        assert sorted(vol.listdir(r"\Program Files")) == ["Common Files", "readme.TXT"]  # case as stored
        assert dict((n, k) for k, n in vol.scandir("program files")) == {"Common Files": "d", "readme.TXT": "f"}
        assert "$MFT" not in vol.listdir("") and "$MFT" in vol.listdir("", system=True)
        assert vol.is_dir("program files") and not vol.is_dir(r"Program Files\readme.txt")
        assert list(vol.walk("Program Files")) == [("Program Files", ["Common Files"], ["readme.TXT"]),
                                                   (r"Program Files\Common Files", [], [])]
    assert sorted(ntfsls(img, "/Program Files")) == ["Common Files", "readme.TXT"]


def test_unlink_and_rmtree(img):
    with NtfsVolume(img) as vol:
        vol.mkdir(r"a\b\c", parents=True)
        vol.write_file(r"a\b\c\f", b"1")
        vol.write_file(r"a\g", b"2")
        with pytest.raises(errors.Wim2VhdError, match="not empty"):
            vol.unlink("a")
        vol.unlink(r"A\G")  # as on Windows, any case
        assert not vol.exists(r"a\g")
        vol.write_file("Long File Name.txt", b"", short_name="LONGFI~1.TXT")
        vol.unlink("long file name.TXT")
        assert not vol.exists("LONGFI~1.TXT")
        vol.rmtree("a")
        assert vol.listdir("") == []
        with pytest.raises(errors.Wim2VhdError):
            vol.unlink("$MFT")
    assert ntfsls(img) == []


# -- metadata ------------------------------------------------------------------------

def test_attributes(img):
    with NtfsVolume(img) as vol:
        vol.write_file("f", b"", attributes=FileAttr.HIDDEN | FileAttr.SYSTEM | FileAttr.READONLY | FileAttr.ARCHIVE)
        vol.mkdir("d")
        vol.set_attributes("d", FileAttr.HIDDEN)
        assert vol.get_attributes("f") == FileAttr.HIDDEN | FileAttr.SYSTEM | FileAttr.READONLY | FileAttr.ARCHIVE
        assert vol.get_attributes("d") == FileAttr.HIDDEN | FileAttr.DIRECTORY
        vol.set_attributes("f", 0)
        assert vol.get_attributes("f") == FileAttr.NORMAL
        vol.set_attributes("f", FileAttr.READONLY)
    info = run("ntfsinfo", "-F", "/f", img).stdout
    assert re.search(r"File attributes:\s+READONLY", info)


def test_security_descriptors(img):
    with NtfsVolume(img) as vol:
        vol.write_file("cfg", b"x", security_descriptor=SD_SYSTEM_ONLY)
        vol.mkdir("dir")
        vol.set_security("dir", SD_WITH_DENY)
        assert vol.get_security("cfg") == SD_SYSTEM_ONLY
        assert vol.get_security("dir") == SD_WITH_DENY
        # a new file inherits from its parent, as on Windows: only the inheritable ACE
        vol.write_file(r"dir\child", b"")
        sd = SecurityDescriptor.from_bytes(vol.get_security(r"dir\child"))
        assert [(a.sid, a.mask) for a in sd.dacl] == [(SID_USERS, FILE_READ_EXECUTE)]
        with pytest.raises(errors.UsageError, match="security descriptor"):
            vol.set_security("cfg", b"\x01\x00garbage")
        assert vol.get_security("cfg") == SD_SYSTEM_ONLY
        assert vol.stat("cfg").security_id != vol.stat("dir").security_id


def test_named_streams(img):
    zone = b"[ZoneTransfer]\r\nZoneId=3\r\n"
    with NtfsVolume(img) as vol:
        vol.write_file("setup.exe", b"MZ")
        vol.write_stream("setup.exe", "Zone.Identifier", zone)
        vol.write_file("new.txt", b"big" * 10000, stream="extra")  # creates the file too
        vol.mkdir("d")
        vol.write_stream("d", "dirstream", b"on a directory")
        assert sorted(vol.streams("setup.exe")) == ["Zone.Identifier"]
        assert vol.read_file("setup.exe", "Zone.Identifier") == zone
        assert vol.read_file("setup.exe") == b"MZ"
        assert vol.file_size("new.txt") == 0 and vol.file_size("new.txt", "extra") == 30000
        assert vol.stat("setup.exe").n_streams == 1
        assert vol.read_file("d", "dirstream") == b"on a directory"
        with pytest.raises(errors.InputError):
            vol.read_file("setup.exe", "missing")
        vol.write_stream("new.txt", "gone", b"1")
        vol.remove_stream("new.txt", "gone")
        assert vol.streams("new.txt") == ["extra"]
    assert catbytes(img, "/setup.exe", "Zone.Identifier") == zone
    assert catbytes(img, "/new.txt", "extra") == b"big" * 10000


def test_hard_links(img):
    with NtfsVolume(img) as vol:
        vol.mkdir(r"Windows\WinSxS\x", parents=True)
        vol.mkdir(r"Windows\System32")
        vol.write_file(r"Windows\WinSxS\x\notepad.exe", b"notepad")
        vol.link(r"Windows\WinSxS\x\notepad.exe", r"Windows\System32\notepad.exe")
        vol.link(r"Windows\System32\notepad.exe", r"Windows\notepad.exe")
        with pytest.raises(errors.OutputExists):
            vol.link(r"Windows\notepad.exe", r"Windows\NOTEPAD.EXE")
        with pytest.raises(errors.Wim2VhdError):
            vol.link("Windows", "Windows2")  # no directory hard links
        st = vol.stat(r"Windows\notepad.exe")
        assert st.nlink == 3 and st.mft_no == vol.stat(r"Windows\WinSxS\x\notepad.exe").mft_no
        vol.write_file(r"Windows\notepad.exe", b"changed")  # one file, three names
        assert vol.read_file(r"Windows\System32\notepad.exe") == b"changed"
        vol.unlink(r"Windows\WinSxS\x\notepad.exe")
        assert vol.stat(r"Windows\notepad.exe").nlink == 2
    assert catbytes(img, "/Windows/System32/notepad.exe") == b"changed"
    assert re.search(r"Number of Hard Links:\s+2", run("ntfsinfo", "-F", "/Windows/notepad.exe", img).stdout)


def test_reparse_points(img):
    with NtfsVolume(img) as vol:
        vol.mkdir("Users")
        vol.junction("Documents and Settings", "C:\\Users")
        vol.symlink(r"Users\All Users", "C:\\ProgramData", directory=True)
        vol.symlink("rel.txt", r"..\target.txt")
        assert vol.stat("Documents and Settings").reparse_tag == IO_REPARSE_TAG_MOUNT_POINT
        assert vol.stat("rel.txt").reparse_tag == IO_REPARSE_TAG_SYMLINK
        assert vol.get_attributes("Documents and Settings") & FileAttr.REPARSE_POINT
        link = parse_link_reparse(vol.get_reparse("Documents and Settings"))
        assert (link.substitute_name, link.print_name) == ("\\??\\C:\\Users", "C:\\Users")
        rel = parse_link_reparse(vol.get_reparse("rel.txt"))
        assert rel.relative and rel.substitute_name == r"..\target.txt"
        assert vol.get_reparse("Users") is None
        assert dict((n, k) for k, n in vol.scandir(""))["Documents and Settings"] == "l"
        with pytest.raises(errors.UsageError, match="reparse"):
            vol.set_reparse("Users", b"\0\0\0\0")  # too short to be a reparse buffer
        vol.remove_reparse("rel.txt")
        assert vol.get_reparse("rel.txt") is None
        assert not vol.get_attributes("rel.txt") & FileAttr.REPARSE_POINT


def test_short_names_keep_parent_times(img):
    t = (to_filetime(dt.datetime(2019, 12, 7, 9, 0)), 132201000000000000, 132202000000000000, 132203000000000000)
    with NtfsVolume(img) as vol:
        vol.mkdir("Program Files")
        vol.set_times("", *t)  # the root: the parent whose times setting a DOS name would touch
        vol.set_short_name("Program Files", "PROGRA~1")
        assert vol.get_short_name("program files") == "PROGRA~1"
        root = vol.stat("")
        assert (root.creation_time, root.write_time, root.access_time, root.change_time) == t
        vol.write_file("long name.txt", b"", short_name="LONGNA~1.TXT")
        assert vol.get_short_name("long name.txt") == "LONGNA~1.TXT"
        assert vol.get_short_name("Program Files\\") == "PROGRA~1"
        vol.write_file("x.txt", b"")
        assert vol.get_short_name("x.txt") is None
        with pytest.raises(errors.UsageError, match="8.3"):
            vol.set_short_name("x.txt", "BAD*NAME.TXT")
        assert vol.listdir("") == ["long name.txt", "Program Files", "x.txt"]  # no DOS duplicates
    assert ntfsls(img) == ["long name.txt", "Program Files", "x.txt"]


def test_times(img):
    creation = dt.datetime(2001, 10, 25, 12, 0, 0)
    with NtfsVolume(img) as vol:
        vol.write_file("f", b"data", times=(creation, 130000000000000000, 130000000010000000, 130000000020000000))
        st = vol.stat("f")
        assert from_filetime(st.creation_time) == creation.replace(tzinfo=dt.timezone.utc)
        assert (st.write_time, st.access_time, st.change_time) == (130000000000000000, 130000000010000000,
                                                                    130000000020000000)
        vol.set_times("f", access=130000000099999999)  # the others stay
        st2 = vol.stat("f")
        assert (st2.creation_time, st2.write_time, st2.access_time, st2.change_time) == (
            st.creation_time, st.write_time, 130000000099999999, st.change_time)
    with NtfsVolume(img, readonly=True) as vol:
        assert vol.stat("f").change_time == 130000000020000000
    info = run("ntfsinfo", "-F", "/f", img).stdout
    assert "Thu Oct 25 12:00:00 2001" in info  # creation time in $STANDARD_INFORMATION and $FILE_NAME
    assert "Fri Dec 14 23:06:40 2012" in info  # last write
    assert "Fri Dec 14 23:06:42 2012" in info  # MFT change, which libntfs-3g itself would set to "now"


def test_wimlib_captures_everything(img, tmp_path):
    """wimlib in NTFS-3G mode sees what we wrote: SDs, streams, reparse data, links, DOS names, attributes, times."""
    with NtfsVolume(img) as vol:
        vol.set_security("", SD_WITH_DENY)
        vol.mkdir(r"Program Files")
        vol.set_short_name("Program Files", "PROGRA~1")
        vol.write_file(r"Program Files\cfg", b"config", security_descriptor=SD_SYSTEM_ONLY,
                       attributes=FileAttr.HIDDEN | FileAttr.SYSTEM, times=(125911584000000000, 126000000000000000,
                                                                           127000000000000000, None))
        vol.write_stream(r"Program Files\cfg", "Zone.Identifier", b"[ZoneTransfer]\r\nZoneId=3\r\n")
        vol.link(r"Program Files\cfg", "cfg-link")
        vol.junction("j", "C:\\Program Files")
        vol.symlink("s", "C:\\Program Files\\cfg")
    wim = tmp_path / "cap.wim"
    run("wimcapture", img, wim, "t")
    e = wimdir_detailed(wim, 1)
    cfg = e["/Program Files/cfg"]
    assert cfg["Security Descriptor"] == SD_SYSTEM_ONLY.hex()
    assert e["/"]["Security Descriptor"] == SD_WITH_DENY.hex()
    assert int(cfg["Attributes"], 16) == FileAttr.HIDDEN | FileAttr.SYSTEM
    assert cfg["Creation Time"] == "Sat Jan 01 00:00:00 2000 UTC"
    assert cfg["Last Write Time"].endswith("2000 UTC") and cfg["Last Access Time"].endswith("2003 UTC")
    assert cfg["streams"]["Zone.Identifier"]["Uncompressed size"] == "26 bytes"
    assert cfg["Link Count"] == "2" and cfg["Link Group ID"] == e["/cfg-link"]["Link Group ID"] != "0x0000000000000000"
    assert e["/Program Files"]["Short Name"] == "PROGRA~1"
    assert e["/j"]["Reparse Tag"] == f"{IO_REPARSE_TAG_MOUNT_POINT:#010x}"
    assert e["/s"]["Reparse Tag"] == f"{IO_REPARSE_TAG_SYMLINK:#010x}"
    # and wimlib writes them back through libntfs-3g: read them with our API
    img2 = mkntfs(tmp_path / "back.img")
    run("wimapply", wim, "1", img2)
    with NtfsVolume(img2, readonly=True) as vol:
        assert vol.get_security(r"program files\CFG") == SD_SYSTEM_ONLY
        assert vol.read_file(r"Program Files\cfg", "Zone.Identifier").startswith(b"[ZoneTransfer]")
        assert vol.get_short_name("Program Files") == "PROGRA~1"
        assert parse_link_reparse(vol.get_reparse("j")).print_name == "C:\\Program Files"
        assert vol.stat("cfg-link").nlink == 2


def test_over_a_w2v_window_of_a_vhdx(tmp_path):
    """The same API over "w2v:N": a partition inside a VHDX, through the native block layer."""
    from wim2vhd._lib import lib
    from wim2vhd.disk.vhdx import VhdxDisk

    part = mkntfs(tmp_path / "part.img", 16 << 20)
    offset, length = 1 << 20, 16 << 20
    disk = VhdxDisk.create(str(tmp_path / "d.vhdx"), 32 << 20)
    try:
        disk.copy_from_file(part, 0, offset, length)
        dev = lib.w2v_ntfsdev_register(disk.handle, offset, length, 512, 1)
        assert dev >= 0
        try:
            with NtfsVolume(f"w2v:{dev}") as vol:
                vol.mkdir(r"Windows\Panther", parents=True)
                vol.write_file(r"Windows\Panther\unattend.xml", b"<unattend/>", security_descriptor=SD_SYSTEM_ONLY)
            with NtfsVolume(f"w2v:{dev}", readonly=True) as vol:
                assert vol.read_file(r"\WINDOWS\panther\unattend.xml") == b"<unattend/>"
        finally:
            lib.w2v_ntfsdev_unregister(dev)
    finally:
        disk.close()
    raw = tmp_path / "back.raw"
    run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", tmp_path / "d.vhdx", raw)
    with open(raw, "rb") as f, open(tmp_path / "p2.img", "wb") as g:
        f.seek(offset)
        g.write(f.read(length))
    assert catbytes(str(tmp_path / "p2.img"), "/Windows/Panther/unattend.xml") == b"<unattend/>"
    assert run("ntfsfix", "-n", tmp_path / "p2.img").returncode == 0


# -- errors --------------------------------------------------------------------------

def test_mount_errors_are_clear(tmp_path):
    with pytest.raises(errors.InputError, match="no such file"):
        NtfsVolume(tmp_path / "missing.img")
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * (1 << 20))
    with pytest.raises(errors.CorruptInput, match="not an NTFS volume"):
        NtfsVolume(junk)
    with pytest.raises(errors.InputError):
        NtfsVolume("w2v:63")  # nothing registered there


def test_full_volume_is_no_space_and_stays_consistent(tmp_path):
    small = mkntfs(tmp_path / "small.img", 8 << 20)
    with NtfsVolume(small) as vol:
        with pytest.raises(errors.NoSpace, match="No space left"):
            vol.write_file("big", os.urandom(20 << 20))
        vol.unlink("big")
        vol.write_file("after", b"still works")
    assert catbytes(small, "/after") == b"still works"
    assert "processed successfully" in run("ntfsfix", "-n", small).stdout


def test_path_errors_are_clear(img):
    with NtfsVolume(img) as vol:
        vol.write_file("file", b"")
        vol.mkdir("dir")
        with pytest.raises(errors.InputError, match=r"\\nope\\x.*No such file"):
            vol.read_file(r"\nope\x")
        with pytest.raises(errors.Wim2VhdError, match="directory"):
            vol.write_file("dir", b"x")
        with pytest.raises(errors.Wim2VhdError, match="Not a directory"):
            vol.write_file(r"file\child", b"x")
        with pytest.raises(errors.CorruptInput, match=r"\.\."):
            vol.read_file(r"dir\..\file")
        with pytest.raises(errors.Wim2VhdError):
            vol.unlink("")
        assert not vol.exists(r"file\child") and vol.exists("FILE")
    vol.close()  # closing twice is harmless
    with pytest.raises(errors.InternalError):
        vol.stat("file")


# -- pure functions --------------------------------------------------------------------

def test_sid_roundtrip_and_errors():
    for s in (SID_SYSTEM, SID_ADMINISTRATORS, SID_EVERYONE, "S-1-5-21-1-2-3-1001"):
        b = sid_to_bytes(s)
        assert sid_from_bytes(b) == (s, len(b))
    assert sid_to_bytes(SID_SYSTEM) == bytes.fromhex("010100000000000512000000")
    for bad in ("S-2-5", "X-1-5", "S-1-5-99999999999"):
        with pytest.raises(errors.UsageError):
            sid_to_bytes(bad)


def test_junction_needs_absolute_target():
    with pytest.raises(errors.UsageError, match="absolute"):
        junction_reparse(r"relative\dir")
    assert parse_link_reparse(symlink_reparse("C:/x")).substitute_name == "\\??\\C:\\x"


sids = st.sampled_from([SID_SYSTEM, SID_ADMINISTRATORS, SID_USERS, SID_EVERYONE, "S-1-5-21-11-22-33-500"])
aces = st.builds(Ace, sids, st.integers(0, 0xFFFFFFFF), st.sampled_from([0, ACCESS_DENIED]), st.integers(0, 0x1F))


@given(owner=sids, group=sids, dacl=st.one_of(st.none(), st.lists(aces, max_size=6)))
def test_security_descriptor_roundtrip(owner, group, dacl):
    raw = SecurityDescriptor(owner, group, None if dacl is None else tuple(dacl)).to_bytes()
    back = SecurityDescriptor.from_bytes(raw)
    assert (back.owner, back.group) == (owner, group)
    assert back.dacl == (None if dacl is None else tuple(dacl))


# Names whose case folding cannot differ between Python and NTFS's $UpCase table:
# ASCII, punctuation, and caseless scripts (CJK, Hebrew, ...).
_name_chars = st.one_of(st.sampled_from("abcXYZ019 -_.()[]{}~!@#$%^&'+,;="),
                        st.characters(whitelist_categories=("Lo", "Nd", "Sm", "So")))
names = st.text(_name_chars, min_size=1, max_size=40).filter(
    lambda s: s not in (".", "..") and s.strip() == s and not s.endswith("."))


def ascii_swapcase(s: str) -> str:
    return "".join(c.swapcase() if c.isascii() else c for c in s)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(names, st.binary(max_size=3000), min_size=1, max_size=6))
def test_any_names_and_contents_roundtrip(img, files):
    with NtfsVolume(img) as vol:
        vol.mkdir("h", exist_ok=True)
        for name in vol.listdir("h"):
            vol.unlink(f"h\\{name}")
        stored: dict[str, bytes] = {}
        for name, data in files.items():
            vol.write_file(f"h\\{name}", data)
            # Windows names ignore case: a second name differing only in case replaces the first
            key = next((k for k in stored if k.lower() == name.lower()), None)
            stored[key or name] = data
        assert sorted(vol.listdir("h")) == sorted(stored)
        for name, data in stored.items():
            assert vol.read_file(f"h\\{ascii_swapcase(name)}") == data


def test_a_disk_or_window_in_use_is_not_closed(tmp_path):
    """Closing a disk that an NTFS window reads through, or a window a volume is mounted on, is
    refused (the native layer would be left with freed pointers); in order, everything closes."""
    from wim2vhd.disk import create_disk
    from wim2vhd.errors import UsageError
    from wim2vhd.fs import make_ntfs
    from wim2vhd.ntfs import NtfsWindow
    disk = create_disk(str(tmp_path / "d.vhdx"), 64 << 20)
    make_ntfs(disk, 1 << 20, 32 << 20, tmp_dir=str(tmp_path))
    window = NtfsWindow(disk, 1 << 20, 32 << 20)
    vol = NtfsVolume(window.name)
    with pytest.raises(UsageError, match="while 1 volume is mounted"):
        window.close()
    with pytest.raises(UsageError, match="1 NTFS device window is open"):
        disk.close()
    vol.write_file("x.txt", b"still here")
    vol.close()
    with pytest.raises(UsageError, match="window is open"):
        disk.abandon()
    window.close()
    disk.close()
    from wim2vhd.disk import open_disk
    with open_disk(str(tmp_path / "d.vhdx")) as again:
        with NtfsWindow(again, 1 << 20, 32 << 20, writable=False) as dev, NtfsVolume(dev, readonly=True) as v:
            assert v.read_file("x.txt") == b"still here"
