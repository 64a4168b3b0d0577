"""`wim2vhd verify`: sound disks of every layout pass; damaged copies fail with one line naming the problem.

The damaged copies are made with tools nobody here wrote wherever one can do it, and each damage is
first confirmed by an independent reader, so a test cannot pass because verify and the damage
agree on a mistake:
  qemu-img convert   VHDX/VHD -> raw for the damage, and raw -> VHDX for verify to read back;
  mtools             mdel/mren on the ESP (mdir confirms);
  dd-like writes     of single bytes, in the test (sgdisk -v and ntfsinfo confirm the damage);
  ntfsresize         marks the NTFS volume dirty (ntfsinfo -f -m confirms);
  libntfs-3g         through wim2vhd.ntfs.NtfsVolume, to delete a file: ntfs-3g ships no
                     command-line tool that deletes (ntfsls confirms the file is gone);
  sgdisk -U R        a new disk GUID (sgdisk rewrites both GPT copies).
"""
import json
import os
import subprocess

import pytest

from tests.support import ntfscat, ntfsls, regipy_store, run, sfdisk, to_raw, w2v

MTOOLS = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
GOOD = {  # name: (file name, apply options, layout verify should see)
    "uefi": ("u.vhdx", [], "uefi"),
    "uefi-partition-devices": ("p.vhdx", ["--bcd-devices", "partition", "--seed", "verify"], "uefi"),
    "bios": ("b.vhd", ["--layout", "bios"], "bios"),
    "native": ("n.vhdx", ["--layout", "native"], "native"),
    "native-mbr": ("m.img", ["--layout", "native", "--mbr"], "native"),
}


@pytest.fixture(scope="session")
def disks(fixture_wim, tmp_path_factory):
    """One applied disk of each kind, made once: {name: path}.  Tests copy before they damage."""
    d = tmp_path_factory.mktemp("verify")
    out = {}
    for name, (fname, opts, _) in GOOD.items():
        w2v("apply", fixture_wim, d / fname, "--index", "1", "--size", "1G", *opts)
        out[name] = d / fname
    return out


@pytest.fixture(scope="session")
def uefi_raw(disks, tmp_path_factory):
    """The uefi disk as a raw image (qemu-img convert), to damage copies of."""
    return to_raw(disks["uefi"], tmp_path_factory.mktemp("verify-raw"))


def verify(disk, *args):
    return w2v("verify", disk, *args, check=False)


def raw_copy(src, tmp, name="d.raw"):
    dst = tmp / name
    run("cp", "--sparse=always", src, dst)
    return dst


def to_vhdx(raw, tmp):
    out = tmp / (os.path.basename(raw) + ".vhdx")
    run("qemu-img", "convert", "-f", "raw", "-O", "vhdx", raw, out)
    return out


CHUNK = 1 << 20


def get_partition(raw, part, tmp, name):
    """A partition (sfdisk's sectors) as a sparse image file: its all-zero MiBs are left as holes."""
    out = tmp / name
    with open(raw, "rb") as f, open(out, "wb") as g:
        g.truncate(part["size"] * 512)
        for off in range(0, part["size"] * 512, CHUNK):
            f.seek(part["start"] * 512 + off)
            b = f.read(CHUNK)
            if b.count(0) != len(b):
                g.seek(off)
                g.write(b)
    return out


def put_partition(raw, part, img):
    """Write a partition image back into the raw disk at its place: the MiBs that differ."""
    with open(img, "rb") as f, open(raw, "r+b") as g:
        for off in range(0, os.path.getsize(img), CHUNK):
            b = f.read(CHUNK)
            g.seek(part["start"] * 512 + off)
            if g.read(len(b)) != b:
                g.seek(part["start"] * 512 + off)
                g.write(b)


def poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def one_problem(p, *words):
    """exit 3 and exactly one line on stdout, naming the problem."""
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    lines = p.stdout.splitlines()
    assert len(lines) == 1, lines
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    assert "Traceback" not in p.stderr
    return lines[0]


