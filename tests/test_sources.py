"""Sources other than a plain WIM (ESD, split WIM, Windows ISO) and several editions in one run.

Each is made from the fixture WIM with real tools (wimexport --solid, wimsplit, pycdlib's UDF writer,
xorriso), applied, and the applied volume captured back with wimcapture: what wimdir --detailed shows
must be what the plain WIM gives."""
import filecmp
import io
import json
import os

import pytest
from hypothesis import given, strategies as st

from fixtures.wimdir import wimdir_detailed
from tests.support import (fails, hive_out, hivexget, leftovers, ntfs_partition, ntfsls, run, stream_ids, w2v,
                           xorriso_iso)
from wim2vhd.wim import iso
from wim2vhd.errors import InputError, UnsupportedInput

APPLY = ["--size", "1G", "--layout", "native", "--no-boot", "--seed", "sources"]


def volume_tree(disk, tmp):
    """The applied Windows volume as wimdir --detailed shows it after wimcapture, without what is
    particular to one WIM (indexes, link group numbers, where streams sit)."""
    part = ntfs_partition(disk, tmp)
    wim = tmp / (os.path.basename(disk) + ".wim")
    run("wimcapture", part, wim, "v")
    os.unlink(part)
    tree = {}
    for path, e in wimdir_detailed(str(wim), 1).items():
        if path.startswith("/System Volume Information"):
            continue
        tree[path] = {k: (stream_ids(v) if k == "streams" else v) for k, v in e.items()
                      if k not in ("Index", "Link Group ID")}
    assert len(tree) > 50
    return tree


@pytest.fixture(scope="module")
def wim_trees(fixture_wim, tmp_path_factory):
    """The volumes the plain WIM gives, per edition: what every other source must give too."""
    tmp = tmp_path_factory.mktemp("wimtrees")
    out = {}
    for i in (1, 2):
        w2v("apply", fixture_wim, tmp / f"w{i}.vhdx", "--index", str(i), *APPLY)
        out[i] = volume_tree(tmp / f"w{i}.vhdx", tmp)
    assert out[1] != out[2]
    return out


def info(path, *extra):
    return json.loads(w2v("info", path, *extra, "--json").stdout)


def _images(res):
    return [{k: v for k, v in i.items()} for i in res["images"]]


# ---- ESD --------------------------------------------------------------------------------------------------

def test_esd_lists_and_applies_like_the_wim(fixture_wim, wim_trees, tmp):
    esd = tmp / "install.esd"
    run("wimexport", fixture_wim, "all", esd, "--solid")
    a, b = info(fixture_wim), info(esd)
    assert b["compression"] == "lzms" and a["compression"] != "lzms"
    assert _images(a) == _images(b)
    w2v("apply", esd, tmp / "e.vhdx", "--index", "2", *APPLY)
    assert volume_tree(tmp / "e.vhdx", tmp) == wim_trees[2]
    assert not leftovers(tmp)


def test_capture_append_to_esd(fixture_wim, tmp):
    esd = tmp / "install.esd"
    run("wimexport", fixture_wim, "all", esd, "--solid")
    w2v("apply", fixture_wim, tmp / "d.vhdx", "--index", "1", *APPLY)
    res = json.loads(w2v("capture", tmp / "d.vhdx", esd, "--append", "--name", "appended", "--json").stdout)
    assert res["image"]["index"] == 3
    wi = run("wiminfo", esd).stdout
    assert "Image Count:    3" in wi and "LZMS" in wi
    run("wimverify", esd)
    a, b = wimdir_detailed(fixture_wim, 1), wimdir_detailed(str(esd), 3)
    for path, e in a.items():
        assert b[path].get("Security Descriptor") == e.get("Security Descriptor"), path
        assert stream_ids(b[path]["streams"]) == stream_ids(e["streams"]), path
    # the first two images are still there, unchanged
    assert wimdir_detailed(str(esd), 2).keys() == wimdir_detailed(fixture_wim, 2).keys()


# ---- split WIM --------------------------------------------------------------------------------------------

