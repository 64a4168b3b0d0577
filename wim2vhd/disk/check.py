"""`wim2vhd disk check`: every structure of a disk and of its parents, each problem in its own words.

Unlike open(), which stops at the first thing it cannot use, a check reads each structure on its
own and goes on past what is damaged.  The format drivers do the reading (VhdDisk.check,
VhdxDisk.check, each in its *_check module); this module walks the parent chain (one level at a
time, with a cycle check and MAX_CHAIN_DEPTH), compares what each child recorded of its parent with
what the parent is, and applies repairs.

A repair only ever rewrites a redundant copy from its sound twin: the VHD footer copy, a VHDX header
or region table.  Nothing else is repaired, and a structure with no sound copy is refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from wim2vhd.disk.base import MAX_CHAIN_DEPTH, Disk, _file_key, open_input
from wim2vhd.errors import CorruptInput, InputError, Wim2VhdError


@dataclass
class Problem:
    path: str
    structure: str       # "footer", "header 2", "BAT", "parent"...
    message: str
    #: how to repair it: (file offset, bytes) writes, in order; None if a repair cannot fix it
    fix: list[tuple[int, bytes]] | None = None
    repaired: bool = False

    def line(self) -> str:
        done = " (repaired)" if self.repaired else " (--repair rewrites it from the sound copy)" if self.fix else ""
        return f"{self.path}: {self.structure}: {self.message}{done}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "structure": self.structure, "message": self.message,
                "repairable": self.fix is not None, "repaired": self.repaired}


@dataclass
class Facts:
    """What a driver's check found in one file."""
    path: str
    format: str
    disk_type: str = "unknown"
    problems: list[Problem] = field(default_factory=list)
    #: what a child records of its parent, {name: value, or a tuple of accepted values}
    identity: dict[str, Any] = field(default_factory=dict)
    #: for a differencing disk: what it recorded of its parent, and where the parent may be
    expect: dict[str, Any] = field(default_factory=dict)
    parent_candidates: list[str] | None = None

    def add(self, structure: str, message: str, fix: list[tuple[int, bytes]] | None = None) -> None:
        self.problems.append(Problem(self.path, structure, message, fix))


def _driver(path: str, fd: int, fmt: type[Disk] | None = None):
    formats = Disk.formats
    found = formats.detect(*formats.ends(fd))
    if fmt is not None:
        # -f/--format: checked as that format, as an extension would have it, unless the content is
        # another format's (then refused: CorruptInput, naming what it looks like).
        if found is not None:
            formats.check_named(path, fmt, found)
        return fmt
    if found is not None:
        return found
    # Named like a virtual disk but without its signature: check it as one, and say what is wrong.
    return formats.format_for_path(path) if os.path.splitext(path)[1].lower() in (".vhd", ".vhdx", ".qcow2") \
        else formats.RawDisk


def check_file(path: str, repair: bool = False, fmt: type[Disk] | None = None) -> Facts:
    """One file's structures (no parent), repaired where asked and possible; fmt: check it as that
    format (refused when its content is another's), else its content or extension says it."""
    fd = open_input(path, writable=repair)
    try:
        fmt = _driver(path, fd, fmt)
        facts = fmt.check(path, fd)
        if repair:
            _repair(fd, facts)
            if any(p.repaired for p in facts.problems):
                again = fmt.check(path, fd)
                fixed = [p for p in facts.problems if p.repaired]
                facts.problems = fixed + again.problems
        return facts
    finally:
        os.close(fd)


def _repair(fd: int, facts: Facts) -> None:
    """Rewrite each repairable copy; refuse, before writing anything, when a problem has no sound copy
    to repair from while its twin is damaged too (the driver then gives no fix for either)."""
    fixes = [p for p in facts.problems if p.fix]
    if not fixes:
        if facts.problems:
            raise CorruptInput(f"{facts.path}: nothing --repair can fix: {facts.problems[0].structure}: "
                               f"{facts.problems[0].message} (no sound copy to rewrite it from)")
        return
    for p in fixes:
        for off, data in p.fix:
            view, pos = memoryview(data), off
            while view:
                n = os.pwrite(fd, view, pos)
                view, pos = view[n:], pos + n
            os.fsync(fd)  # each copy durable before the next is touched
        p.repaired = True


_NAMES = {"unique_id": "unique ID", "timestamp": "time stamp", "size": "virtual size",
          "data_write_guid": "DataWriteGuid", "sector_size": "logical sector size"}


def _show(v: Any) -> str:
    if isinstance(v, bytes):
        import uuid
        return str(uuid.UUID(bytes=v))
    if isinstance(v, tuple):
        return " or ".join(_show(x) for x in v) or "nothing"
    return str(v)


def _linkage(child: Facts, parent: Facts) -> list[Problem]:
    """What the child recorded of its parent against what the parent is: a parent that changed since
    the child was made (another ID, time stamp or size) is named here, not read silently."""
    out = []
    for k, want in child.expect.items():
        if k not in parent.identity:
            continue
        got = parent.identity[k]
        ok = got in want if isinstance(want, tuple) else got == want
        if not ok:
            out.append(Problem(child.path, "parent", f"the parent {parent.path!r} has {_NAMES.get(k, k)} {_show(got)}, "
                                                     f"the child recorded {_show(want)}: the parent changed since "
                                                     "the child was made, or is another disk"))
    return out


def check(path: str, repair: bool = False, format: str | None = None) -> dict[str, Any]:
    """Check path and its parent chain.  Returns {"path", "format", "type", "chain", "problems", "sound"}.
    format: path's format (raw, vhd, vhdx, qcow2, any case; -f/--format); its parents' are found
    from their content."""
    fmt = Disk.formats.named_format(format) if format is not None else None
    top = check_file(path, repair, fmt)
    chain, problems = [top], list(top.problems)
    seen = {}
    try:
        fd = open_input(path)
        seen[_file_key(fd)] = path
        os.close(fd)
    except InputError:
        pass
    cur = top
    while cur.parent_candidates is not None:
        found = next((p for p in cur.parent_candidates if os.path.exists(p)), None)
        if found is None:
            problems.append(Problem(cur.path, "parent", "parent disk not found (looked for: "
                                    f"{', '.join(map(repr, cur.parent_candidates)) or 'nothing recorded'})"))
            break
        if len(chain) > MAX_CHAIN_DEPTH:
            problems.append(Problem(cur.path, "parent", f"the parent chain is more than {MAX_CHAIN_DEPTH} disks deep"))
            break
        try:
            fd = open_input(found)
            key = _file_key(fd)
            os.close(fd)
            if key in seen:
                problems.append(Problem(cur.path, "parent", f"the parent chain loops: its parent {found!r} is "
                                                            f"{seen[key]!r}, already in the chain"))
                break
            seen[key] = found
            parent = check_file(found, repair)
        except Wim2VhdError as e:
            problems.append(Problem(cur.path, "parent", f"parent {found!r}: {e}"))
            break
        problems += parent.problems + _linkage(cur, parent)
        chain.append(parent)
        cur = parent
    return {"path": path, "format": top.format, "type": top.disk_type, "chain": [f.path for f in chain],
            "problems": problems, "sound": not any(not p.repaired for p in problems)}
