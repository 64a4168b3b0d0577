"""WinRE in the recovery partition, as Windows Setup (and `reagentc /setreimage` offline) leaves it.

    src = find_winre(wim, index, plan)            # before anything is written: sizes checked
    stage(wim, index, disk, plan, src)            # after the format stage, before the image is applied
    ids = WinreIds.new()
    add_to_store(store, loader, plan, ids, firmware=..., locale=...)
    install(disk, plan, win_vol, src, ids)        # at the boot stage

On the recovery partition (NTFS, made by the format stage):

    \\Recovery\\WindowsRE\\Winre.wim   the image's \\Windows\\System32\\Recovery\\Winre.wim, moved: the image
                                     keeps only ReAgent.xml there, as after Setup (it is extracted
                                     from the WIM to the recovery partition, never to Windows')
    \\Recovery\\WindowsRE\\boot.sdi    the image's Windows\\Boot\\DVD\\...\\boot.sdi (the firmware's folder first)
    \\Recovery\\WindowsRE\\ReAgent.xml a copy of the image's, as reagentc keeps one beside Winre.wim

In the store: a Windows Boot Loader that starts Winre.wim as a RAM disk, a device options object for
that RAM disk (boot.sdi), and on the default loader (and its resume object) recoverysequence and
recoveryenabled.  The elements are those of the WinRE objects in stores Windows 10 and 11 wrote
(`bcdedit /enum all` of a 25H2 install):

    Windows Boot Loader                                 Device options
    device     ramdisk=[recovery]\\Recovery\\WindowsRE\\Winre.wim,{options}   description  Windows Recovery
    path       \\windows\\system32\\winload.efi (.exe)    ramdisksdidevice partition=[recovery]
    description Windows Recovery Environment           ramdisksdipath   \\Recovery\\WindowsRE\\boot.sdi
    locale, inherit {bootloadersettings}, displaymessage Recovery, osdevice (= device),
    systemroot \\windows, nx OptIn, bootmenupolicy Standard, winpe Yes, custom:46000010 Yes

Windows gives the RAM disk an options object of its own (a new GUID), not the well-known
{ramdiskoptions}, which BCD-Template already holds ("Ramdisk Options") and other WinPE entries share;
so does this.  The RAM disk's host is the recovery partition itself (GPT disk and partition GUIDs, or
MBR signature and offset) whatever --bcd-devices says, as Windows writes it: a RAM disk has no
`locate` form.  Like Windows' own entry, it follows the disk's identity (reagentc rewrites it when
that changes).
"""
from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from wim2vhd import repro
from wim2vhd.boot import devices as dv
from wim2vhd.boot.elements import BOOTLOADERSETTINGS, E, ObjectType
from wim2vhd.errors import InputError, UsageError
from wim2vhd.security import (CONTAINER_INHERIT, FILE_ALL_ACCESS, OBJECT_INHERIT, SID_ADMINISTRATORS, SID_SYSTEM,
                              allow, security_descriptor)
from wim2vhd.units import MiB, align_up, format_size

IMAGE_RECOVERY = "Windows\\System32\\Recovery"
REAGENT = IMAGE_RECOVERY + "\\ReAgent.xml"
WINRE_NAME = "Winre.wim"
SDI_NAME = "boot.sdi"
SDI_FOLDER = "Windows\\Boot\\DVD"
SDI_FIRMWARE_FOLDER = {"uefi": "EFI", "bios": "PCAT"}  # where each firmware's boot.sdi is in an image
RECOVERY_DIR = "Recovery\\WindowsRE"
WINRE_PATH = "\\" + RECOVERY_DIR + "\\" + WINRE_NAME
SDI_PATH = "\\" + RECOVERY_DIR + "\\" + SDI_NAME

# What Windows writes in the WinRE objects (see the module's docstring).
WINRE_DESCRIPTION = "Windows Recovery Environment"
OPTIONS_DESCRIPTION = "Windows Recovery"
WINRE_LOADER_PATH = {"uefi": "\\windows\\system32\\winload.efi", "bios": "\\windows\\system32\\winload.exe"}
WINRE_SYSTEMROOT = "\\windows"
DISPLAYMESSAGE_RECOVERY = 3
NX_OPTIN = 0
BOOTMENUPOLICY_STANDARD = 1

# Attributes of what Setup leaves on the recovery partition: folders and files hidden and system.
ATTR_HIDDEN, ATTR_SYSTEM, ATTR_DIRECTORY, ATTR_ARCHIVE = 0x2, 0x4, 0x10, 0x20
# \Recovery: only SYSTEM and Administrators, inherited by everything below, not from the root.
RECOVERY_SECURITY = security_descriptor(SID_ADMINISTRATORS, SID_SYSTEM, [
    allow(SID_SYSTEM, FILE_ALL_ACCESS, OBJECT_INHERIT | CONTAINER_INHERIT),
    allow(SID_ADMINISTRATORS, FILE_ALL_ACCESS, OBJECT_INHERIT | CONTAINER_INHERIT),
], protected=True)