# -- sound disks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(GOOD))
def test_sound_disks_pass(disks, name):
    p = verify(disks[name])
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("\n") == 1 and "sound" in p.stdout
    res = json.loads(verify(disks[name], "--json").stdout)
    assert res["sound"] and res["problems"] == [] and res["layout"] == GOOD[name][2]
    assert res["architecture"] == "x64"  # the fixture's loaders are x64 PE stubs
    results = {c["check"]: c["result"] for c in res["checks"]}
    assert set(results.values()) <= {"ok", "warning", "skipped"}
    assert results["partition table"] == "ok" and results["Windows partition"] == "ok"
    assert results["hive \\Windows\\System32\\config\\SYSTEM"] == "ok"
    if res["layout"] == "uefi":
        for c in ("partition 1 FAT", "BCD store", "{bootmgr} path", "{default} path", "{default} systemroot",
                  "fallback loader"):
            assert results[c] == "ok", c
    elif res["layout"] == "bios":
        for c in ("MBR boot code", "boot manager", "BCD store", "{default} path", "{default} systemroot"):
            assert results[c] == "ok", c
    else:
        assert results["BCD store"] == "skipped" and results["loader"] == "ok"


def test_the_disk_is_only_read_and_nothing_is_left(disks, tmp):
    """The disk keeps its bytes; the exported ESP and the files read from it go with verify."""
    before = disks["uefi"].read_bytes()
    p = w2v("verify", disks["uefi"], env={**os.environ, "TMPDIR": str(tmp)})
    assert "sound" in p.stdout
    assert disks["uefi"].read_bytes() == before
    assert os.listdir(tmp) == []


def test_no_boot_disk(fixture_wim, tmp):
    """apply --no-boot leaves the ESP empty: no store and no fallback loader, one line each."""
    out = tmp / "nb.vhdx"
    w2v("apply", fixture_wim, out, "--index", "1", "--size", "1G", "--no-boot")
    p = verify(out)
    assert p.returncode == 3
    lines = p.stdout.splitlines()
    assert len(lines) == 2 and "BCD is missing" in lines[0] and "bootx64.efi" in lines[1], lines


def test_raw_and_differencing_child(disks, uefi_raw, tmp):
    assert verify(uefi_raw).returncode == 0
    child = tmp / "child.vhdx"
    w2v("disk", "diff", disks["uefi"], child)
    res = json.loads(verify(child, "--json").stdout)
    assert res["sound"] and res["format"] == "vhdx" and res["layout"] == "uefi"


def test_locate_devices_survive_a_new_disk_guid_partition_devices_do_not(disks, tmp):
    """sgdisk -U R gives the disk a new GUID (both GPT copies): the locate store still resolves, the
    partition store names a disk that is no longer this one, in each of its devices."""
    for name, sound in (("uefi", True), ("uefi-partition-devices", False)):
        raw = to_raw(disks[name], tmp)
        run("sgdisk", "-U", "R", raw)
        p = verify(raw)
        if sound:
            assert p.returncode == 0, p.stdout
            continue
        assert p.returncode == 3
        lines = p.stdout.splitlines()
        # {bootmgr} device, {default} device and osdevice: each its own problem
        assert len(lines) == 3, lines
        old = json.loads(w2v("disk", "info", disks[name], "--json").stdout)["partitions"]["disk_guid"]
        assert all("does not resolve" in ln and old in ln for ln in lines), lines


# -- damaged copies -----------------------------------------------------------------------------------

def test_deleted_bcd(uefi_raw, tmp):
    raw = raw_copy(uefi_raw, tmp)
    run("mdel", "-i", f"{raw}@@1M", "::/EFI/Microsoft/Boot/BCD", env=MTOOLS)
    assert "BCD" not in run("mdir", "-b", "-i", f"{raw}@@1M", "::/EFI/Microsoft/Boot", env=MTOOLS).stdout
    vhdx = to_vhdx(raw, tmp)
    line = one_problem(verify(vhdx), "\\EFI\\Microsoft\\Boot\\BCD", "missing")
    res = json.loads(verify(raw, "--json").stdout)
    assert not res["sound"] and [c["result"] for c in res["checks"] if c["check"] == "BCD store"] == ["problem"]
    assert res["problems"] == [line[len(f"{vhdx}: "):]]
    # what depends on the store is not reported again
    assert not any(c["check"].startswith(("{bootmgr}", "{default}")) for c in res["checks"])


