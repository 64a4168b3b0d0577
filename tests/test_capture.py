"""`wim2vhd capture`: a disk's Windows volume back into a WIM (or ESD), read back with wimlib's own tools
(wimdir --detailed, wiminfo, wimverify) and compared with the source image and with wimcapture."""
import json
import os

import pytest

from fixtures.wimdir import wimdir_detailed
from tests.support import NOBODY, assert_same_tree, fails, leftovers, ntfs_partition, run, stream_ids, w2v

APPLY = ["--size", "1G", "--no-boot", "--seed", "capture"]
# what wimlib reads from the hives and kernel32.dll (wiminfo's words)
WINDOWS_FACTS = ("Architecture", "Product Name", "Edition ID", "Installation Type", "HAL", "Product Type",
                 "Product Suite", "Languages", "Default Language", "System Root", "Major Version", "Minor Version",
                 "Build", "Service Pack Build", "Service Pack Level", "Flags", "Display Name")


def without_refcounts(tree):
    return {p: {k: ({n: {f: x for f, x in st.items() if f != "Reference Count"} for n, st in v.items()}
                    if k == "streams" else v) for k, v in e.items()} for p, e in tree.items()}


def wiminfo(wim, index=None):
    out = run("wiminfo", wim, *([str(index)] if index else [])).stdout
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines()) if _}


def capture(*args):
    return json.loads(w2v("capture", *args, "--json").stdout)


@pytest.fixture(scope="module")
def applied(fixture_wim, tmp_path_factory):
    """Edition 1 applied to a UEFI-layout VHDX (Windows on partition 3), and wimcapture's own capture of
    that partition: the reference for what wimlib records of a Windows volume."""
    tmp = tmp_path_factory.mktemp("applied")
    disk = tmp / "win.vhdx"
    w2v("apply", fixture_wim, disk, "--index", "1", *APPLY)
    part = ntfs_partition(disk, tmp, 2)
    run("wimcapture", part, tmp / "ref.wim", "ref")
    os.unlink(part)
    return {"disk": disk, "ref": tmp / "ref.wim"}


def test_capture_matches_the_source_file_for_file(fixture_wim, applied, tmp):
    res = capture(applied["disk"], tmp / "cap.wim", "--description", "captured by a test")
    assert res["partition"] == 3 and res["compression"] == "lzx" and not res["appended"]
    assert_same_tree(wimdir_detailed(fixture_wim, 1), wimdir_detailed(str(tmp / "cap.wim"), 1))
    run("wimverify", tmp / "cap.wim")
    # the XML info is what wimlib's own capture records for the same volume
    got, ref = wiminfo(tmp / "cap.wim", 1), wiminfo(applied["ref"], 1)
    assert {k: got.get(k) for k in WINDOWS_FACTS} == {k: ref.get(k) for k in WINDOWS_FACTS}
    assert got["Edition ID"] == "Professional" and got["Build"] == "19045" and got["Architecture"] == "x86_64"
    assert got["Description"] == "captured by a test"
    # no --name: the product name wimlib found
    assert got["Name"] == ref["Product Name"] == res["image"]["name"]
    assert wiminfo(tmp / "cap.wim")["Compression"] == "LZX"
    assert not leftovers(tmp)


def test_capture_from_a_differencing_child(fixture_wim, applied, tmp):
    """The child's own blocks win over its parent's: a file written into the child (through wim2vhd's
    NTFS layer) is captured from it, and the parent still captures as the source."""
    from wim2vhd import partition
    from wim2vhd.ntfs import NtfsWindow
    from wim2vhd.disk import open_disk
    from wim2vhd.ntfs import NtfsVolume
    child = tmp / "child.vhdx"
    w2v("disk", "diff", applied["disk"], child)
    data = os.urandom(300000)
    d = open_disk(str(child), writable=True)
    try:
        win = [p for p in partition.read_table(d).partitions if p.number == 3][0]
        with NtfsWindow(d, win.start, win.size) as dev, NtfsVolume(dev) as vol:
            vol.write_file("Windows\\child-only.bin", data)
        d.sync()
    finally:
        d.close()
    assert os.path.getsize(child) < os.path.getsize(applied["disk"])
    capture(child, tmp / "child.wim", "--name", "child")
    src, back = wimdir_detailed(fixture_wim, 1), wimdir_detailed(str(tmp / "child.wim"), 1)
    # \Windows has a new entry: its times changed, nothing else
    times = {"Creation Time", "Last Write Time", "Last Access Time"}
    for k in times:
        src["/Windows"].pop(k, None)
        back["/Windows"].pop(k, None)
    assert_same_tree(src, back, extra={"/Windows/child-only.bin"})
    run("wimextract", tmp / "child.wim", "1", "/Windows/child-only.bin", f"--dest-dir={tmp}")
    assert (tmp / "child-only.bin").read_bytes() == data
    capture(applied["disk"], tmp / "parent.wim", "--name", "parent")
    assert "/Windows/child-only.bin" not in wimdir_detailed(str(tmp / "parent.wim"), 1)


