"""The store's part of `wim2vhd verify`: {bootmgr}, its default loader and what they name.

For each (device, path) pair of an object (device/path, osdevice/systemroot) the device is
resolved to a partition of the disk being verified (wim2vhd.verify.Verifier), then the path is
looked for on it.  A locate device that searches for the very path it is paired with and finds it
nowhere is one fact, reported once: the file is missing.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from wim2vhd.boot import elements as el
from wim2vhd.boot.devices import Boot, GptPartition, Locate, LOCATE_BY_ELEMENT, MbrPartition
from wim2vhd.boot.elements import E, ObjectType
from wim2vhd.partition import Partition
from wim2vhd.verify.result import OK, PROBLEM, SKIPPED, WARNING, pname


@dataclass
class Found:
    """Where a device resolves: a partition, a problem, or undetermined (a partition it may be on
    cannot be read)."""

    part: Partition | None = None
    problem: str | None = None
    undetermined: str | None = None


def locate(v, path: str) -> Found:
    """What a locate device finds: the first partition (in table order) whose file system holds path."""
    for p in v.table.partitions:
        view = v.views.get(p.number)
        if view is not None and view.exists(path):
            return Found(p)
    if v.unreadable:
        return Found(undetermined=f"partition {', '.join(str(n) for n in sorted(v.unreadable))} cannot be read")
    return Found(problem=f"no partition of this disk holds {path}")


def gpt_partition(v, disk_id: uuid.UUID, part_id: uuid.UUID) -> Found:
    t = v.table
    if t.scheme != "gpt" or uuid.UUID(t.disk_guid) != disk_id:
        return Found(problem=f"it names GPT disk {disk_id}, not this disk"
                     + (f" ({t.disk_guid})" if t.scheme == "gpt" else " (an MBR disk)"))
    p = next((p for p in t.partitions if p.guid and uuid.UUID(p.guid) == part_id), None)
    return Found(p) if p else Found(problem=f"this disk has no partition {part_id}")


def mbr_partition(v, signature: int, offset: int) -> Found:
    t = v.table
    if t.scheme != "mbr" or t.disk_signature != signature:
        return Found(problem=f"it names MBR disk 0x{signature:08x}, not this disk"
                     + (f" (0x{t.disk_signature:08x})" if t.scheme == "mbr" else " (a GPT disk)"))
    p = next((p for p in t.partitions if p.start == offset), None)
    return Found(p) if p else Found(problem=f"this disk has no partition at offset {offset}")


def _label(obj, default: uuid.UUID | None) -> str:
    if obj.id == default:
        return "{default}"
    return el.ALIAS_OF.get(obj.id) or "{%s}" % obj.id


def _name(obj, element: int) -> str:
    return el.element_name(element, obj.type)


def resolve(v, obj, dev, label: str) -> tuple[Found, str | None]:
    """(where the device is, the path a locate device searched for, if any)."""
    if isinstance(dev, Boot):
        if v.system is None:
            return Found(problem="`boot` is the system partition, and this disk has none"), None
        return Found(v.system), None
    if isinstance(dev, GptPartition):
        return gpt_partition(v, dev.disk, dev.partition), None
    if isinstance(dev, MbrPartition):
        return mbr_partition(v, dev.signature, dev.offset), None
    if isinstance(dev, Locate):
        if dev.parent is not None:
            return Found(problem=f"it searches inside {dev.parent.text()}, not this disk's partitions"), None
        if dev.kind == LOCATE_BY_ELEMENT:
            target = obj.get(dev.element)
            if not isinstance(target, str) or not target:
                return Found(problem=f"it searches for the path in {_name(obj, dev.element)}, which {label} "
                                      "does not have"), None
        else:
            target = dev.path
        return locate(v, target), target
    return Found(problem="it is not a partition of this disk"), None


def device_file(v, obj, label: str, dev_el: int, path_el: int | None, severity: str, *,
                want_dir: bool = False) -> None:
    """Check that obj's device resolves on this disk and (path_el given) that its path is there."""
    dn = _name(obj, dev_el)
    pn = _name(obj, path_el) if path_el is not None else None
    name = f"{label} {pn or dn}"
    dev = obj.get(dev_el)
    path = obj.get(path_el) if path_el is not None else None
    if dev is None:
        v.add(name, severity, f"{label} has no {dn}")
        return
    if path_el is not None and (not isinstance(path, str) or not path):
        v.add(name, severity, f"{label} has no {pn}")
        return
    found, searched = resolve(v, obj, dev, label)
    if found.undetermined:
        v.add(name, SKIPPED, f"{label} {dn} {dev.text()}: {found.undetermined}")
        return
    if found.problem:
        if path is not None and searched is not None and searched.lower() == path.lower():
            v.add(name, severity, f"{path} is missing: no partition of this disk holds it "
                                  f"({label} {dn} is {dev.text()})")
        else:
            v.add(name, severity, f"{label} {dn} {dev.text()} does not resolve to a partition of this disk: "
                                  f"{found.problem}")
        return
    p = found.part
    if path is None:
        v.add(name, OK, f"{dev.text()}: {pname(p)}")
        return
    view = v.views.get(p.number)
    if view is None:
        if p.number in v.unreadable:
            v.add(name, SKIPPED, f"{pname(p)} cannot be read")
        else:
            v.add(name, severity, f"{label} {dn} is {pname(p)}, which holds no file system, so no {path}")
        return
    there = view.is_dir(path) if want_dir else (view.exists(path) and not view.is_dir(path))
    if not there:
        v.add(name, severity, f"{path} is missing from {pname(p)} ({label} {pn})")
    else:
        v.add(name, OK, f"{path} on {pname(p)}")


