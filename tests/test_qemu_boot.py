"""Boot smoke tests: the disks `wim2vhd apply` makes, booted in QEMU.

The fixture image carries probes in place of Microsoft's boot managers
(fixtures/probes): on UEFI (OVMF) the firmware starts \\EFI\\Boot\\bootx64.efi,
a GRUB image that reports the partitions holding \\EFI\\Microsoft\\Boot\\BCD and
\\Windows\\System32\\winload.efi; on BIOS (SeaBIOS) our MBR code and GRUB core
image chain-load \\bootmgr with the partition's boot sector, and the probe
reports that sector's OEM ID and the boot drive.  Both print on COM1, which
tests/qemu.py reads.
"""
import hashlib
import json
import os
import re

import pytest

from fixtures.probes import bios as bios_probe
from fixtures.probes import efi as efi_probe
from tests import qemu
from tests.support import run, sfdisk, to_raw, w2v


ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BASIC_DATA_TYPE = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"

needs_qemu = pytest.mark.skipif(qemu.qemu_missing() is not None, reason=str(qemu.qemu_missing()))
needs_ovmf = pytest.mark.skipif(qemu.ovmf() is None, reason="no OVMF firmware (Debian: ovmf)")


def apply(wim, out, *args):
    w2v("apply", wim, out, "--index", "1", "--size", "512M", "--seed", os.path.basename(out), *args)
    return out


def grub_devices(raw):
    """GRUB's names for the ESP and the Windows partition of the disk's GPT, from sfdisk."""
    parts = sfdisk(raw)["partitions"]
    esp = [n for n, p in enumerate(parts, 1) if p["type"] == ESP_TYPE]
    data = [n for n, p in enumerate(parts, 1) if p["type"] == BASIC_DATA_TYPE]
    assert len(esp) == 1 and len(data) == 1, parts
    return f"hd0,gpt{esp[0]}", f"hd0,gpt{data[0]}"


def lines(text):
    """The serial text's lines, without the terminal escape sequences OVMF and GRUB send."""
    text = re.sub(r"\x1b\[[0-9;=?]*[A-Za-z]", "", text)
    return [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]


def assert_uefi_probe(text, raw):
    esp, windows = grub_devices(raw)
    got = [line for line in lines(text) if line.startswith("W2V-")]
    assert efi_probe.PROBE in got, text
    assert f"{efi_probe.BCD_FOUND} {esp}" in got, text
    assert f"{efi_probe.WINDOWS_FOUND} {windows}" in got, text
    assert not any("MISSING" in line for line in got), text


def assert_bios_probe(text, oem="NTFS    "):
    # The OEM ID is read from the boot sector in memory: NTFS's proves the partition's VBR was loaded.
    # 80 is the first hard disk, the only one the machine has.
    assert f"{bios_probe.PROBE} oem=[{oem}] drive=80" in lines(text), text
    assert bios_probe.END in lines(text), text


# -- the probes themselves (no QEMU) ------------------------------------------------
def test_probes_are_reproducible(tmp_path):
    from fixtures.probes import build_probes
    a, b = build_probes(tmp_path / "a"), build_probes(tmp_path / "b")
    assert set(a) == {"bootmgfw.efi", "bootmgr"}
    for name in a:
        da, db = open(a[name], "rb").read(), open(b[name], "rb").read()
        assert hashlib.sha256(da).digest() == hashlib.sha256(db).digest(), name
    efi = open(a["bootmgfw.efi"], "rb").read()
    pe = int.from_bytes(efi[0x3C:0x40], "little")
    assert efi[:2] == b"MZ" and efi[pe:pe + 4] == b"PE\0\0"
    assert int.from_bytes(efi[pe + 4:pe + 6], "little") == 0x8664  # x86-64
    assert int.from_bytes(efi[pe + 0x5C:pe + 0x5E], "little") == 10  # subsystem: EFI application
    assert len(efi) < 1 << 20
    pcat = open(a["bootmgr"], "rb").read()
    assert len(pcat) < 512 and bios_probe.PROBE.encode() in pcat


# -- UEFI (OVMF) ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def uefi_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("qemu-uefi")


@pytest.fixture(scope="module")
def uefi_vhdx(fixture_wim, uefi_dir):
    return apply(fixture_wim, uefi_dir / "dyn.vhdx", "--type", "dynamic", "--layout", "uefi")


@needs_qemu
@needs_ovmf
def test_uefi_dynamic_vhdx(uefi_vhdx, uefi_dir):
    text = qemu.boot(uefi_vhdx, "uefi", expect=efi_probe.END)
    assert_uefi_probe(text, to_raw(uefi_vhdx, uefi_dir))