@pytest.fixture
def split(fixture_wim, tmp):
    # uncompressed, so that the small fixture splits into several parts of ~50 KB
    run("wimexport", fixture_wim, "all", tmp / "big.wim", "--compress=none")
    d = tmp / "parts"
    d.mkdir()
    run("wimsplit", tmp / "big.wim", d / "install.swm", "0.05")
    parts = sorted(os.listdir(d))
    assert len(parts) >= 3, parts
    return d


def test_split_wim_with_ref(split, wim_trees, tmp):
    first = split / "install.swm"
    res = info(first, "--ref", str(split / "install*.swm"))
    assert res["parts"] == len(os.listdir(split)) and len(res["images"]) == 2
    w2v("apply", first, tmp / "s.vhdx", "--index", "1", "--ref", str(split / "install*.swm"), *APPLY)
    assert volume_tree(tmp / "s.vhdx", tmp) == wim_trees[1]


def test_split_wim_without_its_parts(split, tmp):
    first, out = split / "install.swm", tmp / "s.vhdx"
    # found before anything is written, with the --ref to give
    fails(["apply", first, out, "--index", "1", *APPLY], 3, "--ref '", tmp, out)
    # a part missing: found while applying; nothing is left behind either
    fails(["apply", first, out, "--index", "1", "--ref", split / "install2.swm", *APPLY], 3, "--ref", tmp, out)
    fails(["apply", first, out, "--index", "1", "--ref", split / "nope*.swm", *APPLY], 3, "no such file", tmp, out)
    # a later part as IMAGE: it has the XML (info lists it) but not the images' metadata
    assert len(info(split / "install2.swm")["images"]) == 2
    fails(["apply", split / "install2.swm", out, "--index", "1", "--ref", split / "install*.swm", *APPLY], 3,
           "is part 2 of a split WIM", tmp, out)


def test_capture_append_to_split_wim_changes_nothing(split, fixture_wim, tmp):
    w2v("apply", fixture_wim, tmp / "d.vhdx", "--index", "1", *APPLY)
    before = {p: (split / p).read_bytes() for p in os.listdir(split)}
    for target in ("install.swm", "install2.swm"):  # the first part, and another
        p = w2v("capture", tmp / "d.vhdx", split / target, "--append", check=False)
        assert p.returncode == 3 and p.stderr.strip().count("\n") == 0 and "split WIM" in p.stderr, p.stderr
    assert {q: (split / q).read_bytes() for q in os.listdir(split)} == before
    assert not leftovers(split)


# ---- Windows ISOs -------------------------------------------------------------------------------------------

def udf_iso(path, files, readme=True):
    """An ISO like Microsoft's: the files in UDF only, a README on the ISO 9660 side (pycdlib's writer)."""
    import pycdlib
    w = pycdlib.PyCdlib()
    w.new(interchange_level=3, udf="2.60")
    dirs = set()
    for rel in files:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            if d not in dirs:
                w.add_directory(udf_path=d)
                dirs.add(d)
    keep = []
    for rel, data in files.items():
        f = io.BytesIO(data)
        keep.append(f)
        w.add_fp(f, len(data), udf_path="/" + rel)
    if readme:
        text = b"This disc contains a \"UDF\" file system.\r\n"
        w.add_fp(io.BytesIO(text), len(text), "/README.TXT;1")
    w.write(str(path))
    w.close()
    return path


def test_udf_iso_info_and_every_edition(fixture_wim, wim_trees, tmp):
    src = udf_iso(tmp / "win.iso", {"sources/install.wim": open(fixture_wim, "rb").read(),
                                    "setup.exe": b"MZ", "boot/etfsboot.com": b"\0" * 2048})
    assert iso.find_install_image(str(src)).filesystem == "UDF"
    res = info(src)
    assert res["install_image"] == "\\sources\\install.wim"
    assert _images(res) == _images(info(fixture_wim))
    out = json.loads(w2v("apply", src, tmp / "iso-{index}.vhdx", "--index", "all", *APPLY, "--json").stdout)
    assert [r["image"]["index"] for r in out] == [1, 2]
    assert all(r["image"]["source"] == str(src) and r["image"]["install_image"] == "\\sources\\install.wim"
               for r in out)
    for i in (1, 2):
        assert volume_tree(tmp / f"iso-{i}.vhdx", tmp) == wim_trees[i]
    assert not leftovers(tmp)