# Room on the recovery partition besides the two files: ReAgent.xml, the folders, and NTFS's own
# metadata, which mkntfs sizes by the volume (measured: 2.5 MiB of 8 MiB to 128 MiB volumes, 5.6 MiB
# of 1 GiB), so 3 MiB and 1/128 of the volume is more than it takes.
NTFS_BASE = 3 * MiB
NTFS_SHARE = 128
SMALL_FILES = 64 * 1024


@dataclass(frozen=True)
class WinreSource:
    """Where the image holds what WinRE needs (paths '\\'-separated, no leading '\\') and how big it is."""
    winre: str
    winre_size: int
    sdi: str
    sdi_size: int

    @property
    def need(self) -> int:
        return self.winre_size + self.sdi_size + SMALL_FILES


def fits(partition_size: int, src: WinreSource) -> bool:
    return partition_size - NTFS_BASE - partition_size // NTFS_SHARE >= src.need


def min_recovery_size(src: WinreSource) -> int:
    """The smallest --recovery (whole MiB) whose NTFS volume holds Winre.wim, boot.sdi and ReAgent.xml."""
    size = align_up(src.need + NTFS_BASE, MiB)
    while not fits(size, src):
        size += MiB
    return size


def find_winre(wim, index: int, plan) -> WinreSource:
    """What image `index` holds for WinRE, checked against the plan's recovery partition before
    anything is written: an image without Winre.wim or boot.sdi is refused (exit 3), and a
    partition too small for them is a usage error (exit 2) that says the size needed."""
    rec = plan.role("recovery")
    firmware = "bios" if plan.scheme == "mbr" else "uefi"  # (hybrid: MBR; its boot.sdi is the same file)
    winre = wim.find_file(index, IMAGE_RECOVERY, WINRE_NAME)
    if winre is None:
        raise InputError(f"image {index} has no \\{IMAGE_RECOVERY}\\{WINRE_NAME} to put in the recovery partition",
                         hint="leave out --recovery")
    # The firmware's own boot.sdi (DVD\EFI, DVD\PCAT) first; any other under DVD else (they are the same file).
    sdi = (wim.find_file(index, f"{SDI_FOLDER}\\{SDI_FIRMWARE_FOLDER[firmware]}", SDI_NAME)
           or wim.find_file(index, SDI_FOLDER, SDI_NAME, recursive=True))
    if sdi is None:
        raise InputError(f"image {index} has no {SDI_NAME} under \\{SDI_FOLDER}: WinRE's RAM disk cannot start "
                         "without it", hint="leave out --recovery")
    src = WinreSource(winre[0], winre[1], sdi[0], sdi[1])
    if not fits(rec.size, src):
        need = min_recovery_size(src)
        raise UsageError(f"--recovery {format_size(rec.size)} is too small for image {index}'s {WINRE_NAME} "
                         f"({format_size(src.winre_size)}) and {SDI_NAME}: the recovery partition needs "
                         f"{format_size(need)}", hint=f"use --recovery {need // MiB}M or more")
    return src


@dataclass(frozen=True)
class WinreIds:
    """The store objects of WinRE: its loader and its RAM disk's options (new GUIDs, or derived: repro)."""
    loader: uuid.UUID
    options: uuid.UUID

    @classmethod
    def new(cls) -> "WinreIds":
        return cls(repro.uuid_for("bcd-winre-loader"), repro.uuid_for("bcd-winre-options"))


def recovery_device(plan) -> dv.Device:
    """The recovery partition as a BCD device: GPT disk and partition GUIDs, or MBR signature and offset."""
    rec = plan.role("recovery")
    if plan.scheme == "gpt":
        return dv.GptPartition(uuid.UUID(plan.disk_guid), uuid.UUID(rec.guid))
    return dv.MbrPartition(plan.disk_signature, rec.start)


