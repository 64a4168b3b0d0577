"""Declarative binary records: a name, a byte order and a list of fields.

    FOOTER = Record("vhd footer", ">", [("cookie", "8s"), ("features", "I"), ...])
    values = FOOTER.parse(data)          # dict, in field order
    data = FOOTER.pack(values)           # bytes, FOOTER.size long

Fields named ``reserved*`` default to zeros when packing.  A record never holds
logic: checksums and validation live with the format that owns them.
"""
from __future__ import annotations

import struct
from typing import Any, Mapping, Sequence


class Record:
    def __init__(self, name: str, byteorder: str, fields: Sequence[tuple[str, str]]):
        self.name = name
        self.fields = tuple(fields)
        self.names = tuple(n for n, _ in self.fields)
        self._struct = struct.Struct(byteorder + "".join(f for _, f in self.fields))
        self.size = self._struct.size
        self._offsets: dict[str, int] = {}
        off = 0
        for n, f in self.fields:
            self._offsets[n] = off
            off += struct.calcsize(byteorder + f)

    def offset_of(self, name: str) -> int:
        return self._offsets[name]

    def parse(self, data: bytes | memoryview, offset: int = 0) -> dict[str, Any]:
        if len(data) - offset < self.size:
            raise ValueError(f"{self.name}: {len(data) - offset} bytes, need {self.size}")
        return dict(zip(self.names, self._struct.unpack_from(data, offset)))

    def pack(self, values: Mapping[str, Any]) -> bytes:
        out = []
        for n, f in self.fields:
            if n in values:
                out.append(values[n])
            elif n.startswith("reserved"):
                out.append(b"" if f.endswith("s") else 0)
            else:
                raise KeyError(f"{self.name}: no value for {n}")
        return self._struct.pack(*out)