def test_iso9660_iso_with_esd(fixture_wim, wim_trees, tmp):
    (tmp / "t" / "sources").mkdir(parents=True)
    run("wimexport", fixture_wim, "all", tmp / "t" / "sources" / "install.esd", "--solid")
    src = xorriso_iso(tmp / "x.iso", tmp / "t")
    f = iso.find_install_image(str(src))
    assert f.filesystem == "ISO 9660" and f.path.lower() == "\\sources\\install.esd"
    assert info(src)["compression"] == "lzms" and info(src)["install_image_read"] == "in place"
    w2v("apply", src, tmp / "x.vhdx", "--index", "1", *APPLY)
    assert volume_tree(tmp / "x.vhdx", tmp) == wim_trees[1]
    assert not leftovers(tmp)


def test_udf_iso_with_esd(fixture_wim, wim_trees, tmp):
    run("wimexport", fixture_wim, "all", tmp / "install.esd", "--solid")
    src = udf_iso(tmp / "esd.iso", {"sources/install.esd": (tmp / "install.esd").read_bytes()})
    f = iso.find_install_image(str(src))
    assert f.filesystem == "UDF" and f.path == "\\sources\\install.esd"
    res = info(src)
    assert res["compression"] == "lzms" and _images(res) == _images(info(fixture_wim))
    w2v("apply", src, tmp / "u.vhdx", "--index", "2", *APPLY)
    assert volume_tree(tmp / "u.vhdx", tmp) == wim_trees[2]
    assert not leftovers(tmp)


def test_iso_copies(fixture_wim, tmp):
    """apply gets the whole install image, byte for byte; info only what opening needs, sparse."""
    big = tmp / "big"
    big.mkdir()
    (big / "blob.bin").write_bytes(os.urandom(6 << 20))
    run("wimcapture", big, tmp / "big.wim", "big", "--compress=none")
    src = udf_iso(tmp / "big.iso", {"sources/install.wim": (tmp / "big.wim").read_bytes()})
    with iso.install_image(str(src), temp_dir=str(tmp)) as path:
        assert os.path.dirname(path) == str(tmp) and ".w2v-tmp" in path
        assert filecmp.cmp(path, tmp / "big.wim", shallow=False)
    with iso.install_image(str(src), temp_dir=str(tmp), metadata_only=True) as path:
        st_ = os.stat(path)
        assert st_.st_size == os.path.getsize(tmp / "big.wim")
        assert st_.st_blocks * 512 < (1 << 20), "only the header, blob table and XML are copied"
        run("wiminfo", path)  # and wimlib's own tool opens it
    assert not leftovers(tmp)
    # an error after the copy removes it too
    out = tmp / "o.vhdx"
    fails(["apply", src, out, "--index", "7", *APPLY], 3, "no image 7", tmp, out)


