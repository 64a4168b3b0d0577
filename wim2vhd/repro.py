"""Reproducible outputs: with a seed, every identifier and time wim2vhd makes up is derived, not drawn.

    with repro.pinned(seed, unix_time):
        repro.guid("vhdx-disk-id")      # the same 16 bytes for the same seed, purpose and call count
        repro.unix_time()               # the pinned time

Outside pinned() (or with seed None) guid() is random and unix_time() is the clock, so library callers
that do not ask for reproducibility see no difference.  A purpose asked for several times gets a new
value each time (purpose#1, purpose#2, ...): the same run makes the same calls in the same order.

What each module pins is said where it asks; the time comes from SOURCE_DATE_EPOCH, or else from the
image (see apply.reproducible_time).
"""
from __future__ import annotations

import contextlib
import contextvars
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from wim2vhd.partition import derived_bytes


@dataclass
class _Pinned:
    seed: str
    unix_time: int
    calls: Counter = field(default_factory=Counter)


_state: contextvars.ContextVar[_Pinned | None] = contextvars.ContextVar("wim2vhd_repro", default=None)


@contextlib.contextmanager
def pinned(seed: str | None, unix_time: int) -> Iterator[None]:
    """Within the block, guid() and unix_time() are derived from seed and unix_time (no-op for seed None)."""
    if seed is None:
        yield
        return
    token = _state.set(_Pinned(seed, int(unix_time)))
    try:
        yield
    finally:
        _state.reset(token)


def active() -> bool:
    return _state.get() is not None


def pinned_time() -> int | None:
    p = _state.get()
    return p.unix_time if p else None


def guid(purpose: str) -> bytes:
    """16 bytes for a GUID (RFC 4122 version 4 layout, as bytes in the order uuid.UUID.bytes uses)."""
    p = _state.get()
    if p is None:
        return uuid.uuid4().bytes
    p.calls[purpose] += 1
    b = bytearray(derived_bytes(p.seed, f"{purpose}#{p.calls[purpose]}", 16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return bytes(b)


def uuid_for(purpose: str) -> uuid.UUID:
    return uuid.UUID(bytes=guid(purpose))


def unix_time() -> float:
    p = _state.get()
    return float(p.unix_time) if p else time.time()


def filetime() -> int:
    """unix_time() as a Windows FILETIME (100 ns ticks since 1601-01-01 UTC)."""
    p = _state.get()
    if p is None:
        return time.time_ns() // 100 + 116444736000000000
    return p.unix_time * 10_000_000 + 116444736000000000
