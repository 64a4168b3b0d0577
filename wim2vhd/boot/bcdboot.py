"""The boot stage of apply: what bcdboot does, from Linux.

- Boot files come from the applied volume's \\Windows\\Boot.
  UEFI: EFI\\* (with the locale folders), Fonts and Resources go to the ESP's
  \\EFI\\Microsoft\\Boot, and bootmgfw.efi also to the removable-media fallback
  \\EFI\\Boot\\boot<arch>.efi for the image's architecture (bootx64.efi, bootaa64.efi, bootia32.efi).
  BIOS: PCAT\\bootmgr and BOOTNXT go to the root of the system (here: Windows)
  partition, PCAT\\* with Fonts and Resources to \\Boot.
- The store (\\EFI\\Microsoft\\Boot\\BCD or \\Boot\\BCD) starts from the image's
  \\Windows\\System32\\config\\BCD-Template, keeping its objects, or from an
  empty store; then {bootmgr}, a Windows Boot Loader with its resume object,
  and {memdiag} when the image has memtest.
- Devices default to `locate`, as `bcdedit /set {default} device locate`
  writes them and Convert-WindowsImage does, so the disk keeps booting as a
  differencing child or under a new disk signature.  bcd_devices="partition"
  writes fully qualified partition devices instead.
- BIOS boot code: GRUB's i386-pc images in the MBR and the gap after it
  (wim2vhd.boot.biosboot), or the user's own MBR code.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from wim2vhd.boot import debug as kdebug
from wim2vhd.boot import devices as dv
from wim2vhd.boot import winre
from wim2vhd.boot.arch import fallback_loader
from wim2vhd.boot.store import BcdStore
from wim2vhd.boot.elements import E
from wim2vhd.registry.hive import Value
from wim2vhd.errors import InputError


@dataclass(frozen=True)
class BootSettings:
    """What the boot stage takes from apply's options."""
    locale: str = "en-US"
    bcd_devices: str = "locate"       # or "partition" (see _devices)
    bios_boot_code: str | None = None  # a file of MBR boot code instead of GRUB's
    debug: "kdebug.Debug | None" = None  # the kernel debugger (--debug)


BOOT = "Windows\\Boot"
TEMPLATE = "Windows\\System32\\config\\BCD-Template"
# bcdboot marks the BIOS boot files hidden and system (bootmgr read-only too).
ATTR_RO, ATTR_HIDDEN, ATTR_SYSTEM, ATTR_DIRECTORY, ATTR_ARCHIVE = 0x1, 0x2, 0x4, 0x10, 0x20


def _tree(vol, top: str) -> dict[str, bytes]:
    """Every file under top in the volume: {relative path with '/': contents}."""
    out: dict[str, bytes] = {}
    if not vol.is_dir(top):
        return out
    base = top.replace("\\", "/").strip("/")
    for d, _dirs, files in vol.walk(top):
        rel_dir = d.replace("\\", "/").strip("/")[len(base):].strip("/")
        for f in files:
            rel = f"{rel_dir}/{f}" if rel_dir else f
            out[rel] = vol.read_file(f"{d}\\{f}" if d else f)
    return out


def _find(tree: dict[str, bytes], name: str) -> str | None:
    """The key of `tree` that names `name`, compared without regard to case as Windows does
    (images hold Windows\\Boot\\PCAT\\bootnxt, bcdboot writes \\BOOTNXT)."""
    low = name.lower()
    return next((k for k in tree if k.lower() == low), None)


def _pop(tree: dict[str, bytes], name: str) -> bytes | None:
    key = _find(tree, name)
    return tree.pop(key) if key is not None else None


def _devices(bcd_devices: str, plan, firmware: str) -> dict[str, dv.Device]:
    """The devices of {bootmgr} and of the loader, for --bcd-devices."""
    win = plan.role("windows")
    # The system partition: the ESP (hybrid: its FAT32 system partition, for both firmwares), or on
    # the bios layout the Windows partition itself.
    sysp = plan.role("esp") or win
    if bcd_devices == "partition":
        if plan.scheme == "gpt":
            disk = uuid.UUID(plan.disk_guid)
            sys_dev = dv.GptPartition(disk, uuid.UUID(sysp.guid))
            win_dev = dv.GptPartition(disk, uuid.UUID(win.guid))
        else:
            sys_dev = dv.MbrPartition(plan.disk_signature, sysp.start)
            win_dev = dv.MbrPartition(plan.disk_signature, win.start)
        return {"bootmgr": sys_dev, "device": win_dev, "osdevice": win_dev}
    # `locate`: found at boot by the element's own path (bcdedit writes locate=custom:12000002 for
    # device and locate=custom:22000002 for osdevice); {bootmgr} is where bootmgr was loaded from.
    return {"bootmgr": dv.Boot(), "device": dv.Locate.by_element(E.PATH),
            "osdevice": dv.Locate.by_element(E.SYSTEMROOT)}


