"""Reproducible outputs: with a seed, every identifier and time wim2vhd makes up is derived, not drawn.

    with repro.pinned(seed, unix_time):
        repro.guid("vhdx-disk-id")      # the same 16 bytes for the same seed, purpose and call count
        repro.unix_time()               # the pinned time
    repro.derived("ntfs-serial:1048576", 8)   # bytes for one named purpose, the same however often asked

Outside pinned() (or with seed None) guid() and derived() are random and unix_time() is the clock, so
library callers that do not ask for reproducibility see no difference.  guid() gives a purpose asked
for several times a new value each time (purpose#1, purpose#2, ...): the same run makes the same calls
in the same order.  derived() is for values named by what they are for (a partition's GUID, a volume's
serial), which stay the same whatever else the run asks.

This is the one way a module asks for reproducibility: no function takes a seed of its own.

What each module pins is said where it asks; the time comes from SOURCE_DATE_EPOCH, or else from the
image (see apply.reproducible_time).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator



def derive(seed: str, purpose: str, n: int) -> bytes:
    """n bytes from sha256(seed:purpose:counter), counter 0, 1, ... (pure)."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{purpose}:{counter}".encode()).digest()
        counter += 1
    return out[:n]


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
    b = bytearray(derive(p.seed, f"{purpose}#{p.calls[purpose]}", 16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return bytes(b)


def uuid_for(purpose: str) -> uuid.UUID:
    return uuid.UUID(bytes=guid(purpose))


def derived(purpose: str, n: int) -> bytes:
    """n bytes for one named purpose: derived from the pinned seed, or random when none is pinned."""
    p = _state.get()
    return derive(p.seed, purpose, n) if p is not None else os.urandom(n)


def derived_guid(purpose: str) -> str:
    """A version-4 style GUID for one named purpose, as text (see derived)."""
    return str(uuid.UUID(bytes=derived(purpose, 16), version=4))


def unix_time() -> float:
    p = _state.get()
    return float(p.unix_time) if p else time.time()


def filetime() -> int:
    """unix_time() as a Windows FILETIME (100 ns ticks since 1601-01-01 UTC)."""
    p = _state.get()
    if p is None:
        return time.time_ns() // 100 + 116444736000000000
    return p.unix_time * 10_000_000 + 116444736000000000