@needs_qemu
@needs_ovmf
def test_uefi_fixed_vhd(fixture_wim, uefi_dir):
    disk = apply(fixture_wim, uefi_dir / "fixed.vhd", "--type", "fixed", "--layout", "uefi")
    text = qemu.boot(disk, "uefi", expect=efi_probe.END)
    assert_uefi_probe(text, to_raw(disk, uefi_dir))


@needs_qemu
@needs_ovmf
def test_uefi_4k_sectors(fixture_wim, uefi_dir):
    """A VHDX with 4096-byte logical sectors (GPT, FAT32 and NTFS all in 4K sectors), booted as a 4Kn
    virtio disk.  qemu's vhdx driver reads only 512-byte-sector VHDX files, so QEMU boots our raw
    conversion; vhdiinfo (libvhdi) reads the VHDX itself, and fdisk the table in 4K sectors."""
    disk = apply(fixture_wim, uefi_dir / "4k.vhdx", "--sector-size", "4096", "--layout", "uefi")
    assert "Bytes per sector\t: 4096 bytes" in run("vhdiinfo", disk).stdout
    raw = uefi_dir / "4k.raw"
    w2v("disk", "convert", disk, raw)
    table = run("fdisk", "-b", "4096", "-l", raw).stdout
    assert "Sector size (logical/physical): 4096 bytes" in table and "EFI System" in table, table
    text = qemu.boot(raw, "uefi", expect=efi_probe.END, sector_size=4096)
    got = [line for line in lines(text) if line.startswith("W2V-")]
    assert efi_probe.PROBE in got and f"{efi_probe.BCD_FOUND} hd0,gpt1" in got, text
    assert f"{efi_probe.WINDOWS_FOUND} hd0,gpt3" in got, text


@needs_qemu
@needs_ovmf
def test_uefi_differencing_child(uefi_vhdx, uefi_dir):
    child = uefi_dir / "child.vhdx"
    w2v("disk", "diff", uefi_vhdx, child)
    assert json.loads(w2v("disk", "info", child, "--json").stdout)["type"] == "differencing"
    # qemu cannot open a VHDX differencing disk (nor a VHD one: it reads it as a dynamic disk
    # with no parent, all zeros), so QEMU boots what the child reads as: our flattened raw image.
    raw = uefi_dir / "child.raw"
    w2v("disk", "convert", child, raw)
    text = qemu.boot(raw, "uefi", expect=efi_probe.END)
    assert_uefi_probe(text, raw)


@needs_qemu
@needs_ovmf
def test_uefi_qcow2_booted_as_it_is(fixture_wim, uefi_dir):
    """qemu boots the qcow2 apply writes itself: no conversion (qemu's qcow2 driver reads our file)."""
    disk = apply(fixture_wim, uefi_dir / "dyn.qcow2", "--layout", "uefi")
    text = qemu.boot(disk, "uefi", expect=efi_probe.END)
    assert_uefi_probe(text, to_raw(disk, uefi_dir))


@needs_qemu
@needs_ovmf
def test_uefi_qcow2_child_of_a_vhdx(uefi_vhdx, uefi_dir):
    """A qcow2 child whose backing file is the VHDX: qemu follows the backing chain itself."""
    child = uefi_dir / "child-of-vhdx.qcow2"
    w2v("disk", "diff", uefi_vhdx, child)
    text = qemu.boot(child, "uefi", expect=efi_probe.END)
    assert_uefi_probe(text, to_raw(uefi_vhdx, uefi_dir))


@needs_qemu
@needs_ovmf
def test_uefi_probe_reports_a_missing_store(uefi_vhdx, uefi_dir):
    """The probe does look: with the BCD store deleted from the ESP it says so."""
    raw = uefi_dir / "nobcd.raw"
    run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", uefi_vhdx, raw)
    esp = next(p for p in sfdisk(raw)["partitions"] if p["type"] == ESP_TYPE)
    run("mdel", "-i", f"{raw}@@{esp['start'] * 512}", "::/EFI/Microsoft/Boot/BCD")
    text = qemu.boot(raw, "uefi", expect=efi_probe.END)
    got = lines(text)
    assert "W2V-BCD-MISSING" in got and not any(line.startswith(efi_probe.BCD_FOUND) for line in got), text
    assert f"{efi_probe.WINDOWS_FOUND} {grub_devices(raw)[1]}" in got, text


# -- BIOS (SeaBIOS) -------------------------------------------------------------------
@needs_qemu
@pytest.mark.parametrize("name,kind", [("dyn.vhd", "dynamic"), ("fixed.vhdx", "fixed"), ("dyn.qcow2", "dynamic")])
def test_bios_boot(fixture_wim, tmp_path, name, kind):
    disk = apply(fixture_wim, tmp_path / name, "--type", kind, "--layout", "bios")
    text = qemu.boot(disk, "bios", expect=bios_probe.END)
    assert_bios_probe(text)


