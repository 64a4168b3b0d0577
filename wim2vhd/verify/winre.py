"""WinRE's part of `wim2vhd verify`: what `apply --recovery` leaves (wim2vhd.boot.winre), checked.

In each store (check_store_winre, after the store's own checks): the default loader's
recoverysequence names a Windows Boot Loader in the store, recoveryenabled is set, the loader's
device is a RAM disk whose host resolves to a partition of this disk holding the RAM disk's image
(\\Recovery\\WindowsRE\\Winre.wim), and its device options object names a boot.sdi on that same
partition.

Once per disk (check_winre, after every store): the recovery partition (the one the RAM disk's host
resolves to, else the one whose type says recovery) has the type its table needs (GPT: WinRE's type
with attributes 0x8000000000000001, "required" and "no drive letter"; MBR: 0x27), and the Windows
partition's \\Windows\\System32\\Recovery\\ReAgent.xml names the same place (WinreLocation: path,
disk and offset) and the same loader (WinreBCD), with Winre.wim no longer beside it.

A disk with no recovery partition and no recoverysequence has no WinRE: that is not a problem
(summary "winre": "absent").  A file two stores of a hybrid disk both name is checked once.
"""
from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

from wim2vhd import partition
from wim2vhd.boot import devices as dv
from wim2vhd.boot.elements import E, ObjectType
from wim2vhd.boot.winre import BOM, REAGENT
from wim2vhd.verify.result import OK, PROBLEM, SKIPPED, pname

WINRE_IN_IMAGE = "\\" + REAGENT.rsplit("\\", 1)[0] + "\\Winre.wim"
REAGENT_PATH = "\\" + REAGENT


class WinreState:
    """What the store checks found, for the disk's checks: kept on the Verifier as `v.winre`."""

    def __init__(self):
        self.seen = False                        # some store's default loader has a recoverysequence
        self.loader: uuid.UUID | None = None     # the WinRE loader that resolved
        self.part: partition.Partition | None = None   # where its RAM disk's image is
        self.folder: str | None = None           # the image's folder there (\Recovery\WindowsRE)
        self.done: set = set()                   # (partition, path) already checked

    @property
    def state(self) -> str:
        return "present" if self.seen else "absent"


def _recovery_parts(v) -> list[partition.Partition]:
    return [p for p in v.table.partitions if p.role == "recovery"]


def _resolve(v, obj, dev, label):
    from wim2vhd.verify.bcd import resolve
    return resolve(v, obj, dev, label)[0]


def _file_once(v, name: str, p: partition.Partition, path: str, why: str) -> None:
    """Is `path` a file on p (once per disk)."""
    st = v.winre
    if (p.number, path.lower()) in st.done:
        return
    st.done.add((p.number, path.lower()))
    view = v.views.get(p.number)
    if view is None:
        v.add(name, SKIPPED if p.number in v.unreadable else PROBLEM,
              f"{pname(p)} cannot be read" if p.number in v.unreadable
              else f"{pname(p)} holds no file system, so no {path} ({why})")
    elif view.exists(path) and not view.is_dir(path):
        v.add(name, OK, f"{path} on {pname(p)}")
    else:
        v.add(name, PROBLEM, f"{path} is missing from {pname(p)} ({why})")