def build_store(template: bytes | None, firmware: str, description: str, devs: dict[str, dv.Device], *,
                locale: str, memdiag: bool) -> BcdStore:
    """The system store: the template's objects, then what bcdboot adds."""
    if template:
        store = BcdStore.from_bytes(template, write=True, name="BCD-Template")
        store.windows_security = True  # not the template's descriptors, which may let anyone write
        # The template becomes the system store: Windows loads it as BCD00000000, marked System.
        desc = store.hive.root.ensure_child("Description")
        desc.set_value(Value.sz("KeyName", "BCD00000000"))
        desc.set_value(Value.dword("System", 1))
    else:
        store = BcdStore.new(system=True)
    store.add_settings()
    # bcdboot rewrites {bootmgr} and {memdiag} for this firmware, whatever the template had.
    for alias in ("{bootmgr}", "{fwbootmgr}", "{memdiag}"):
        if store.find(alias) is not None:
            store.delete_object(alias)
    if memdiag:
        store.add_memdiag(device=devs["bootmgr"], firmware=firmware, locale=locale)
    store.add_boot_manager(firmware=firmware, device=devs["bootmgr"], locale=locale)
    store.add_os_loader(description, devs["device"], devs["osdevice"], firmware=firmware, locale=locale,
                        default=True)
    return store


# Where each firmware's store lies on the system partition.
STORE_PATH = {"uefi": "EFI/Microsoft/Boot/BCD", "bios": "Boot/BCD"}
# The firmwares each layout boots on: hybrid is bcdboot /f ALL, both file sets on one system partition.
LAYOUT_FIRMWARES = {"uefi": ("uefi",), "bios": ("bios",), "hybrid": ("uefi", "bios")}
# bcdboot's attributes of the BIOS files, on NTFS (bits) and as FAT attribute letters (mattrib).
BIOS_ATTRIBUTES = {"bootmgr": ATTR_RO | ATTR_HIDDEN | ATTR_SYSTEM | ATTR_ARCHIVE,
                   "BOOTNXT": ATTR_HIDDEN | ATTR_SYSTEM | ATTR_ARCHIVE,
                   "Boot": ATTR_HIDDEN | ATTR_SYSTEM | ATTR_DIRECTORY}
BIOS_FAT_ATTRIBUTES = {"bootmgr": "rash", "BOOTNXT": "ash", "Boot": "hs"}


def bios_files(pcat: dict[str, bytes], fonts: dict[str, bytes], resources: dict[str, bytes],
               bcd: bytes) -> dict[str, bytes]:
    """bcdboot's BIOS file set, {path with '/': contents}: \\bootmgr and \\BOOTNXT at the root of the
    system partition, the rest of PCAT with Fonts, Resources and the store under \\Boot."""
    pcat = dict(pcat)
    files = {"bootmgr": _pop(pcat, "bootmgr")}
    bootnxt = _pop(pcat, "BOOTNXT")
    if bootnxt is not None:
        files["BOOTNXT"] = bootnxt
    tree = dict(pcat)
    tree.update({f"Fonts/{k}": v for k, v in fonts.items()})
    tree.update({f"Resources/{k}": v for k, v in resources.items()})
    _pop(tree, "BCD")  # ours replaces any the image carries, whatever its case
    tree["BCD"] = bcd
    files.update({f"Boot/{k}": v for k, v in sorted(tree.items())})
    return files


def uefi_files(efi: dict[str, bytes], fonts: dict[str, bytes], resources: dict[str, bytes], bcd: bytes,
               fallback: str) -> dict[str, bytes]:
    """bcdboot's UEFI file set: \\EFI\\Microsoft\\Boot with the store, and bootmgfw.efi again as the
    removable-media fallback \\EFI\\Boot\\<fallback>."""
    files = {f"EFI/Microsoft/Boot/{k}": v for k, v in efi.items()}
    files.update({f"EFI/Microsoft/Boot/Fonts/{k}": v for k, v in fonts.items()})
    files.update({f"EFI/Microsoft/Boot/Resources/{k}": v for k, v in resources.items()})
    _pop(files, STORE_PATH["uefi"])
    files[STORE_PATH["uefi"]] = bcd
    files["EFI/Boot/" + fallback] = efi[_find(efi, "bootmgfw.efi")]
    return files


def _write_ntfs(vol, files: dict[str, bytes]) -> None:
    """The BIOS file set onto the Windows volume (the bios layout), with bcdboot's attributes."""
    for rel, data in files.items():
        parts = rel.split("/")
        if len(parts) > 1:
            vol.mkdir("\\".join(parts[:-1]), parents=True, exist_ok=True)
        vol.write_file(rel.replace("/", "\\"), data)
    for name, attrs in BIOS_ATTRIBUTES.items():
        if name in files or any(k.startswith(name + "/") for k in files):
            vol.set_attributes(name, attrs)


