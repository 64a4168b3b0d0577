"""BCD device elements: the binary records Windows writes, as Python values.

A device element's value (REG_BINARY) is a 16-byte *qualifier* GUID (the
additional-options object, e.g. {ramdiskoptions} for a RAM disk; zero
otherwise) followed by one device record.  Every device record starts with a
16-byte header (type, flags, size including the header, reserved) and may
nest other device records:

  type 5, boot         56 zero bytes: "the device bootmgr was loaded from"
  type 6, partition    partition id (MBR byte offset / GPT partition GUID),
                       block-I/O type, partition style, disk id
                       (MBR signature / GPT disk GUID), reserved
  type 8, locate       how (0 by the path in an element of the same object,
                       1 by a literal path), the element, the offset of a
                       parent device from this record's start (0 = none), a
                       UTF-16 path, then the parent device
  type 0, block I/O    block-I/O type, then per type:
     3 RAM disk        image base, size, offset, then a file path
     5 file            a file path
     6 virtual disk    20 reserved bytes, then the file (a type 0/5 record)
  a "file path"        version 1, length (to the end of the path), type 5,
                       the device holding the file, then the UTF-16 path

bcdedit's `vhd=[host]\\dir\\x.vhdx` is a locate record whose parent is a
virtual disk whose file lives on the host; `vhd=[locate]...` uses a host that
is itself a locate-by-path record of the VHD's own path.  The locate record
searches by the path element paired with the element the device is set on
(LOCATE_ELEMENT_OF: `device` by `path`, 0x12000002; `osdevice` by
`systemroot`, 0x22000002), unless `,locate=custom:XXXXXXXX` names another.

decode_device(encode_device(d)) == d for every device here, and
encode_device(decode_device(b)) == b for every value Windows writes: a record
that would not re-encode to the same bytes decodes as RawDevice instead.
"""
from __future__ import annotations

import re
import struct
import uuid
from dataclasses import dataclass, field

from wim2vhd.boot.elements import ALIAS_OF, RAMDISKOPTIONS, WELL_KNOWN
from wim2vhd.errors import UsageError
from wim2vhd.ondisk import Record

# -- declarative layouts ----------------------------------------------------------
QUALIFIER_SIZE = 16

HEADER = Record("bcd device header", "<", [
    ("type", "I"),
    ("flags", "I"),
    ("size", "I"),           # bytes of this record, header included
    ("reserved", "I"),
])

PARTITION = Record("bcd partition", "<", [
    ("partition", "16s"),    # MBR: u64 byte offset + 8 zero bytes; GPT: partition GUID
    ("block_io_type", "I"),  # 0 = hard disk
    ("style", "I"),          # 0 = GPT, 1 = MBR
    ("disk", "16s"),         # MBR: u32 signature + 12 zero bytes; GPT: disk GUID
    ("reserved", "16s"),
])
assert PARTITION.size == 0x38

LOCATE = Record("bcd locate", "<", [
    ("kind", "I"),           # 0 = by element, 1 = by path
    ("element", "I"),
    ("parent_offset", "I"),  # from the start of this record's header; 0 = no parent
])

BLOCK_IO = Record("bcd block-io", "<", [("block_io_type", "I")])

RAMDISK = Record("bcd ramdisk", "<", [
    ("image_base", "Q"),
    ("image_size", "Q"),
    ("image_offset", "I"),
])

VIRTUAL_DISK = Record("bcd virtual disk", "<", [("reserved", "20s")])

FILE_PATH = Record("bcd file path", "<", [
    ("version", "I"),        # 1
    ("length", "I"),         # from the start of this record to the end of the path
    ("type", "I"),           # 5 = a device record then a path
])


class DeviceType:
    BLOCK_IO = 0
    BOOT = 5                 # bcdedit's "boot": a partition record with no identity
    PARTITION = 6
    LOCATE = 8


class BlockIoType:
    HARD_DISK = 0
    RAMDISK = 3
    FILE = 5
    VIRTUAL_DISK = 6


class PartitionStyle:
    GPT = 0
    MBR = 1


