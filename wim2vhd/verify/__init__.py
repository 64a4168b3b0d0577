"""`wim2vhd verify`: is this disk bootable, as far as can be known without Windows?

Works on raw images, VHD, VHDX and differencing children (through wim2vhd.disk), and on every
layout apply makes (wim2vhd.partition.plan_layout), told apart by what the disk holds:

* uefi:   GPT with an EFI system partition; the store is \\EFI\\Microsoft\\Boot\\BCD on the ESP;
* bios:   MBR with an active partition; the store is \\Boot\\BCD on it, \\bootmgr at its root;
* hybrid: MBR with an active FAT32 partition that holds \\EFI (bcdboot /f ALL): both of the above,
  the UEFI store and the BIOS store and \\bootmgr all on that partition, each store checked for
  its own firmware (check names start "UEFI " and "BIOS ");
* native: anything else (GPT without an ESP, MBR with nothing active).  A host's store starts
  such a disk (`wim2vhd bcd add-vhd`), so there is no store on it to check, only the loaders.

The checks, in order: the partition table (GPT: both headers and entry arrays with their
CRCs; MBR: signature, entries inside the disk, no overlaps); every file system (NTFS: boot
sector, that libntfs-3g opens it, the $Volume dirty flag; FAT: `fsck.fat -n` on an exported
copy); the Windows partition and its SYSTEM and SOFTWARE hives; the store, {bootmgr}, its
default loader, and for each of their devices the partition of this disk it resolves to
(partition devices by GPT GUIDs or MBR signature and offset, `boot` as the system partition,
locate devices by searching the partitions for the path), and that every file they name is
there; the removable-media fallback loader \\EFI\\Boot\\boot*.efi for the image's architecture
(from the PE machine field of its loader); WinRE, when the disk has it (wim2vhd.verify.winre):
the recovery partition's type, the store's WinRE loader, its RAM disk and boot.sdi, recoveryenabled,
and ReAgent.xml (summary "winre": "present" or "absent").

A check that depends on one that failed is skipped, not failed again: each problem is reported
once, where it starts.  Entries a default boot does not use (other menu entries, tools, the
resume object) give warnings, which do not make a disk unsound.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

from wim2vhd import partition
from wim2vhd.errors import CorruptInput, Wim2VhdError
from wim2vhd.boot.arch import FALLBACK_LOADER, PE_HEAD, PE_MACHINE, pe_machine
from wim2vhd.fs.ntfs import NTFS_BOOT
from wim2vhd.verify.fs import (VOLUME_IS_DIRTY, FatView, NtfsView, hive_state, ntfs_boot_problem,
                               ntfs_volume_flags)
from wim2vhd.verify.result import OK, PROBLEM, SKIPPED, WARNING, Check, pname
from wim2vhd.verify.winre import WinreState, check_store_winre, check_winre

UEFI_STORE = "\\EFI\\Microsoft\\Boot\\BCD"
BIOS_STORE = "\\Boot\\BCD"
BIOS_BOOTMGR = "\\bootmgr"
FALLBACK_DIR = "\\EFI\\Boot"
EFI_DIR = "\\EFI"
STORE = {"uefi": UEFI_STORE, "bios": BIOS_STORE}
LAYOUT_FIRMWARES = {"uefi": ("uefi",), "bios": ("bios",), "hybrid": ("uefi", "bios")}
WINDOWS = "\\Windows"
HIVES = ("\\Windows\\System32\\config\\SYSTEM", "\\Windows\\System32\\config\\SOFTWARE")
KERNEL = "\\Windows\\System32\\ntoskrnl.exe"
# Partition types that hold NTFS in the layouts apply makes: a damaged one is reported as such.
NTFS_GPT_TYPES = (partition.TYPE_BASIC_DATA, partition.TYPE_WINRE)
NTFS_MBR_TYPES = (partition.MBR_TYPE_NTFS, partition.MBR_TYPE_WINRE)
MBR_BOOT_CODE = partition.MBR_BOOT_CODE_SIZE


class Verifier:
    def __init__(self, disk, tmp_dir: str):
        self.disk, self.tmp = disk, tmp_dir
        self.checks: list[Check] = []
        self.table: partition.DiskLayout | None = None
        self.layout: str | None = None
        self.views: dict[int, NtfsView | FatView] = {}
        self.unreadable: dict[int, str] = {}     # partitions whose file system cannot be read
        self.windows: NtfsView | None = None
        self.system: partition.Partition | None = None
        self.architecture: str | None = None
        self.machine: int | None = None
        self.firmware: str | None = None         # the store being checked is for uefi or bios
        self.prefix = ""                          # hybrid: "UEFI " or "BIOS " before a store's checks
        self.winre = WinreState()

    # -- results
    def add(self, name: str, result: str, detail: str = "") -> None:
        self.checks.append(Check(self.prefix + name, result, detail))

    def close(self) -> None:
        for v in self.views.values():
            v.close()

    # -- the run
    def run(self) -> None:
        if not self._check_table():
            self.add("file systems", SKIPPED, "no partition table to find them by")
            return
        self._step("file systems", self._open_volumes)
        self._find_hybrid()
        self._step("Windows partition", self._find_windows)
        if self.windows is not None:
            self._step("hives", self._check_hives)
            self._step("architecture", self._find_architecture)
        if self.layout == "native":
            self._step("BCD store", self._check_native)
        if self.layout in ("bios", "hybrid"):
            self._step("boot manager", self._check_bios_boot)
        for firmware in LAYOUT_FIRMWARES.get(self.layout, ()):
            self.firmware = firmware
            self.prefix = f"{firmware.upper()} " if self.layout == "hybrid" else ""
            try:
                self._step("BCD store", self._check_store)
            finally:
                self.prefix = ""
        if self.layout in ("uefi", "hybrid"):
            self._step("fallback loader", self._check_fallback)
        if self.layout in LAYOUT_FIRMWARES:
            self._step("WinRE", lambda: check_winre(self))

    def _step(self, name: str, fn) -> None:
        # A file system that reads back damaged half-way (libntfs-3g or mtools refusing) is a
        # problem of this step; the other steps still run.
        try:
            fn()
        except Wim2VhdError as e:
            self.add(name, PROBLEM, e.message)

    # -- the partition table
    def _check_table(self) -> bool:
        try:
            t = partition.read_table(self.disk)
        except CorruptInput as e:
            self.add("partition table", PROBLEM, f"the partition table is damaged: {e.message}")
            return False
        if t is None:
            self.add("partition table", PROBLEM, "there is no partition table (no MBR signature 0x55AA in sector 0)")
            return False
        self.table = t
        bad = list(t.warnings)
        spans = sorted((p.start, p.end, p.number) for p in t.partitions)
        for (s1, e1, n1), (s2, _e2, n2) in zip(spans, spans[1:]):
            if s2 < e1:
                bad.append(f"partitions {n1} and {n2} overlap")
        if t.scheme == "gpt":
            # The usable area of a GPT with the standard 128 entries of 128 bytes, the only kind apply writes.
            head, tail = partition.gpt_reserved_lbas(t.sector_size)
            lo, hi = head * t.sector_size, (t.disk_size // t.sector_size - tail) * t.sector_size
            for p in t.partitions:
                if p.end > t.disk_size:
                    bad.append(f"partition {p.number} ends past the end of the disk")
                elif p.start < lo or p.end > hi:
                    bad.append(f"partition {p.number} overlaps the GPT's own headers or entries")
        if not t.partitions:
            bad.append("the partition table has no partitions")
        for b in bad:
            self.add("partition table", PROBLEM, b)
        if not bad:
            n = len(t.partitions)
            self.add("partition table", OK, f"{t.scheme.upper()}, {n} partition{'s' if n != 1 else ''}"
                     + (", both copies intact" if t.scheme == "gpt" else ""))
        if not t.partitions:
            return False
        if t.scheme == "gpt" and t.role("esp") is not None:
            self.layout, self.system = "uefi", t.role("esp")
        elif t.scheme == "mbr" and any(p.active for p in t.partitions):
            self.layout, self.system = "bios", next(p for p in t.partitions if p.active)
        else:
            self.layout = "native"
        return True

    # -- file systems
    def _expects_ntfs(self, p: partition.Partition) -> bool:
        return p.type_guid in NTFS_GPT_TYPES if p.type_guid is not None else p.mbr_type in NTFS_MBR_TYPES

    def _open_volumes(self) -> None:
        from wim2vhd.fs import read_fat32_boot
        for p in self.table.partitions:
            if p.end > self.disk.size or p.size < 512:
                continue
            head = self.disk.read(p.start, 512)
            if head[3:11] == b"NTFS    " or self._expects_ntfs(p):
                self._open_ntfs(p, head)
            elif p.role == "esp" or read_fat32_boot(self.disk, p.start) is not None:
                self._open_fat(p)

    def _open_ntfs(self, p: partition.Partition, head: bytes) -> None:
        name = f"{pname(p)} NTFS"
        why = ntfs_boot_problem(head, p.size, self.disk.sector_size)
        if why is None and self.layout == "bios" and p is self.system:
            hidden = NTFS_BOOT.parse(head)["hidden_sectors"]
            if hidden != p.start // self.disk.sector_size:
                why = (f"the NTFS boot sector's hidden-sector count is {hidden}, not the partition's start "
                       f"{p.start // self.disk.sector_size}: BIOS boot code cannot find the volume")
        if why is not None:
            self.unreadable[p.number] = why
            self.add(name, PROBLEM, f"{pname(p)}: {why}")
            return
        view = NtfsView(self.disk, p)
        if view.error:
            self.unreadable[p.number] = view.error
            self.add(name, PROBLEM, f"{pname(p)}: the NTFS volume cannot be opened: {view.error}")
            return
        self.views[p.number] = view
        try:
            flags = ntfs_volume_flags(lambda off, n: self.disk.read(p.start + off, n), p.size)
        except CorruptInput as e:
            self.add(name, PROBLEM, f"{pname(p)}: {e.message}")
            return
        if flags & VOLUME_IS_DIRTY:
            self.add(name, PROBLEM, f"{pname(p)}: the NTFS volume is dirty (marked for chkdsk): it was not "
                                    "closed cleanly")
        else:
            self.add(name, OK, "boot sector sound, opens, not dirty")

    def _open_fat(self, p: partition.Partition) -> None:
        from wim2vhd.fs import read_fat32_boot
        name = f"{pname(p)} FAT"
        bs = read_fat32_boot(self.disk, p.start)
        if bs is None:
            self.unreadable[p.number] = "no FAT32 boot sector"
            what = " (the ESP)" if p.role == "esp" else ""
            self.add(name, PROBLEM, f"{pname(p)}{what} holds no FAT32 file system (no FAT32 boot sector)")
            return
        if self.layout == "bios" and p is self.system and bs["hidden_sectors"] != p.start // self.disk.sector_size:
            # The active partition's boot sector is handed to bootmgr, which finds its volume by it.
            self.add(name, PROBLEM, f"{pname(p)}: the FAT32 boot sector's hidden-sector count is "
                                    f"{bs['hidden_sectors']}, not the partition's start "
                                    f"{p.start // self.disk.sector_size}: BIOS boot code cannot find the volume")
        view = FatView(self.disk, p, self.tmp)
        why = view.fsck()
        if why is not None:
            # What is on a damaged FAT is not looked at: its problems start here.
            self.unreadable[p.number] = "its FAT is damaged"
            self.add(name, PROBLEM, f"{pname(p)}: fsck.fat -n finds the FAT damaged: {why}")
        else:
            self.views[p.number] = view
            self.add(name, OK, "fsck.fat -n finds it clean")

    def _find_hybrid(self) -> None:
        """A bios-looking disk whose active partition is FAT32 with \\EFI on it is hybrid."""
        view = self.views.get(self.system.number) if self.layout == "bios" else None
        if view is not None and view.kind == "fat" and view.is_dir(EFI_DIR):
            self.layout = "hybrid"

    def _find_windows(self) -> None:
        for v in self.views.values():
            if v.kind == "ntfs" and v.is_dir(WINDOWS):
                self.windows = v
                self.add("Windows partition", OK, f"{pname(v.part)} holds \\Windows")
                return
        if self.unreadable:
            self.add("Windows partition", SKIPPED, "a partition that may hold it cannot be read")
        else:
            self.add("Windows partition", PROBLEM, "no partition of this disk holds \\Windows")

    def _check_hives(self) -> None:
        for h in HIVES:
            name = f"hive {h}"
            if not self.windows.exists(h):
                self.add(name, PROBLEM, f"{h} is missing from {pname(self.windows.part)}")
                continue
            why = hive_state(self.windows.read(h, 4096))
            self.add(name, PROBLEM if why else OK, f"{h}: {why}" if why else "written cleanly")

    def _find_architecture(self) -> None:
        from wim2vhd.boot.store import LOADER_PATH
        for path in (LOADER_PATH["uefi"], LOADER_PATH["bios"], KERNEL):
            if self.windows.exists(path):
                m = pe_machine(self.windows.read(path, PE_HEAD))
                if m is not None:
                    self.machine, self.architecture = m, PE_MACHINE.get(m, f"machine 0x{m:04x}")
                    return

    # -- native boot
    def _check_native(self) -> None:
        from wim2vhd.boot.store import LOADER_PATH
        self.add("BCD store", SKIPPED, "native layout: a host's store starts this disk (wim2vhd bcd add-vhd)")
        if self.windows is None:
            self.add("loader", SKIPPED, "the Windows partition cannot be read")
            return
        have = [p for p in LOADER_PATH.values() if self.windows.exists(p)]
        if have:
            self.add("loader", OK, ", ".join(have))
        else:
            self.add("loader", PROBLEM, f"{LOADER_PATH['uefi']} and {LOADER_PATH['bios']} are both missing "
                                        f"from {pname(self.windows.part)}")

    # -- the store
    def _check_store(self) -> None:
        from wim2vhd.boot.store import BcdStore
        path = STORE[self.firmware]
        sysp = self.system
        view = self.views.get(sysp.number)
        if view is None:
            self.add("BCD store", SKIPPED, f"the system {pname(sysp)} cannot be read")
            return
        if not view.exists(path):
            self.add("BCD store", PROBLEM, f"there is no BCD store: {path} is missing from the system {pname(sysp)}")
            return
        try:
            store = BcdStore.from_bytes(view.read(path), name=f"{path} on {pname(sysp)}")
        except Wim2VhdError as e:
            self.add("BCD store", PROBLEM, f"the BCD store cannot be read: {e.message}")
            return
        try:
            self.add("BCD store", OK, f"{path} on {pname(sysp)}")
            from wim2vhd.verify.bcd import check_store
            check_store(self, store)
            check_store_winre(self, store)
        finally:
            store.close()

    def _check_bios_boot(self) -> None:
        code = self.disk.read(0, MBR_BOOT_CODE)
        if not any(code):
            self.add("MBR boot code", PROBLEM, "the MBR has no boot code: BIOS cannot start the disk")
        else:
            self.add("MBR boot code", OK)
        view = self.views.get(self.system.number)
        if view is None:
            return  # the store's step says the system partition cannot be read
        if view.exists(BIOS_BOOTMGR):
            self.add("boot manager", OK, f"{BIOS_BOOTMGR} on {pname(view.part)}")
        else:
            self.add("boot manager", PROBLEM, f"the boot manager {BIOS_BOOTMGR} is missing from the system "
                                              f"{pname(view.part)}")

    # -- the removable-media fallback
    def _check_fallback(self) -> None:
        esp = self.views.get(self.system.number)
        arch = self.architecture
        if esp is None or arch is None:
            self.add("fallback loader", SKIPPED, "the ESP cannot be read" if esp is None else
                     "the image's architecture is unknown (no loader or kernel with a PE header)")
            return
        want = FALLBACK_LOADER.get(arch)
        if want is None:
            self.add("fallback loader", PROBLEM, f"UEFI defines no fallback loader for the image's {arch}")
            return
        path = f"{FALLBACK_DIR}\\{want}"
        names = esp.names_in(FALLBACK_DIR) if esp.is_dir(FALLBACK_DIR) else []
        if want not in [n.lower() for n in names]:
            others = [n for n in names if n.lower().startswith("boot") and n.lower().endswith(".efi")]
            self.add("fallback loader", PROBLEM, f"the fallback loader {path} for the {arch} image is missing "
                     f"from the ESP" + (f" (it has {', '.join(others)})" if others else ""))
            return
        m = pe_machine(esp.read(path, PE_HEAD))
        if m is not None and m != self.machine:
            self.add("fallback loader", PROBLEM, f"the fallback loader {path} is a {PE_MACHINE.get(m, hex(m))} "
                     f"program, but the image is {arch}")
        else:
            self.add("fallback loader", OK, f"{path} for the {arch} image")


def verify_disk(path: str, format: str | None = None) -> dict[str, Any]:
    """Every check on the disk at `path` (opened read-only): the summary `verify --json` prints.
    format: read it as that format (-f/--format; a file of another is refused), else by its content."""
    from wim2vhd.disk import open_disk
    d = open_disk(path, format=format)
    try:
        with tempfile.TemporaryDirectory(prefix="wim2vhd-verify-") as tmp:
            v = Verifier(d, tmp)
            try:
                v.run()
            finally:
                v.close()
        fmt = d.info().get("format")
    finally:
        d.close()
    problems = [c.detail for c in v.checks if c.result == PROBLEM]
    return {
        "path": os.path.abspath(path),
        "format": fmt,
        "layout": v.layout,
        "scheme": v.table.scheme if v.table else None,
        "windows_partition": v.windows.part.number if v.windows else None,
        "architecture": v.architecture,
        "winre": v.winre.state if v.layout in LAYOUT_FIRMWARES else "absent",
        "sound": not problems,
        "problems": problems,
        "warnings": [c.detail for c in v.checks if c.result == WARNING],
        "checks": [c.to_dict() for c in v.checks],
    }


__all__ = ["verify_disk", "Check", "Verifier", "pname"]