def test_deleted_bios_bcd(disks, tmp):
    from wim2vhd.ntfs import NtfsVolume
    raw = to_raw(disks["bios"], tmp)
    part = sfdisk(raw)["partitions"][0]
    img = get_partition(raw, part, tmp, "win.img")
    with NtfsVolume(str(img)) as vol:
        vol.unlink("Boot\\BCD")
    assert "BCD" not in run("ntfsls", "-a", img, "-p", "/Boot").stdout.split()
    put_partition(raw, part, img)
    one_problem(verify(raw), "\\Boot\\BCD", "missing")


def test_deleted_loader(uefi_raw, tmp):
    from wim2vhd.ntfs import NtfsVolume
    raw = raw_copy(uefi_raw, tmp)
    part = sfdisk(raw)["partitions"][2]
    img = get_partition(raw, part, tmp, "win.img")
    with NtfsVolume(str(img)) as vol:  # libntfs-3g deletes it
        vol.unlink("Windows\\System32\\winload.efi")
    assert "winload.efi" not in run("ntfsls", img, "-p", "/Windows/System32").stdout.split()
    put_partition(raw, part, img)
    one_problem(verify(to_vhdx(raw, tmp)), "winload.efi", "missing")


def test_deleted_loader_with_partition_devices(disks, tmp):
    from wim2vhd.ntfs import NtfsVolume
    raw = to_raw(disks["uefi-partition-devices"], tmp)
    part = sfdisk(raw)["partitions"][2]
    img = get_partition(raw, part, tmp, "win.img")
    with NtfsVolume(str(img)) as vol:
        vol.unlink("Windows\\System32\\winload.efi")
    put_partition(raw, part, img)
    one_problem(verify(raw), "winload.efi is missing from partition 3")


def test_damaged_ntfs_boot_sector(uefi_raw, tmp):
    raw = raw_copy(uefi_raw, tmp)
    part = sfdisk(raw)["partitions"][2]
    poke(raw, part["start"] * 512, bytes(512))
    img = get_partition(raw, part, tmp, "win.img")
    assert subprocess.run(["ntfsinfo", "-m", img], capture_output=True).returncode != 0
    one_problem(verify(to_vhdx(raw, tmp)), "partition 3", "NTFS boot sector")


def test_damaged_primary_gpt(uefi_raw, tmp):
    raw = raw_copy(uefi_raw, tmp)
    poke(raw, 512 + 56, b"\xff")  # a byte of the disk GUID, under the header's CRC
    sg = run("sgdisk", "-v", raw, check=False)
    assert "Main header: ERROR" in sg.stdout + sg.stderr and "Backup header: OK" in sg.stdout + sg.stderr
    one_problem(verify(raw), "primary GPT header", "CRC32")


def test_damaged_both_gpt_copies(uefi_raw, tmp):
    raw = raw_copy(uefi_raw, tmp)
    poke(raw, 512 + 56, b"\xff")
    poke(raw, os.path.getsize(raw) - 512 + 56, b"\xff")
    # sfdisk finds no GPT left, only the protective MBR's 0xEE entry
    assert [p["type"] for p in sfdisk(raw)["partitions"]] == ["ee"]
    one_problem(verify(raw), "partition table is damaged")


def test_dirty_ntfs(uefi_raw, tmp):
    raw = raw_copy(uefi_raw, tmp)
    part = sfdisk(raw)["partitions"][2]
    img = get_partition(raw, part, tmp, "win.img")
    # ntfsresize schedules a chkdsk after it resizes: it marks the volume dirty
    run("ntfsresize", "-f", "-f", "-s", str(os.path.getsize(img) - (1 << 20)), img)
    assert "DIRTY" in run("ntfsinfo", "-f", "-m", img).stdout
    put_partition(raw, part, img)
    one_problem(verify(raw), "partition 3", "dirty")


def test_dirty_hive(uefi_raw, tmp):
    from regipy.registry import RegistryHive

    from wim2vhd.ntfs import NtfsVolume
    raw = raw_copy(uefi_raw, tmp)
    part = sfdisk(raw)["partitions"][2]
    img = get_partition(raw, part, tmp, "win.img")
    path = "Windows\\System32\\config\\SYSTEM"
    with NtfsVolume(str(img)) as vol:
        hive = bytearray(vol.read_file(path))
        # Windows' order of a hive write: the first sequence number goes up before, the second after.
        hive[4:8] = (int.from_bytes(hive[4:8], "little") + 1).to_bytes(4, "little")
        check = 0
        for i in range(0, 0x1FC, 4):
            check ^= int.from_bytes(hive[i:i + 4], "little")
        hive[0x1FC:0x200] = check.to_bytes(4, "little")
        vol.write_file(path, bytes(hive))
    (tmp / "SYSTEM").write_bytes(subprocess.run(["ntfscat", img, "/Windows/System32/config/SYSTEM"],
                                                capture_output=True, check=True).stdout)
    h = RegistryHive(str(tmp / "SYSTEM")).header
    assert h.primary_sequence_num != h.secondary_sequence_num
    put_partition(raw, part, img)
    one_problem(verify(raw), "config\\SYSTEM", "dirty")


