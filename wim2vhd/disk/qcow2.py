"""qcow2: qemu's format (docs/interop/qcow2.txt), version 3 written, versions 2 and 3 read.

The virtual disk is cut into clusters (64 KiB by default), and a cluster is the native block: the
L2 entries become the block table, and new clusters are appended at the end of the file as for VHD
and VHDX.  A new file gets all its metadata up front (qcow2_plan in geometry.py): every L2 table
(holes until written) and every refcount block the finished file can need, so that writing data never
allocates metadata; flush() then only fills in the L2 entries and refcounts of the new clusters, the
refcounts first, so that a crash between the two leaks clusters rather than corrupting data.

A differencing disk is a qcow2 file with a backing file (of any format, named by the backing format
header extension as qemu writes it).  Its clusters hold all their data, copied up from the backing
file on the first write (native/w2v_block.c's copy_up_around): qcow2 has no sector bitmaps.

Compressed clusters are read (the native layer inflates them, keeping the last one) but not written:
an image that has them is opened read-only.  Not supported: encryption, external data files, extended L2
entries, and writing to images with snapshots.
"""
from __future__ import annotations

import array
import os
from typing import Any

from wim2vhd.disk import geometry
from wim2vhd.disk import qcow2_layout as layout
from wim2vhd.disk.qcow2_parse import be, check_features, compressed_range, read_extensions, read_header, u64s
from wim2vhd.disk.base import COMPRESSED, PRESENT, ZERO, Disk, read_exact, write_all
from wim2vhd.errors import Wim2VhdError, CorruptInput, ParentError, UnsupportedInput, UsageError
from wim2vhd._lib import ffi, lib
from wim2vhd.units import MiB

DEFAULT_CLUSTER_SIZE = 1 << layout.DEFAULT_CLUSTER_BITS
QEMU_MAX_L1_BYTES = 32 * MiB  # qemu opens no image with a larger L1 table
_opening: set[str] = set()    # backing chains being opened, to refuse a loop


def cluster_bits_for(block_size: int | None) -> int:
    cs = block_size or DEFAULT_CLUSTER_SIZE
    bits = cs.bit_length() - 1
    if cs & (cs - 1) or not layout.MIN_CLUSTER_BITS <= bits <= layout.MAX_CLUSTER_BITS:
        raise UsageError(f"unsupported qcow2 cluster size {cs}: use a power of two from 512 to 2M (default 64K)")
    return bits


def _runs(items: list[tuple[int, Any]], per_table: int) -> list[tuple[int, list[Any]]]:
    """(first index, values) for each run of consecutive indices that stays within one table."""
    out: list[tuple[int, list[Any]]] = []
    for i, v in sorted(items):
        if out and out[-1][0] + len(out[-1][1]) == i and i % per_table:
            out[-1][1].append(v)
        else:
            out.append((i, [v]))
    return out