@pytest.mark.parametrize("name,layout", [("bios.vhd", ["--layout", "bios"]),
                                         ("native.img", ["--layout", "native", "--mbr"])])
def test_capture_from_vhd_and_raw(fixture_wim, tmp, name, layout):
    disk = tmp / name
    w2v("apply", fixture_wim, disk, "--index", "2", *APPLY, *layout)
    res = capture(disk, tmp / "c.wim")
    assert res["partition"] == 1 and res["image"]["edition"] == "Enterprise"
    assert_same_tree(wimdir_detailed(fixture_wim, 2), wimdir_detailed(str(tmp / "c.wim"), 1))


@pytest.mark.parametrize("compress,shown,solid", [("xpress", "XPRESS", False), ("none", "None", False),
                                                  ("lzms", "LZMS", True)])
def test_compress_and_partition(fixture_wim, applied, tmp, compress, shown, solid):
    out = tmp / "c.wim"
    res = capture(applied["disk"], out, "--partition", "3", "--compress", compress, "--name", "n")
    assert res["partition"] == 3 and res["compression"] == compress
    assert wiminfo(out)["Compression"] == shown
    blobs = run("wiminfo", out, "--blobs").stdout
    assert ("WIM_RESHDR_FLAG_SOLID" in blobs) == solid
    run("wimverify", out)
    assert_same_tree(wimdir_detailed(fixture_wim, 1), wimdir_detailed(str(out), 1))


def test_esd_by_its_name(applied, tmp):
    capture(applied["disk"], tmp / "install.esd")
    assert wiminfo(tmp / "install.esd")["Compression"] == "LZMS"
    assert "WIM_RESHDR_FLAG_SOLID" in run("wiminfo", tmp / "install.esd", "--blobs").stdout


@pytest.fixture(scope="module")
def grown(fixture_wim, tmp_path_factory):
    """Edition 2 with a file no other image has, so that appending it writes new data."""
    tmp = tmp_path_factory.mktemp("grown")
    (tmp / "m").mkdir()
    data = os.urandom(200000)
    (tmp / "m" / "new.bin").write_bytes(data)
    disk = tmp / "grown.vhdx"
    w2v("apply", fixture_wim, disk, "--index", "2", "--merge", tmp / "m", *APPLY)
    return {"disk": disk, "data": data}


@pytest.mark.parametrize("kind", ["wim", "esd"])
def test_append(fixture_wim, grown, tmp, kind):
    out = tmp / f"install.{kind}"
    run("wimexport", fixture_wim, "all", out, *(["--solid"] if kind == "esd" else []))
    before = {i: wimdir_detailed(str(out), i) for i in (1, 2)}
    res = capture(grown["disk"], out, "--append")
    assert res["appended"] and res["image"]["index"] == 3 and res["images_in_output"] == 3
    info = wiminfo(out)
    assert info["Image Count"] == "3" and info["Compression"] == ("LZMS" if kind == "esd" else "LZX")
    run("wimverify", out)
    # no --name: the product name wimlib found, "Windows 10 Enterprise", which image 2 already has
    product = wiminfo(out, 3)["Product Name"]
    assert product == wiminfo(out, 2)["Name"] and res["image"]["name"] == product + " (2)"
    again = capture(grown["disk"], out, "--append")
    assert again["image"]["name"] == product + " (3)" and again["image"]["index"] == 4
    assert wiminfo(out, 3)["Edition ID"] == "Enterprise"
    # the old images are as they were, the new one is edition 2 plus the merged file
    # (where their data sits too: appending wrote after it; only the blobs' reference counts went up)
    for i in (1, 2):
        assert without_refcounts(wimdir_detailed(str(out), i)) == without_refcounts(before[i])
    src, back = wimdir_detailed(fixture_wim, 2), wimdir_detailed(str(out), 3)
    assert set(back) - set(src) - {p for p in back if p.startswith("/System Volume Information")} == {"/new.bin"}
    for path, e in src.items():
        assert back[path].get("Security Descriptor") == e.get("Security Descriptor"), path
        assert stream_ids(back[path]["streams"]) == stream_ids(e["streams"]), path
    run("wimextract", out, "3", "/new.bin", f"--dest-dir={tmp}")
    assert (tmp / "new.bin").read_bytes() == grown["data"]
    # an ESD stays solid: the new data went into a solid resource too
    blobs = run("wiminfo", out, "--blobs").stdout.split("\n\n")
    new = [b for b in blobs if f"Uncompressed size = {len(grown['data'])} bytes" in b]
    assert len(new) == 1 and ("WIM_RESHDR_FLAG_SOLID" in new[0]) == (kind == "esd")


