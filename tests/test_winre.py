"""--recovery: WinRE in the recovery partition as Setup leaves it, read back with tools that are not
ours: sfdisk for the tables, ntfs-3g's ntfsls/ntfscat/ntfsinfo/ntfsfix for the files, wimlib-imagex for
the image's own Winre.wim and boot.sdi, regipy and ElementTree for the store and ReAgent.xml."""
import json
import os
import struct
import uuid
import xml.etree.ElementTree as ET

import pytest

from tests.support import (extract_partition, fails, ntfscat, ntfsls, ref, regipy_store, run, sfdisk, to_raw, w2v)

OSLOADER, DEVICE_OPTIONS = 0x10200003, 0x30000000
BOOTMGR = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"


def image_file(wim, path, tmp):
    """A file of image 1, extracted by wimlib-imagex."""
    d = tmp / "from-wim"
    d.mkdir(parents=True, exist_ok=True)
    run("wimlib-imagex", "extract", wim, "1", path, f"--dest-dir={d}", "--no-acls")
    return (d / path.rsplit("/", 1)[1]).read_bytes()


def partitions(disk, tmp):
    raw = to_raw(disk, tmp)
    pt = sfdisk(raw)
    return raw, pt, [extract_partition(raw, p, tmp, f"p{i}.img") for i, p in enumerate(pt["partitions"])]


def listing(img, path):
    return sorted(n for n in ntfsls(img, path) if n not in ("", ".", ".."))


def reagent(data):
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    root = ET.fromstring(data[3:])
    assert root.tag == "WindowsRE"
    return {c.tag: c.attrib for c in root}


def winre_objects(store):
    (default,) = [o for g, o in store.items() if g == store[BOOTMGR]["elements"]["23000003"][1].lower()]
    seq = default["elements"]["14000008"][1]
    seq = seq if isinstance(seq, list) else [seq]
    (winre_id,) = [g.lower() for g in seq if g]
    loader = store[winre_id]
    return default, winre_id, loader


def test_uefi_recovery_holds_winre_as_setup_leaves_it(fixture_wim, tmp):
    out = tmp / "r.vhdx"
    res = json.loads(w2v("apply", fixture_wim, out, "--index", "1", "--size", "2G", "--recovery", "64M",
                         "--seed", "winre", "--json").stdout)
    raw, pt, imgs = partitions(out, tmp)
    assert len(pt["partitions"]) == 4
    rec_part, win_img, rec_img = pt["partitions"][3], imgs[2], imgs[3]
    assert rec_part["type"] == "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" and rec_part["attrs"] == "RequiredPartition GUID:63"
    assert run("ntfsfix", "-n", rec_img).returncode == 0

    # the files, by ntfs-3g: Winre.wim moved (the image keeps only ReAgent.xml), boot.sdi beside it
    assert listing(rec_img, "/Recovery/WindowsRE") == ["ReAgent.xml", "Winre.wim", "boot.sdi"]
    assert listing(rec_img, "/") == ["Recovery"]  # nothing left of how Winre.wim got there
    assert listing(win_img, "/Windows/System32/Recovery") == ["ReAgent.xml"]
    winre = ntfscat(rec_img, "/Recovery/WindowsRE/Winre.wim")
    assert winre == image_file(fixture_wim, "/Windows/System32/Recovery/Winre.wim", tmp)
    assert ntfscat(rec_img, "/Recovery/WindowsRE/boot.sdi") == image_file(fixture_wim, "/Windows/Boot/DVD/EFI/boot.sdi",
                                                                           tmp / "sdi")
    (tmp / "w.wim").write_bytes(winre)
    assert "Microsoft Windows Recovery Environment" in run("wimlib-imagex", "info", tmp / "w.wim").stdout
    for f in ("Winre.wim", "boot.sdi", "ReAgent.xml"):
        attrs = run("ntfsinfo", "-F", f"/Recovery/WindowsRE/{f}", rec_img).stdout
        assert "HIDDEN SYSTEM ARCHIVE" in attrs, f

    # ReAgent.xml, in the image and beside Winre.wim: WinRE enabled, where it is, and its loader
    xml = ntfscat(win_img, "/Windows/System32/Recovery/ReAgent.xml")
    assert ntfscat(rec_img, "/Recovery/WindowsRE/ReAgent.xml") == xml
    ra = reagent(xml)
    loc = ra["WinreLocation"]
    assert loc == {"path": "\\Recovery\\WindowsRE", "id": "0", "offset": str(rec_part["start"] * 512),
                   "guid": "{%s}" % pt["id"].lower()}
    assert ra["InstallState"] == {"state": "1"}
    # the image's other elements stay, in their order
    assert list(ra)[-3:] == ["IsWimBoot", "NarratorScheduled", "ScheduledOperation"]

    # the store, by regipy
    bcd = tmp / "BCD"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    run("mcopy", "-n", "-i", f"{raw}@@1M", "::/EFI/Microsoft/Boot/BCD", bcd, env=env)
    store = regipy_store(bcd)
    default, winre_id, loader = winre_objects(store)
    assert ra["WinreBCD"] == {"id": winre_id}
    assert res["boot"]["winre"]["loader"] == winre_id
    assert default["elements"]["16000009"][1] == b"\x01"          # recoveryenabled
    el = loader["elements"]
    assert loader["type"] == OSLOADER
    assert el["12000002"][1] == "\\windows\\system32\\winload.efi" and el["22000002"][1] == "\\windows"
    assert el["26000022"][1] == b"\x01" and el["46000010"][1] == b"\x01"   # winpe, custom:46000010
    assert el["25000020"][1] == bytes(8)                              # nx OptIn
    dev = el["11000001"][1]
    assert el["21000001"][1] == dev
    disk, part = uuid.UUID(pt["id"]), uuid.UUID(rec_part["uuid"])
    opts_id = uuid.UUID(bytes_le=dev[:16])
    assert disk.bytes_le in dev and part.bytes_le in dev
    assert dev.endswith("\\Recovery\\WindowsRE\\Winre.wim\0".encode("utf-16-le"))
    opts = store["{%s}" % opts_id]
    assert opts["type"] == DEVICE_OPTIONS
    assert opts["elements"]["32000004"][1] == "\\Recovery\\WindowsRE\\boot.sdi"
    sdi_dev = opts["elements"]["31000003"][1]
    assert disk.bytes_le in sdi_dev and part.bytes_le in sdi_dev
    # and as bcdedit prints it
    show = w2v("bcd", "show", bcd).stdout
    host = f"gpt:{disk}:{part}"
    assert f"ramdisk=[{host}]\\Recovery\\WindowsRE\\Winre.wim,{{{opts_id}}}" in show
    assert f"recoverysequence        {winre_id}" in show and "recoveryenabled         Yes" in show
    assert f"ramdisksdidevice        partition={host}" in show
    assert "ramdisksdipath          \\Recovery\\WindowsRE\\boot.sdi" in show
    assert "custom:46000010         Yes" in show and "winpe                   Yes" in show


