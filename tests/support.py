"""Helpers shared by the test modules (fixtures stay in conftest.py)."""
from __future__ import annotations

from wim2vhd import repro


def seeded(seed, fn, *args, **kwargs):
    """fn(*args, **kwargs) within a reproducible run of this seed (as apply --seed makes one)."""
    with repro.pinned(seed, 0):
        return fn(*args, **kwargs)