def test_bad_inputs(fixture_wim, applied, tmp):
    disk, out = applied["disk"], tmp / "o.wim"
    fails(["capture", tmp / "missing.vhdx", out], 3, "no such file", tmp, out)
    fails(["capture", fixture_wim, out], 3, "no partition table", tmp, out)
    fails(["capture", disk, out, "--partition", "9"], 2, "has no partition 9; it has 1, 2, 3", tmp, out)
    fails(["capture", disk, out, "--partition", "1"], 3, "partition 1 of", tmp, out)  # the ESP: FAT
    fails(["capture", disk, out, "--partition", "2"], 3, "does not hold NTFS", tmp, out)  # MSR: nothing
    fails(["capture", disk, out, "--compress", "zip"], 2, "--compress must be one of", tmp, out)
    fails(["capture", disk, out, "--name", " "], 2, "--name must not be empty", tmp, out)
    fails(["capture", disk, out, "--append"], 3, "does not exist", tmp, out)
    fails(["capture", disk, tmp / "no" / "o.wim"], 4, "does not exist", tmp, out)
    # a disk whose NTFS volume holds no \Windows: found automatically only when there is one
    (tmp / "data").mkdir()
    (tmp / "data" / "readme.txt").write_bytes(b"data only")
    run("wimcapture", tmp / "data", tmp / "data.wim", "data")
    w2v("apply", tmp / "data.wim", tmp / "data.vhdx", "--layout", "native", "--size", "1G", "--no-boot")
    fails(["capture", tmp / "data.vhdx", out], 3, "no NTFS partition holds \\Windows", tmp, out)
    # which --partition N captures: named after the disk, as wimlib found no Windows in it
    assert capture(tmp / "data.vhdx", tmp / "data2.wim", "--partition", "1")["image"]["name"] == "data partition 1"
    # the output exists: kept as it was
    out.write_bytes(b"keep")
    p = w2v("capture", disk, out, check=False)
    assert p.returncode == 4 and "--force" in p.stderr and out.read_bytes() == b"keep"
    assert capture(disk, out, "--force", "--name", "x")["image"]["name"] == "x"
    os.unlink(out)


def test_bad_appends_change_nothing(fixture_wim, applied, tmp):
    wim = tmp / "t.wim"
    run("wimexport", fixture_wim, "all", wim)
    before = wim.read_bytes()

    def fails(args, code, words):
        p = w2v("capture", applied["disk"], wim, "--append", *args, check=False)
        assert p.returncode == code and words in p.stderr and p.stderr.strip().count("\n") == 0, p.stderr
        assert wim.read_bytes() == before and not leftovers(tmp)
    fails(["--name", "Windows 10 Pro"], 2, "already has an image named 'Windows 10 Pro'")
    fails(["--compress", "xpress"], 2, "uses lzx compression")
    # WIM_HDR_FLAG_READONLY (0x4) in the header's flags, at offset 16: wimlib refuses to change it
    flagged = bytearray(before)
    flagged[16] |= 0x04
    wim.write_bytes(bytes(flagged))
    before = bytes(flagged)
    fails([], 3, "marked read-only in its header")
    (tmp / "junk.wim").write_bytes(b"not a wim" * 100)
    p = w2v("capture", applied["disk"], tmp / "junk.wim", "--append", check=False)
    assert p.returncode == 3 and (tmp / "junk.wim").read_bytes() == b"not a wim" * 100


def test_no_privileges_needed(applied, nobody):
    """Capture as nobody, with every capability dropped and no_new_privs: no mount, loop device or FUSE."""
    out = os.path.join(nobody.dir, "np.wim")
    p = nobody("capture", nobody.put(applied["disk"], "win.vhdx"), out)
    assert p.returncode == 0, p.stderr
    assert os.stat(out).st_uid == NOBODY
    run("wimverify", out)
    assert wiminfo(out, 1)["Edition ID"] == "Professional"