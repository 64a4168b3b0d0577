"""The fuzz targets: one per parser of untrusted input, each a function of the fuzzer's bytes.

Every target checks the same promise: the parser succeeds, or raises the project's input error
(wim2vhd.errors.InputError and its subclasses: exit 3, one line); never another exception, a crash or a hang;
and the input file it was given is unchanged afterwards.  `run_one(name, data)` is that check;
run.py drives it under atheris, tests/test_fuzz.py over the committed corpora.

Inputs that are files of megabytes (VHDX headers sit at 64 KiB and 1 MiB, a UDF anchor at 512 KiB, a GPT
backup at the end of a disk) are given to the fuzzer as a *sparse image*, so that it mutates the few
kilobytes that matter:

    u64 le   size of the file (taken modulo MAX_SPARSE + 1); bit 63 set: make the checksums right (repair.py)
    then any number of chunks:  u32 le offset, u16 le length, that many bytes (cut at the end of the input)

chunks are written at offset % size into an otherwise zero file (see encode_sparse / decode_sparse).
"""
from __future__ import annotations

from types import SimpleNamespace

import hashlib
import io
import json
import os
import shutil
import struct
import tempfile
import traceback
from dataclasses import dataclass
from typing import Callable

from tests.fuzz import repair
from wim2vhd.errors import InputError

MAX_SPARSE = 64 << 20  # a disk or ISO file the fuzzer makes: at most 64 MiB (sparse)
REPAIR_BIT = 1 << 63   # in a sparse image's size word: fix the format's checksums after writing (repair.py)
MAX_HIVE_KEYS = 2000   # keys a hive walk visits


class BrokenPromise(AssertionError):
    """The parser did something other than succeed or raise InputError."""


# -- the sparse image encoding ---------------------------------------------------------------------------------
def decode_sparse(data: bytes, limit: int = MAX_SPARSE) -> tuple[int, list[tuple[int, bytes]]]:
    if len(data) < 8:
        return 0, []
    size = (struct.unpack_from("<Q", data)[0] & ~REPAIR_BIT) % (limit + 1)
    chunks, pos = [], 8
    while pos + 6 <= len(data):
        off, n = struct.unpack_from("<IH", data, pos)
        pos += 6
        chunks.append((off, data[pos:pos + n]))
        pos += n
    return size, chunks


def encode_sparse(image: bytes, *, size: int | None = None, gap: int = 64) -> bytes:
    """The sparse encoding of a file's bytes: its non-zero runs (runs closer than `gap` merged)."""
    size = len(image) if size is None else size
    out = [struct.pack("<Q", size)]
    i, n = 0, len(image)
    while i < n:
        if image[i] == 0:
            j = i
            while j < n and image[j] == 0:
                j += 1
            i = j
            continue
        j, zeros = i, 0
        while j < n and j - i < 0xFFFF and zeros < gap:
            zeros = zeros + 1 if image[j] == 0 else 0
            j += 1
        piece = image[i:j - zeros] if zeros >= gap else image[i:j]
        out.append(struct.pack("<IH", i, len(piece)) + piece)
        i += len(piece)
    return b"".join(out)


def write_sparse(path: str, data: bytes, repair: Callable | None = None) -> None:
    size, chunks = decode_sparse(data)
    with open(path, "w+b") as f:
        f.truncate(size)
        if size:
            for off, piece in chunks:
                off %= size
                f.seek(off)
                f.write(piece[:size - off])
        if repair is not None and len(data) >= 8 and struct.unpack_from("<Q", data)[0] & REPAIR_BIT:
            repair(f)


# -- the targets ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    name: str
    suffix: str                         # the input file's name ends so (some parsers look at it)
    sparse: bool                        # the fuzzer's bytes are a sparse image, not the file itself
    parse: Callable[[str], object]      # the parser run on the input file's path
    covers: str
    modules: tuple[str, ...] = ()       # what run.py instruments for coverage (the parser's own modules)
    repair: Callable | None = None      # makes the checksums right when the input asks (repair.py)


