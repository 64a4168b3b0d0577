"""Faults injected under wim2vhd: writes to the output failing with EIO or ENOSPC (a host file system
that is full) at several points of each stage, through the LD_PRELOAD shim of tests/faults/w2v_fault.c.

Every case expects what a user should see: exit 4, one line that names OUT (not its temporary name)
and says what happened ("Input/output error", "no space left on the host file system"), and nothing
left behind: no OUT, no temporary file, an input or an edited store unchanged.  Each case also checks
that the shim did fail a call (a run the fault never reached proves nothing)."""
import hashlib
import json
import os
import random
import shutil
import sys

import pytest

from tests.support import ROOT, W2V, leftovers, run, w2v

EIO_TEXT = "Input/output error"
FULL_TEXT = "no space left on the host file system for"
EXPECT = {"EIO": EIO_TEXT, "ENOSPC": FULL_TEXT}


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def assert_refused(r, out, *, expect: str, left: list[str] = ()):
    """exit 4, one line naming OUT, and nothing in OUT's folder but `left`."""
    out = os.fspath(out)
    assert r.failed, f"the fault was never reached ({r.calls} calls, failing after {r.after})"
    assert r.proc.returncode == 4, (r.proc.returncode, r.proc.stderr)
    assert len(r.errors) == 1, r.proc.stderr
    line = r.errors[0]
    assert line.startswith("wim2vhd: error: ") and out in line and expect in line, line
    assert ".w2v-tmp" not in line, line
    assert sorted(os.listdir(os.path.dirname(out))) == sorted(left), os.listdir(os.path.dirname(out))


# -- the shim itself ---------------------------------------------------------------------------------
def test_shim_fails_matching_writes_after_n(fault_shim, tmp):
    """The shim lets N writes through, then fails those on matching files only; TIMES=1 fails one."""
    (tmp / "in").mkdir()
    (tmp / "out").mkdir()
    script = ("import os, sys\n"
              "def w(p):\n"
              "    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)\n"
              "    try:\n"
              "        os.pwrite(fd, b'x', 0); return 'ok'\n"
              "    except OSError as e:\n"
              "        return str(e.errno)\n"
              "    finally:\n"
              "        os.close(fd)\n"
              "print(' '.join(w(sys.argv[1 + i % 2]) for i in range(8)))\n")
    args = [sys.executable, "-c", script, tmp / "out" / "f", tmp / "in" / "f"]
    r = fault_shim.run(args, prefix=f"{tmp}/out/", after=2, errno="ENOSPC")
    assert r.proc.stdout.split() == ["ok", "ok", "ok", "ok", "28", "ok", "28", "ok"], r.proc.stderr
    assert r.calls == 4
    r = fault_shim.run(args, prefix=f"{tmp}/out/", after=1, errno="EIO", times=1)
    assert r.proc.stdout.split() == ["ok", "ok", "5", "ok", "ok", "ok", "ok", "ok"]
    r = fault_shim.run(args, prefix=f"{tmp}/out/", after=-1)
    assert r.proc.stdout.split() == ["ok"] * 8 and r.calls == 4 and not r.failed


# -- apply: each stage ---------------------------------------------------------------------------------
APPLY = ["--index", "1", "--size", "2G"]
STAGES = ("create", "partition", "format", "apply", "boot", "finalize")


@pytest.fixture(scope="module")
def apply_marks(fault_shim, fixture_wim, tmp_path_factory):
    """How many writes to OUT's folder each stage of an apply of the fixture makes: {stage: (first, end)}."""
    d = tmp_path_factory.mktemp("marks")
    (d / "out").mkdir()
    marks = d / "marks.json"
    r = fault_shim.run([sys.executable, "-m", "tests.faults.stages", marks, fixture_wim, d / "out" / "o.vhdx",
                        json.dumps({"index": 1, "size": "2G"})], prefix=f"{d}/out/", after=-1, cwd=ROOT)
    assert r.proc.returncode == 0, r.proc.stderr
    m = json.loads(marks.read_text())
    bounds = {s: (m[s], m[STAGES[i + 1]] if i + 1 < len(STAGES) else m["end"]) for i, s in enumerate(STAGES)}
    # The test below must reach the stages that write: it cannot pass by testing nothing.
    assert all(bounds[s][1] > bounds[s][0] for s in ("create", "format", "apply", "boot", "finalize")), bounds
    return bounds


