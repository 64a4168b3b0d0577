"""Helpers shared by the test_bcd_* files (no tests here): reference stores, and reading hives with regipy (not hivex)."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

REF = Path(os.environ.get("WIM2VHD_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "reference" / "bcd"
REF_STORES = ["pybcd-BCDTest", "windeploy-BCD", "windeploy-BCD-efi", "bcdsys-BCD-NEW"]


def ref(name: str) -> Path:
    p = REF / name
    if not p.exists():
        if os.environ.get("CI"):  # CI has ../shared: a missing store there is a failure, not a skip
            pytest.fail(f"reference store {p} is missing (set WIM2VHD_SHARED to the folder holding reference/)")
        pytest.skip(f"reference store {p} is not available")
    return p


def ref_copy(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copyfile(ref(name), dst)
    return dst


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def regipy_store(path: Path) -> dict:
    """{guid-key-name: {"type": int, "elements": {name: (reg type, value)}}} read with regipy."""
    from regipy.registry import RegistryHive

    hive = RegistryHive(str(path))
    out = {}
    for obj in hive.get_key("\\Objects").iter_subkeys():
        t = None
        for v in obj.get_subkey("Description").iter_values(trim_values=False):
            if v.name == "Type":
                t = v.value
        elements = {}
        try:
            els = obj.get_subkey("Elements")
        except Exception:
            els = None
        if els is not None and els.header.subkey_count:
            for e in els.iter_subkeys():
                for v in e.iter_values(trim_values=False):
                    if v.name == "Element":
                        elements[e.name.lower()] = (v.value_type, v.value)
        out[obj.name.lower()] = {"type": t, "elements": elements}
    return out


def regipy_values(path: Path, key: str) -> dict:
    from regipy.registry import RegistryHive

    hive = RegistryHive(str(path))
    return {v.name: (v.value_type, v.value) for v in hive.get_key(key).iter_values(trim_values=False)}


def regipy_key_security(path: Path) -> dict:
    """{key path below the root ("" for it): (raw security descriptor, sk cell offset, owner, group,
    DACL)} for every key: regipy walks the keys and parses their sk cells (its own structs), not wim2vhd."""
    from regipy.registry import RegistryHive
    from regipy.structs import SECURITY_KEY_v1_1

    data = Path(path).read_bytes()
    hive = RegistryHive(str(path))
    out = {}

    def walk(key, rel):
        off = key.header.security_key_offset
        sk = SECURITY_KEY_v1_1.parse(data[0x1000 + off:])  # the cell's size, then the sk record
        info = key.get_security_key_info()
        dacl = [(a["ace_type"], a["flags"], a["access_mask"], a["sid"]) for a in info["dacl"]]
        out[rel] = (bytes(sk.security_descriptor), off, info["owner"], info["group"], dacl)
        if key.header.subkey_count:
            for sub in key.iter_subkeys():
                walk(sub, f"{rel}\\{sub.name}" if rel else sub.name)

    walk(hive.root, "")
    return out
