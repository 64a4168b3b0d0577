"""A whole store as bcdedit /enum all shows it, as text or as JSON records."""
from __future__ import annotations

import uuid

from wim2vhd.boot import elements as el
from wim2vhd.boot.elements import E, Format, ObjectType
from wim2vhd.boot.store import BcdObject, BcdStore
from wim2vhd.boot.values import format_value, guid_text, value_to_json

_TYPE_RANK = {ObjectType.FWBOOTMGR: 0, ObjectType.BOOTMGR: 1, ObjectType.OSLOADER: 2,
              ObjectType.RESUME: 3, ObjectType.MEMDIAG: 4}


def _sort_key(order: list[uuid.UUID]):
    """bcdedit /enum all order: boot managers, loaders, resume, tools, other
    applications, inheritable settings, device options; then display order."""
    def key(entry: tuple[BcdObject, int, dict]):
        o, t, _ = entry
        rank = _TYPE_RANK.get(t, {1: 5, 2: 6, 3: 7}.get(el.object_kind(t), 8))
        pos = order.index(o.id) if o.id in order else len(order)
        return (rank, pos, str(o.id))
    return key


def _format_name(element: int) -> str:
    try:
        return Format(el.element_format(element)).name.lower()
    except ValueError:
        return "unknown"


def describe(store: BcdStore, *, verbose: bool = False) -> list[dict]:
    """Every object with every element: id, names, values, display text.  Read by BcdStore.read_all, the
    check every edit runs first: a store this shows is one an edit takes."""
    objs = store.read_all()
    order: list[uuid.UUID] = []
    default = None
    for o, _, elements in objs:
        if o.id == el.BOOTMGR:
            for e in (E.DISPLAYORDER, E.TOOLSDISPLAYORDER):
                if isinstance(elements.get(e), list):
                    order += elements[e]
            d = elements.get(E.DEFAULT)
            default = d if isinstance(d, uuid.UUID) else None
    names: dict[uuid.UUID, str] = {}
    if not verbose:
        names = dict(el.ALIAS_OF)
        if default is not None:
            names[default] = "{default}"
    out = []
    for o, t, elements in sorted(objs, key=_sort_key(order)):
        elems = []
        for eid, val in elements.items():
            info = el.element_info(eid, t)
            elems.append({
                "id": f"0x{eid:08x}",
                "name": el.element_name(eid, t),
                "format": _format_name(eid),
                "lines": format_value(eid, val, t, names),
                "value": value_to_json(val),
                "known": info is not None,
            })
        out.append({
            "id": guid_text(o.id),
            "identifier": names.get(o.id, guid_text(o.id)),
            "alias": o.alias,
            "type": f"0x{t:08x}",
            "title": el.object_title(t, o.id),
            "elements": elems,
        })
    return out


def render_text(objects: list[dict]) -> str:
    """bcdedit /enum all style text."""
    blocks = []
    for o in objects:
        lines = [o["title"], "-" * len(o["title"]), f"{'identifier':<24}{o['identifier']}"]
        for e in o["elements"]:
            first, *rest = e["lines"]
            lines.append(f"{e['name']:<24}{first}".rstrip())
            lines += [" " * 24 + r for r in rest]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")