def test_fallback_loader_of_another_architecture(uefi_raw, tmp):
    raw = raw_copy(uefi_raw, tmp)
    run("mren", "-i", f"{raw}@@1M", "::/EFI/Boot/bootx64.efi", "::/EFI/Boot/bootaa64.efi", env=MTOOLS)
    line = one_problem(verify(raw), "\\EFI\\Boot\\bootx64.efi", "missing")
    assert "bootaa64.efi" in line


def test_damaged_fat(uefi_raw, tmp):
    raw = raw_copy(uefi_raw, tmp)
    esp = 1 << 20
    with open(raw, "rb") as f:
        f.seek(esp)
        bs = f.read(512)
    reserved = int.from_bytes(bs[14:16], "little")
    # FAT entry 2 (the root directory's first cluster) of the first FAT: a free cluster now
    poke(raw, esp + reserved * 512 + 8, bytes(4))
    esp_img = get_partition(raw, sfdisk(raw)["partitions"][0], tmp, "esp.img")
    assert subprocess.run(["fsck.fat", "-n", esp_img], capture_output=True).returncode != 0
    one_problem(verify(raw), "partition 1", "fsck.fat")


def test_not_a_disk(tmp):
    p = verify(tmp / "missing.vhdx")
    assert p.returncode == 3 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_architecture_from_the_loaders_pe_machine(tmp):
    """An image whose loaders are ARM64 PE images (machine 0xAA64) needs \\EFI\\Boot\\bootaa64.efi.
    verify's verdict must agree with what mdir finds in the ESP's \\EFI\\Boot, whichever file apply
    put there."""
    from fixtures.build import build_fixture_wim
    from fixtures.layout import placeholder
    arm = {p: placeholder(p, machine=0xAA64) for p in ("Windows\\System32\\winload.efi",
                                                       "Windows\\System32\\winload.exe")}
    wim = build_fixture_wim(tmp / "arm.wim", bootmgfw_efi=placeholder("bootmgfw.efi", machine=0xAA64),
                            overrides=arm)
    out = tmp / "arm.vhdx"
    w2v("apply", wim, out, "--index", "1", "--size", "1G")
    res = json.loads(verify(out, "--json").stdout)
    assert res["architecture"] == "arm64"
    raw = to_raw(out, tmp)
    listing = run("mdir", "-b", "-i", f"{raw}@@1M", "::/EFI/Boot", env=MTOOLS).stdout.lower()
    if "bootaa64.efi" in listing:
        assert res["sound"], res["problems"]
    else:
        one_problem(verify(out), "\\EFI\\Boot\\bootaa64.efi", "missing", "arm64")


# -- WinRE (apply --recovery) ---------------------------------------------------------------------
# One raw disk per layout (OUT .img), made once for this module; each damage is done to a copy and
# confirmed with an outside reader first (ntfsls/ntfscat, sfdisk, regipy).

REC_DIR = "/Recovery/WindowsRE"
REAGENT = "/Windows/System32/Recovery/ReAgent.xml"


@pytest.fixture(scope="module")
def winre_disks(fixture_wim, tmp_path_factory):
    d = tmp_path_factory.mktemp("verify-winre")
    out = {}
    for layout in ("uefi", "bios", "hybrid"):
        out[layout] = d / f"{layout}.img"
        w2v("apply", fixture_wim, out[layout], "--index", "1", "--size", "1G", "--layout", layout,
            "--recovery", "32M")
    return out


def winre_copy(winre_disks, layout, tmp):
    """(a sparse copy of the layout's disk, sfdisk's partitions: Windows' and the recovery one)."""
    raw = raw_copy(winre_disks[layout], tmp)
    parts = sfdisk(raw)["partitions"]
    return raw, parts[-2], parts[-1]