def points(first: int, end: int) -> list[int]:
    """The stage's first write, one in its middle and its last."""
    return sorted({first, (first + end) // 2, end - 1}) if end > first else []


# Not "partition": its writes reach the file only in the format stage (they wait in the cache, and
# without it in the writer thread's queue), so they fail there.
@pytest.mark.parametrize("errno", ["EIO", "ENOSPC"])
@pytest.mark.parametrize("stage", [s for s in STAGES if s != "partition"])
def test_apply_write_fault_in_each_stage(fault_shim, fixture_wim, tmp, apply_marks, stage, errno):
    first, end = apply_marks[stage]
    out_dir = tmp / "out"
    out_dir.mkdir()
    out = out_dir / "o.vhdx"
    for n in points(first, end):
        r = fault_shim.run([W2V, "apply", fixture_wim, out, *APPLY], prefix=f"{out_dir}/", after=n, errno=errno)
        assert_refused(r, out, expect=EXPECT[errno])


def test_apply_transient_fault_is_kept_by_the_device_layer(fault_shim, fixture_wim, tmp, apply_marks):
    """One write fails and the next succeed: the file system takes writes again when the error is
    reported, so only the errno the block layer kept (w2v_host_error) can say that it was EIO, not
    wimlib's "NTFS-3G encountered an error" nor a full Windows partition."""
    out_dir = tmp / "out"
    out_dir.mkdir()
    out = out_dir / "o.vhdx"
    seen = set()
    # (not the stages whose writes are mkfs.fat's or mkntfs's: a tool that failed says nothing of why)
    for stage in ("apply", "finalize"):
        first, end = apply_marks[stage]
        for errno in ("EIO", "ENOSPC"):
            r = fault_shim.run([W2V, "apply", fixture_wim, out, *APPLY], prefix=f"{out_dir}/",
                               after=(first + end) // 2, errno=errno, times=1)
            if r.proc.returncode == 0:  # a write that libntfs-3g or a tool retried (none do today)
                os.unlink(out)
                continue
            assert_refused(r, out, expect=EXPECT[errno])
            seen.add(stage)
    assert "apply" in seen


def test_apply_fsync_fault(fault_shim, fixture_wim, tmp):
    """The final fsync fails (EIO): the data never reached the device, so OUT must not appear."""
    out_dir = tmp / "out"
    out_dir.mkdir()
    out = out_dir / "o.vhdx"
    r = fault_shim.run([W2V, "apply", fixture_wim, out, *APPLY], prefix=f"{out_dir}/", after=0, ops="sync")
    assert_refused(r, out, expect=EIO_TEXT)


def test_apply_fault_keeps_the_old_output(fault_shim, fixture_wim, tmp, apply_marks):
    """With --force over an existing OUT, a failed run leaves the old OUT as it was."""
    out_dir = tmp / "out"
    out_dir.mkdir()
    out = out_dir / "o.vhdx"
    out.write_bytes(b"old")
    # only the temporary file's writes count and fail: OUT's name is not written
    r = fault_shim.run([W2V, "apply", fixture_wim, out, *APPLY, "--force"], prefix=f"{out_dir}/.o.vhdx.",
                       after=20)
    assert_refused(r, out, expect=EIO_TEXT, left=["o.vhdx"])
    assert out.read_bytes() == b"old"


def test_partition_full_is_not_the_host(tmp, monkeypatch):
    """A Windows partition too small for the image (the fit check patched away) is reported as such,
    not as a full host file system: the block layer saw no host error."""
    from wim2vhd import api
    from wim2vhd.pipeline import apply as apply_mod
    from wim2vhd.errors import NoSpace
    src = tmp / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(random.Random(14).randbytes(72 << 20))  # more than the partition holds
    (src / "Windows").mkdir()
    wim = tmp / "big.wim"
    run("wimlib-imagex", "capture", src, wim, "Big", "--compress=none")
    monkeypatch.setattr(apply_mod, "ntfs_need", lambda img, cluster=4096: 0)
    with pytest.raises(NoSpace) as e:
        api.apply_image(str(wim), str(tmp / "o.vhdx"), index=1, size="64M", layout="native", boot=False)
    assert "the Windows partition is full" in str(e.value) and "--size" in str(e.value), e.value
    assert "host" not in str(e.value)
    assert leftovers(tmp) == [] and not (tmp / "o.vhdx").exists()


# -- the other commands that write ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_disk(fixture_wim, tmp_path_factory):
    d = tmp_path_factory.mktemp("disk") / "d.vhdx"
    w2v("apply", fixture_wim, d, "--index", "1", "--size", "1G", "--layout", "native", "--no-boot")
    return d


def fault_points(fault_shim, args, out_dir, n=3) -> list[int]:
    """n points spread over the writes the command makes to out_dir when nothing fails."""
    r = fault_shim.run(args, prefix=f"{out_dir}/", after=-1)
    assert r.proc.returncode == 0, r.proc.stderr
    for name in os.listdir(out_dir):
        os.unlink(out_dir / name)
    assert r.calls > 0
    return sorted({r.calls * i // n for i in range(n)} | {r.calls - 1})


@pytest.mark.parametrize("errno", ["EIO", "ENOSPC"])
@pytest.mark.parametrize("command", ["convert-vhdx", "convert-vhd", "convert-raw", "capture", "diff"])
def test_command_write_faults(fault_shim, small_disk, tmp, command, errno):
    out_dir = tmp / "out"
    out_dir.mkdir()
    before = sha(small_disk)
    if command.startswith("convert"):
        out = out_dir / ("o." + command.split("-")[1])
        args = [W2V, "disk", "convert", small_disk, out]
    elif command == "capture":
        out = out_dir / "o.wim"
        args = [W2V, "capture", small_disk, out, "--compress", "none"]
    else:
        out = out_dir / "child.vhdx"
        args = [W2V, "disk", "diff", small_disk, out]
    for n in fault_points(fault_shim, args, out_dir):
        r = fault_shim.run(args, prefix=f"{out_dir}/", after=n, errno=errno)
        assert_refused(r, out, expect=EXPECT[errno])
    assert sha(small_disk) == before  # the input is never written


@pytest.mark.parametrize("errno", ["EIO", "ENOSPC"])
@pytest.mark.parametrize("ops", ["write", "sync"])
def test_bcd_add_vhd_write_faults(fault_shim, tmp, errno, ops):
    """The host store is edited atomically: a failed write or fsync leaves it, and its backup, as they were."""
    d = tmp / "efi"
    d.mkdir()
    store = d / "BCD"
    w2v("bcd", "create", store)
    w2v("bcd", "add-vhd", store, "--vhd-path", "\\first.vhdx")  # a STORE.bak exists too
    before = {n: sha(d / n) for n in os.listdir(d)}
    # how many calls an edit makes, counted on a copy
    shutil.copytree(d, tmp / "copy")
    r = fault_shim.run([W2V, "bcd", "add-vhd", tmp / "copy" / "BCD", "--vhd-path", "\\second.vhdx"],
                       prefix=f"{tmp}/copy/.BCD.", after=-1, ops=ops)
    assert r.proc.returncode == 0 and r.calls > 0, r.proc.stderr
    args = [W2V, "bcd", "add-vhd", store, "--vhd-path", "\\second.vhdx"]
    for n in sorted({0, r.calls // 2, r.calls - 1}):
        r = fault_shim.run(args, prefix=f"{d}/.BCD.", after=n, errno=errno, ops=ops)
        assert_refused(r, store, expect=EXPECT[errno], left=list(before))
        assert sha(store) == before["BCD"]
        # The backup is made before the new store is synced: after a failed sync it may hold the
        # (unchanged) store instead of the one before it.
        assert sha(d / "BCD.bak") in (before["BCD.bak"], before["BCD"])


# -- two runs at once ------------------------------------------------------------------------------------
def _apply_racing(fixture_wim, out, *, force=False, other=b"the other run's disk"):
    """Apply in this process, with OUT made by "another run" when the finalize stage starts."""
    from wim2vhd import api

    def hook(stage, done, total):
        if stage == "finalize" and not os.path.exists(out):
            with open(out, "wb") as f:
                f.write(other)
    return api.apply_image(str(fixture_wim), str(out), index=1, size="2G", force=force, progress=hook)


def test_output_that_appears_meanwhile_is_not_replaced(fixture_wim, tmp):
    from wim2vhd.errors import OutputExists
    out = tmp / "o.vhdx"
    with pytest.raises(OutputExists) as e:
        _apply_racing(fixture_wim, out)
    assert e.value.exit_code == 4 and "--force" in str(e.value) and str(out) in str(e.value)
    assert out.read_bytes() == b"the other run's disk"  # the winner's output is left alone
    assert leftovers(tmp) == []
    # with --force, replacing it is what was asked
    out.unlink()
    _apply_racing(fixture_wim, out, force=True)
    run("qemu-img", "check", out)  # qemu-img reads the replaced file as our VHDX


@pytest.mark.parametrize("fallback", ["link", "check"])
def test_no_replace_without_renameat2(fixture_wim, tmp, monkeypatch, fallback):
    """Where renameat2 is missing (old glibc) or refused (EINVAL on some file systems), a hard link
    refuses the existing name instead; without hard links (FAT), a check before the rename."""
    import ctypes

    from wim2vhd import atomic
    from wim2vhd.errors import OutputExists

    def refused(*args):
        ctypes.set_errno(22)  # EINVAL
        return -1
    monkeypatch.setattr(atomic, "_renameat2", refused)
    if fallback == "check":
        def no_link(src, dst):
            raise OSError(1, "Operation not permitted")  # EPERM: what vfat says
        monkeypatch.setattr(atomic.os, "link", no_link)
    out = tmp / "o.vhdx"
    with pytest.raises(OutputExists):
        _apply_racing(fixture_wim, out)
    assert out.read_bytes() == b"the other run's disk" and leftovers(tmp) == []
    out.unlink()
    res = api_apply(fixture_wim, out)
    assert res["output"] == str(out) and leftovers(tmp) == []
    run("qemu-img", "check", out)


def api_apply(fixture_wim, out):
    from wim2vhd import api
    return api.apply_image(str(fixture_wim), str(out), index=1, size="2G")


def test_two_applies_at_once_one_wins(fixture_wim, tmp):
    """Two processes apply to the same OUT at once: exit 0 for one, 4 for the other, whichever order
    the scheduler gives them (both pass the existence check at the start before either finishes)."""
    import subprocess
    out = tmp / "o.vhdx"
    procs = [subprocess.Popen([W2V, "apply", fixture_wim, out, *APPLY], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(c for c, _ in results)
    assert codes in ([0, 4],), results
    loser = next(err for c, err in results if c == 4)
    assert "exists" in loser or "appeared" in loser, loser
    assert leftovers(tmp) == [] and sorted(os.listdir(tmp)) == ["o.vhdx"]
    run("qemu-img", "check", out)


# -- errno: an input's or an output's --------------------------------------------------------------------
def test_errno_mapping_knows_inputs_from_outputs():
    import errno as E

    from wim2vhd.errors import HostIOError, InputError, NoSpace, OutputError, from_errno
    for code in (E.EACCES, E.EPERM, E.EROFS, E.ENOENT, E.EISDIR):
        assert type(from_errno(code, "f")) is InputError and from_errno(code, "f").exit_code == 3
        assert type(from_errno(code, "f", output=True)) is OutputError and from_errno(code, "f", output=True).exit_code == 4
    for output in (False, True):  # the host's storage or room, whoever's file it was
        assert type(from_errno(E.EIO, "f", output=output)) is HostIOError
        assert type(from_errno(E.ENOSPC, "f", output=output)) is NoSpace
        assert from_errno(E.EIO, "f", output=output).exit_code == 4


def test_store_backup_that_cannot_be_replaced_is_an_output_error(tmp):
    """STORE.bak is a folder: the edit cannot keep the old store, so it is refused as an output error
    (exit 4; it was exit 3, a bad input), and the store is unchanged."""
    store = tmp / "BCD"
    w2v("bcd", "create", store)
    (tmp / "BCD.bak").mkdir()
    (tmp / "BCD.bak" / "x").write_text("")
    before = sha(store)
    p = w2v("bcd", "add-vhd", store, "--vhd-path", "\\a.vhdx", check=False)
    assert p.returncode == 4 and len(p.stderr.splitlines()) == 1, p.stderr
    assert sha(store) == before and leftovers(tmp) == []


def test_store_in_a_sticky_folder_as_nobody(nobody):
    """nobody edits its store in a sticky folder where root owns STORE.bak: the rename over the backup
    is refused (EPERM), which is an output error, exit 4, with the store unchanged."""
    d = nobody.dir
    r = nobody("bcd", "create", os.path.join(d, "BCD"))
    assert r.returncode == 0, r.stderr
    store = os.path.join(d, "BCD")
    with open(store + ".bak", "wb") as f:  # root's
        f.write(b"root's backup")
    os.chmod(d, 0o1777)
    before = sha(store)
    r = nobody("bcd", "add-vhd", store, "--vhd-path", "\\a.vhdx")
    assert r.returncode == 4 and len(r.stderr.splitlines()) == 1, r.stderr
    assert sha(store) == before and leftovers(d) == []
    with open(store + ".bak", "rb") as f:
        assert f.read() == b"root's backup"


@pytest.mark.parametrize("errno", ["EIO", "ENOSPC"])
def test_apply_from_an_iso_with_write_faults(fault_shim, fixture_wim, tmp, errno):
    """The ISO's WIM is copied beside OUT first; then the disk's writes fail. A full host was reported
    as a full Windows partition, whose advice (a larger --size) is wrong."""
    from tests.test_sources import udf_iso
    src = udf_iso(tmp / "win.iso", {"sources/install.wim": open(fixture_wim, "rb").read()})
    out_dir = tmp / "out"
    out_dir.mkdir()
    out = out_dir / "o.vhdx"
    # Writes to the disk's temporary file only: of the fixture's 53, the format stage makes the 6th
    # to the 15th, the apply stage the 15th to the 35th (tests/faults/stages.py counts them).
    for after in (10, 20, 30):
        r = fault_shim.run([W2V, "apply", src, out, *APPLY], prefix=f"{out_dir}/.o.vhdx.", after=after, errno=errno)
        assert_refused(r, out, expect=EXPECT[errno])
        assert "Windows partition" not in r.errors[0]