def make_bootable(disk, plan, wim, index: int, img, settings: BootSettings, *, tmp_dir: str,
                  winre_source: "winre.WinreSource | None" = None) -> dict[str, Any]:
    """Run the boot stage on an applied disk; returns what it did, for the summary.  winre_source:
    the image's WinRE (winre.find_winre), to move to the plan's recovery partition and start from the
    store."""
    from wim2vhd import fs
    from wim2vhd.ntfs import NtfsWindow
    from wim2vhd.ntfs import NtfsVolume

    if plan.layout == "native":
        # A native-boot VHD(X) is started by the host's boot manager: see `wim2vhd bcd add-vhd`.
        return {"firmware": None, "note": "native layout: add the disk to a host's store with `wim2vhd bcd add-vhd`"}
    firmwares = LAYOUT_FIRMWARES[plan.layout]
    win = plan.role("windows")
    description = img.display_name or img.name or "Windows"
    stores: dict[str, bytes] = {}
    debugger = recovery = None
    with NtfsWindow(disk, win.start, win.size) as dev, NtfsVolume(dev) as vol:
        if not vol.is_dir(BOOT):
            raise InputError(f"image {index} has no \\{BOOT}: it cannot be made bootable (use --no-boot)")
        template = vol.read_file(TEMPLATE) if vol.exists(TEMPLATE) else None
        fonts = _tree(vol, BOOT + "\\Fonts")
        resources = _tree(vol, BOOT + "\\Resources")
        memdiag = {}
        if "uefi" in firmwares:
            efi = _tree(vol, BOOT + "\\EFI")
            if _find(efi, "bootmgfw.efi") is None:
                raise InputError(f"image {index} has no \\{BOOT}\\EFI\\bootmgfw.efi: it cannot boot on UEFI")
            memdiag["uefi"] = _find(efi, "memtest.efi") is not None
        if "bios" in firmwares:
            pcat = _tree(vol, BOOT + "\\PCAT")
            if _find(pcat, "bootmgr") is None:
                raise InputError(f"image {index} has no \\{BOOT}\\PCAT\\bootmgr: it cannot boot on BIOS")
            memdiag["bios"] = _find(pcat, "memtest.exe") is not None
        winre_ids = winre.WinreIds.new() if winre_source is not None else None
        for firmware in firmwares:
            devs = _devices(settings.bcd_devices, plan, firmware)
            store = build_store(template, firmware, description, devs, locale=settings.locale,
                                memdiag=memdiag[firmware])
            try:
                if settings.debug:
                    debugger = kdebug.apply(store, store.resolve("{default}"), settings.debug)
                if winre_ids is not None:  # hybrid: in both stores, each with its firmware's loader
                    winre.add_to_store(store, store.resolve("{default}"), plan, winre_ids, firmware=firmware,
                                       locale=settings.locale)
                stores[firmware] = store.to_bytes()
            finally:
                store.close()
        if winre_source is not None:
            recovery = winre.install(disk, plan, vol, winre_source, winre_ids)
        if plan.layout == "bios":
            # bcdboot's BIOS layout: the system partition is the Windows partition.
            files = bios_files(pcat, fonts, resources, stores["bios"])
            _write_ntfs(vol, files)

    if "uefi" in firmwares:
        # One FAT32 system partition: the ESP (uefi), or hybrid's active FAT32 partition, which holds the
        # BIOS files beside the UEFI ones.
        files = uefi_files(efi, fonts, resources, stores["uefi"],
                           fallback_loader(img.architecture, efi[_find(efi, "bootmgfw.efi")]))
        attributes = {}
        if "bios" in firmwares:
            bios = bios_files(pcat, fonts, resources, stores["bios"])
            files.update(bios)
            attributes = {k: v for k, v in BIOS_FAT_ATTRIBUTES.items() if k in bios or f"{k}/BCD" in bios}
        fs.rebuild_esp(disk, files, attributes=attributes, layout=plan, tmp_dir=tmp_dir)
    boot_code = None
    if "bios" in firmwares:
        from wim2vhd.boot.biosboot import install_bios_boot
        code = None
        if settings.bios_boot_code:
            try:
                with open(settings.bios_boot_code, "rb") as f:
                    code = f.read()
            except OSError as e:
                raise InputError(f"--bios-boot-code {settings.bios_boot_code}: {e.strerror}") from None
        boot_code = install_bios_boot(disk, sector_size=disk.sector_size, mbr_code=code)["boot_code"]
    return {
        "firmware": "+".join(firmwares),
        "bcd_devices": settings.bcd_devices,
        "locale": settings.locale,
        "description": description,
        "template": template is not None,
        "files": len(files),
        "stores": {"\\" + STORE_PATH[f].replace("/", "\\"): len(b) for f, b in stores.items()},
        "bcd_bytes": sum(len(b) for b in stores.values()),
        **({"bios_boot_code": boot_code} if boot_code else {}),
        **({"winre": recovery} if recovery is not None else {}),
        **({"debug": debugger.to_dict()} if debugger is not None else {}),
    }