def _disk(path: str) -> None:
    """What `disk info` does, then reads through the block layer: both ends and the first extents."""
    from wim2vhd import api
    from wim2vhd.disk import open_disk
    json.dumps(api.disk_info(path), default=str)
    d = open_disk(path)
    try:
        d.read(0, 4096)
        d.read(max(0, d.size - 4096), 4096)
        for k, (off, ln) in enumerate(d.extents()):
            d.read(off, min(ln, 1 << 16))
            if k >= 16:
                break
    finally:
        d.close()


def _qcow2(path: str) -> None:
    """`disk check` (every L1/L2 entry and refcount, qcow2_check.py), then what `disk info` and reads do."""
    from wim2vhd.disk.check import check
    check(path)
    _disk(path)


def _hive(path: str) -> None:
    """Every key (up to MAX_HIVE_KEYS) of a hive: names, timestamps, values and their data."""
    from wim2vhd.registry.hive import Hive
    with Hive.open(path) as h:
        todo, seen = [h.root], set()
        while todo and len(seen) < MAX_HIVE_KEYS:
            k = todo.pop()
            if k.node in seen:
                continue
            seen.add(k.node)
            _ = k.name, k.timestamp
            for v in k.values():
                _ = v.name, v.type, len(v.data)
            todo += k.children()


def _bcd(path: str) -> None:
    """What `bcd show` prints (text and JSON), then what `bcd add-vhd` does to a copy held in memory."""
    from wim2vhd.boot import elements, store, values, view
    bcd = SimpleNamespace(BcdStore=store.BcdStore, RawValue=values.RawValue, describe=view.describe,
                          decode_element=values.decode_element, encode_element=values.encode_element,
                          format_value=values.format_value, value_to_json=values.value_to_json,
                          render_text=view.render_text, el=elements)  # (the BCD modules by job)
    from wim2vhd.boot.devices import Locate, Vhd
    with bcd.BcdStore.open(path) as s:
        for verbose in (False, True):
            objects = bcd.describe(s, verbose=verbose)
            bcd.render_text(objects)
            json.dumps({"system": s.is_system_store, "firmware": s.firmware, "objects": objects})
    with bcd.BcdStore.open(path, write=True) as s:
        if s.find(bcd.el.BOOTMGR) is None:
            return
        dev = Vhd("\\w.vhdx", Locate.by_path("\\w.vhdx"))
        s.add_os_loader("Windows", dev, dev, firmware="uefi", default=True)
        with bcd.BcdStore.from_bytes(s.to_bytes()) as back:
            bcd.describe(back)


def _bcd_element(path: str) -> None:
    """One element value as a store holds it: u32 element id, u32 registry type, the data.  Decoded, shown,
    and what decodes to a value must encode back to the same bytes."""
    from wim2vhd.boot import elements, store, values, view
    bcd = SimpleNamespace(BcdStore=store.BcdStore, RawValue=values.RawValue, describe=view.describe,
                          decode_element=values.decode_element, encode_element=values.encode_element,
                          format_value=values.format_value, value_to_json=values.value_to_json,
                          render_text=view.render_text, el=elements)  # (the BCD modules by job)
    from wim2vhd.registry.hive import Value
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        return
    element, rtype = struct.unpack_from("<II", raw)
    value = bcd.decode_element(element, Value("Element", rtype, raw[8:]))
    bcd.format_value(element, value, None, {})
    json.dumps(bcd.value_to_json(value))
    if not isinstance(value, bcd.RawValue):
        again = bcd.encode_element(element, value)
        if again.data != raw[8:]:
            raise BrokenPromise(f"element {element:08x} decodes to {value!r}, which encodes differently")


def _regfile(path: str) -> None:
    from wim2vhd.registry import regedit as regfile
    rf = regfile.load(path)
    regfile.dumps(rf.ops)