FILE_PATH_VERSION = 1
FILE_PATH_TYPE_DEVICE = 5
LOCATE_BY_ELEMENT = 0
LOCATE_BY_PATH = 1
APPLICATION_PATH = 0x12000002   # the element bcdedit's `locate` and `vhd=` search by
SYSTEM_ROOT = 0x22000002        # what bcdedit's `osdevice locate` searches by
# The element bcdedit's `locate` and `vhd=` search by, per device element they are set on: the
# string element with the same class and number (0x?1000001 -> 0x?2000002).  Seen in Windows'
# stores: windeploy-BCD-efi's `osdevice locate` is locate=custom:22000002, and pybcd-BCDTest's
# `device vhd=[locate]\test.vhd` searches by 0x12000002.
DEVICE = 0x11000001
OSDEVICE = 0x21000001
LOCATE_ELEMENT_OF = {DEVICE: APPLICATION_PATH, OSDEVICE: SYSTEM_ROOT}


# -- the model -----------------------------------------------------------------------
class Device:
    """Base class of the device values.  text() is bcdedit-like."""

    def text(self) -> str:
        raise NotImplementedError

    def host_text(self) -> str:
        """How this device reads inside `[...]` as the parent of a file."""
        return self.text()

    def to_json(self) -> dict:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.text()


@dataclass(frozen=True)
class Boot(Device):
    """The partition bootmgr was loaded from (bcdedit: `boot`)."""

    def text(self) -> str:
        return "boot"

    def to_json(self) -> dict:
        return {"kind": "boot"}


@dataclass(frozen=True)
class MbrPartition(Device):
    """A partition of an MBR disk: the disk's signature and the partition's byte offset."""

    signature: int
    offset: int

    def host_text(self) -> str:
        return f"mbr:0x{self.signature:08x}:0x{self.offset:x}"

    def text(self) -> str:
        return "partition=" + self.host_text()

    def to_json(self) -> dict:
        return {"kind": "partition", "style": "mbr", "signature": f"0x{self.signature:08x}",
                "offset": self.offset}


@dataclass(frozen=True)
class GptPartition(Device):
    """A partition of a GPT disk: the disk's GUID and the partition's unique GUID."""

    disk: uuid.UUID
    partition: uuid.UUID

    def host_text(self) -> str:
        return f"gpt:{self.disk}:{self.partition}"

    def text(self) -> str:
        return "partition=" + self.host_text()

    def to_json(self) -> dict:
        return {"kind": "partition", "style": "gpt", "disk": str(self.disk),
                "partition": str(self.partition)}


@dataclass(frozen=True)
class Locate(Device):
    """Search the partitions (of `parent`, else of every disk) for a path.

    By element: the path is the value of `element` in the same object (bcdedit
    `locate=custom:12000002`).  By path: a literal path.
    """

    kind: int = LOCATE_BY_ELEMENT
    element: int = APPLICATION_PATH
    path: str = ""
    parent: Device | None = None

    @classmethod
    def by_element(cls, element: int = APPLICATION_PATH, parent: Device | None = None) -> "Locate":
        return cls(LOCATE_BY_ELEMENT, element, "", parent)

    @classmethod
    def by_path(cls, path: str, parent: Device | None = None) -> "Locate":
        return cls(LOCATE_BY_PATH, 0, path, parent)

    def text(self) -> str:
        inside = f"[{self.parent.host_text()}]" if self.parent is not None else ""
        if self.kind == LOCATE_BY_ELEMENT and not self.path:
            return f"locate={inside}custom:{self.element:08x}"
        if self.kind == LOCATE_BY_PATH and not self.element:
            return f"locate={inside}{self.path}"
        return f"locate={inside}kind:{self.kind},custom:{self.element:08x},{self.path}"

    def to_json(self) -> dict:
        out = {"kind": "locate", "by": {0: "element", 1: "path"}.get(self.kind, self.kind)}
        if self.kind != LOCATE_BY_PATH or self.element:
            out["element"] = f"0x{self.element:08x}"
        if self.path or self.kind == LOCATE_BY_PATH:
            out["path"] = self.path
        if self.parent is not None:
            out["parent"] = self.parent.to_json()
        return out


@dataclass(frozen=True)
class File(Device):
    """A file on a device: bcdedit `file=[host]\\path`."""

    path: str
    parent: Device

    def text(self) -> str:
        return f"file=[{self.parent.host_text()}]{self.path}"

    def to_json(self) -> dict:
        return {"kind": "file", "path": self.path, "host": self.parent.to_json()}


def _object_text(g: uuid.UUID) -> str:
    return ALIAS_OF.get(g, "{%s}" % g)