def check_store_winre(v, store) -> None:
    """The WinRE objects of one store (v: the wim2vhd.verify.Verifier)."""
    from wim2vhd.boot import elements as el
    bm = store.find(el.BOOTMGR)
    default_id = bm.get(E.DEFAULT) if bm is not None else None
    default = store.find(default_id) if isinstance(default_id, uuid.UUID) else None
    if default is None:
        return  # the store's checks said so
    seq = default.get(E.RECOVERYSEQUENCE)
    ids = [g for g in seq if isinstance(g, uuid.UUID)] if isinstance(seq, list) else []
    if not ids:
        rec = _recovery_parts(v)
        if rec:
            v.winre.seen = True
            v.add("WinRE recoverysequence", PROBLEM, f"{{default}} has no recoverysequence: WinRE on the recovery "
                                                     f"{pname(rec[0])} is never started")
        return
    v.winre.seen = True
    if default.get(E.RECOVERYENABLED) is not True:
        v.add("WinRE recoveryenabled", PROBLEM, "{default} does not have recoveryenabled set: a failed boot "
                                                "does not start WinRE")
    else:
        v.add("WinRE recoveryenabled", OK)
    lid = ids[0]
    obj = store.find(lid)
    label = "{%s}" % lid
    if obj is None:
        v.add("WinRE loader", PROBLEM, f"{{default}}'s recoverysequence {label} is not in the store")
        return
    if obj.type != ObjectType.OSLOADER:
        v.add("WinRE loader", PROBLEM, f"{{default}}'s recoverysequence {label} is a "
                                       f"{el.object_title(obj.type, obj.id)}, not a Windows Boot Loader")
        return
    dev = obj.get(E.DEVICE)
    if not isinstance(dev, dv.Ramdisk):
        v.add("WinRE loader", PROBLEM, f"the WinRE loader {label}'s device is "
                                       f"{dev.text() if dev is not None else 'not set'}, not a RAM disk")
        return
    found = _resolve(v, obj, dev.parent, label)
    if found.undetermined or found.problem:
        v.add("WinRE loader", SKIPPED if found.undetermined else PROBLEM,
              f"the WinRE loader {label}'s RAM disk host [{dev.parent.host_text()}] does not resolve to a "
              f"partition of this disk: {found.undetermined or found.problem}")
        return
    p = found.part
    v.add("WinRE loader", OK, f"{label}: {dev.text()} on {pname(p)}")
    v.winre.loader, v.winre.part = lid, p
    v.winre.folder = dev.path.rsplit("\\", 1)[0] or "\\"
    _file_once(v, "WinRE image", p, dev.path, f"the WinRE loader {label}'s RAM disk")
    _check_options(v, store, dev, label, p)


def _check_options(v, store, dev, label: str, p: partition.Partition) -> None:
    oid = dev.options
    oo = store.find(oid) if oid is not None else None
    if oo is None:
        v.add("WinRE boot.sdi", PROBLEM, f"the WinRE loader {label}'s RAM disk options "
                                         f"{'{%s}' % oid if oid else ''} are not in the store")
        return
    sdi_dev, sdi_path = oo.get(E.RAMDISKSDIDEVICE), oo.get(E.RAMDISKSDIPATH)
    if sdi_dev is None or not isinstance(sdi_path, str) or not sdi_path:
        v.add("WinRE boot.sdi", PROBLEM, f"the WinRE RAM disk options {{{oid}}} have no ramdisksdidevice "
                                         "and ramdisksdipath")
        return
    found = _resolve(v, oo, sdi_dev, "{%s}" % oid)
    if found.undetermined or found.problem or found.part.number != p.number:
        v.add("WinRE boot.sdi", SKIPPED if found.undetermined else PROBLEM,
              f"the WinRE RAM disk options {{{oid}}} ramdisksdidevice {sdi_dev.text()} is not the recovery "
              f"{pname(p)}: {found.undetermined or found.problem or pname(found.part)}")
        return
    _file_once(v, "WinRE boot.sdi", p, sdi_path, f"the WinRE RAM disk options {{{oid}}} ramdisksdipath")


def _type_problem(v, p: partition.Partition) -> str | None:
    if v.table.scheme == "gpt":
        if p.type_guid != partition.TYPE_WINRE:
            return (f"the recovery {pname(p)} has type {p.type_guid}, not WinRE's {partition.TYPE_WINRE}: Windows "
                    "does not keep it as a recovery partition")
        if p.attributes & partition.ATTR_WINRE != partition.ATTR_WINRE:
            return (f"the recovery {pname(p)} has attributes 0x{p.attributes:016x}, not 0x{partition.ATTR_WINRE:016x} "
                    "(required, no drive letter)")
    elif p.mbr_type != partition.MBR_TYPE_WINRE:
        return (f"the recovery {pname(p)} has MBR type 0x{p.mbr_type:02x}, not 0x{partition.MBR_TYPE_WINRE:02x}: "
                "Windows does not keep it as a recovery partition")
    return None