class Qcow2Disk(Disk):
    format_name = "qcow2"
    extensions = (".qcow2",)

    @classmethod
    def probe(cls, head: bytes, file_size: int) -> bool:
        return head[:4] == layout.MAGIC

    # -- create ----------------------------------------------------------------
    @classmethod
    def create(cls, path: str, size: int, *, dynamic: bool = True, block_size: int | None = None,
               sector_size: int = 512, parent: Disk | None = None, **options: Any) -> "Qcow2Disk":
        if sector_size != 512:
            # qcow2 records no sector size (qemu's -device logical_block_size= sets it per VM).
            raise UsageError("qcow2 records no sector size, so its disks have 512-byte sectors; use .vhdx for 4096")
        if parent is not None:
            size, dynamic = parent.size, True
        if size <= 0 or size % 512:
            raise UsageError("the disk size must be a positive multiple of the 512-byte sector")
        bits = cluster_bits_for(block_size)
        cs = 1 << bits
        n_clusters = -(-size // cs)
        plan = geometry.qcow2_plan(size, bits, layout.REFCOUNT_ORDER, n_clusters)
        if plan["l1_entries"] * 8 > QEMU_MAX_L1_BYTES:
            raise UsageError(f"a qcow2 of {size} bytes with {cs}-byte clusters needs an L1 table larger than qemu's "
                             "32 MiB limit: use a larger --block-size")
        backing = cls._backing(path, parent)
        first = cls._first_cluster(size, bits, plan, backing)
        if len(first) > cs:
            raise UsageError(f"the backing file name does not fit the qcow2 header's {cs}-byte cluster")

        fixed = not dynamic
        end = (plan["data"] + (n_clusters if fixed else 0)) * cs
        l1 = array.array("Q", ((plan["l2"] + i) * cs | layout.OFLAG_COPIED for i in range(plan["l1_entries"])))
        rt = array.array("Q", ((plan["rb"] + i) * cs for i in range(plan["rb_count"])))
        used = plan["data"] + (n_clusters if fixed else 0)  # clusters with refcount 1, from cluster 0
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, end)
            write_all(fd, first, 0)
            write_all(fd, be(l1), plan["l1"] * cs)
            write_all(fd, be(rt), plan["rt"] * cs)
            # 16-bit refcounts (REFCOUNT_ORDER 4) of 1, in the refcount blocks that follow one another
            step = 4 * MiB
            for c in range(0, used, step):
                write_all(fd, b"\0\1" * min(step, used - c), plan["rb"] * cs + 2 * c)
            if fixed:
                # Every cluster allocated, in order after the metadata (preallocation=metadata, as qemu
                # calls it: the data clusters are holes that read as zeros), one L2 table at a time.
                per = cs // 8
                for t in range(plan["l2_count"]):
                    first_data = plan["data"] + t * per
                    n = min(per, n_clusters - t * per)
                    l2 = array.array("Q", range(first_data * cs | layout.OFLAG_COPIED,
                                                (first_data + n) * cs | layout.OFLAG_COPIED, cs))
                    write_all(fd, be(l2), (plan["l2"] + t) * cs)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        return cls.open(path, writable=True, _parent=parent)

    @staticmethod
    def _backing(path: str, parent: Disk | None) -> tuple[bytes, bytes] | None:
        """(file name, qemu's format name) of the backing file, or None."""
        if parent is None:
            return None
        # Relative to the child's directory, as qemu resolves a relative name: the two can move together.
        name = os.path.relpath(os.path.abspath(parent.path), os.path.dirname(os.path.abspath(path)))
        raw = os.fsencode(name)
        if len(raw) > layout.MAX_BACKING_FILE_SIZE:
            raise UsageError(f"the parent's path {name!r} is longer than qcow2's 1023 bytes")
        fmt = {v: k for k, v in layout.BACKING_FORMATS.items()}[parent.format_name]
        return raw, fmt.encode()

    @staticmethod
    def _first_cluster(size: int, bits: int, plan: dict[str, int], backing: tuple[bytes, bytes] | None) -> bytes:
        """The header, its extensions and the backing file name."""
        cs = 1 << bits
        exts = b""
        if backing is not None:
            fmt = backing[1]
            exts += layout.EXTENSION.pack({"type": layout.EXT_BACKING_FORMAT, "length": len(fmt)})
            exts += fmt + b"\0" * (-len(fmt) % 8)
        exts += layout.EXTENSION.pack({"type": layout.EXT_END, "length": 0})
        name_at = layout.V3_HEADER_LENGTH + len(exts)
        hdr = layout.HEADER_V3.pack({
            "magic": layout.MAGIC, "version": 3,
            "backing_file_offset": name_at if backing else 0, "backing_file_size": len(backing[0]) if backing else 0,
            "cluster_bits": bits, "size": size, "crypt_method": layout.CRYPT_NONE,
            "l1_size": plan["l1_entries"], "l1_table_offset": plan["l1"] * cs,
            "refcount_table_offset": plan["rt"] * cs, "refcount_table_clusters": plan["rt_clusters"],
            "nb_snapshots": 0, "snapshots_offset": 0,
            "incompatible_features": 0, "compatible_features": 0, "autoclear_features": 0,
            "refcount_order": layout.REFCOUNT_ORDER, "header_length": layout.V3_HEADER_LENGTH, "compression_type": 0,
        })
        return hdr + exts + (backing[0] if backing else b"")

    # -- open ------------------------------------------------------------------
    @classmethod
    def check(cls, path: str, fd: int):
        """What the driver checks when it opens a qcow2 file (the header and its feature bits, the L1
        and refcount tables inside the file), then every table and refcount (qcow2_check), each kind
        of problem on its own line."""
        from wim2vhd.disk.check import Facts
        facts = Facts(path, "qcow2")
        dup = os.dup(fd)
        try:
            d = cls._open_fd(path, dup, False, None)
        except Wim2VhdError as e:
            os.close(dup)
            facts.add("header", e.message.removeprefix(f"{path}: "))
            return facts
        try:
            facts.disk_type = d.disk_type
            if d.disk_type == "differencing":
                facts.parent_candidates = d.parent_paths()
        finally:
            d.close()
        from wim2vhd.disk import qcow2_check
        size = os.fstat(fd).st_size
        try:
            qcow2_check.walk(fd, path, read_header(fd, path, size), size, facts)
        except Wim2VhdError as e:
            facts.add("tables", e.message.removeprefix(f"{path}: "))
        return facts

    @classmethod
    def _open_fd(cls, path: str, fd: int, writable: bool, parent: Disk | None) -> "Qcow2Disk":
        file_size = os.fstat(fd).st_size
        h = read_header(fd, path, file_size)
        exts = read_extensions(fd, path, h)
        check_features(h, exts, path)
        bits, size = h["cluster_bits"], h["size"]
        cs = 1 << bits
        if size % 512:
            raise CorruptInput(f"{path}: qcow2 virtual size {size} is not a multiple of 512")
        need = geometry.qcow2_l1_entries(size, bits)
        l1_off, l1_size = h["l1_table_offset"], h["l1_size"]
        if l1_size < need:
            raise CorruptInput(f"{path}: the qcow2 L1 table has {l1_size} entries, {need} needed for {size} bytes")
        if l1_off % cs or l1_off + need * 8 > file_size:
            raise CorruptInput(f"{path}: the qcow2 L1 table at offset {l1_off} lies past the end of the file "
                               f"({file_size} bytes) or off a cluster boundary")
        l1 = u64s(read_exact(fd, need * 8, l1_off, "L1 table", path))

        d = cls(path, fd, {"virtual_size": size, "sector_size": 512, "block_size": cs, "alloc_align": cs,
                           "file_end": -(-file_size // cs) * cs}, writable=writable)
        d._hdr, d._exts, d._l1, d._bits = h, exts, l1, bits
        d._backing_name = os.fsdecode(read_exact(fd, h["backing_file_size"], h["backing_file_offset"],
                                                 "backing file name", path)) if h["backing_file_offset"] else None
        try:
            d._load_l2(fd, file_size)
            # qcow2 records no preallocation: a disk whose every cluster is allocated is called fixed.
            d.disk_type = "differencing" if d._backing_name else (
                "fixed" if d._present == -(-size // cs) else "dynamic")
            if writable:
                d._prepare_writes(file_size)
            if d._backing_name:
                d.set_parent(parent if parent is not None else d._parent())
        except BaseException:
            d._free_native()
            raise
        return d

    def _load_l2(self, fd: int, file_size: int) -> None:
        """Fill the native block table from the L2 tables."""
        path, h, cs = self.path, self._hdr, 1 << self._bits
        per = cs // 8
        n_blocks = -(-self.size // cs)
        zero_table = bytes(cs)
        data_off, state = self._tables()
        comp_len = None
        v3 = h["version"] == 3
        self._present, self._compressed = 0, 0
        for i, e in enumerate(self._l1):
            l2_off = e & layout.L1E_OFFSET_MASK
            if not l2_off:
                continue
            if l2_off % cs or l2_off + cs > file_size:
                raise CorruptInput(f"{path}: qcow2 L1 entry {i} points past the end of the file or off a cluster "
                                   f"boundary (offset {l2_off}, file is {file_size} bytes)")
            raw = read_exact(fd, cs, l2_off, f"L2 table {i}", path)
            if raw == zero_table:
                continue
            for j, v in enumerate(u64s(raw)):
                blk = i * per + j
                if not v or blk >= n_blocks:
                    continue
                if v & layout.OFLAG_COMPRESSED:
                    # Inflated by the native layer (W2V_ST_COMPRESSED), which is told where the stream lies.
                    coff, n = compressed_range(v, self._bits)
                    if not coff or coff >= file_size:
                        raise CorruptInput(f"{path}: qcow2 L2 entry for compressed cluster {blk} points past the end "
                                           f"of the file (offset {coff}, {n} bytes, file is {file_size} bytes)")
                    if comp_len is None:
                        comp_len = lib.w2v_comp_len(self._h)
                        if comp_len == ffi.NULL:
                            raise MemoryError("qcow2 compressed cluster table")
                    data_off[blk], state[blk], comp_len[blk] = coff, COMPRESSED, n
                    self._present += 1
                    self._compressed += 1
                    continue
                off = v & layout.L2E_OFFSET_MASK
                if v3 and v & layout.OFLAG_ZERO:
                    state[blk] = ZERO  # reads as zeros, whatever the backing file holds (a preallocation ignored)
                    continue
                if not off:
                    continue
                if off % cs or off >= file_size:
                    raise CorruptInput(f"{path}: qcow2 L2 entry for cluster {blk} points past the end of the file "
                                       f"or off a cluster boundary (offset {off}, file is {file_size} bytes)")
                data_off[blk], state[blk] = off, PRESENT
                self._present += 1

    def _prepare_writes(self, file_size: int) -> None:
        """Writes need the tables create() lays out: every L2 table there, refcounts for every cluster to come."""
        h, path, cs = self._hdr, self.path, 1 << self._bits
        inc = h["incompatible_features"]
        if self._compressed:
            # Refused rather than copied on write: a write would have to drop the old stream's references
            # (a host cluster may hold several streams), which the layout we write into never has.
            raise UnsupportedInput(f"{path}: wim2vhd does not write into qcow2 images with compressed clusters "
                                   f"({self._compressed} here): `qemu-img convert -O qcow2` makes an uncompressed copy")
        if inc & (layout.INCOMPAT_DIRTY | layout.INCOMPAT_CORRUPT) or h["nb_snapshots"]:
            raise UnsupportedInput(f"{path}: wim2vhd does not write to qcow2 images that are dirty, marked corrupt or "
                                   "have snapshots")
        if h["version"] != 3 or h["refcount_order"] != layout.REFCOUNT_ORDER or not all(self._l1):
            raise UnsupportedInput(f"{path}: wim2vhd writes only into qcow2 images laid out as it makes them "
                                   "(version 3, 16-bit refcounts, every L2 table allocated)")
        rt_len = h["refcount_table_clusters"] * cs
        self._rt = u64s(read_exact(self.fd, rt_len, h["refcount_table_offset"], "refcount table", path))
        rb_entries = cs * 8 >> layout.REFCOUNT_ORDER
        covered = 0
        while covered < len(self._rt) and self._rt[covered] & layout.RT_OFFSET_MASK:
            covered += 1
        to_come = -(-self.size // cs) - self._present
        if covered * rb_entries < self._file_end() // cs + to_come:
            raise UnsupportedInput(f"{path}: the qcow2 refcount blocks do not cover the clusters a write may add; "
                                   "wim2vhd writes only into qcow2 images laid out as it makes them")
        if h["autoclear_features"]:
            # Bitmaps and the like are not kept up to date by us: the spec asks a writer to clear the bits first.
            h["autoclear_features"] = 0
            write_all(self.fd, bytes(8), layout.HEADER_V3.offset_of("autoclear_features"))

    # -- parent ----------------------------------------------------------------
    def parent_paths(self) -> list[str]:
        if not self._backing_name:
            return []
        # qemu resolves a relative backing file name against the child's directory.
        return [os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(self.path)), self._backing_name))]

    def _parent(self) -> Disk:
        path = self.parent_paths()[0]
        if not os.path.exists(path):
            raise ParentError(f"{self.path}: backing file {self._backing_name!r} not found (looked for {path})")
        fmt_name = self._exts.get(layout.EXT_BACKING_FORMAT)
        if fmt_name is not None:
            name = fmt_name.decode("ascii", "replace")
            if name not in layout.BACKING_FORMATS:
                raise UnsupportedInput(f"{self.path}: backing file format {name!r} is not one wim2vhd reads "
                                       f"({', '.join(layout.BACKING_FORMATS)})")
            # The format named wins over the content, as in qemu: a raw backing file that happens to
            # start like a qcow2 header is read as raw.
            fmt = self.formats.format_by_name(layout.BACKING_FORMATS[name])
        else:
            fmt = self.formats.probe(path)
        key = os.path.realpath(path)
        if key in _opening:
            raise ParentError(f"{self.path}: the backing chain comes back to {path}")
        _opening.add(key)
        try:
            return fmt.open(path)
        finally:
            _opening.discard(key)

    # -- flush -----------------------------------------------------------------
    def _flush_metadata(self) -> None:
        dirty = self._take_dirty()
        if not dirty:
            return
        cs = 1 << self._bits
        per, rb_entries = cs // 8, cs * 8 >> layout.REFCOUNT_ORDER
        data_off, state = self._tables()
        refs, l2 = [], []
        for b in dirty:
            s = state[b]
            if s == PRESENT:
                refs.append((data_off[b] // cs, 1))
                l2.append((b, data_off[b] | layout.OFLAG_COPIED))
            else:  # the native layer only ever allocates; kept general
                l2.append((b, layout.OFLAG_ZERO if s == ZERO else 0))
        # Refcounts first: a crash before the L2 entries leaks clusters (qemu-img check -r leaks),
        # never leaves an entry pointing at a cluster that counts as free.
        for c, vals in _runs(refs, rb_entries):
            rb = self._rt[c // rb_entries] & layout.RT_OFFSET_MASK
            write_all(self.fd, b"".join(v.to_bytes(2, "big") for v in vals), rb + (c % rb_entries) * 2)
        for b, vals in _runs(l2, per):
            table = self._l1[b // per] & layout.L1E_OFFSET_MASK
            write_all(self.fd, be(array.array("Q", vals)), table + (b % per) * 8)
        self._present = self.allocated_bytes() // cs

    def _info(self) -> dict[str, Any]:
        h = self._hdr
        out: dict[str, Any] = {
            "qcow2_version": h["version"],
            "compat": "1.1" if h["version"] == 3 else "0.10",
            "cluster_size": 1 << self._bits,
            "refcount_bits": 1 << h["refcount_order"],
        }
        if self._backing_name:
            out["backing_file"] = self._backing_name
            fmt = self._exts.get(layout.EXT_BACKING_FORMAT)
            if fmt is not None:
                out["backing_format"] = fmt.decode("ascii", "replace")
        return out
