"""BCD element values: each element's Python value encoded as the registry value its format
says (elements.Format), decoded back, and shown as bcdedit shows it.

Element values are Python values: Device (devices.py), str, uuid.UUID, list[uuid.UUID], int, bool,
list[int]; anything stored in a way wim2vhd does not model exactly is a RawValue and is written back
unchanged.
"""
from __future__ import annotations

import ipaddress
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from wim2vhd.boot import elements as el
from wim2vhd.boot.devices import LOCATE_ELEMENT_OF, Device, Vhd, decode_device, encode_device
from wim2vhd.boot.elements import Format
from wim2vhd.errors import CorruptInput, UsageError
from wim2vhd.registry.hive import RegType, Value, decode_multi_sz, decode_sz, encode_multi_sz, encode_sz

# The registry value that holds an element, in Elements\xxxxxxxx.
ELEMENT_VALUE = "Element"


@dataclass(frozen=True)
class RawValue:
    """An element value kept as stored (wrong registry type, odd length, unknown format)."""

    type: int
    data: bytes = field(repr=False)

    def text(self) -> str:
        return "hex:" + self.data.hex()


class PaddedStr(str):
    """A string element with bytes after its terminating NUL: Windows sometimes
    writes a second NUL, or leftovers of an older value.  The text is the
    string; `tail` is kept so the value re-encodes to the same bytes."""

    tail: bytes = b""

    def __new__(cls, text: str, tail: bytes):
        s = super().__new__(cls, text)
        s.tail = tail
        return s


ElementValue = Any  # Device | str | uuid.UUID | list[uuid.UUID] | int | bool | list[int] | RawValue


def guid_text(g: uuid.UUID) -> str:
    return "{%s}" % g


def parse_guid(s: str) -> uuid.UUID:
    """A GUID in braces as a store holds it (a key name, an object element); CorruptInput if it is none."""
    try:
        if s.startswith("{") and s.endswith("}") and len(s) == 38:
            return uuid.UUID(s[1:-1])
    except ValueError:
        pass
    raise CorruptInput(f"{s!r} is not a GUID in braces")


def encode_element(element: int, value: ElementValue) -> Value:
    """The registry value (named "Element") that stores `value` for `element`."""
    if isinstance(value, RawValue):
        return Value(ELEMENT_VALUE, value.type, value.data)
    fmt = el.element_format(element)
    if fmt == Format.DEVICE:
        if not isinstance(value, Device):
            raise TypeError(f"element {element:08x} holds a device, not {value!r}")
        return Value(ELEMENT_VALUE, RegType.BINARY, encode_device(value))
    if fmt == Format.STRING:
        if not isinstance(value, str):
            raise TypeError(f"element {element:08x} holds a string, not {value!r}")
        tail = value.tail if isinstance(value, PaddedStr) else b""
        return Value(ELEMENT_VALUE, RegType.SZ, encode_sz(value) + tail)
    if fmt == Format.OBJECT:
        return Value(ELEMENT_VALUE, RegType.SZ, encode_sz(guid_text(as_uuid(value))))
    if fmt == Format.OBJECT_LIST:
        return Value(ELEMENT_VALUE, RegType.MULTI_SZ,
                     encode_multi_sz([guid_text(as_uuid(v)) for v in value]))
    if fmt == Format.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"element {element:08x} holds an integer, not {value!r}")
        return Value(ELEMENT_VALUE, RegType.BINARY, struct.pack("<Q", value & (2**64 - 1)))
    if fmt == Format.BOOLEAN:
        if not isinstance(value, bool):
            raise TypeError(f"element {element:08x} holds a boolean, not {value!r}")
        return Value(ELEMENT_VALUE, RegType.BINARY, bytes([1 if value else 0]))
    if fmt == Format.INTEGER_LIST:
        return Value(ELEMENT_VALUE, RegType.BINARY, b"".join(struct.pack("<Q", int(v)) for v in value))
    raise TypeError(f"element {element:08x} has unknown format {fmt}: give a RawValue")