def add_to_store(store, default_loader: uuid.UUID, plan, ids: WinreIds, *, firmware: str, locale: str) -> None:
    """The WinRE loader and its RAM disk's options, and recovery on the default loader and its resume
    object, as Windows writes them (see the module's docstring)."""
    host = recovery_device(plan)
    opts = store.add_object(ObjectType.DEVICE, ids.options)
    opts.update({E.DESCRIPTION: OPTIONS_DESCRIPTION, E.RAMDISKSDIDEVICE: host, E.RAMDISKSDIPATH: SDI_PATH})
    ramdisk = dv.Ramdisk(WINRE_PATH, host, ids.options)
    loader = store.add_object(ObjectType.OSLOADER, ids.loader)
    loader.update({E.DEVICE: ramdisk, E.PATH: WINRE_LOADER_PATH[firmware], E.DESCRIPTION: WINRE_DESCRIPTION,
                   E.LOCALE: locale, E.INHERIT: [BOOTLOADERSETTINGS], E.DISPLAYMESSAGE: DISPLAYMESSAGE_RECOVERY,
                   E.OSDEVICE: ramdisk, E.SYSTEMROOT: WINRE_SYSTEMROOT, E.NX: NX_OPTIN,
                   E.BOOTMENUPOLICY: BOOTMENUPOLICY_STANDARD, E.WINPE: True, E.WINRE_46000010: True})
    default = store.object(default_loader)
    targets = [default]
    resume = default.get(E.RESUMEOBJECT)
    if isinstance(resume, uuid.UUID) and store.find(resume) is not None:
        targets.append(store.object(resume))  # Windows 11 sets both (25H2's store)
    for o in targets:
        o.update({E.RECOVERYSEQUENCE: [ids.loader], E.RECOVERYENABLED: True})
    default.set(E.DISPLAYMESSAGEOVERRIDE, DISPLAYMESSAGE_RECOVERY)


# -- ReAgent.xml ---------------------------------------------------------------------------------
# reagentc's configuration, \Windows\System32\Recovery\ReAgent.xml.  Microsoft does not document it;
# what is written here follows the files Windows 10 and 11 leave after Setup (seen in public
# samples, e.g. a 1607 and a 23H2 install): UTF-8 with a byte order mark, CRLF, two-space indents,
# empty elements without a space before "/>", and
#   <WinreBCD id="{the WinRE loader}"/>
#   <WinreLocation path="\Recovery\WindowsRE" id=ID offset=OFFSET guid=GUID/>
#     GPT: id "0", guid the disk's GUID; MBR: id the disk signature in decimal, guid zero;
#     offset: the recovery partition's first byte on the disk, in decimal
#   <InstallState state="1"/> (WinRE enabled), <IsAutoRepairOn state="1"/>
# Elements already in the image's file are kept, in their order, with their values; these are set.
ZERO_GUID = "{00000000-0000-0000-0000-000000000000}"
REAGENT_DEFAULT = (
    ("WinreBCD", {"id": ZERO_GUID}),
    ("WinreLocation", {"path": "", "id": "0", "offset": "0", "guid": ZERO_GUID}),
    ("ImageLocation", {"path": "", "id": "0", "offset": "0", "guid": ZERO_GUID}),
    ("PBRImageLocation", {"path": "", "id": "0", "offset": "0", "guid": ZERO_GUID, "index": "0"}),
    ("PBRCustomImageLocation", {"path": "", "id": "0", "offset": "0", "guid": ZERO_GUID, "index": "0"}),
    ("InstallState", {"state": "0"}),
    ("OsInstallAvailable", {"state": "0"}),
    ("CustomImageAvailable", {"state": "0"}),
    ("IsAutoRepairOn", {"state": "0"}),
    ("WinREStaged", {"state": "0"}),
    ("OperationParam", {"path": ""}),
    ("OperationPermanent", {"state": "0"}),
    ("OsBuildVersion", {"path": ""}),
    ("OemTool", {"state": "0"}),
    ("IsServer", {"state": "0"}),
    ("DownlevelWinreLocation", {"path": "", "id": "0", "offset": "0", "guid": ZERO_GUID}),
    ("IsWimBoot", {"state": "0"}),
    ("NarratorScheduled", {"state": "0"}),
    ("ScheduledOperation", {"state": "4"}),
)
BOM = b"\xef\xbb\xbf"


def _guid(g: uuid.UUID) -> str:
    return "{%s}" % g


def reagent_location(plan) -> dict[str, str]:
    rec = plan.role("recovery")
    if plan.scheme == "gpt":
        ident, guid = "0", _guid(uuid.UUID(plan.disk_guid))
    else:
        ident, guid = str(plan.disk_signature), ZERO_GUID
    return {"path": "\\" + RECOVERY_DIR, "id": ident, "offset": str(rec.start), "guid": guid}


def _parse(existing: bytes | None) -> tuple[str, list[tuple[str, dict[str, str]]]] | None:
    """(version, elements) of the image's ReAgent.xml, or None when it has none that reads as one."""
    if not existing:
        return None
    try:
        root = ET.fromstring(existing[len(BOM):] if existing.startswith(BOM) else existing)
    except ET.ParseError:
        return None
    if root.tag != "WindowsRE" or any(len(c) or (c.text or "").strip() for c in root):
        return None
    return root.get("version", "2.0"), [(c.tag, dict(c.attrib)) for c in root]


def _attr(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))


