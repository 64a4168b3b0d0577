import json
import os
import shutil
import subprocess
import sys

import pytest

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


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


def leftovers(directory):
    """Temporary files wim2vhd may have left behind."""
    return [n for n in os.listdir(directory) if ".w2v-tmp" in n]


def have(tool):
    return shutil.which(tool) is not None


NOBODY = 65534


@pytest.fixture
def nobody():
    """(run, folder): run(*args) runs wim2vhd as nobody, with every capability dropped and no_new_privs
    set (so no mount, loop device or FUSE: fusermount is setuid), in a folder nobody can write; copy
    inputs there with `put(src)`."""
    import tempfile
    if not shutil.which("setpriv"):
        pytest.skip("setpriv missing")
    d = tempfile.mkdtemp(prefix="w2v-np-", dir="/tmp")
    os.chmod(d, 0o777)

    def put(src, name=None):
        dst = os.path.join(d, name or os.path.basename(str(src)))
        shutil.copy(str(src), dst)
        os.chmod(dst, 0o644)
        return dst

    def run_as_nobody(*args):
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
               "--bounding-set=-all", "--no-new-privs", W2V, *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HOME": d})

    run_as_nobody.put, run_as_nobody.dir = put, d
    try:
        yield run_as_nobody
    finally:
        shutil.rmtree(d, ignore_errors=True)


MiB = 1 << 20


@pytest.fixture(scope="session")
def fixture_wim(tmp_path_factory):
    """The fixture WIM with the probe boot programs (fixtures/probes) as bootmgfw.efi and bootmgr,
    so the disks applied from it boot in QEMU (tests/test_qemu_boot.py)."""
    from fixtures.build import build_fixture_wim
    from fixtures.probes import build_probes
    d = tmp_path_factory.mktemp("wim")
    probes = build_probes(d / "probes")
    with open(probes["bootmgfw.efi"], "rb") as efi, open(probes["bootmgr"], "rb") as pcat:
        return str(build_fixture_wim(d / "fixture.wim", bootmgfw_efi=efi.read(), bootmgr_pcat=pcat.read()))


def to_raw(disk, tmp):
    raw = tmp / (os.path.basename(disk) + ".raw")
    fmt = {".vhd": "vpc", ".vhdx": "vhdx"}.get(os.path.splitext(disk)[1], "raw")
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


@pytest.fixture(scope="session")
def fault_shim(tmp_path_factory):
    """The LD_PRELOAD shim of tests/faults/w2v_fault.c, built with gcc (see tests/faults/shim.py)."""
    if not have("gcc"):
        pytest.skip("gcc missing")
    from tests.faults.shim import Shim
    return Shim.build(tmp_path_factory.mktemp("faults"))