@dataclass(frozen=True)
class Ramdisk(Device):
    """A RAM disk loaded from an image file: bcdedit `ramdisk=[host]\\path,{options}`."""

    path: str
    parent: Device
    options: uuid.UUID | None = RAMDISKOPTIONS  # the qualifier; top level only
    image_base: int = 0
    image_size: int = 0
    image_offset: int = 0
    flags: int = 1  # what bcdedit writes for ramdisk= (the meaning of bit 0 is not documented)

    def text(self) -> str:
        opts = f",{_object_text(self.options)}" if self.options else ""
        return f"ramdisk=[{self.parent.host_text()}]{self.path}{opts}"

    def to_json(self) -> dict:
        out = {"kind": "ramdisk", "path": self.path, "host": self.parent.to_json(),
               "options": str(self.options) if self.options else None}
        if self.image_base or self.image_size or self.image_offset:
            out.update(image_base=self.image_base, image_size=self.image_size,
                       image_offset=self.image_offset)
        if self.flags != 1:
            out["flags"] = self.flags
        return out


@dataclass(frozen=True)
class VirtualDisk(Device):
    """A virtual disk (VHD/VHDX) backed by `file` (normally a File)."""

    file: Device

    def text(self) -> str:
        if isinstance(self.file, File):
            return f"vdisk=[{self.file.parent.host_text()}]{self.file.path}"
        return f"vdisk=({self.file.text()})"

    def to_json(self) -> dict:
        return {"kind": "virtualdisk", "file": self.file.to_json()}


@dataclass(frozen=True)
class Vhd(Device):
    """A partition inside a VHD/VHDX file: bcdedit `vhd=[host]\\path`.

    The partition is the one holding the path in `element` (default: the
    object's `path`, as bcdedit writes); `host` holds the VHD file: a
    partition, Boot(), or Locate.by_path(path) for bcdedit's `[locate]`.
    """

    path: str
    host: Device
    element: int = APPLICATION_PATH

    @classmethod
    def located(cls, path: str, element: int = APPLICATION_PATH) -> "Vhd":
        """`vhd=[locate]\\path`: the firmware searches every partition for the VHD."""
        return cls(path, Locate.by_path(path), element)

    @classmethod
    def for_element(cls, path: str, host: Device, device_element: int) -> "Vhd":
        """What bcdedit writes for `vhd=[host]path` set on `device_element`
        (E.DEVICE or E.OSDEVICE): the locate searches by that element's path element."""
        return cls(path, host, LOCATE_ELEMENT_OF[device_element])

    def expand(self) -> Locate:
        return Locate.by_element(self.element, VirtualDisk(File(self.path, self.host)))

    def text(self, default_element: int = APPLICATION_PATH) -> str:
        """bcdedit's text; `default_element` is the element bcdedit leaves unsaid
        (the one LOCATE_ELEMENT_OF gives for the element this device is set on)."""
        h = self.host
        if isinstance(h, Locate) and h.kind == LOCATE_BY_PATH and h.parent is None and h.path == self.path:
            inside = "locate"
        else:
            inside = h.host_text()
        tail = "" if self.element == default_element else f",locate=custom:{self.element:08x}"
        return f"vhd=[{inside}]{self.path}{tail}"

    def to_json(self) -> dict:
        return {"kind": "vhd", "path": self.path, "host": self.host.to_json(),
                "element": f"0x{self.element:08x}"}


@dataclass(frozen=True)
class RawDevice(Device):
    """A device value wim2vhd does not model; kept and shown as hex."""

    data: bytes = field(repr=False)

    def text(self) -> str:
        return "hex:" + self.data.hex()

    def to_json(self) -> dict:
        return {"kind": "raw", "hex": self.data.hex()}


# -- encoding --------------------------------------------------------------------------
def _utf16z(s: str) -> bytes:
    return s.encode("utf-16-le") + b"\0\0"


def _record(dtype: int, payload: bytes, flags: int = 0) -> bytes:
    return HEADER.pack(dict(type=dtype, flags=flags, size=HEADER.size + len(payload))) + payload


def _file_path(parent: Device, path: str) -> bytes:
    body = _encode_record(parent) + _utf16z(path)
    return FILE_PATH.pack(dict(version=FILE_PATH_VERSION, length=FILE_PATH.size + len(body),
                               type=FILE_PATH_TYPE_DEVICE)) + body