def test_iso_layouts(fixture_wim, tmp):
    data = open(fixture_wim, "rb").read()
    one = udf_iso(tmp / "one.iso", {"x64/sources/install.wim": data, "x64/setup.exe": b"MZ"})
    assert iso.find_install_image(str(one)).path == "\\x64\\sources\\install.wim"
    two = udf_iso(tmp / "two.iso", {"x64/sources/install.wim": data, "x86/sources/install.esd": data})
    with pytest.raises(UnsupportedInput, match="several install images"):
        iso.find_install_image(str(two))
    out = tmp / "o.vhdx"
    fails(["apply", two, out, "--index", "1", *APPLY], 3, "several install images", tmp, out)
    none = udf_iso(tmp / "none.iso", {"sources/boot.wim": data})
    fails(["apply", none, out, "--index", "1", *APPLY], 3, "no \\sources\\install.wim or install.esd", tmp, out)
    fails(["info", none], 3, "no \\sources\\install.wim", tmp, out)
    (tmp / "junk.iso").write_bytes(os.urandom(1 << 20))
    fails(["apply", tmp / "junk.iso", out, *APPLY], 3, "is not an ISO image", tmp, out)
    fails(["apply", tmp / "missing.iso", out, *APPLY], 3, "no such file", tmp, out)
    whole = udf_iso(tmp / "whole.iso", {"sources/install.wim": data + os.urandom(300000)}).read_bytes()
    (tmp / "cut.iso").write_bytes(whole[:len(whole) - 200000])
    with pytest.raises(InputError):
        iso.find_install_image(str(tmp / "cut.iso"))
    fails(["info", tmp / "cut.iso"], 3, "truncated", tmp, out)


@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 1000)), st.integers(1, 50)), max_size=8),
       st.integers(0, 300), st.integers(0, 300))
def test_extent_pieces_cover_exactly(extents, start, length):
    """_pieces maps a byte range of a file to ISO offsets: the pieces are in order, contiguous in the file
    and each within one extent."""
    size = sum(n for _, n in extents)
    start, length = min(start, size), min(length, max(0, size - min(start, size)))
    pieces = list(iso._pieces(tuple(extents), start, length))
    assert sum(n for _, _, n in pieces) == length
    pos = start
    for off, at, n in pieces:
        assert at == pos and n > 0
        pos += n
        # find the extent holding `at` and check the offset inside it
        base = 0
        for eoff, en in extents:
            if base <= at < base + en:
                assert at + n <= base + en
                assert off == (None if eoff is None else eoff + at - base)
                break
            base += en
    merged = iso._merge(extents)
    assert sum(n for _, n in merged) == size
    assert b"".join(_fake(merged, start, length)) == b"".join(_fake(extents, start, length))


def _fake(extents, start, length):
    """The bytes a range reads from an ISO whose byte i is i % 251 (None extents read as zeros)."""
    for off, at, n in iso._pieces(tuple(extents), start, length):
        yield bytes(n) if off is None else bytes((off + k) % 251 for k in range(n))


# ---- several editions in one run ------------------------------------------------------------------------------

def test_all_editions_one_disk_each(fixture_wim, tmp):
    res = json.loads(w2v("apply", fixture_wim, tmp / "{name}.vhdx", "--index", "2,1", "--enable-rdp",
                         *APPLY, "--json").stdout)
    assert isinstance(res, list) and [r["image"]["index"] for r in res] == [2, 1]
    pro, ent = tmp / "Windows 10 Pro.vhdx", tmp / "Windows 10 Enterprise.vhdx"
    assert [r["output"] for r in res] == [str(ent), str(pro)]
    assert "No errors" in run("qemu-img", "check", pro).stdout
    p1, p2 = ntfs_partition(pro, tmp), ntfs_partition(ent, tmp)
    assert "pro-only.txt" in ntfsls(p1, "/Windows/System32") and "pro-only.txt" not in ntfsls(p2, "/Windows/System32")
    assert "AppLocker" in ntfsls(p2, "/Windows/System32") and "AppLocker" not in ntfsls(p1, "/Windows/System32")
    for p in (p1, p2):  # customizations reach every edition
        assert hivexget(hive_out(p, "SYSTEM", tmp), r"ControlSet001\Control\Terminal Server", "fDenyTSConnections") == "0"
    assert res[0]["disk"]["id"] != res[1]["disk"]["id"]
    # one edition with a placeholder: a plain summary, not a list
    one = json.loads(w2v("apply", fixture_wim, tmp / "one-{index}-{name}.vhdx", "--index", "2", *APPLY,
                         "--json").stdout)
    assert one["output"] == str(tmp / "one-2-Windows 10 Enterprise.vhdx")
    assert not leftovers(tmp)