def _expected_location(v, p: partition.Partition, folder: str) -> dict[str, str]:
    from wim2vhd.boot.winre import ZERO_GUID
    t = v.table
    if t.scheme == "gpt":
        ident, guid = "0", "{%s}" % t.disk_guid
    else:
        ident, guid = str(t.disk_signature), ZERO_GUID
    return {"path": folder, "id": ident, "offset": str(p.start), "guid": guid}


def _check_reagent(v, p: partition.Partition, folder: str) -> None:
    w = v.windows
    if w is None:
        v.add("WinRE ReAgent.xml", SKIPPED, "the Windows partition cannot be read")
        return
    if w.exists(WINRE_IN_IMAGE):
        v.add("WinRE in Windows", PROBLEM, f"{WINRE_IN_IMAGE} is still on {pname(w.part)}: WinRE was not moved "
                                           "to the recovery partition")
    if not w.exists(REAGENT_PATH):
        v.add("WinRE ReAgent.xml", PROBLEM, f"{REAGENT_PATH} is missing from {pname(w.part)}: reagentc does not "
                                            "know where WinRE is")
        return
    data = w.read(REAGENT_PATH)
    try:
        root = ET.fromstring(data[len(BOM):] if data.startswith(BOM) else data)
    except ET.ParseError as e:
        v.add("WinRE ReAgent.xml", PROBLEM, f"{REAGENT_PATH} on {pname(w.part)} is not XML: {e}")
        return
    loc, bcd = root.find("WinreLocation"), root.find("WinreBCD")
    want = _expected_location(v, p, folder)
    have = {k: (loc.get(k) or "") for k in want} if loc is not None else None
    if have is None or {k: x.lower() for k, x in have.items()} != {k: x.lower() for k, x in want.items()}:
        said = " ".join(f'{k}="{x}"' for k, x in have.items()) if have else "no WinreLocation"
        v.add("WinRE ReAgent.xml", PROBLEM, f"{REAGENT_PATH} names {said}, not WinRE's "
                                            + " ".join(f'{k}="{x}"' for k, x in want.items()))
        return
    lid = v.winre.loader
    if lid is not None and (bcd is None or (bcd.get("id") or "").lower() != "{%s}" % lid):
        v.add("WinRE ReAgent.xml", PROBLEM, f"{REAGENT_PATH}'s WinreBCD is {bcd.get('id') if bcd is not None else 'missing'}, "
                                            f"not the WinRE loader {{{lid}}}")
        return
    v.add("WinRE ReAgent.xml", OK, f"{REAGENT_PATH} names {folder} on {pname(p)}")


def check_winre(v) -> None:
    """The recovery partition and ReAgent.xml, after every store's check_store_winre."""
    from wim2vhd.boot.winre import RECOVERY_DIR
    st = v.winre
    rec = _recovery_parts(v)
    if not st.seen and not rec:
        v.add("WinRE", SKIPPED, "WinRE is absent: no recovery partition, and the default loader has no "
                                "recoverysequence")
        return
    st.seen = True
    p = st.part or (rec[0] if rec else None)
    if p is None:
        v.add("WinRE partition", SKIPPED, "the WinRE loader does not resolve to a partition")
        return
    why = _type_problem(v, p)
    v.add("WinRE partition", PROBLEM if why else OK, why or f"{pname(p)}, the type and attributes of a recovery "
                                                          "partition")
    _check_reagent(v, p, st.folder or "\\" + RECOVERY_DIR)