def reagent_xml(existing: bytes | None, plan, loader: uuid.UUID) -> bytes:
    """ReAgent.xml naming WinRE on the recovery partition and its loader (the image's file, updated;
    Windows 10's elements when the image has none, or one that does not read as one)."""
    parsed = _parse(existing)
    version, elements = parsed or ("2.0", [(tag, dict(attrs)) for tag, attrs in REAGENT_DEFAULT])
    wanted = {"WinreBCD": {"id": _guid(loader)}, "WinreLocation": reagent_location(plan),
              "InstallState": {"state": "1"}, "IsAutoRepairOn": {"state": "1"}}
    tags = [t for t, _ in elements]
    for tag, attrs in wanted.items():
        if tag in tags:
            elements[tags.index(tag)][1].update(attrs)
        else:
            elements.insert(0 if tag == "WinreBCD" else 1 if tag == "WinreLocation" else len(elements),
                            (tag, dict(attrs)))
            tags = [t for t, _ in elements]
    lines = ["<?xml version='1.0' encoding='utf-8'?>", "", f'<WindowsRE version="{_attr(version)}">']
    for tag, attrs in elements:
        lines.append(f"  <{tag}" + "".join(f' {k}="{_attr(v)}"' for k, v in attrs.items()) + "/>")
    lines.append("</WindowsRE>")
    return BOM + ("\r\n".join(lines) + "\r\n").encode("utf-8")


# -- the files -----------------------------------------------------------------------------------
def stage(wim, index: int, disk, plan, src: WinreSource) -> None:
    """Before the image is applied: Winre.wim from the WIM straight to the recovery partition (at its
    path in the image), and out of the image (in memory), so that the Windows partition never holds it.  (Moved
    after the apply, its clusters would stay allocated in a dynamic disk: the disk would grow by
    Winre.wim twice.)  install() puts it in its place."""
    from wim2vhd.ntfs import NtfsWindow
    rec = plan.role("recovery")
    with NtfsWindow(disk, rec.start, rec.size, compact=True) as dev:
        wim.extract_file_ntfs(index, src.winre, dev)
    wim.delete_path(index, src.winre)


def install(disk, plan, win_vol, src: WinreSource, ids: WinreIds) -> dict[str, Any]:
    """After the image is applied (`win_vol`: its volume, open): Winre.wim (staged) into
    \\Recovery\\WindowsRE with boot.sdi, and ReAgent.xml in both volumes; returns what was done, for the
    summary.  The image's \\Windows\\System32\\Recovery keeps only ReAgent.xml, as after Setup."""
    from wim2vhd.ntfs import NtfsVolume, NtfsWindow

    rec = plan.role("recovery")
    existing = win_vol.read_file(REAGENT) if win_vol.exists(REAGENT) else None
    reagent = reagent_xml(existing, plan, ids.loader)
    sdi = win_vol.read_file(src.sdi)
    hidden = ATTR_HIDDEN | ATTR_SYSTEM
    winre = f"{RECOVERY_DIR}\\{WINRE_NAME}"
    with NtfsWindow(disk, rec.start, rec.size, compact=True) as dev, NtfsVolume(dev) as vol:
        vol.mkdir("Recovery", exist_ok=True)
        vol.set_security("Recovery", RECOVERY_SECURITY)
        vol.mkdir(RECOVERY_DIR, exist_ok=True)  # inherits \Recovery's ACEs, as the files written below
        vol.write_file(f"{RECOVERY_DIR}\\{SDI_NAME}", sdi)
        vol.write_file(f"{RECOVERY_DIR}\\ReAgent.xml", reagent)
        # a rename within the volume: a second name, then the first one goes, with the folders
        # extracting it made (Windows\System32\Recovery, which hold nothing else)
        vol.link(src.winre, winre)
        vol.unlink(src.winre)
        parts = src.winre.split("\\")[:-1]
        for n in range(len(parts), 0, -1):
            vol.unlink("\\".join(parts[:n]))
        vol.set_security(winre, vol.get_security(f"{RECOVERY_DIR}\\{SDI_NAME}"))  # what a new file there has
        if vol.file_size(winre) != src.winre_size:
            raise InputError(f"\\{src.winre} of image holds {vol.file_size(winre)} bytes, not the "
                             f"{src.winre_size} its WIM says")
        for f in (WINRE_NAME, SDI_NAME, "ReAgent.xml"):
            vol.set_attributes(f"{RECOVERY_DIR}\\{f}", hidden | ATTR_ARCHIVE)
        for d in ("Recovery", RECOVERY_DIR):
            vol.set_attributes(d, hidden | ATTR_DIRECTORY)
    win_vol.write_file(REAGENT, reagent)
    return {"loader": _guid(ids.loader), "options": _guid(ids.options), "winre": WINRE_PATH,
            "winre_bytes": src.winre_size, "winre_from": "\\" + src.winre, "sdi": SDI_PATH,
            "sdi_from": "\\" + src.sdi, "reagent": "\\" + REAGENT, "location": reagent_location(plan)}