def test_bios_recovery_partition_type_27(fixture_wim, tmp):
    out = tmp / "b.vhd"
    w2v("apply", fixture_wim, out, "--index", "2", "--size", "2G", "--layout", "bios", "--recovery", "32M")
    raw, pt, imgs = partitions(out, tmp)
    win_part, rec_part = pt["partitions"]
    assert rec_part["type"] == "27" and not rec_part.get("bootable") and win_part.get("bootable")
    win_img, rec_img = imgs
    assert listing(rec_img, "/Recovery/WindowsRE") == ["ReAgent.xml", "Winre.wim", "boot.sdi"]
    assert listing(win_img, "/Windows/System32/Recovery") == ["ReAgent.xml"]
    assert ntfscat(rec_img, "/Recovery/WindowsRE/boot.sdi") == image_file(fixture_wim, "/Windows/Boot/DVD/PCAT/boot.sdi",
                                                                           tmp)
    signature, offset = int(pt["id"], 16), rec_part["start"] * 512
    ra = reagent(ntfscat(win_img, "/Windows/System32/Recovery/ReAgent.xml"))
    assert ra["WinreLocation"] == {"path": "\\Recovery\\WindowsRE", "id": str(signature), "offset": str(offset),
                                   "guid": "{00000000-0000-0000-0000-000000000000}"}
    bcd = tmp / "BCD"
    bcd.write_bytes(ntfscat(win_img, "/Boot/BCD"))
    default, winre_id, loader = winre_objects(regipy_store(bcd))
    assert loader["elements"]["12000002"][1] == "\\windows\\system32\\winload.exe"
    ours = loader["elements"]["21000001"][1]
    # bcdedit's own `ramdisk=[mbr:0x36234da4:0x100000]\boot\boot.wimaoeu,{ramdiskoptions}` (pybcd-BCDTest)
    # differs only where the options object, the disk, the partition and the path do, and in the two
    # lengths that count the path.
    theirs = regipy_store(ref("pybcd-BCDTest"))["{effdfa6e-8442-22f3-b2d5-323c2953814e}"]["elements"]["21000001"][1]
    p_ours, p_theirs = "\\Recovery\\WindowsRE\\Winre.wim\0".encode("utf-16-le"), "\\boot\\boot.wimaoeu\0".encode("utf-16-le")
    assert ours.endswith(p_ours) and theirs.endswith(p_theirs)
    head_o, head_t = ours[:-len(p_ours)], theirs[:-len(p_theirs)]
    assert len(head_o) == len(head_t)
    sig_at = head_t.find(struct.pack("<I", 0x36234DA4))
    off_at = head_t.find(struct.pack("<Q", 0x100000))
    assert head_o[sig_at:sig_at + 4] == struct.pack("<I", signature)
    assert head_o[off_at:off_at + 8] == struct.pack("<Q", offset)
    delta = len(p_ours) - len(p_theirs)
    lengths = [i for i in range(16, len(head_t) - 3, 4)
               if struct.unpack_from("<I", head_o, i)[0] - struct.unpack_from("<I", head_t, i)[0] == delta]
    allowed = set(range(16)) | set(range(sig_at, sig_at + 4)) | set(range(off_at, off_at + 8))
    for i in lengths:
        allowed |= set(range(i, i + 4))
    assert len(lengths) == 2
    assert {i for i in range(len(head_t)) if head_o[i] != head_t[i]} <= allowed
    show = w2v("bcd", "show", bcd).stdout
    assert f"ramdisk=[mbr:0x{signature:08x}:0x{offset:x}]\\Recovery\\WindowsRE\\Winre.wim" in show


