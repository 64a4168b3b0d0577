"""Declarative binary records: a name, a byte order and a list of fields.

    FOOTER = Record("vhd footer", ">", [("cookie", "8s"), ("features", "I"), ...])
    MBR = Record("MBR", "<", [("disk_signature", 440, "I"), ...], size=512)
    values = FOOTER.parse(data)          # dict, in field order
    data = FOOTER.pack(values)           # bytes, FOOTER.size long
    MBR.pack_into(sector, 0, disk_signature=sig)   # patch fields in place

Fields are ``(name, fmt)``, laid end to end, or ``(name, offset, fmt)`` at a
fixed offset; bytes no field covers (gaps, and the tail up to ``size``) are
skipped when parsing and zero when packing.  Fields named ``reserved*``
default to zeros when packing.  A record never holds logic: checksums and
validation live with the format that owns them.
"""
from __future__ import annotations

import struct
from typing import Any, Mapping, Sequence

from wim2vhd.errors import CorruptInput


class ShortRecord(CorruptInput, ValueError):
    """Fewer bytes than the record needs: corrupt input (and a ValueError, for parsers that catch those)."""


class Record:
    def __init__(self, name: str, byteorder: str, fields: Sequence[tuple], size: int | None = None):
        self.name = name
        self.byteorder = byteorder
        self._offsets: dict[str, int] = {}
        self._formats: dict[str, str] = {}
        layout, end = "", 0
        for f in fields:
            n, off, fmt = f if len(f) == 3 else (f[0], end, f[1])
            if off < end:
                raise ValueError(f"{name}.{n} at {off} overlaps the field before it, which ends at {end}")
            layout += f"{off - end}x{fmt}"  # the gap before the field (often none), then the field
            self._offsets[n], self._formats[n] = off, fmt
            end = off + struct.calcsize(byteorder + fmt)
        if size is not None:
            if end > size:
                raise ValueError(f"{name}.{n} ends at {end}, past the record size {size}")
            layout += f"{size - end}x"
        self.fields = tuple(self._formats.items())
        self.names = tuple(self._formats)
        self._struct = struct.Struct(byteorder + layout)
        self.size = self._struct.size

    def offset_of(self, name: str) -> int:
        return self._offsets[name]

    def parse(self, data: bytes | bytearray | memoryview, offset: int = 0) -> dict[str, Any]:
        if len(data) - offset < self.size:
            raise ShortRecord(f"{self.name}: short read ({len(data) - offset} of {self.size} bytes)")
        return dict(zip(self.names, self._struct.unpack_from(data, offset)))

    def pack(self, values: Mapping[str, Any]) -> bytes:
        """The whole record: every field must have a value, except ``reserved*`` ones."""
        out = []
        for n, f in self.fields:
            if n in values:
                out.append(values[n])
            elif n.startswith("reserved"):
                out.append(b"" if f.endswith("s") else 0)
            else:
                raise KeyError(f"{self.name}: no value for {n}")
        return self._struct.pack(*out)

    def pack_into(self, buf: bytearray | memoryview, offset: int = 0, **values: Any) -> None:
        """Write the fields named into ``buf``; the rest of it is left as it is."""
        for n, value in values.items():
            struct.pack_into(self.byteorder + self._formats[n], buf, offset + self._offsets[n], value)