def test_several_editions_bad_requests(fixture_wim, tmp):
    out = tmp / "e-{index}.vhdx"

    def nothing():
        assert not [n for n in os.listdir(tmp) if n.endswith(".vhdx")] and not leftovers(tmp)

    for args, code, words in (
            (["--index", "1,2"], 2, "{index} or {name}"),
            (["--index", "all"], 2, "{index} or {name}"),
            (["--index", "1,1"], 2, "named twice"),
            (["--index", "1,x"], 2, "--index must be"),
            (["--index", "1,2", "--name", "Windows 10 Pro"], 2, "not both"),
            (["--index", "1,5"], 3, "no image 5"),
    ):
        target = tmp / "plain.vhdx" if words == "{index} or {name}" else out
        p = w2v("apply", fixture_wim, target, *args, *APPLY, check=False)
        assert p.returncode == code and words in p.stderr and p.stderr.count("\n") == 1, p.stderr
        nothing()
    # an output that exists stops the run before the first disk is made
    (tmp / "e-2.vhdx").write_bytes(b"keep")
    p = w2v("apply", fixture_wim, out, "--index", "all", *APPLY, check=False)
    assert p.returncode == 4 and "--force" in p.stderr
    assert not (tmp / "e-1.vhdx").exists() and (tmp / "e-2.vhdx").read_bytes() == b"keep"


def test_several_editions_overlap_and_fail_in_turn(fixture_wim, tmp, monkeypatch):
    """The next edition's disk is formatted on a thread while one applies (apply.apply_several): shown by
    edition 1's extraction waiting for edition 2's format to begin (it would wait in vain without the
    overlap).  An edition whose disk fails ahead fails in its turn, after the ones before are complete;
    one that fails while the next is made ahead leaves neither behind."""
    import threading
    from wim2vhd import api, fs
    from wim2vhd.pipeline import apply as pipeline
    from wim2vhd.errors import NoSpace
    from wim2vhd.wim import wimlib
    monkeypatch.setattr(pipeline, "_can_overlap", lambda: True)
    real_format, real_extract = fs.format_layout, wimlib.Wim.extract_ntfs
    formats, began = [], threading.Event()
    fail = {"format": None, "extract": None}

    def format_layout(*a, **kw):
        formats.append(threading.current_thread().name)
        if len(formats) == 2:
            began.set()
        if fail["format"] == len(formats):
            raise NoSpace("the test's format failure")
        return real_format(*a, **kw)

    def extract_ntfs(self, index, *a, **kw):
        if index == 1:
            assert began.wait(60), "edition 2's disk was not being made while edition 1 applied"
        if fail["extract"] == index:
            raise NoSpace("the test's apply failure")
        return real_extract(self, index, *a, **kw)

    monkeypatch.setattr(fs, "format_layout", format_layout)
    monkeypatch.setattr(wimlib.Wim, "extract_ntfs", extract_ntfs)
    args = dict(index="all", size="1G", layout="native", boot=False)
    res = api.apply_image(fixture_wim, str(tmp / "e-{index}.vhdx"), **args)
    assert [r["image"]["index"] for r in res] == [1, 2]
    assert formats == ["MainThread", "wim2vhd-prepare"]
    for p in tmp.glob("e-*.vhdx"):
        p.unlink()
    formats.clear(), began.clear()
    fail["format"] = 2  # edition 2's disk fails while edition 1 applies: reported after 1 is complete
    with pytest.raises(NoSpace, match=r"image 2: the test's format failure \(already written: .*e-1.vhdx\)"):
        api.apply_image(fixture_wim, str(tmp / "e-{index}.vhdx"), **args)
    assert sorted(os.listdir(tmp)) == ["e-1.vhdx"]
    (tmp / "e-1.vhdx").unlink()
    formats.clear(), began.clear()
    fail["format"], fail["extract"] = None, 1  # edition 1 fails: edition 2's disk made ahead goes too
    with pytest.raises(NoSpace, match="the test's apply failure"):
        api.apply_image(fixture_wim, str(tmp / "e-{index}.vhdx"), **args)
    assert os.listdir(tmp) == [] and len(formats) == 2
