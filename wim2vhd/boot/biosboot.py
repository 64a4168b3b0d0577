"""BIOS boot code without a Microsoft boot sector: GRUB's i386-pc images.

What a BIOS does with the disk, and what we put there:

  sector 0        GRUB's boot.img (440 bytes of code; the disk signature,
                  partition table and 0x55AA stay ours).  It loads one sector,
                  the first of core.img, from the LBA patched in at 0x5C.
  sectors 1..n    core.img, made by grub-mkimage -O i386-pc: diskboot.img (one
                  sector, which loads the rest by its block list), then the
                  LZMA-packed kernel with the modules below and an embedded
                  config.  The layouts leave 1 MiB before the first partition,
                  so the "MBR gap" holds it with room to spare.
  the config      finds ``\\bootmgr`` on an NTFS partition (the bios layout) or a
                  FAT32 one (the hybrid layout's system partition) and starts it
                  with GRUB's ``ntldr``, which loads the file at 2000:0000, the
                  partition's boot sector at 0000:7C00 and jumps with DL = the
                  BIOS drive: the hand-off bootmgr expects from a Windows VBR.
                  The layouts put \\bootmgr on the active partition only, so
                  the search by file finds the partition a Windows MBR would
                  start.

The images come from Debian's grub-pc-bin (/usr/lib/grub/i386-pc); nothing of
GRUB is carried here.  The patch points are GRUB's boot-sector ABI
(include/grub/i386/pc/boot.h, grub-core/boot/i386/pc/diskboot.S): the same
bytes grub-install's setup step writes.

``mbr_code`` replaces all this with the user's own code: bytes 0..439 of the MBR
and nothing else (a Windows MBR, say, for a disk whose VBR they provide).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import lru_cache

from wim2vhd.errors import EnvironmentFault, InternalError, NoSpace, UsageError
from wim2vhd.partition import MBR, MBR_BOOT_CODE_SIZE, MBR_SIGNATURE, read_table
from wim2vhd.ondisk import Record

GRUB_PC_DIR = "/usr/lib/grub/i386-pc"
SECTOR = 512  # GRUB's i386-pc boot code counts in 512-byte sectors, whatever the disk says
CORE_LBA = 1  # core.img starts right after the MBR

# grub-mkimage includes these (and what they depend on) in core.img: ntfs for the bios layout's
# Windows partition, fat for the hybrid layout's FAT32 system partition.
CORE_MODULES = ("biosdisk", "part_msdos", "ntfs", "fat", "search", "search_fs_file", "ntldr", "boot")

# Run by GRUB's kernel before any module is loaded from disk: its rescue parser,
# so plain commands, no `if`.  --no-floppy: never touch fd0 while searching.
CORE_CONFIG = """\
search --no-floppy --file --set=root /bootmgr
ntldr /bootmgr
boot
"""

# ---- GRUB's boot.img patch points (boot.h) ------------------------------------------------------
BOOT_IMG = Record("GRUB boot.img", "<", [
    ("jump", 0, "2s"),
    ("bpb", 3, "87s"),                # 0x03..0x5A: where a BPB would be; code jumps past it
    ("kernel_sector", 0x5C, "Q"),     # LBA of core.img's first sector
    ("boot_drive", 0x64, "B"),        # 0xFF: use the drive number the BIOS passed in DL
    ("drive_check", 0x66, "2s"),      # a jump over the "DL must be a hard disk" fix-up
], size=SECTOR)
BOOT_DRIVE_FROM_BIOS = 0xFF
# grub-setup turns the jump at 0x66 into two NOPs on hard disks, so that a BIOS that
# passes DL=0x00/0x01 when booting the first hard disk is corrected to 0x80
# (seen on old BIOSes; SeaBIOS passes 0x80).
NOP_NOP = b"\x90\x90"

# ---- diskboot.img's block list (diskboot.S): the last 12 bytes of core.img's first sector ---
BLOCKLIST = Record("GRUB diskboot block list", "<", [
    ("start", 0, "Q"),       # first LBA of the rest of core.img
    ("len", 8, "H"),         # sectors to load
    ("segment", 10, "H"),    # where: 0x820, right after diskboot at 0x8000
], size=12)
BLOCKLIST_OFFSET = SECTOR - BLOCKLIST.size
CORE_LOAD_SEGMENT = 0x820


# ---- pure functions ------------------------------------------------------------------------------

def boot_sector(boot_img: bytes, mbr: bytes, core_lba: int = CORE_LBA) -> bytes:
    """Sector 0: boot.img's code, patched, with ``mbr``'s signature and partition table kept."""
    if len(boot_img) != SECTOR:
        raise EnvironmentFault(f"GRUB's boot.img is {len(boot_img)} bytes, not 512: a broken grub-pc-bin?")
    if len(mbr) < SECTOR:
        raise InternalError(f"boot_sector: the MBR given is {len(mbr)} bytes, not 512")
    out = bytearray(boot_img[:MBR_BOOT_CODE_SIZE]) + bytearray(mbr[MBR_BOOT_CODE_SIZE:SECTOR])
    BOOT_IMG.pack_into(out, 0, kernel_sector=core_lba, boot_drive=BOOT_DRIVE_FROM_BIOS, drive_check=NOP_NOP)
    return bytes(out)


def core_with_blocklist(core: bytes, core_lba: int = CORE_LBA) -> bytes:
    """core.img padded to whole sectors, with diskboot's block list pointing at where it lies."""
    nsec = -(-len(core) // SECTOR)
    if nsec < 2:
        raise EnvironmentFault(f"grub-mkimage made a core image of {len(core)} bytes, shorter than two sectors: "
                               "not a GRUB i386-pc core image (a broken grub-pc-bin?)")
    out = bytearray(core) + bytes(nsec * SECTOR - len(core))
    BLOCKLIST.pack_into(out, BLOCKLIST_OFFSET, start=core_lba + 1, len=nsec - 1, segment=CORE_LOAD_SEGMENT)
    return bytes(out)


def check_code_size(n: int) -> None:
    """The user's MBR code: up to 440 bytes, or a whole 512-byte MBR (of which bytes 0..439 are taken)."""
    if not (1 <= n <= MBR_BOOT_CODE_SIZE or n == SECTOR):
        raise UsageError(f"--bios-boot-code takes up to {MBR_BOOT_CODE_SIZE} bytes of MBR code "
                         f"(or a whole 512-byte MBR), not {n} bytes")


def mbr_with_code(code: bytes, mbr: bytes) -> bytes:
    """Sector 0 with the user's boot code: up to 440 bytes, or bytes 0..439 of a whole 512-byte MBR."""
    check_code_size(len(code))
    code = code[:MBR_BOOT_CODE_SIZE]
    return code + bytes(MBR_BOOT_CODE_SIZE - len(code)) + bytes(mbr[MBR_BOOT_CODE_SIZE:SECTOR])


# ---- GRUB images ---------------------------------------------------------------------------------

def _grub_file(name: str, grub_dir: str) -> str:
    path = os.path.join(grub_dir, name)
    if not os.path.isfile(path):
        raise EnvironmentFault(f"GRUB's {path} is missing: install Debian's grub-pc-bin, "
                                 "or give your own MBR code with --bios-boot-code")
    return path


@lru_cache(maxsize=4)
def core_image(grub_dir: str = GRUB_PC_DIR) -> bytes:
    """core.img from grub-mkimage: the same bytes for the same GRUB, so builds stay reproducible."""
    _grub_file("diskboot.img", grub_dir)
    exe = shutil.which("grub-mkimage")
    if exe is None:
        raise EnvironmentFault("grub-mkimage is missing: install Debian's grub-common and grub-pc-bin")
    with tempfile.TemporaryDirectory(prefix="w2v-grub-") as d:
        cfg = os.path.join(d, "embedded.cfg")
        out = os.path.join(d, "core.img")
        with open(cfg, "w") as f:
            f.write(CORE_CONFIG)
        # -p: where GRUB would look for modules if the config fails; it then stops at
        # its rescue prompt, which is the most useful thing it can do there.
        cmd = [exe, "-O", "i386-pc", "-d", grub_dir, "-c", cfg, "-p", "(hd0,msdos1)/boot/grub",
               "-o", out, *CORE_MODULES]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            msg = (p.stderr.strip().splitlines() or ["failed"])[-1]
            raise EnvironmentFault(f"grub-mkimage could not build the BIOS core image: {msg}")
        with open(out, "rb") as f:
            return f.read()


def boot_image(grub_dir: str = GRUB_PC_DIR) -> bytes:
    with open(_grub_file("boot.img", grub_dir), "rb") as f:
        data = f.read()
    if len(data) != SECTOR:
        raise EnvironmentFault(f"{grub_dir}/boot.img is {len(data)} bytes, not 512: a broken grub-pc-bin?")
    return data


# ---- install -------------------------------------------------------------------------------------

def install_bios_boot(disk, *, sector_size: int = 512, mbr_code: bytes | None = None,
                      grub_dir: str = GRUB_PC_DIR) -> dict:
    """Make an MBR-partitioned disk start the \\bootmgr of its NTFS or FAT32 partition on BIOS firmware.

    ``disk`` is an open, writable virtual disk whose partition table is written.  Returns what
    was installed, for the summary."""
    if sector_size != SECTOR:
        # GRUB's i386-pc boot sector and block lists count 512-byte sectors; Windows does not
        # boot from 4K-native disks on BIOS either.
        raise UsageError("BIOS boot needs 512-byte sectors: use --layout uefi for a 4096-byte-sector disk")
    mbr = disk.read(0, SECTOR)
    if MBR.parse(mbr)["boot_signature"] != MBR_SIGNATURE:
        raise InternalError("install_bios_boot: the disk has no MBR partition table yet (write it first)")
    if mbr_code is not None:
        disk.write(0, mbr_with_code(mbr_code, mbr))
        return {"boot_code": "user", "bytes": min(len(mbr_code), MBR_BOOT_CODE_SIZE)}

    core = core_with_blocklist(core_image(grub_dir), CORE_LBA)
    table = read_table(disk, sector_size=sector_size)
    first = min((p.start for p in table.partitions), default=disk.size) if table else disk.size
    gap = first - CORE_LBA * SECTOR
    if len(core) > gap:
        raise NoSpace(f"GRUB's core image ({len(core)} bytes) does not fit in the {gap} bytes "
                      "before the first partition; the bios and hybrid layouts leave 1 MiB")
    disk.write(CORE_LBA * SECTOR, core)
    disk.write(0, boot_sector(boot_image(grub_dir), mbr, CORE_LBA))
    return {"boot_code": "grub-i386-pc", "core_bytes": len(core)}