# -- with a WinRE partition (--recovery) ---------------------------------------------------------------
@needs_qemu
def test_bios_boot_with_a_recovery_partition(fixture_wim, tmp_path):
    """The WinRE partition (MBR type 0x27 after Windows) leaves BIOS boot as it was: SeaBIOS, our MBR
    code and GRUB still start the Windows partition's \\bootmgr."""
    disk = apply(fixture_wim, tmp_path / "rec.vhd", "--layout", "bios", "--recovery", "32M")
    assert [p["type"] for p in sfdisk(to_raw(disk, tmp_path))["partitions"]] == ["7", "27"]
    assert_bios_probe(qemu.boot(disk, "bios", expect=bios_probe.END))


# -- hybrid (one MBR disk for both firmwares) -----------------------------------------------
@pytest.fixture(scope="module")
def hybrid_disk(fixture_wim, tmp_path_factory):
    d = tmp_path_factory.mktemp("qemu-hybrid")
    disk = apply(fixture_wim, d / "hybrid.vhdx", "--layout", "hybrid")
    return disk, to_raw(disk, d)


@needs_qemu
@needs_ovmf
def test_uefi_boot_with_a_recovery_partition(fixture_wim, tmp_path):
    disk = apply(fixture_wim, tmp_path / "rec.vhdx", "--layout", "uefi", "--recovery", "32M")
    raw = to_raw(disk, tmp_path)
    assert len(sfdisk(raw)["partitions"]) == 4
    assert_uefi_probe(qemu.boot(disk, "uefi", expect=efi_probe.END), raw)


def test_hybrid_on_uefi(hybrid_disk):
    """OVMF finds \\EFI\\Boot\\bootx64.efi on the active FAT32 partition (type 0x0C) of the MBR disk."""
    disk, raw = hybrid_disk
    parts = sfdisk(raw)["partitions"]
    assert [(p["type"], p.get("bootable", False)) for p in parts] == [("c", True), ("7", False)]
    text = qemu.boot(disk, "uefi", expect=efi_probe.END)
    got = [line for line in lines(text) if line.startswith("W2V-")]
    assert efi_probe.PROBE in got, text
    assert f"{efi_probe.BCD_FOUND} hd0,msdos1" in got and f"{efi_probe.WINDOWS_FOUND} hd0,msdos2" in got, text
    assert not any("MISSING" in line for line in got), text


@needs_qemu
def test_hybrid_on_bios(hybrid_disk):
    """SeaBIOS: our MBR code and GRUB core find \\bootmgr on the FAT32 system partition and chain-load it
    with that partition's boot sector, whose OEM ID (read here from the disk at sfdisk's start) the probe
    prints: the FAT32 volume's, not the NTFS one's."""
    disk, raw = hybrid_disk
    start = sfdisk(raw)["partitions"][0]["start"] * 512
    with open(raw, "rb") as f:
        f.seek(start)
        boot = f.read(512)
    assert boot[0x52:0x5A] == b"FAT32   "
    text = qemu.boot(disk, "bios", expect=bios_probe.END)
    assert_bios_probe(text, oem=boot[3:11].decode("ascii"))


@pytest.fixture(scope="module")
def hybrid_recovery_disk(fixture_wim, tmp_path_factory):
    d = tmp_path_factory.mktemp("qemu-hybrid-rec")
    disk = apply(fixture_wim, d / "hybrid-rec.vhdx", "--layout", "hybrid", "--recovery", "32M")
    raw = to_raw(disk, d)
    assert [(p["type"], p.get("bootable", False)) for p in sfdisk(raw)["partitions"]] == [
        ("c", True), ("7", False), ("27", False)]
    return disk, raw


@needs_qemu
@needs_ovmf
def test_hybrid_with_a_recovery_partition_on_uefi(hybrid_recovery_disk):
    """The WinRE partition (0x27, third) leaves the hybrid disk's UEFI boot as it was: OVMF starts the
    FAT32 system partition's fallback loader, which finds the store there and Windows on partition 2."""
    disk, _ = hybrid_recovery_disk
    got = [line for line in lines(qemu.boot(disk, "uefi", expect=efi_probe.END)) if line.startswith("W2V-")]
    assert f"{efi_probe.BCD_FOUND} hd0,msdos1" in got and f"{efi_probe.WINDOWS_FOUND} hd0,msdos2" in got, got
    assert not any("MISSING" in line for line in got), got


@needs_qemu
def test_hybrid_with_a_recovery_partition_on_bios(hybrid_recovery_disk):
    """SeaBIOS, our MBR code and GRUB still chain-load \\bootmgr from the FAT32 system partition."""
    disk, raw = hybrid_recovery_disk
    with open(raw, "rb") as f:
        f.seek(sfdisk(raw)["partitions"][0]["start"] * 512)
        oem = f.read(11)[3:].decode("ascii")
    assert_bios_probe(qemu.boot(disk, "bios", expect=bios_probe.END), oem=oem)
