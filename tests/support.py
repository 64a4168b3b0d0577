"""Helpers shared by the test modules (fixtures stay in conftest.py)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wim2vhd import repro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W2V = os.path.join(os.path.dirname(sys.executable), "wim2vhd")


def run(*args, check=True, **kw):
    """Run a command, return CompletedProcess with text output."""
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({p.returncode}): {p.stderr}\n{p.stdout}")
    return p


def w2v(*args, check=True, **kw):
    """Run the installed wim2vhd console script."""
    return run(W2V, *args, check=check, **kw)


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in this process (wim2vhd.cli.main, as the console script does): (exit code, stdout, stderr)."""
    from wim2vhd.cli import main
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(directory):
    """Temporary files wim2vhd may have left behind."""
    return [n for n in os.listdir(directory) if ".w2v-tmp" in n]


def have(tool):
    return shutil.which(tool) is not None


def xorriso_iso(path, tree_dir):
    """An ISO 9660 (Rock Ridge, Joliet) image by xorriso, which writes no UDF."""
    run("xorriso", "-as", "mkisofs", "-quiet", "-iso-level", "3", "-J", "-R", "-o", path, tree_dir)
    return path


NOBODY = 65534


MiB = 1 << 20


def to_raw(disk, tmp):
    raw = tmp / (os.path.basename(disk) + ".raw")
    fmt = {".vhd": "vpc", ".vhdx": "vhdx", ".qcow2": "qcow2"}.get(os.path.splitext(disk)[1], "raw")
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", disk, raw)
    return raw


def extract_partition(raw, part, tmp, name):
    out = tmp / name
    with open(raw, "rb") as f, open(out, "wb") as g:
        f.seek(part["start"] * 512)
        left = part["size"] * 512
        while left:
            b = f.read(min(left, 8 * MiB))
            g.write(b)
            left -= len(b)
    return out


def sfdisk(raw):
    return json.loads(run("sfdisk", "--json", raw).stdout)["partitiontable"]


def stream_ids(streams):
    return {name: (f.get("Hash"), f.get("Uncompressed size")) for name, f in streams.items()}


def fails(args, code, words, tmp, out):
    p = w2v(*args, check=False)
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.strip().count("\n") == 0, p.stderr
    assert words in p.stderr, p.stderr
    assert not os.path.exists(out) and not leftovers(tmp) and not leftovers(os.path.dirname(out))


def ntfs_partition(disk, tmp, n=0):
    """The n-th partition of a VHD(X) as an image file, through qemu-img, sfdisk and dd (sparse)."""
    raw = to_raw(disk, tmp)
    p = sfdisk(raw)["partitions"][n]
    out = tmp / f"{os.path.basename(disk)}.p{n}"
    ss = 512  # sfdisk counts in 512-byte sectors
    run("dd", f"if={raw}", f"of={out}", "bs=1M", "iflag=skip_bytes,count_bytes", f"skip={p['start'] * ss}",
        f"count={p['size'] * ss}", "conv=sparse", "status=none")
    os.unlink(raw)
    return out


CONFIG = "/Windows/System32/config"


def ntfscat(img, path):
    p = subprocess.run(["ntfscat", str(img), path], capture_output=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def ntfsls(img, path):
    return run("ntfsls", img, "-p", path).stdout.split("\n")


def hive_out(img, name, tmp):
    dst = tmp / f"{name}.hive"
    dst.write_bytes(ntfscat(img, f"{CONFIG}/{name}"))
    return dst


def hivexget(hive, key, value, raw=False):
    """hivexget's output (bytes for binary values, with raw=True), or None if there is no such value."""
    p = subprocess.run(["hivexget", str(hive), key, value], capture_output=True)
    if p.returncode != 0:
        return None
    return p.stdout if raw else p.stdout.decode().rstrip("\n")


# -- reference BCD stores written by Windows, and reading hives with regipy (not hivex) ----------------

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




def seeded(seed, fn, *args, **kwargs):
    """fn(*args, **kwargs) within a reproducible run of this seed (as apply --seed makes one)."""
    with repro.pinned(seed, 0):
        return fn(*args, **kwargs)


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


TREE_IGNORE = {"Index", "Subdir Count", "Link Group ID"}  # bookkeeping of one WIM; link groups compared apart


def assert_same_tree(src, back, extra=()):
    """Every file of `src` in `back` with the same wimdir --detailed metadata (streams by hash and size);
    `back` has nothing more than `extra` (and what Windows keeps in System Volume Information)."""
    from fixtures.wimdir import link_groups
    got = {p for p in back if not p.startswith("/System Volume Information")}
    assert got == set(src) | set(extra)
    for path, e in src.items():
        b = back[path]
        for k, v in e.items():
            if k in TREE_IGNORE:
                continue
            if k == "streams":
                assert stream_ids(b.get(k, {})) == stream_ids(v), f"{path}: streams"
                continue
            assert b.get(k) == v, f"{path}: {k}: {v!r} != {b.get(k)!r}"
    assert link_groups(src) == link_groups({p: e for p, e in back.items() if p in src}) and link_groups(src)
    kinds = {k for e in src.values() for k in e}
    assert {"Security Descriptor", "Attributes", "Short Name", "Link Count", "Creation Time"} <= kinds


def in_small_fs(tmp, size: str, script: str) -> subprocess.CompletedProcess:
    """Run a shell script with $M a fresh tmpfs of `size` bytes, in a namespace of its own."""
    m = tmp / "m"
    m.mkdir()
    full = f'mount -t tmpfs -o size={size} tmpfs "$M" || exit 99\n{script}'
    p = subprocess.run(["unshare", "-rm", "sh", "-c", full], env={**os.environ, "M": str(m), "W2V": W2V},
                       capture_output=True, text=True)
    if p.returncode == 99 or "unshare failed" in p.stderr or "Operation not permitted" in p.stderr[:200]:
        if os.environ.get("CI"):
            pytest.fail(f"no user/mount namespace for the full-disk test: {p.stderr.strip()}")
        pytest.skip(f"no user/mount namespace here: {p.stderr.strip()}")
    return p


def wim_with_arch(fixture_wim, tmp, arch: int):
    """A copy of the fixture WIM whose image 1 says WINDOWS/ARCH=arch (set by wimlib-imagex)."""
    wim = tmp / f"arch{arch}.wim"
    shutil.copyfile(fixture_wim, wim)
    run("wimlib-imagex", "info", wim, "1", "--image-property", f"WINDOWS/ARCH={arch}")
    xml = subprocess.run(["wiminfo", str(wim), "1", "--xml"], capture_output=True, check=True).stdout
    assert f"<ARCH>{arch}</ARCH>" in xml.decode("utf-16")
    return wim
