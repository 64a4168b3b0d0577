"""Whole-file operations on a store file, as the `wim2vhd bcd` commands do them: a new system
store, and a loader entry that boots from a VHD.  Each writes atomically."""
from __future__ import annotations

import os
import uuid

from wim2vhd.boot import elements as el
from wim2vhd.boot.devices import Device, Locate, Vhd
from wim2vhd.boot.elements import E
from wim2vhd.boot.store import BcdStore, check_firmware
from wim2vhd.boot.values import guid_text
from wim2vhd.errors import InputError, OutputError, OutputExists, UsageError


def create_store_file(path: str | os.PathLike, *, firmware: str = "uefi", force: bool = False,
                      locale: str = "en-US") -> dict:
    """A new system store at `path` (refused if it exists, unless force)."""
    check_firmware(firmware)
    p = os.path.abspath(os.fspath(path))
    if os.path.lexists(p) and not force:
        raise OutputExists(f"{p} exists: use --force to replace it")
    with BcdStore.new_system_store(firmware, locale=locale) as store:
        store.save(p, overwrite=force, backup=True)
        return {"store": p, "firmware": firmware,
                "objects": [guid_text(o.id) for o in store.objects()]}


def normalize_windows_path(path: str, what: str = "path") -> str:
    """A path on a Windows volume as BCD holds it: backslashes, rooted, no drive letter."""
    p = path.strip().replace("/", "\\")
    if len(p) >= 2 and p[1] == ":":
        raise UsageError(f"{what} {path!r} must not name a drive: give the path from the volume's root, "
                         "e.g. \\vhds\\win.vhdx, and say where the volume is with --host*")
    if not p.startswith("\\"):
        p = "\\" + p
    if p == "\\" or p.endswith("\\"):
        raise UsageError(f"{what} {path!r} must name a file")
    if "\0" in p:
        raise UsageError(f"{what} must not contain NUL")
    return p


def host_device(host: str | None = None, host_gpt: str | None = None, host_mbr: str | None = None) -> Device | None:
    """The volume holding a VHD, from the options that name it (`bcd add-vhd`'s and apply's): host
    "locate" (or nothing: None, bcdedit's [locate]) or "boot", host_gpt DISK:PART, host_mbr SIG:OFFSET."""
    from wim2vhd.boot.devices import Boot, parse_host
    given = [x for x in (host, host_gpt, host_mbr) if x is not None]
    if len(given) > 1:
        raise UsageError("give only one of --host, --host-gpt and --host-mbr")
    try:
        if host_gpt is not None:
            return parse_host("gpt:" + host_gpt)
        if host_mbr is not None:
            return parse_host("mbr:" + host_mbr)
    except UsageError as e:  # the message in the options' words
        raise UsageError(e.message.replace("gpt:", "--host-gpt ").replace("mbr:", "--host-mbr ")) from None
    if host is None or host.strip().lower() == "locate":
        return None  # [locate]: add_vhd_entry searches for the VHD's own path
    if host.strip().lower() == "boot":
        return Boot()
    raise UsageError(f"--host must be locate or boot, not {host!r} (or use --host-gpt / --host-mbr)")


def add_vhd_entry(path: str | os.PathLike, vhd_path: str, *, host: Device | None = None,
                  description: str = "Windows", default: bool = False, firmware: str | None = None,
                  locale: str = "en-US", dry_run: bool = False) -> dict:
    """Add a Windows Boot Loader (+ resume) booting from a VHD/VHDX to the store at `path`.

    `host` holds the VHD file: None or Locate.by_path(...) for bcdedit's
    `[locate]`, Boot(), MbrPartition or GptPartition.  The store is replaced
    atomically and the old one kept as STORE.bak.  dry_run: every check (the store opens for
    writing, has a {bootmgr}, takes the entry; its folder is writable), the store left as it is.
    """
    p = os.path.abspath(os.fspath(path))
    if dry_run and not os.access(os.path.dirname(p), os.W_OK):
        raise OutputError(f"cannot write in {os.path.dirname(p)}: permission denied (the store {p} "
                          "is replaced there)")
    vp = normalize_windows_path(vhd_path, "--vhd-path")
    if host is None or (isinstance(host, Locate) and host.kind == 1 and not host.path):
        host = Locate.by_path(vp)
    # bcdedit: the device finds the partition by the loader's path (winload), the osdevice by its
    # systemroot (\Windows); pybcd-BCDTest and windeploy-BCD-efi hold both kinds.
    device = Vhd.for_element(vp, host, E.DEVICE)
    osdevice = Vhd.for_element(vp, host, E.OSDEVICE)
    with BcdStore.open(p, write=True) as store:
        store.read_all()  # a store `bcd show` refuses is refused here too, before anything is edited
        if store.find(el.BOOTMGR) is None:
            raise InputError(f"{p} has no Windows Boot Manager ({{bootmgr}}) to list the entry in",
                             hint="make a system store with `wim2vhd bcd create`")
        fw = store._firmware(firmware)
        guid = store.add_os_loader(description, device, osdevice, firmware=fw, locale=locale,
                                   default=default)
        loader = store.object(guid)
        resume = loader.get(E.RESUMEOBJECT)
        if not dry_run:
            store.save(p, overwrite=True, backup=True)
        is_default = store.object(el.BOOTMGR).get(E.DEFAULT) == guid
    return {"store": p, "id": guid_text(guid),
            "resume": guid_text(resume) if isinstance(resume, uuid.UUID) else None,
            "device": device.text(), "firmware": fw, "default": is_default,
            "backup": p + ".bak"}