def ntfs_unlink(raw, part, tmp, path):
    """Delete `path` from an NTFS partition with libntfs-3g; ntfsls confirms it is gone."""
    from wim2vhd.ntfs import NtfsVolume
    img = get_partition(raw, part, tmp, "part.img")
    with NtfsVolume(str(img)) as vol:
        vol.unlink(path.strip("/").replace("/", "\\"))
    folder, name = path.rsplit("/", 1)
    assert name not in run("ntfsls", "-a", img, "-p", folder).stdout.split()
    put_partition(raw, part, img)


@pytest.mark.parametrize("layout", ["uefi", "bios", "hybrid"])
def test_winre_sound(winre_disks, layout):
    res = json.loads(verify(winre_disks[layout], "--json").stdout)
    assert res["sound"], res["problems"]
    assert res["winre"] == "present" and res["layout"] == layout
    results = {c["check"]: c["result"] for c in res["checks"]}
    prefixes = ("UEFI ", "BIOS ") if layout == "hybrid" else ("",)
    for pre in prefixes:
        for c in ("WinRE recoveryenabled", "WinRE loader"):
            assert results[pre + c] == "ok", pre + c
    for c in ("WinRE image", "WinRE boot.sdi"):  # checked once, by the first store naming them
        assert results[prefixes[0] + c] == "ok", c
    assert results["WinRE partition"] == "ok" and results["WinRE ReAgent.xml"] == "ok"


def test_no_recovery_partition_is_winre_absent(disks):
    res = json.loads(verify(disks["uefi"], "--json").stdout)
    assert res["sound"] and res["winre"] == "absent"
    assert [c["result"] for c in res["checks"] if c["check"] == "WinRE"] == ["skipped"]


@pytest.mark.parametrize("layout", ["uefi", "bios", "hybrid"])
def test_winre_wim_deleted(winre_disks, layout, tmp):
    """(hybrid: both stores name it; it is one problem)"""
    raw, _, rec = winre_copy(winre_disks, layout, tmp)
    ntfs_unlink(raw, rec, tmp, f"{REC_DIR}/Winre.wim")
    n = {"uefi": 4, "bios": 2, "hybrid": 3}[layout]
    one_problem(verify(raw), "\\Recovery\\WindowsRE\\Winre.wim is missing", f"partition {n}")


def test_boot_sdi_deleted(winre_disks, tmp):
    raw, _, rec = winre_copy(winre_disks, "uefi", tmp)
    ntfs_unlink(raw, rec, tmp, f"{REC_DIR}/boot.sdi")
    one_problem(verify(raw), "\\Recovery\\WindowsRE\\boot.sdi is missing", "ramdisksdipath")


def test_reagent_deleted(winre_disks, tmp):
    raw, win, _ = winre_copy(winre_disks, "bios", tmp)
    ntfs_unlink(raw, win, tmp, REAGENT)
    one_problem(verify(raw), "ReAgent.xml is missing")


@pytest.mark.parametrize("layout,old,new,words", [
    ("uefi", b'path="\\Recovery\\WindowsRE"', b'path="\\Recovery\\Elsewhere"', ("names", "\\Recovery\\Elsewhere")),
    ("bios", b'offset="', b'offset="1', ("names", "not WinRE's")),
    ("uefi", b'<WinreBCD id="{', b'<WinreBCD id="{0', ("WinreBCD is {0",)),
])
def test_reagent_names_another_place(winre_disks, layout, old, new, words, tmp):
    raw, win, _ = winre_copy(winre_disks, layout, tmp)
    img = get_partition(raw, win, tmp, "win.img")
    xml = ntfscat(img, REAGENT)
    other = xml.replace(old, new, 1)
    assert other != xml
    (tmp / "ReAgent.xml").write_bytes(other)
    run("ntfscp", "-f", img, tmp / "ReAgent.xml", REAGENT)  # ntfs-3g's own writer
    assert ntfscat(img, REAGENT) == other
    put_partition(raw, win, img)
    one_problem(verify(raw), "ReAgent.xml", *words)


def test_reagent_with_winre_left_in_windows(winre_disks, tmp):
    raw, win, _ = winre_copy(winre_disks, "bios", tmp)
    img = get_partition(raw, win, tmp, "win.img")
    (tmp / "Winre.wim").write_bytes(b"x" * 4096)
    run("ntfscp", img, tmp / "Winre.wim", "/Windows/System32/Recovery/Winre.wim")
    assert "Winre.wim" in ntfsls(img, "/Windows/System32/Recovery")
    put_partition(raw, win, img)
    one_problem(verify(raw), "Winre.wim is still on partition 1")


