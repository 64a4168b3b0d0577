"""`wim2vhd apply` end to end, checked with readers nobody here wrote."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.support import (NOBODY, W2V, extract_partition, fails, leftovers, run, sfdisk, stream_ids, to_raw,
                           w2v)

def test_info_lists_both_editions(fixture_wim):
    out = json.loads(w2v("info", fixture_wim, "--json").stdout)
    assert [i["index"] for i in out["images"]] == [1, 2]
    assert all(i["architecture"] == "x64" for i in out["images"])
    assert out["images"][0]["edition"] != out["images"][1]["edition"]


@pytest.mark.parametrize("ext,kind", [(".vhdx", "dynamic"), (".vhd", "fixed")])
def test_apply_uefi_checked_by_real_readers(fixture_wim, tmp, ext, kind):
    out = tmp / f"w{ext}"
    res = json.loads(w2v("apply", fixture_wim, out, "--index", "2", "--size", "3G", "--type", kind,
                         "--seed", "t1", "--json").stdout)
    assert list(res["stages"]) == ["create", "partition", "format", "apply", "boot", "finalize"]
    assert not leftovers(tmp)
    if ext == ".vhdx":
        assert "No errors" in run("qemu-img", "check", out).stdout
    raw = to_raw(out, tmp)
    assert "No problems found" in run("sgdisk", "-v", raw).stdout
    pt = sfdisk(raw)
    assert pt["label"] == "gpt"
    types = [p["type"] for p in pt["partitions"]]
    assert types == ["C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
                     "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"]
    assert all(p["start"] % 2048 == 0 for p in pt["partitions"])
    esp = extract_partition(raw, pt["partitions"][0], tmp, "esp.img")
    run("fsck.fat", "-n", esp)
    ntfs = extract_partition(raw, pt["partitions"][2], tmp, "ntfs.img")
    assert "processed successfully" in run("ntfsfix", "-n", ntfs).stdout
    ls = run("ntfsls", ntfs, "-p", "/Windows/System32").stdout.split()
    assert "ntoskrnl.exe" in ls
    # the boot sector has what booting needs: hidden sectors = partition start, 255 heads, 63 sectors
    boot = ntfs.read_bytes()[:512]
    assert int.from_bytes(boot[0x1C:0x20], "little") == pt["partitions"][2]["start"]
    assert int.from_bytes(boot[0x1A:0x1C], "little") == 255 and int.from_bytes(boot[0x18:0x1A], "little") == 63
    # reproducible IDs with --seed
    assert res["layout"]["disk_guid"] == pt["id"].lower()


def test_metadata_round_trip(fixture_wim, tmp):
    """Capture the applied volume with wimlib (NTFS-3G mode) and compare wimdir --detailed, file by file."""
    from fixtures.wimdir import link_groups, wimdir_detailed
    out = tmp / "rt.vhdx"
    w2v("apply", fixture_wim, out, "--index", "1", "--size", "3G", "--layout", "native", "--no-boot")
    raw = to_raw(out, tmp)
    pt = sfdisk(raw)
    part = extract_partition(raw, pt["partitions"][0], tmp, "win.img")
    run("wimcapture", part, tmp / "back.wim", "back")  # wimlib's own capture, from the raw partition
    src, back = wimdir_detailed(fixture_wim, 1), wimdir_detailed(str(tmp / "back.wim"), 1)
    ignore = {"Index", "Subdir Count", "Link Group ID"}  # bookkeeping; link groups are compared below
    skip_paths = {"/System Volume Information"}
    assert set(src) == set(p for p in back if not any(p.startswith(s) for s in skip_paths))
    checked = 0
    for path, e in src.items():
        b = back[path]
        for k, v in e.items():
            if k in ignore:
                continue
            if k == "streams":  # compare the data, not where it sits in each WIM
                v, bv = stream_ids(v), stream_ids(b.get(k, {}))
                assert bv == v, f"{path}: streams {v} != {bv}"
                continue
            assert b.get(k) == v, f"{path}: {k}: {v!r} != {b.get(k)!r}"
        checked += 1
    assert checked > 50

    assert link_groups(src) == link_groups(back) and link_groups(src), "hard links must stay hard links"
    # the fixture carries each kind of metadata; make sure they were compared
    kinds = {k for e in src.values() for k in e}
    assert {"Security Descriptor", "Attributes", "Short Name", "Link Count"} <= kinds


def test_apply_bios_layout(fixture_wim, tmp):
    out = tmp / "b.vhd"
    w2v("apply", fixture_wim, out, "--index", "1", "--size", "2G", "--layout", "bios")
    raw = to_raw(out, tmp)
    pt = sfdisk(raw)
    assert pt["label"] == "dos" and len(pt["partitions"]) == 1
    assert pt["partitions"][0]["type"] == "7" and pt["partitions"][0].get("bootable")


def test_apply_native_mbr(fixture_wim, tmp):
    out = tmp / "n.vhdx"
    w2v("apply", fixture_wim, out, "--name", "Windows 10 Pro" if False else json.loads(
        w2v("info", fixture_wim, "--json").stdout)["images"][0]["name"],
        "--size", "2G", "--layout", "native", "--mbr", "--no-boot")
    pt = sfdisk(to_raw(out, tmp))
    assert pt["label"] == "dos" and len(pt["partitions"]) == 1


def test_capture_back_through_native_layer(fixture_wim, tmp):
    from fixtures.wimdir import wimdir_detailed
    out = tmp / "c.vhdx"
    w2v("apply", fixture_wim, out, "--index", "1", "--size", "3G", "--no-boot")
    w2v("disk", "diff", out, tmp / "child.vhdx")
    res = json.loads(w2v("capture", tmp / "child.vhdx", tmp / "cap.wim", "--name", "cap", "--json").stdout)
    assert res["partition"] == 3
    a, b = wimdir_detailed(fixture_wim, 1), wimdir_detailed(str(tmp / "cap.wim"), 1)
    for path, e in a.items():
        assert b[path].get("Security Descriptor") == e.get("Security Descriptor"), path
        assert stream_ids(b[path]["streams"]) == stream_ids(e["streams"]), path


# ---- bad input and interruption -----------------------------------------------

def test_bad_inputs(fixture_wim, tmp):
    out = tmp / "o.vhdx"
    fails(["apply", fixture_wim, out, "--index", "7"], 3, "images: 1:", tmp, out)
    fails(["apply", fixture_wim, out, "--name", "nope"], 2, "no image whose name or display name holds 'nope'", tmp, out)
    # issue 12: a --size too small for the image is a usage error, said before anything is made, with
    # the size that is enough
    fails(["apply", fixture_wim, out, "--index", "1", "--size", "300M"], 2, "--size 300 MiB is too small", tmp, out)
    fails(["apply", fixture_wim, out, "--index", "1", "--size", "300M"], 2, "(use --size 1G or more)", tmp, out)
    w2v("apply", fixture_wim, out, "--index", "1", "--size", "1G", "--no-boot")  # and that size is enough
    os.unlink(out)
    for zero in ("0", "0G"):  # not the default size (it made a 25 GiB disk)
        fails(["apply", fixture_wim, out, "--index", "1", "--size", zero], 2, "--size must be more than 0", tmp, out)
    data = open(fixture_wim, "rb").read()
    (tmp / "trunc.wim").write_bytes(data[:len(data) // 2])
    fails(["apply", tmp / "trunc.wim", out, "--index", "1", "--size", "2G"], 3, "trunc.wim", tmp, out)
    (tmp / "junk.wim").write_bytes(b"this is not a wim" * 100)
    fails(["apply", tmp / "junk.wim", out], 3, "", tmp, out)
    fails(["apply", tmp / "missing.wim", out], 3, "no such file", tmp, out)
    out.write_bytes(b"keep me")
    p = w2v("apply", fixture_wim, out, "--index", "1", check=False)
    assert p.returncode == 4 and "--force" in p.stderr and out.read_bytes() == b"keep me"


@pytest.fixture(scope="module")
def big_wim(tmp_path_factory):
    """A WIM whose apply takes a second or two: time to catch it in the middle."""
    tmp = tmp_path_factory.mktemp("big")
    src = tmp / "src"
    src.mkdir()
    for i in range(3000):
        (src / f"f{i}").write_bytes(os.urandom(64 * 1024))
    run("wimcapture", src, tmp / "big.wim", "big", "--compress=none")
    shutil.rmtree(src)
    return tmp / "big.wim"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_apply_leaves_nothing(big_wim, tmp, sig):
    out = tmp / "sig.vhdx"
    # SIGINT as a terminal sends it; a shell's background job would inherit it ignored.
    p = subprocess.Popen([W2V, "apply", big_wim, out, "--size", "2G", "--no-boot"], stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Wait until the apply stage is writing file data into the temporary disk, then freeze the
    # process, so that the signal lands there and not after the end.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        temps = list(tmp.glob(".sig.vhdx.*.w2v-tmp"))
        if temps and temps[0].exists() and os.stat(temps[0]).st_blocks * 512 > 64 << 20:
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGSTOP)
    assert p.poll() is None, "apply ended before it could be interrupted: make big_wim bigger"
    assert list(tmp.glob(".sig.vhdx.*.w2v-tmp")), "the temporary disk is being written"
    p.send_signal(sig)
    p.send_signal(signal.SIGCONT)
    p.wait(timeout=60)
    err = p.stderr.read().decode()
    assert p.returncode == 130, err
    assert err.count("\n") == 1 and ("interrupted" in err or "stopped by signal" in err), err
    assert not out.exists() and not leftovers(tmp)


def test_no_privileges_needed(fixture_wim, nobody):
    """Apply as nobody with every capability dropped and no_new_privs set: no mount, loop device or FUSE."""
    out = os.path.join(nobody.dir, "np.vhdx")
    p = nobody("apply", nobody.put(fixture_wim), out, "--index", "1", "--size", "2G")
    assert p.returncode == 0, p.stderr
    assert os.stat(out).st_uid == NOBODY
    assert "No errors" in run("qemu-img", "check", out).stdout


def test_signal_mid_capture_leaves_nothing(big_wim, tmp):
    disk = tmp / "d.vhdx"
    w2v("apply", big_wim, disk, "--size", "2G", "--no-boot", "--layout", "native")
    out = tmp / "c.wim"
    p = subprocess.Popen([W2V, "capture", disk, out, "--partition", "1", "--compress", "none"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        temps = list(tmp.glob(".c.wim.*.w2v-tmp"))
        if temps and temps[0].exists() and temps[0].stat().st_size > 32 << 20:
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGSTOP)
    assert p.poll() is None, "capture ended before it could be interrupted"
    p.send_signal(signal.SIGTERM)
    p.send_signal(signal.SIGCONT)
    p.wait(timeout=60)
    err = p.stderr.read().decode()
    assert p.returncode == 130 and err.count("\n") == 1, err
    assert not out.exists() and not leftovers(tmp)
    run("qemu-img", "check", disk)  # the input is untouched