def _iso(path: str) -> None:
    """Finding the install image (UDF, then ISO 9660), then the WIM ranges `info` copies out of it."""
    from wim2vhd.wim import header, iso
    f = iso.find_install_image(path)
    with open(path, "rb") as fh:
        r = iso._Reader(fh, path)
        header.metadata_ranges(lambda o, n: iso._read_file_range(r, f.extents, o, n), f.size)


class _Image:
    """A partition table's target, held in memory: a disk of the size the sparse image says, up to 2^48 bytes
    (a large virtual disk), zeros where no chunk is."""

    def __init__(self, raw: bytes, sector_size: int):
        self.size, chunks = decode_sparse(raw, 1 << 48)
        self.chunks = [(off % self.size, piece[:self.size - off % self.size]) for off, piece in chunks] \
            if self.size else []
        self.sector_size = sector_size

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise BrokenPromise(f"read of {length} bytes at {offset}")
        if length > 1 << 30:
            raise BrokenPromise(f"a partition table read of {length} bytes (more than 1 GiB)")
        buf = bytearray(length)
        for off, piece in self.chunks:
            a, b = max(off, offset), min(off + len(piece), offset + length)
            if a < b:
                buf[a - offset:b - offset] = piece[a - off:b - off]
        return bytes(buf)

    def write(self, offset: int, data: bytes) -> None:
        raise BrokenPromise("the partition table reader wrote to the disk")


def _partition(path: str) -> None:
    from wim2vhd import partition
    with open(path, "rb") as f:
        raw = f.read()
    for ss in (512, 4096):
        layout = partition.read_table(_Image(raw, ss))
        if layout is not None:
            json.dumps(layout.to_dict())


_DISK = ("wim2vhd.disk", "wim2vhd.disk.base", "wim2vhd.partition", "wim2vhd.ondisk")
TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("vhd", ".vhd", True, _disk, "VHD footer (and its copy), dynamic header, BAT, parent locators; "
                                       "disk info, the partition table, reads through the native block layer",
           _DISK + ("wim2vhd.disk.vhd", "wim2vhd.disk.vhd_layout"), repair.vhd),
    Target("vhdx", ".vhdx", True, _disk, "VHDX file identifier, both headers, region tables, metadata, BAT, the "
                                         "log GUID, parent locator; disk info, the partition table, reads",
           _DISK + ("wim2vhd.disk.vhdx", "wim2vhd.disk.vhdx_layout"), repair.vhdx),
    Target("qcow2", ".qcow2", True, _qcow2, "qcow2 header, extensions and feature bits, L1 and L2 tables "
                                            "(compressed entries too), refcount table and blocks: disk check's "
                                            "walk, disk info, the partition table, reads",
           _DISK + ("wim2vhd.disk.qcow2", "wim2vhd.disk.qcow2_parse", "wim2vhd.disk.qcow2_check",
                    "wim2vhd.disk.qcow2_layout")),
    Target("hive", ".hiv", False, _hive, "regf base block and hbins through hivex (Hive.open and every key, "
                                         "value and datum, boot/hive.py, boot/regf.py's layouts)",
           ("wim2vhd.registry.hive", "wim2vhd.registry.regf", "wim2vhd.ondisk"), repair.hive),
    Target("bcd", ".bcd", False, _bcd, "a BCD store: bcd show's text and JSON, add-vhd's edit of it in memory, "
                                       "and the edited store read back (boot/bcd.py, elements.py, devices.py)",
           ("wim2vhd.boot.store", "wim2vhd.boot.values", "wim2vhd.boot.view", "wim2vhd.boot.elements", "wim2vhd.boot.devices", "wim2vhd.registry.hive"),
           repair.hive),
    Target("bcd_element", ".bin", False, _bcd_element, "one element value: decode_element, the device "
                                                       "decoder, format_value, JSON, re-encoding",
           ("wim2vhd.boot.store", "wim2vhd.boot.values", "wim2vhd.boot.view", "wim2vhd.boot.elements", "wim2vhd.boot.devices")),
    Target("regfile", ".reg", False, _regfile, ".reg files: regfile.load and parse (every encoding, hex "
                                               "continuation, limits), and dumps of what parsed",
           ("wim2vhd.registry.regedit",)),
    Target("iso", ".iso", True, _iso, "UDF anchor, volume descriptors, partition maps, file set, file entries, "
                                      "allocation extents and identifiers; ISO 9660 descriptors and directory "
                                      "records; the WIM header and blob table ranges info copies",
           ("wim2vhd.wim.iso", "wim2vhd.wim.header",)),
    Target("partition", ".bin", False, _partition, "MBR, protective MBR, GPT headers and entry arrays (both "
                                                   "copies, 512 and 4096-byte sectors) on a disk of up to "
                                                   "2^48 bytes (a sparse image held in memory)",
           ("wim2vhd.partition", "wim2vhd.ondisk")),
]}


