"""Sizes as users write them, and as we print them.  Pure functions."""
from __future__ import annotations

import re

from wim2vhd.errors import UsageError

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
_SUFFIX = {"": 1, "B": 1, "K": KiB, "M": MiB, "G": GiB, "T": TiB, "P": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int, *, what: str = "size") -> int:
    """'64G' -> 68719476736.  Suffixes are binary (K=1024); a bare number is bytes."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise UsageError(f"invalid {what} {text!r}: use a number with an optional K, M, G or T suffix, e.g. 64G")
    value = float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if value != int(value):
        raise UsageError(f"invalid {what} {text!r}: not a whole number of bytes")
    return int(value)


def format_size(n: int) -> str:
    """68719476736 -> '64 GiB'; exact where it can be."""
    for unit, name in ((TiB, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit:
            v = n / unit
            return f"{v:.0f} {name}" if n % unit == 0 else f"{v:.2f} {name}"
    return f"{n} B"


def align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def align_down(n: int, a: int) -> int:
    return n // a * a
