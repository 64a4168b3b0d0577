"""Fixtures shared by the test modules (helpers are in tests/support.py)."""
import os
import shutil
import subprocess

import pytest

from tests.support import NOBODY, W2V, have

@pytest.fixture
def tmp(tmp_path):
    return tmp_path


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


@pytest.fixture(scope="session")
def fault_shim(tmp_path_factory):
    """The LD_PRELOAD shim of tests/faults/w2v_fault.c, built with gcc (see tests/faults/shim.py)."""
    if not have("gcc"):
        pytest.skip("gcc missing")
    from tests.faults.shim import Shim
    return Shim.build(tmp_path_factory.mktemp("faults"))