# -- the promise -----------------------------------------------------------------------------------------------
class Runner:
    """Runs targets on inputs in a private directory; one per process."""

    def __init__(self, known: Callable[[str, BaseException, str], str | None] | None = None,
                 directory: str | None = None):
        if directory is None:
            self.dir = tempfile.mkdtemp(prefix="w2v-fuzz-")
        else:
            os.makedirs(directory, exist_ok=True)
            self.dir = directory
        self.known = known
        self.known_hits: dict[str, int] = {}

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def input_path(self, target: Target) -> str:
        return os.path.join(self.dir, "input" + target.suffix)

    def run(self, name: str, data: bytes) -> str | None:
        """Check the promise for one input: None when kept (success or InputError), the known finding's name
        when it broke in a known way; BrokenPromise otherwise."""
        t = TARGETS[name]
        path = self.input_path(t)
        for leftover in os.listdir(self.dir):  # what a parser may have left (it must not)
            os.unlink(os.path.join(self.dir, leftover))
        if t.sparse:
            write_sparse(path, data, t.repair)
        else:
            with open(path, "w+b") as f:
                f.write(data)
                if t.repair is not None:
                    t.repair(f)
        before = _digest(path)
        try:
            t.parse(path)
        except InputError as e:
            msg = str(e)
            if any(not c.isprintable() for c in msg):  # a newline, ESC, NUL, ... from the input
                return self._known(name, e, "message", f"the message is not one line of printable text: {msg!r}")
        except BrokenPromise:
            raise
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - this is what the promise is about (SystemExit too)
            return self._known(name, e, "exception", f"{type(e).__name__}: {e!r}\n{_where(e)}")
        finally:
            after = _digest(path)
            if after != before:
                raise BrokenPromise(f"{name}: the parser changed its input file")
            extra = sorted(set(os.listdir(self.dir)) - {os.path.basename(path)})
            if extra:
                raise BrokenPromise(f"{name}: files left beside the input: {extra}")
        return None

    def _known(self, name: str, e: BaseException, breaks: str, what: str) -> str:
        label = self.known(name, e, breaks) if self.known else None
        if label is None:
            raise BrokenPromise(f"{name}: {what}") from e
        self.known_hits[label] = self.known_hits.get(label, 0) + 1
        return label


def _digest(path: str) -> tuple:
    """What changes when a file is written to, renamed over or its mode changed: its status, and its bytes
    for a file of up to 1 MiB (a sparse image of 64 MiB is not read twice per input)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ("gone",)
    key = (st.st_ino, st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns)
    if st.st_size > 1 << 20:
        return key
    with open(path, "rb") as f:
        return key + (hashlib.sha256(f.read()).hexdigest(),)


def _where(e: BaseException) -> str:
    buf = io.StringIO()
    traceback.print_exception(type(e), e, e.__traceback__, file=buf)
    return buf.getvalue()