def test_hybrid_recovery_in_both_stores(fixture_wim, tmp):
    """--layout hybrid --recovery: the WinRE partition (0x27) after Windows, as on bios; both stores on the
    FAT32 system partition (mcopy, then regipy and `bcd show`) start the same WinRE loader, each with its
    firmware's winload, from the recovery partition by MBR signature and offset (sfdisk's)."""
    out = tmp / "h.vhdx"
    res = json.loads(w2v("apply", fixture_wim, out, "--index", "1", "--size", "1G", "--layout", "hybrid",
                         "--recovery", "32M", "--seed", "hybrid-winre", "--json").stdout)
    raw, pt, imgs = partitions(out, tmp)
    sys_part, win_part, rec_part = pt["partitions"]
    assert [(p["type"], p.get("bootable", False)) for p in pt["partitions"]] == [("c", True), ("7", False),
                                                                                 ("27", False)]
    assert (rec_part["start"] + rec_part["size"]) * 512 == 1 << 30
    _, win_img, rec_img = imgs
    assert run("ntfsfix", "-n", rec_img).returncode == 0
    assert listing(rec_img, "/Recovery/WindowsRE") == ["ReAgent.xml", "Winre.wim", "boot.sdi"]
    assert listing(win_img, "/Windows/System32/Recovery") == ["ReAgent.xml"]
    assert ntfscat(rec_img, "/Recovery/WindowsRE/Winre.wim") == image_file(
        fixture_wim, "/Windows/System32/Recovery/Winre.wim", tmp)
    assert ntfscat(rec_img, "/Recovery/WindowsRE/boot.sdi") == image_file(
        fixture_wim, "/Windows/Boot/DVD/PCAT/boot.sdi", tmp / "sdi")
    signature, offset = int(pt["id"], 16), rec_part["start"] * 512
    xml = ntfscat(win_img, "/Windows/System32/Recovery/ReAgent.xml")
    assert ntfscat(rec_img, "/Recovery/WindowsRE/ReAgent.xml") == xml
    ra = reagent(xml)
    assert ra["WinreLocation"] == {"path": "\\Recovery\\WindowsRE", "id": str(signature), "offset": str(offset),
                                   "guid": "{00000000-0000-0000-0000-000000000000}"}
    host = f"mbr:0x{signature:08x}:0x{offset:x}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for path, loader_path in (("/EFI/Microsoft/Boot/BCD", "\\windows\\system32\\winload.efi"),
                              ("/Boot/BCD", "\\windows\\system32\\winload.exe")):
        bcd = tmp / path.replace("/", "_")
        run("mcopy", "-n", "-i", f"{raw}@@{sys_part['start'] * 512}", f"::{path}", bcd, env=env)
        default, winre_id, loader = winre_objects(regipy_store(bcd))
        assert ra["WinreBCD"] == {"id": winre_id} and res["boot"]["winre"]["loader"] == winre_id, path
        assert default["elements"]["16000009"][1] == b"\x01", path          # recoveryenabled
        assert loader["elements"]["12000002"][1] == loader_path, path
        dev = loader["elements"]["11000001"][1]
        assert struct.pack("<I", signature) in dev and struct.pack("<Q", offset) in dev, path
        show = w2v("bcd", "show", bcd).stdout
        assert f"ramdisk=[{host}]\\Recovery\\WindowsRE\\Winre.wim," in show, (path, show)
        assert f"recoverysequence        {winre_id}" in show and "recoveryenabled         Yes" in show, path
        assert f"ramdisksdidevice        partition={host}" in show, path
        assert "ramdisksdipath          \\Recovery\\WindowsRE\\boot.sdi" in show, path