@pytest.mark.parametrize("layout,part_type,words", [
    ("uefi", "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "not WinRE's de94bba4"),
    ("bios", "7", "MBR type 0x07, not 0x27"),
])
def test_recovery_partition_type_changed(winre_disks, layout, part_type, words, tmp):
    raw, _, rec = winre_copy(winre_disks, layout, tmp)
    n = rec["node"][len(str(raw)):]
    run("sfdisk", "-q", "--part-type", raw, n, part_type)
    assert sfdisk(raw)["partitions"][-1]["type"].lower() == part_type.lower()
    one_problem(verify(raw), f"recovery partition {n}", words)


def test_recovery_partition_attributes_changed(winre_disks, tmp):
    raw, _, rec = winre_copy(winre_disks, "uefi", tmp)
    run("sgdisk", "-A", "4:clear:63", raw)
    assert "RequiredPartition" in sfdisk(raw)["partitions"][-1].get("attrs", "")
    assert "GUID:63" not in sfdisk(raw)["partitions"][-1].get("attrs", "")
    one_problem(verify(raw), "attributes 0x0000000000000001, not 0x8000000000000001")


def edit_uefi_store(raw, tmp, edit, path="/EFI/Microsoft/Boot/BCD"):
    """Change a store on the FAT system partition with the project's store API (mcopy out and back);
    returns regipy's view of it."""
    from wim2vhd.boot.store import BcdStore
    bcd = tmp / "BCD"
    run("mcopy", "-n", "-i", f"{raw}@@1M", f"::{path}", bcd, env=MTOOLS)
    with BcdStore.open(bcd, write=True) as store:
        edit(store)
        store.save(backup=False)
    run("mcopy", "-o", "-i", f"{raw}@@1M", bcd, f"::{path}", env=MTOOLS)
    return regipy_store(bcd)


def default_of(store):
    from wim2vhd.boot import elements as el
    return store.object(store.object(el.BOOTMGR).get(el.E.DEFAULT))


def test_recoverysequence_names_a_missing_object(winre_disks, tmp):
    import uuid
    from wim2vhd.boot.elements import E
    raw, _, _ = winre_copy(winre_disks, "uefi", tmp)
    missing = uuid.UUID("0badc0de-0000-4000-8000-000000000001")
    seen = edit_uefi_store(raw, tmp, lambda s: default_of(s).set(E.RECOVERYSEQUENCE, [missing]))
    assert any(o["elements"].get("14000008", (0, None))[1] == [f"{{{missing}}}"]
               for o in seen.values()), "regipy does not see the new recoverysequence"
    assert f"{{{missing}}}" not in seen
    one_problem(verify(raw), f"recoverysequence {{{missing}}} is not in the store")


def test_recoveryenabled_unset(winre_disks, tmp):
    from wim2vhd.boot.elements import E
    raw, _, _ = winre_copy(winre_disks, "uefi", tmp)
    seen = edit_uefi_store(raw, tmp, lambda s: default_of(s).set(E.RECOVERYENABLED, False))
    assert any(o["elements"].get("16000009", (0, None))[1] == b"\x00" for o in seen.values())
    one_problem(verify(raw), "recoveryenabled")


def test_hybrid_bios_store_recoverysequence_missing(winre_disks, tmp):
    """Only the BIOS store of a hybrid disk is changed: one problem, named for that store."""
    import uuid
    from wim2vhd.boot.elements import E
    raw, _, _ = winre_copy(winre_disks, "hybrid", tmp)
    missing = uuid.UUID("0badc0de-0000-4000-8000-000000000002")
    seen = edit_uefi_store(raw, tmp, lambda s: default_of(s).set(E.RECOVERYSEQUENCE, [missing]), "/Boot/BCD")
    assert any(o["elements"].get("14000008", (0, None))[1] == [f"{{{missing}}}"] for o in seen.values())
    res = json.loads(verify(raw, "--json").stdout)
    assert [c["check"] for c in res["checks"] if c["result"] == "problem"] == ["BIOS WinRE loader"]
    one_problem(verify(raw), f"{{{missing}}} is not in the store")