def _check_loader(v, store, obj, label: str, severity: str) -> None:
    if obj.type != ObjectType.OSLOADER:
        v.add(f"{label}", severity, f"{label} is a {el.object_title(obj.type, obj.id)}, not a Windows Boot Loader")
        return
    device_file(v, obj, label, E.DEVICE, E.PATH, severity)
    path = obj.get(E.PATH)
    want = ".efi" if v.firmware == "uefi" else ".exe"
    if isinstance(path, str) and not path.lower().endswith(want):
        v.add(f"{label} firmware", severity, f"{label} path {path} is not a {v.firmware.upper()} loader "
                                             f"(a {v.firmware} store needs a *{want} loader)")
    device_file(v, obj, label, E.OSDEVICE, E.SYSTEMROOT, severity, want_dir=True)
    r = obj.get(E.RESUMEOBJECT)
    if isinstance(r, uuid.UUID):
        ro = store.find(r)
        rl = f"{label}'s resume object {{{r}}}"
        if ro is None:
            v.add(rl, WARNING, f"{rl} is not in the store")
            return
        # A resume object is used only to wake from hibernation: what is wrong with it does not
        # stop a boot.  Its file (hiberfil.sys) exists only after a hibernation: not looked for.
        device_file(v, ro, rl, E.DEVICE, E.PATH, WARNING)
        device_file(v, ro, rl, E.FILEDEVICE, None, WARNING)


def check_store(v, store) -> None:
    """Everything under {bootmgr} (v: the wim2vhd.verify.Verifier)."""
    bm = store.find(el.BOOTMGR)
    if bm is None:
        v.add("{bootmgr}", PROBLEM, "the BCD store has no boot manager ({bootmgr})")
        return
    if v.firmware == "uefi":
        device_file(v, bm, "{bootmgr}", E.DEVICE, E.PATH, PROBLEM)
    else:
        # BIOS: the boot code loads \bootmgr itself (checked with the system partition); its object's
        # path is optional.
        device_file(v, bm, "{bootmgr}", E.DEVICE, E.PATH if bm.get(E.PATH) else None, PROBLEM)
    default = bm.get(E.DEFAULT)
    if not isinstance(default, uuid.UUID):
        v.add("{default}", PROBLEM, "{bootmgr} has no default entry")
    elif store.find(default) is None:
        v.add("{default}", PROBLEM, f"{{bootmgr}}'s default entry {{{default}}} is not in the store")
    else:
        _check_loader(v, store, store.find(default), "{default}", PROBLEM)
    listed = []
    for e in (E.DISPLAYORDER, E.TOOLSDISPLAYORDER):
        ids = bm.get(e)
        listed += [g for g in ids if isinstance(g, uuid.UUID)] if isinstance(ids, list) else []
    for g in dict.fromkeys(listed):
        if g == default:
            continue
        o = store.find(g)
        label = el.ALIAS_OF.get(g) or "{%s}" % g
        if o is None:
            v.add(label, WARNING, f"{{bootmgr}} lists {label}, which is not in the store")
        elif o.type == ObjectType.OSLOADER:
            _check_loader(v, store, o, label, WARNING)
        else:
            device_file(v, o, label, E.DEVICE, E.PATH, WARNING)
