"""--layout hybrid (windowstogo): one MBR disk that boots on BIOS and on UEFI, as bcdboot /f ALL and
Convert-WindowsImage's WindowsToGo layout make it.

Read back with tools nobody here wrote: sfdisk and fdisk (the table: an active FAT32 partition,
type 0x0C, then NTFS), fsck.fat -n and mtools' mdir/mattrib/mcopy (the system partition's two file
sets), regipy (both stores), ntfsls (nothing of the BIOS set is left on the Windows partition).
The QEMU boots are in tests/test_qemu_boot.py.
"""
import json
import os

import pytest

from wim2vhd import partition
from wim2vhd.boot.devices import Boot, Locate, MbrPartition, decode_device
from wim2vhd.units import MiB

from tests.support import extract_partition, leftovers, regipy_store, run, sfdisk, to_raw, w2v, wim_with_arch

MTOOLS = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
BOOTMGR = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"
LOADER = 0x10200003
# element ids (BCD schema): device, path, osdevice, default object
DEVICE, PATH, OSDEVICE, DEFAULT = "11000001", "12000002", "21000001", "23000003"


def raw_bytes(v):
    return bytes.fromhex(v) if isinstance(v, str) else bytes(v)


@pytest.fixture(scope="module")
def made(fixture_wim, tmp_path_factory):
    """{bcd-devices: (summary, raw image, system partition image)} for a hybrid disk of each kind."""
    d = tmp_path_factory.mktemp("hybrid")
    out = {}
    for devices, layout in (("locate", "hybrid"), ("partition", "windowstogo")):
        disk = d / f"{devices}.vhdx"
        res = json.loads(w2v("apply", fixture_wim, disk, "--index", "1", "--size", "1G", "--layout", layout,
                             "--bcd-devices", devices, "--seed", devices, "--json").stdout)
        raw = to_raw(disk, d)
        sysp = extract_partition(raw, sfdisk(raw)["partitions"][0], d, f"{devices}-system.img")
        out[devices] = (res, raw, sysp)
    return out


def mcopy(img, path, out):
    run("mcopy", "-n", "-i", str(img), f"::{path}", out, env=MTOOLS)
    return out


# -- the plan (pure) ---------------------------------------------------------------------------------

def test_plan():
    plan = partition.plan_layout(1 << 30, 512, "hybrid")
    assert plan.scheme == "mbr" and plan.layout == "hybrid"
    sysp, win = plan.partitions
    assert (sysp.start, sysp.size, sysp.fs, sysp.mbr_type, sysp.active) == (MiB, partition.ESP_SIZE, "fat32",
                                                                           0x0C, True)
    assert (win.start, win.end, win.fs, win.mbr_type, win.active) == (sysp.end, 1 << 30, "ntfs", 0x07, False)
    assert plan.role("esp") is sysp and plan.role("windows") is win
    # the other name, any case
    assert partition.plan_layout(1 << 30, 512, "WindowsToGo").layout == "hybrid"
    assert partition.layout_name("HYBRID") == "hybrid" and partition.layout_name("gpt") is None
    # the smallest disk: 1 MiB, the system partition, the smallest NTFS
    need = partition.min_disk_size("hybrid")
    assert need == MiB + partition.ESP_SIZE + partition.MIN_NTFS_SIZE
    partition.plan_layout(need, 512, "hybrid")
    with pytest.raises(Exception, match="too small for the hybrid layout"):
        partition.plan_layout(need - MiB, 512, "hybrid")
    # --recovery: WinRE (type 0x27, not active) at the end, after Windows, as on bios
    sysp, win, rec = partition.plan_layout(1 << 30, 512, "hybrid", recovery_size=300 * MiB).partitions
    assert win.end == rec.start and (rec.size, rec.end, rec.mbr_type, rec.active, rec.role) == (
        300 * MiB, 1 << 30, 0x27, False, "recovery")
    need = partition.min_disk_size("hybrid", recovery_size=300 * MiB)
    partition.plan_layout(need, 512, "hybrid", recovery_size=300 * MiB)
    with pytest.raises(Exception, match="too small for the hybrid layout"):
        partition.plan_layout(need - MiB, 512, "hybrid", recovery_size=300 * MiB)


# -- the table -----------------------------------------------------------------------------------------

def test_table_read_by_sfdisk_and_fdisk(made):
    res, raw, _ = made["locate"]
    t = sfdisk(raw)
    assert t["label"] == "dos"
    sysp, win = t["partitions"]
    assert (sysp["type"], sysp.get("bootable"), sysp["start"], sysp["size"]) == ("c", True, 2048, 260 * 2048)
    assert (win["type"], win.get("bootable", False), win["start"]) == ("7", False, 2048 + 260 * 2048)
    assert (win["start"] + win["size"]) * 512 == 1 << 30
    assert int(t["id"], 16) == int(res["layout"]["disk_signature"], 16)
    listing = run("fdisk", "-l", raw).stdout
    assert "W95 FAT32 (LBA)" in listing and "HPFS/NTFS/exFAT" in listing, listing
    assert res["layout"]["layout"] == "hybrid" and res["boot"]["firmware"] == "uefi+bios"
    assert res["boot"]["bios_boot_code"] == "grub-i386-pc"


