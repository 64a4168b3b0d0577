"""A host file system that fills up while wim2vhd writes: one-line error, exit 4, nothing left
behind, and an existing output (replaced with --force) untouched.

The full file system is a real one: a small tmpfs mounted in a user and mount namespace of our own
(`unshare -rm`), which needs no privileges where unprivileged user namespaces are allowed."""
import shutil

import pytest

from tests.support import in_small_fs, run, w2v


def check(p, m, *, listing: str, kept: str = "keep", host_says: str):
    out = p.stdout.split("--\n")
    assert "rc=4" in p.stdout, p.stdout + p.stderr
    err = [line for line in p.stderr.splitlines() if line.startswith("wim2vhd")]
    assert len(err) == 1, p.stderr
    line = err[0].replace(str(m), "")  # the test's folder is named after it: "...full_file_system..."
    assert "No space left on device" in line and host_says in line, p.stderr
    assert "Windows partition" not in line, "the host is full, not the virtual disk: " + line
    assert out[-1].split() == listing.split(), "only the old output may stay: " + out[-1]
    assert kept in p.stdout


# What the line says besides "No space left on device": the host file system for OUT, or (when a tool
# failed while writing its temporary volume) the file system that holds the output.
HOST_FOR_OUT = "no space left on the host file system for /out.vhdx"
TOOL_VOLUME = "the file system that holds the output is full"


@pytest.mark.parametrize("size,sync,host_says", [
    # full while the volumes are copied in or the image applied
    ("12M", "--sync", HOST_FOR_OUT), ("12M", "--no-sync", HOST_FOR_OUT),
    # full while mkfs.fat, then mkntfs, write their volumes
    ("4M", "--sync", TOOL_VOLUME), ("6M", "--sync", TOOL_VOLUME),
])
def test_apply_on_a_full_file_system(fixture_wim, tmp, size, sync, host_says):
    if not shutil.which("unshare"):
        pytest.skip("unshare missing")
    # --no-sync writes through the page cache only: the error must still come from the write.  The
    # tools say only that a write failed; the full file system is what wim2vhd reports.
    p = in_small_fs(tmp, size, f'''
        echo keep > "$M/out.vhdx"
        "$W2V" apply {fixture_wim} "$M/out.vhdx" --index 1 --size 2G --force {sync}
        echo "rc=$?"; cat "$M/out.vhdx"; echo --; ls -A "$M"''')
    check(p, tmp / "m", listing="out.vhdx", host_says=host_says)


def test_convert_and_capture_on_a_full_file_system(fixture_wim, tmp):
    if not shutil.which("unshare"):
        pytest.skip("unshare missing")
    disk = tmp / "d.vhdx"
    w2v("apply", fixture_wim, disk, "--index", "1", "--size", "1G", "--layout", "native", "--no-boot")
    p = in_small_fs(tmp, "4M", f'''
        echo keep > "$M/out.raw"
        "$W2V" disk convert {disk} "$M/out.raw" --force; echo "rc=$?"
        dd if=/dev/zero of="$M/fill" bs=1K count=3900 2>/dev/null  # about 190 KiB stay free
        "$W2V" capture {disk} "$M/out.wim" --compress none; echo "rc=$?"
        cat "$M/out.raw"; echo --; ls -A "$M"''')
    assert p.stdout.count("rc=4") == 2, p.stdout + p.stderr
    err = [line for line in p.stderr.splitlines() if line.startswith("wim2vhd")]
    assert len(err) == 2, p.stderr
    for e, name in zip(err, ("out.raw", "out.wim")):
        assert f"no space left on the host file system for {tmp}/m/{name}" in e, e
    assert sorted(p.stdout.split("--\n")[-1].split()) == ["fill", "out.raw"] and "keep" in p.stdout
    run("qemu-img", "check", disk)  # the input is untouched and sound