def _encode_record(d: Device) -> bytes:
    if isinstance(d, Vhd):
        return _encode_record(d.expand())
    if isinstance(d, Boot):
        return _record(DeviceType.BOOT, bytes(PARTITION.size))
    if isinstance(d, MbrPartition):
        payload = PARTITION.pack(dict(
            partition=struct.pack("<Q", d.offset), block_io_type=BlockIoType.HARD_DISK,
            style=PartitionStyle.MBR, disk=struct.pack("<I", d.signature)))
        return _record(DeviceType.PARTITION, payload)
    if isinstance(d, GptPartition):
        payload = PARTITION.pack(dict(
            partition=d.partition.bytes_le, block_io_type=BlockIoType.HARD_DISK,
            style=PartitionStyle.GPT, disk=d.disk.bytes_le))
        return _record(DeviceType.PARTITION, payload)
    if isinstance(d, Locate):
        name = _utf16z(d.path)
        parent = _encode_record(d.parent) if d.parent is not None else b""
        offset = HEADER.size + LOCATE.size + len(name) if parent else 0
        head = LOCATE.pack(dict(kind=d.kind, element=d.element, parent_offset=offset))
        return _record(DeviceType.LOCATE, head + name + parent)
    if isinstance(d, File):
        return _record(DeviceType.BLOCK_IO, BLOCK_IO.pack(dict(block_io_type=BlockIoType.FILE))
                       + _file_path(d.parent, d.path))
    if isinstance(d, Ramdisk):
        payload = (BLOCK_IO.pack(dict(block_io_type=BlockIoType.RAMDISK))
                   + RAMDISK.pack(dict(image_base=d.image_base, image_size=d.image_size,
                                       image_offset=d.image_offset))
                   + _file_path(d.parent, d.path))
        return _record(DeviceType.BLOCK_IO, payload, flags=d.flags)
    if isinstance(d, VirtualDisk):
        payload = (BLOCK_IO.pack(dict(block_io_type=BlockIoType.VIRTUAL_DISK))
                   + VIRTUAL_DISK.pack({}) + _encode_record(d.file))
        return _record(DeviceType.BLOCK_IO, payload)
    if isinstance(d, RawDevice):
        raise ValueError("a raw device value cannot be nested in another device")
    raise TypeError(f"not a BCD device: {d!r}")


def encode_device(d: Device) -> bytes:
    """The REG_BINARY value of a device element holding `d`."""
    if isinstance(d, RawDevice):
        return d.data
    qualifier = d.options if isinstance(d, Ramdisk) and d.options else None
    if _has_nested_options(d):
        raise ValueError("only a top-level ramdisk device can carry an options object")
    return (qualifier.bytes_le if qualifier else bytes(QUALIFIER_SIZE)) + _encode_record(d)


def _has_nested_options(d: Device, top: bool = True) -> bool:
    if isinstance(d, Ramdisk) and d.options and not top:
        return True
    for child in _children(d):
        if _has_nested_options(child, False):
            return True
    return False


def _children(d: Device) -> list[Device]:
    if isinstance(d, (File, Ramdisk)):
        return [d.parent]
    if isinstance(d, Locate):
        return [d.parent] if d.parent is not None else []
    if isinstance(d, VirtualDisk):
        return [d.file]
    if isinstance(d, Vhd):
        return [d.host]
    return []


# -- decoding ----------------------------------------------------------------------------
class _Bad(Exception):
    """The bytes are not a device record wim2vhd understands."""


def _read_utf16z(buf: bytes, off: int, end: int) -> tuple[str, int]:
    i = off
    while i + 1 < end:
        if buf[i] == 0 and buf[i + 1] == 0:
            try:
                return buf[off:i].decode("utf-16-le"), i + 2
            except UnicodeDecodeError:
                raise _Bad("bad UTF-16") from None
        i += 2
    raise _Bad("unterminated string")


def _parse_file_path(buf: bytes, off: int, end: int) -> tuple[Device, str, int]:
    if end - off < FILE_PATH.size:
        raise _Bad("short file path")
    fp = FILE_PATH.parse(buf, off)
    if fp["version"] != FILE_PATH_VERSION or fp["type"] != FILE_PATH_TYPE_DEVICE:
        raise _Bad("unknown file path kind")
    fend = off + fp["length"]
    if fend > end:
        raise _Bad("file path overruns its record")
    parent, pend = _parse_record(buf, off + FILE_PATH.size, fend)
    path, pend = _read_utf16z(buf, pend, fend)
    if pend != fend:
        raise _Bad("bytes after a file path")
    return parent, path, fend