def decode_element(element: int, value: Value) -> ElementValue:
    """The Python value of an element; RawValue when it is not stored as its format says."""
    fmt = el.element_format(element)
    t, data = value.type, value.data
    out: ElementValue = None
    try:
        if fmt == Format.DEVICE and t == RegType.BINARY:
            out = decode_device(data)
        elif fmt == Format.STRING and t == RegType.SZ:
            out = _decode_string(data)
        elif fmt == Format.OBJECT and t == RegType.SZ:
            out = parse_guid(decode_sz(data))
        elif fmt == Format.OBJECT_LIST and t == RegType.MULTI_SZ:
            out = [parse_guid(s) for s in decode_multi_sz(data)]
        elif fmt == Format.INTEGER and t == RegType.BINARY and len(data) == 8:
            out = struct.unpack("<Q", data)[0]
        elif fmt == Format.BOOLEAN and t == RegType.BINARY and len(data) == 1 and data[0] in (0, 1):
            out = bool(data[0])
        elif fmt == Format.INTEGER_LIST and t == RegType.BINARY and len(data) % 8 == 0:
            out = [v for (v,) in struct.iter_unpack("<Q", data)]
    except CorruptInput:  # not stored as its format says: kept as it is
        out = None
    if out is None or encode_element(element, out).data != data:
        return RawValue(int(t), data)
    return out


def _decode_string(data: bytes) -> str:
    """REG_SZ text up to its first NUL; anything after it rides along as a PaddedStr tail."""
    if len(data) % 2:
        raise CorruptInput("odd-length UTF-16")
    for i in range(0, len(data), 2):
        if data[i:i + 2] == b"\0\0":
            text = decode_sz(data[:i + 2])
            tail = data[i + 2:]
            return PaddedStr(text, tail) if tail else text
    raise CorruptInput("no NUL terminator")


def as_uuid(v) -> uuid.UUID:
    if isinstance(v, uuid.UUID):
        return v
    if isinstance(v, str):
        return parse_object_id(v)
    raise TypeError(f"not an object identifier: {v!r}")


def parse_object_id(text: str) -> uuid.UUID:
    """`{bootmgr}`-style names and GUIDs with or without braces (not {default}/{current})."""
    s = text.strip()
    low = s.lower()
    if low in ("{default}", "{current}"):
        raise UsageError(f"{text} names an object only on a running Windows: give its GUID")
    if low in el.WELL_KNOWN:
        return el.WELL_KNOWN[low]
    try:
        return uuid.UUID(low.strip("{}"))
    except ValueError:
        raise UsageError(f"{text!r} is not a BCD object identifier (a GUID or a name like {{bootmgr}})") from None


def format_value(element: int, value: ElementValue, object_type: int | None = None,
                 names: dict[uuid.UUID, str] | None = None) -> list[str]:
    """The value as bcdedit prints it: one or more lines."""
    def obj(g: uuid.UUID) -> str:
        return names.get(g, guid_text(g)) if names is not None else guid_text(g)

    if isinstance(value, RawValue):
        return [value.text()]
    if isinstance(value, Vhd):  # bcdedit leaves out the element it searches by when it is the usual one
        return [value.text(LOCATE_ELEMENT_OF.get(element, el.E.PATH))]
    if isinstance(value, Device):
        return [value.text()]
    if isinstance(value, bool):
        return ["Yes" if value else "No"]
    if isinstance(value, str):
        return [value]
    if isinstance(value, uuid.UUID):
        return [obj(value)]
    if isinstance(value, int) and element == el.E.HOSTIP:
        # bcdedit shows the debugger's host as an address (wim2vhd.boot.debug: how it is stored)
        return [str(ipaddress.IPv4Address(value & 0xFFFFFFFF))]
    if isinstance(value, int):
        info = el.element_info(element, object_type)
        if info and info.enum and value in info.enum:
            return [info.enum[value]]
        return [str(value)] if info else [f"0x{value:x}"]
    if isinstance(value, list):
        if el.element_format(element) == Format.INTEGER_LIST:
            return [f"0x{v:x}" for v in value] or [""]
        return [obj(v) for v in value] or [""]
    return [repr(value)]


def value_to_json(value: ElementValue):
    if isinstance(value, RawValue):
        return {"reg_type": value.type, "hex": value.data.hex()}
    if isinstance(value, Device):
        return dict(value.to_json(), text=value.text())
    if isinstance(value, uuid.UUID):
        return guid_text(value)
    if isinstance(value, list):
        return [guid_text(v) if isinstance(v, uuid.UUID) else v for v in value]
    return value
