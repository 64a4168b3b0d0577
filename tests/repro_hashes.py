"""The sha256 of a set of reproducible (--seed) outputs, as JSON: run it before and after a change
that must not change any byte (a refactoring), on the same fixture WIM, and compare.

    python -m tests.repro_hashes [--wim FIXTURE.wim] WORKDIR > hashes.json

Without --wim the fixture WIM is built into WORKDIR (it is itself not byte-reproducible: keep one
file for both runs)."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys

W2V = os.path.join(os.path.dirname(sys.executable), "wim2vhd")
SEED = "refactor-check"

REG = b"Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\W2VCheck]\r\n\"Answer\"=dword:0000002a\r\n"
UNATTEND = b'<?xml version="1.0"?>\n<unattend xmlns="urn:schemas-microsoft-com:unattend"/>\n'

# name, extra apply arguments (every case: --index 1 --size 1G --seed SEED)
CASES = [
    ("uefi.vhdx", ["--layout", "uefi"]),
    ("bios-fixed.vhd", ["--layout", "bios", "--type", "fixed"]),
    ("native-mbr.img", ["--layout", "native", "--mbr"]),
    ("native-gpt.vhd", ["--layout", "native"]),
    ("uefi-4k-recovery.vhdx", ["--sector-size", "4096", "--recovery", "300M", "--bcd-devices", "partition"]),
    ("uefi-custom.vhdx", ["--unattend", "{work}/unattend.xml", "--reg-import", "{work}/check.reg",
                          "--enable-rdp", "--merge", "{work}/merge"]),
]


def digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--wim")
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    os.makedirs(os.path.join(work, "merge", "Setup", "Scripts"), exist_ok=True)
    with open(os.path.join(work, "merge", "Setup", "Scripts", "SetupComplete.cmd"), "wb") as f:
        f.write(b"@echo off\r\n")
    with open(os.path.join(work, "check.reg"), "wb") as f:
        f.write(REG)
    with open(os.path.join(work, "unattend.xml"), "wb") as f:
        f.write(UNATTEND)
    wim = a.wim
    if not wim:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from fixtures.build import build_fixture_wim
        from fixtures.probes import build_probes
        probes = build_probes(os.path.join(work, "probes"))
        with open(probes["bootmgfw.efi"], "rb") as efi, open(probes["bootmgr"], "rb") as pcat:
            wim = str(build_fixture_wim(os.path.join(work, "fixture.wim"), bootmgfw_efi=efi.read(),
                                        bootmgr_pcat=pcat.read()))
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    out: dict[str, str] = {"fixture.wim": digest(wim)}
    for name, extra in CASES:
        target = os.path.join(work, "out", name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        args = [W2V, "apply", wim, target, "--index", "1", "--size", "1G", "--seed", SEED, "--force",
                *[x.format(work=work) for x in extra]]
        p = subprocess.run(args, capture_output=True, text=True, env=env)
        out[name] = digest(target) if p.returncode == 0 else f"failed ({p.returncode}): {p.stderr.strip()}"
    store = os.path.join(work, "out", "store.bcd")
    p = subprocess.run([W2V, "bcd", "create", store, "--force"], capture_output=True, text=True, env=env)
    out["bcd create (random GUIDs: not compared)"] = "ok" if p.returncode == 0 else p.stderr.strip()
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