def _parse_record(buf: bytes, off: int, end: int) -> tuple[Device, int]:
    if end - off < HEADER.size:
        raise _Bad("short device header")
    h = HEADER.parse(buf, off)
    rend = off + h["size"]
    if h["size"] < HEADER.size or rend > end:
        raise _Bad("device size out of range")
    body = off + HEADER.size
    t = h["type"]
    if t == DeviceType.BOOT:
        if buf[body:rend] != bytes(PARTITION.size):
            raise _Bad("type-5 device with an identity")
        return Boot(), rend
    if t == DeviceType.PARTITION:
        if rend - body != PARTITION.size:
            raise _Bad("partition size")
        p = PARTITION.parse(buf, body)
        if p["style"] == PartitionStyle.MBR:
            return MbrPartition(struct.unpack_from("<I", p["disk"])[0],
                                struct.unpack_from("<Q", p["partition"])[0]), rend
        if p["style"] == PartitionStyle.GPT:
            return GptPartition(uuid.UUID(bytes_le=p["disk"]), uuid.UUID(bytes_le=p["partition"])), rend
        raise _Bad("partition style")
    if t == DeviceType.LOCATE:
        if rend - body < LOCATE.size:
            raise _Bad("short locate")
        loc = LOCATE.parse(buf, body)
        path, pend = _read_utf16z(buf, body + LOCATE.size, rend)
        parent = None
        if loc["parent_offset"]:
            parent, pend = _parse_record(buf, off + loc["parent_offset"], rend)
        if pend != rend:
            raise _Bad("bytes after a locate record")
        dev = Locate(loc["kind"], loc["element"], path, parent)
        if (loc["kind"] == LOCATE_BY_ELEMENT and not path and isinstance(parent, VirtualDisk)
                and isinstance(parent.file, File)):
            return Vhd(parent.file.path, parent.file.parent, loc["element"]), rend
        return dev, rend
    if t == DeviceType.BLOCK_IO:
        if rend - body < BLOCK_IO.size:
            raise _Bad("short block-io")
        bt = BLOCK_IO.parse(buf, body)["block_io_type"]
        pos = body + BLOCK_IO.size
        if bt == BlockIoType.FILE:
            parent, path, pend = _parse_file_path(buf, pos, rend)
            dev: Device = File(path, parent)
        elif bt == BlockIoType.RAMDISK:
            if rend - pos < RAMDISK.size:
                raise _Bad("short ramdisk")
            r = RAMDISK.parse(buf, pos)
            parent, path, pend = _parse_file_path(buf, pos + RAMDISK.size, rend)
            dev = Ramdisk(path, parent, None, r["image_base"], r["image_size"], r["image_offset"],
                          h["flags"])
        elif bt == BlockIoType.VIRTUAL_DISK:
            if buf[pos:pos + VIRTUAL_DISK.size] != bytes(VIRTUAL_DISK.size):
                raise _Bad("virtual disk reserved bytes")
            inner, pend = _parse_record(buf, pos + VIRTUAL_DISK.size, rend)
            dev = VirtualDisk(inner)
        else:
            raise _Bad(f"block-io type {bt}")
        if pend != rend:
            raise _Bad("bytes after a block-io record")
        return dev, rend
    raise _Bad(f"device type {t}")


def decode_device(data: bytes) -> Device:
    """The device held by a device element's value; RawDevice if not understood."""
    data = bytes(data)
    try:
        if len(data) < QUALIFIER_SIZE + HEADER.size:
            raise _Bad("too short")
        dev, end = _parse_record(data, QUALIFIER_SIZE, len(data))
        if end != len(data):
            raise _Bad("trailing bytes")
        q = data[:QUALIFIER_SIZE]
        if q != bytes(QUALIFIER_SIZE):
            if not isinstance(dev, Ramdisk):
                raise _Bad("options on a device that takes none")
            dev = Ramdisk(dev.path, dev.parent, uuid.UUID(bytes_le=q), dev.image_base,
                          dev.image_size, dev.image_offset, dev.flags)
        if encode_device(dev) != data:  # anything not modelled exactly stays raw
            raise _Bad("does not re-encode")
        return dev
    except (_Bad, ValueError, struct.error):
        return RawDevice(data)


# -- text: the short forms the CLI accepts (what a user types: a mistake is a UsageError) ---------------
_HEX_OR_DEC = r"(?:0x[0-9a-fA-F]+|[0-9]+)"


def parse_int(text: str) -> int:
    t = text.strip().lower().replace("_", "")
    if not re.fullmatch(_HEX_OR_DEC, t):
        raise UsageError(f"{text!r} is not a number (use decimal or 0x-hex)")
    return int(t, 0)


