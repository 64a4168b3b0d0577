"""`disk check` of a qcow2 file, as deep as `qemu-img check`: every L1 and L2 entry, and the refcounts
rebuilt from the metadata and compared with the stored ones (docs/interop/qcow2.txt).

What it reports, each kind of problem on one line (with the first few clusters it concerns):
- entries with reserved bits set, not aligned to a cluster, or pointing past the end of the file;
- the COPIED flag (bit 63) where the cluster's refcount is not exactly 1, or missing where it is;
- clusters in use whose stored refcount is below their references (corruption: qemu could allocate
  them again, overwriting data), and clusters whose refcount is above them (leaks: space lost, no data
  at risk; `--repair` lowers those refcounts, the one repair made here);
- the dirty and corrupt bits.
Internal snapshots hold references of their own that this does not walk: with snapshots the refcounts
are not compared (and the check says so).
"""
from __future__ import annotations

import array
import sys
from dataclasses import dataclass, field
from typing import Any

from wim2vhd.disk import qcow2_layout as layout
from wim2vhd.disk.base import read_exact
from wim2vhd.disk.qcow2_parse import compressed_clusters, compressed_range, u64s

SHOW = 4  # clusters named per problem line

L1E_RESERVED = ((1 << 63) - 1) & ~layout.L1E_OFFSET_MASK            # bits 0-8 and 56-62
L2E_RESERVED = ((1 << 62) - 1) & ~layout.L2E_OFFSET_MASK & ~layout.OFLAG_ZERO  # bits 1-8 and 56-61
RTE_RESERVED = ~layout.RT_OFFSET_MASK & ((1 << 64) - 1)            # bits 0-8


@dataclass
class Walk:
    """What the walk found: references per host cluster, and problems by kind."""
    path: str
    bits: int
    file_size: int
    refs: dict[int, int] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    copied: list[tuple[int, int, bool]] = field(default_factory=list)  # (cluster, entry offset, flag set)

    def ref(self, cluster: int, n: int = 1) -> None:
        self.refs[cluster] = self.refs.get(cluster, 0) + n

    def bad(self, kind: str, where: str) -> None:
        self.problems.setdefault(kind, []).append(where)

    def ref_range(self, offset: int, length: int) -> None:
        for c in range(offset >> self.bits, (offset + max(length, 1) - 1 >> self.bits) + 1):
            self.ref(c)


def refcount_entries(raw: bytes, order: int) -> list[int]:
    """The refcounts of one refcount block (big-endian entries of 1 << order bits)."""
    width = 1 << order
    if width >= 8:
        code = {8: "B", 16: "H", 32: "I", 64: "Q"}[width]
        a = array.array(code)
        a.frombytes(raw)
        if sys.byteorder == "little" and width > 8:
            a.byteswap()
        return a.tolist()
    per = 8 // width  # sub-byte entries, the first in the byte's most significant bits
    mask = (1 << width) - 1
    return [(b >> (8 - width * (i + 1))) & mask for b in raw for i in range(per)]


def _fixed_structures(w: Walk, h: dict[str, Any]) -> bool:
    """The header, L1 table and refcount table counted; False if a table lies outside the file (then
    nothing else can be walked)."""
    cs = 1 << w.bits
    w.ref(0)  # the header cluster (with its extensions and the backing file name)
    ok = True
    for what, off, n in (("the L1 table", h["l1_table_offset"], h["l1_size"] * 8),
                         ("the refcount table", h["refcount_table_offset"], h["refcount_table_clusters"] * cs)):
        if off % cs or off + n > w.file_size:
            w.bad("tables not aligned to a cluster or past the end of the file", what)
            ok = False
        elif n:
            w.ref_range(off, n)
    return ok


def _walk_l2(w: Walk, fd: int, l2_off: int, l1_index: int, version: int) -> None:
    cs = 1 << w.bits
    table = u64s(read_exact(fd, cs, l2_off, "qcow2 L2 table", w.path, w.file_size))
    for i, e in enumerate(table):
        if e == 0:
            continue
        where = f"L2 entry {l1_index}:{i}"
        if e & layout.OFLAG_COMPRESSED:
            off, n = compressed_range(e, w.bits)
            if off + n > w.file_size + 511:  # (the last sector may be partly past the end, as qemu writes it)
                w.bad("compressed cluster past the end of the file", where)
                continue
            for c in compressed_clusters(e, w.bits):
                w.ref(c)
            continue
        if e & L2E_RESERVED:
            w.bad("L2 entries with reserved bits set", where)
            continue
        if e & layout.OFLAG_ZERO and version < 3:
            w.bad("zero-cluster flag in a version 2 image", where)
        host = e & layout.L2E_OFFSET_MASK
        if host == 0:
            if e & layout.OFLAG_COPIED:
                w.bad("COPIED flag on an unallocated entry", where)
            continue
        if host % cs:
            w.bad("data clusters not aligned to a cluster", where)
            continue
        if host + cs > w.file_size:
            w.bad("data clusters past the end of the file", where)
            continue
        w.ref(host >> w.bits)
        w.copied.append((host >> w.bits, l2_off + i * 8, bool(e & layout.OFLAG_COPIED)))