# -- the system partition's files --------------------------------------------------------------------

def test_both_file_sets_on_the_fat32_system_partition(made, tmp_path):
    _, raw, sysp = made["locate"]
    fsck = run("fsck.fat", "-n", sysp)
    assert "files" in fsck.stdout, fsck.stdout
    listing = run("mdir", "-/", "-b", "-a", "-i", sysp, "::/", env=MTOOLS).stdout.lower().split()
    for f in ("::/efi/microsoft/boot/bootmgfw.efi", "::/efi/microsoft/boot/bcd", "::/efi/boot/bootx64.efi",
              "::/efi/microsoft/boot/fonts/", "::/bootmgr", "::/bootnxt", "::/boot/bcd", "::/boot/memtest.exe",
              "::/boot/fonts/", "::/boot/resources/", "::/boot/en-us/"):
        assert f in listing, (f, listing)
    # bcdboot's attributes on the BIOS files: bootmgr read-only, hidden, system; \Boot hidden, system
    attrs = run("mattrib", "-i", sysp, "::/bootmgr", "::/BOOTNXT", "::/Boot", env=MTOOLS).stdout.splitlines()
    got = {line.split("::/")[1]: set(line.split("::/")[0].replace(" ", "")) for line in attrs}
    assert got == {"bootmgr": set("ASHR"), "BOOTNXT": set("ASH"), "Boot": set("SH")}, attrs
    # the fallback is bootmgfw.efi; \bootmgr is the image's PCAT\bootmgr
    a, b = mcopy(sysp, "/EFI/Boot/bootx64.efi", tmp_path / "a"), mcopy(sysp, "/EFI/Microsoft/Boot/bootmgfw.efi",
                                                                          tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    from fixtures.probes.bios import bios_probe
    assert mcopy(sysp, "/bootmgr", tmp_path / "bm").read_bytes() == bios_probe()
    # the FAT's boot sector tells bootmgr where its volume starts (hidden sectors = the partition's LBA)
    with open(sysp, "rb") as f:
        boot = f.read(512)
    assert int.from_bytes(boot[0x1C:0x20], "little") == 2048 and boot[0x52:0x5A] == b"FAT32   "
    # the Windows partition holds no boot files of its own (bcdboot puts them on the system partition)
    win = extract_partition(raw, sfdisk(raw)["partitions"][1], tmp_path, "win.img")
    root = run("ntfsls", "-a", win).stdout.split()
    assert "Windows" in root and "bootmgr" not in root and "Boot" not in root, root


def store_of(sysp, path, out):
    return regipy_store(mcopy(sysp, path, out))


def default_loader(store):
    default = store[BOOTMGR]["elements"][DEFAULT][1].lower()
    assert store[default]["type"] == LOADER
    return store[default]["elements"]


def test_two_stores_each_for_its_firmware(made, tmp_path):
    _, _, sysp = made["locate"]
    uefi = store_of(sysp, "/EFI/Microsoft/Boot/BCD", tmp_path / "u")
    bios = store_of(sysp, "/Boot/BCD", tmp_path / "b")
    assert uefi[BOOTMGR]["elements"][PATH][1] == "\\EFI\\Microsoft\\Boot\\bootmgfw.efi"
    assert PATH not in bios[BOOTMGR]["elements"]  # bootmgr is loaded by the boot code, not by path
    assert default_loader(uefi)[PATH][1].lower() == "\\windows\\system32\\winload.efi"
    assert default_loader(bios)[PATH][1].lower() == "\\windows\\system32\\winload.exe"
    for store in (uefi, bios):
        assert decode_device(raw_bytes(store[BOOTMGR]["elements"][DEVICE][1])) == Boot()
        els = default_loader(store)
        assert decode_device(raw_bytes(els[DEVICE][1])) == Locate.by_element(0x12000002)
        assert decode_device(raw_bytes(els[OSDEVICE][1])) == Locate.by_element(0x22000002)


def test_partition_devices_are_mbr_partitions(made, tmp_path):
    """--bcd-devices partition: {bootmgr} on the system partition, the loader on Windows, both by the MBR
    disk signature and byte offset, as sfdisk reads them."""
    _, raw, sysp = made["partition"]
    t = sfdisk(raw)
    sig = int(t["id"], 16)
    sys_dev = MbrPartition(sig, t["partitions"][0]["start"] * 512)
    win_dev = MbrPartition(sig, t["partitions"][1]["start"] * 512)
    for path in ("/EFI/Microsoft/Boot/BCD", "/Boot/BCD"):
        store = store_of(sysp, path, tmp_path / path.replace("/", "_"))
        assert decode_device(raw_bytes(store[BOOTMGR]["elements"][DEVICE][1])) == sys_dev, path
        els = default_loader(store)
        assert decode_device(raw_bytes(els[DEVICE][1])) == win_dev, path
        assert decode_device(raw_bytes(els[OSDEVICE][1])) == win_dev, path
    assert f"partition=mbr:0x{sig:08x}:0x{sys_dev.offset:x}" in w2v("bcd", "show", tmp_path / "_Boot_BCD").stdout


# -- verify ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("devices", ["locate", "partition"])
def test_verify_passes_both_sides(made, devices):
    res = json.loads(w2v("verify", made[devices][1], "--json").stdout)
    assert res["sound"] and res["layout"] == "hybrid" and res["scheme"] == "mbr", res["problems"]
    results = {c["check"]: c["result"] for c in res["checks"]}
    for c in ("partition 1 FAT", "MBR boot code", "boot manager", "UEFI BCD store", "UEFI {bootmgr} path",
              "UEFI {default} path", "UEFI {default} systemroot", "BIOS BCD store", "BIOS {default} path",
              "BIOS {default} systemroot", "fallback loader"):
        assert results[c] == "ok", (c, results)


@pytest.mark.parametrize("path,words", [("/Boot/BCD", ["\\Boot\\BCD", "missing"]),
                                        ("/EFI/Microsoft/Boot/BCD", ["\\EFI\\Microsoft\\Boot\\BCD", "missing"]),
                                        ("/bootmgr", ["\\bootmgr", "missing"])])
def test_verify_names_a_missing_half(made, tmp_path, path, words):
    """Each half is checked: one file of either set gone (mdel; mdir confirms) is the one problem."""
    raw = tmp_path / "d.raw"
    run("cp", "--sparse=always", made["locate"][1], raw)
    img = f"{raw}@@1M"
    run("mattrib", "-i", img, "-r", f"::{path}", env=MTOOLS)
    run("mdel", "-i", img, f"::{path}", env=MTOOLS)
    assert f"::{path}".lower() not in run("mdir", "-/", "-b", "-a", "-i", img, "::/", env=MTOOLS).stdout.lower()
    p = w2v("verify", raw, check=False)
    assert p.returncode == 3 and len(p.stdout.splitlines()) == 1, p.stdout
    for w in words:
        assert w.lower() in p.stdout.lower(), p.stdout


# -- options -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,words", [
    (["--sector-size", "4096"], ["512-byte sectors", "hybrid"]),
    (["--mbr"], ["--mbr", "hybrid"]),
])
def test_refused_combinations(fixture_wim, tmp_path, extra, words):
    out = tmp_path / "h.vhdx"
    p = w2v("apply", fixture_wim, out, "--index", "1", "--layout", "hybrid", *extra, check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in p.stderr, p.stderr
    assert not out.exists() and not leftovers(tmp_path)


def test_unknown_layout_lists_the_layouts(fixture_wim, tmp_path):
    p = w2v("apply", fixture_wim, tmp_path / "h.vhdx", "--index", "1", "--layout", "bogus", check=False)
    assert p.returncode == 2, p.stderr
    for w in ("uefi", "bios", "hybrid", "native", "windowstogo", "'bogus'"):
        assert w in p.stderr, p.stderr


def test_hybrid_refuses_arm64(fixture_wim, tmp_path):
    wim = wim_with_arch(fixture_wim, tmp_path, 12)
    p = w2v("apply", wim, tmp_path / "h.vhdx", "--index", "1", "--size", "2G", "--layout", "windowstogo",
            check=False)
    assert p.returncode == 2 and "ARM64" in p.stderr and "--layout uefi" in p.stderr, p.stderr
    assert not leftovers(tmp_path)


def test_user_boot_code_on_hybrid(fixture_wim, tmp_path):
    code = tmp_path / "mbr.bin"
    code.write_bytes(b"\xeb\xfe" + bytes(438))  # jmp $ : any 440 bytes
    out = tmp_path / "h.img"
    w2v("apply", fixture_wim, out, "--index", "1", "--size", "1G", "--layout", "hybrid",
        "--bios-boot-code", code)
    with open(out, "rb") as f:
        assert f.read(440) == code.read_bytes()


def test_reproducible(fixture_wim, tmp_path):
    """--seed: the same image, options and seed give the same hybrid disk, byte for byte (sha256 by
    sha256sum), both stores and the FAT32 volume id included."""
    outs = []
    for name in ("a.vhdx", "b.vhdx"):
        out = tmp_path / name
        w2v("apply", fixture_wim, out, "--index", "1", "--size", "1G", "--layout", "hybrid", "--seed", "same")
        outs.append(run("sha256sum", out).stdout.split()[0])
    assert outs[0] == outs[1]