def parse_host(text: str, path: str | None = None) -> Device:
    """A host for file=/vhd=: `boot`, `locate` (needs `path`), `mbr:SIG:OFFSET`, `gpt:DISK:PART`."""
    t = text.strip()
    low = t.lower()
    if low == "boot":
        return Boot()
    if low == "locate":
        if path is None:
            raise UsageError("[locate] needs the path it searches for")
        return Locate.by_path(path)
    if low.startswith("locate="):
        return Locate.by_path(t[7:])
    if low.startswith("mbr:"):
        parts = t[4:].split(":")
        if len(parts) != 2:
            raise UsageError(f"{text!r}: expected mbr:SIGNATURE:OFFSET")
        sig, off = parse_int(parts[0]), parse_int(parts[1])
        if not 0 <= sig <= 0xFFFFFFFF:
            raise UsageError(f"MBR disk signature {parts[0]} does not fit in 32 bits")
        if off < 0 or off >= 1 << 64:
            raise UsageError(f"partition offset {parts[1]} out of range")
        return MbrPartition(sig, off)
    if low.startswith("gpt:"):
        rest = t[4:].replace("{", "").replace("}", "")
        m = re.fullmatch(r"([0-9a-fA-F-]{36}):([0-9a-fA-F-]{36})", rest)
        if not m:
            raise UsageError(f"{text!r}: expected gpt:DISK-GUID:PARTITION-GUID")
        try:
            return GptPartition(uuid.UUID(m.group(1)), uuid.UUID(m.group(2)))
        except ValueError:  # the right characters, not a GUID's groups
            raise UsageError(f"{text!r}: expected gpt:DISK-GUID:PARTITION-GUID") from None
    raise UsageError(f"{text!r} is not a device: use boot, locate, mbr:SIG:OFFSET or gpt:DISK:PART")


def _split_bracket(s: str) -> tuple[str, str]:
    if not s.startswith("["):
        raise UsageError(f"{s!r}: expected [host]\\path")
    depth = 0
    for i, c in enumerate(s):
        depth += c == "["
        depth -= c == "]"
        if depth == 0:
            return s[1:i], s[i + 1:]
    raise UsageError(f"{s!r}: unbalanced [")


def _parse_object(s: str) -> uuid.UUID:
    s = s.strip()
    if s.lower() in WELL_KNOWN:
        return WELL_KNOWN[s.lower()]
    return uuid.UUID(s.strip("{}"))


def parse_device(text: str) -> Device:
    """The inverse of Device.text() for every form wim2vhd writes (not RawDevice)."""
    try:
        return _parse_device(text)
    except ValueError:  # a hex: value, a custom: element or an options GUID that is none
        raise UsageError(f"{text!r} is not a device") from None


def _parse_device(text: str) -> Device:
    t = text.strip()
    low = t.lower()
    if low == "boot":
        return Boot()
    if low.startswith("partition="):
        return parse_host(t[10:])
    if low.startswith("hex:"):
        return decode_device(bytes.fromhex(t[4:]))
    if low.startswith("locate="):
        rest = t[7:]
        parent = None
        if rest.startswith("["):
            inside, rest = _split_bracket(rest)
            parent = parse_device_host(inside, None)
        if rest.lower().startswith("custom:"):
            return Locate.by_element(int(rest[7:], 16), parent)
        return Locate.by_path(rest, parent)
    for kind in ("file=", "ramdisk=", "vhd="):
        if low.startswith(kind):
            rest = t[len(kind):]
            inside, rest = _split_bracket(rest)
            if kind == "vhd=":
                element = APPLICATION_PATH
                m = re.search(r",locate=custom:([0-9a-fA-F]{1,8})$", rest)
                if m:
                    element = int(m.group(1), 16)
                    rest = rest[:m.start()]
                return Vhd(rest, parse_device_host(inside, rest), element)
            if kind == "ramdisk=":
                options = None
                if "," in rest:
                    rest, opt = rest.rsplit(",", 1)
                    options = _parse_object(opt)
                return Ramdisk(rest, parse_device_host(inside, rest), options)
            return File(rest, parse_device_host(inside, rest))
    if low == "locate":
        return Locate.by_element()
    raise UsageError(f"{text!r} is not a device")


def parse_device_host(inside: str, path: str | None) -> Device:
    try:
        return parse_host(inside, path)
    except UsageError:  # not a host's short form: a whole device
        return parse_device(inside)