def _walk_l1(w: Walk, fd: int, h: dict[str, Any]) -> None:
    cs = 1 << w.bits
    if not h["l1_size"]:
        return
    l1 = u64s(read_exact(fd, h["l1_size"] * 8, h["l1_table_offset"], "qcow2 L1 table", w.path, w.file_size))
    walked: set[int] = set()
    for i, e in enumerate(l1):
        off = e & layout.L1E_OFFSET_MASK
        if e & L1E_RESERVED:
            w.bad("L1 entries with reserved bits set", f"L1 entry {i}")
            continue
        if off == 0:
            continue
        if off % cs or off + cs > w.file_size:
            w.bad("L2 tables not aligned or past the end of the file", f"L1 entry {i}")
            continue
        w.ref(off >> w.bits)
        w.copied.append((off >> w.bits, h["l1_table_offset"] + i * 8, bool(e & layout.OFLAG_COPIED)))
        if off in walked:  # (shared by two L1 entries: its refcount says so; walked once, so that the
            continue       # check stays linear in the file's size whatever the tables say)
        walked.add(off)
        _walk_l2(w, fd, off, i, h["version"])


def _stored_refcounts(w: Walk, fd: int, h: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """{host cluster: (stored refcount, file offset of its entry)} for every nonzero stored refcount;
    each refcount block is referenced by the walk too."""
    cs = 1 << w.bits
    order = h["refcount_order"]
    per_block = cs * 8 >> order
    rt = u64s(read_exact(fd, h["refcount_table_clusters"] * cs, h["refcount_table_offset"],
                         "qcow2 refcount table", w.path, w.file_size))
    stored: dict[int, tuple[int, int]] = {}
    blocks: set[int] = set()
    for i, e in enumerate(rt):
        if e == 0:
            continue
        off = e & layout.RT_OFFSET_MASK
        if e & RTE_RESERVED or off % cs or off + cs > w.file_size:
            w.bad("refcount blocks with reserved bits, not aligned or past the end of the file",
                  f"refcount table entry {i}")
            continue
        w.ref(off >> w.bits)
        if off in blocks:  # one block for two ranges of clusters: counted (a refcount mismatch), read once
            w.bad("refcount blocks used for two ranges of clusters", f"refcount table entry {i}")
            continue
        blocks.add(off)
        block = refcount_entries(read_exact(fd, cs, off, "qcow2 refcount block", w.path, w.file_size), order)
        for j, n in enumerate(block):
            if n:
                entry_at = off + (j << order) // 8 if order >= 3 else -1  # sub-byte entries: no single-entry write
                stored[i * per_block + j] = (n, entry_at)
    return stored


def _clusters(items: list[Any]) -> str:
    more = f" and {len(items) - SHOW} more" if len(items) > SHOW else ""
    return ", ".join(str(x) for x in items[:SHOW]) + more


def walk(fd: int, path: str, h: dict[str, Any], file_size: int, facts) -> None:
    """Every problem of the file's tables into `facts` (disk.check.Facts)."""
    w = Walk(path, h["cluster_bits"], file_size)
    inc = h["incompatible_features"]
    if inc & layout.INCOMPAT_DIRTY:
        facts.add("header", "the dirty bit is set: the refcounts may be behind (lazy refcounts); "
                            "`qemu-img check -r all` brings them up to date")
    if inc & layout.INCOMPAT_CORRUPT:
        facts.add("header", "the corrupt bit is set: qemu found damage and marked the image not to be written")
    if not _fixed_structures(w, h):
        for kind, where in w.problems.items():
            facts.add("tables", f"{kind}: {_clusters(where)}")
        return
    _walk_l1(w, fd, h)
    stored = _stored_refcounts(w, fd, h)
    for kind, where in w.problems.items():
        facts.add("tables", f"{kind}: {_clusters(where)}")
    if h["nb_snapshots"]:
        facts.add("refcounts", f"not compared: the image has {h['nb_snapshots']} internal snapshot(s), whose "
                               "references this check does not walk (`qemu-img check` does)")
        return
    _compare(w, stored, h, facts)


def _compare(w: Walk, stored: dict[int, tuple[int, int]], h: dict[str, Any], facts) -> None:
    order = h["refcount_order"]
    low = sorted(c for c, n in w.refs.items() if stored.get(c, (0, 0))[0] < n)
    # Refcounts of clusters past the end of the file are not leaks: no space is lost, and qemu-img check
    # counts only the clusters inside the file (qemu preallocates refcount entries ahead of the end).
    inside = -(-w.file_size >> w.bits)
    leaks = sorted(c for c, (n, _) in stored.items() if n > w.refs.get(c, 0) and c < inside)
    if low:
        facts.add("refcounts", "clusters in use with a refcount below their references (qemu could allocate "
                               f"them again over their data): {_clusters(low)}")
    if leaks:
        width = 1 << order
        fix = None
        if order >= 3 and not low:  # lowering a leaked refcount is safe only when nothing else is wrong
            fix = [(stored[c][1], w.refs.get(c, 0).to_bytes(width // 8, "big")) for c in leaks]
        facts.add("refcounts", f"{len(leaks)} leaked cluster(s), with a refcount above their references "
                               f"(space lost, no data at risk): {_clusters(leaks)}", fix=fix)
    wrong = [(c, at) for c, at, flag in w.copied if flag != (stored.get(c, (0, 0))[0] == 1)]
    if wrong:
        facts.add("tables", "entries whose COPIED flag disagrees with their cluster's refcount: clusters "
                            f"{_clusters([c for c, _ in wrong])}")