def big_winre_wim(tmp, size):
    from fixtures.build import build_fixture_wim
    from fixtures.layout import pseudo_random
    return str(build_fixture_wim(tmp / "big.wim", compression="none",
                                 overrides={"Windows/System32/Recovery/Winre.wim": pseudo_random("winre", size)}))


def test_recovery_too_small_for_winre_says_the_size(tmp):
    wim = big_winre_wim(tmp, 12 << 20)
    out = tmp / "o.vhdx"
    p = w2v("apply", wim, out, "--index", "1", "--size", "2G", "--recovery", "8M", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.strip().count("\n") == 0, p.stderr
    assert "too small" in p.stderr and "Winre.wim (12 MiB)" in p.stderr, p.stderr
    need = p.stderr.split("use --recovery ")[1].split("M")[0]
    assert not os.path.exists(out) and not [n for n in os.listdir(tmp) if ".w2v-tmp" in n]
    # the size it names is enough
    w2v("apply", wim, out, "--index", "1", "--size", "2G", "--recovery", f"{need}M")
    _, _, imgs = partitions(out, tmp)
    assert len(ntfscat(imgs[3], "/Recovery/WindowsRE/Winre.wim")) == 12 << 20
    # Winre.wim goes from the WIM to the recovery partition, never through the Windows one: against the
    # same image applied without --recovery (Winre.wim in the Windows partition), the dynamic disk grows
    # only by the recovery volume's own metadata, not by Winre.wim a second time
    without = tmp / "n.vhdx"
    w2v("apply", wim, without, "--index", "1", "--size", "2G")
    grown = os.path.getsize(out) - os.path.getsize(without)
    assert 0 < grown < 12 << 20, grown


def test_image_without_winre_is_refused(tmp):
    from fixtures.build import build_fixture_wim
    from fixtures.layout import EDITIONS
    ed = EDITIONS[0]
    bare = type(ed)(ed.name, ed.edition_id, ed.display_name, ed.description,
                    tuple(e for e in ed.entries if not e.path.lower().endswith("winre.wim")))
    wim = build_fixture_wim(tmp / "bare.wim", editions=(bare,))
    fails(["apply", wim, tmp / "o.vhdx", "--size", "2G", "--recovery", "64M"], 3,
          "has no \\Windows\\System32\\Recovery\\Winre.wim", tmp, str(tmp / "o.vhdx"))


@pytest.mark.parametrize("args,words", [
    (["--layout", "native", "--recovery", "64M"], "--recovery goes with --layout uefi, bios or hybrid"),
    (["--no-boot", "--recovery", "64M"], "cannot go with --no-boot"),
])
def test_recovery_option_checks(fixture_wim, tmp, args, words):
    fails(["apply", fixture_wim, tmp / "o.vhdx", "--index", "1", *args], 2, words, tmp, str(tmp / "o.vhdx"))


# -- ReAgent.xml, as a function ---------------------------------------------------------------------
def _plan(scheme):
    from wim2vhd.partition import plan_layout
    from tests.support import seeded
    return seeded("ra", plan_layout, 4 << 30, 512, "uefi" if scheme == "gpt" else "bios", recovery_size=64 << 20)


def test_reagent_keeps_the_images_elements_and_sets_the_location():
    from wim2vhd.boot.winre import reagent_xml
    loader = uuid.UUID("11111111-2222-3333-4444-555555555555")
    mine = ("\ufeff<?xml version='1.0' encoding='utf-8'?>\r\n<WindowsRE version=\"2.1\">\r\n"
            "  <InstallState state=\"0\"/>\r\n  <Future thing=\"a&amp;b\"/>\r\n</WindowsRE>\r\n").encode()
    plan = _plan("mbr")
    ra = reagent(reagent_xml(mine, plan, loader))
    assert list(ra) == ["WinreBCD", "WinreLocation", "InstallState", "Future", "IsAutoRepairOn"]
    assert ra["Future"] == {"thing": "a&b"} and ra["InstallState"] == {"state": "1"}
    assert ra["WinreLocation"]["id"] == str(plan.disk_signature)
    assert b'<WindowsRE version="2.1">' in reagent_xml(mine, plan, loader)
    # no file, or one that is not ReAgent.xml: Windows 10's elements
    for existing in (None, b"garbage <", b"<other/>"):
        ra = reagent(reagent_xml(existing, _plan("gpt"), loader))
        assert ra["WinreBCD"] == {"id": "{%s}" % loader} and "ScheduledOperation" in ra
    # what reads back as written: no space before "/>", CRLF, as reagentc writes it
    data = reagent_xml(None, _plan("gpt"), loader)
    assert b' />' not in data and data.endswith(b"</WindowsRE>\r\n")
