"""ISOs read in place: wimlib reads the install image's extents straight from the ISO through a view
(wim2vhd.wim.view, native/w2v_vfile.c), so an ISO needs no more free space than its WIM.

The small file system is a real one: a tmpfs in a mount namespace of our own (tests.support.in_small_fs),
too small for the disk and a copy of the WIM together.  The ISOs are made by xorriso (ISO 9660; its file
then split into two extents far apart, as a multi-extent file, checked with osirrox and 7-Zip) and by
pycdlib (UDF); the disks must be the very bytes that applying the WIM itself gives, with the same seed."""
import hashlib
import json
import os
import shutil

import pytest
from hypothesis import given, settings, strategies as st

from tests.support import have, in_small_fs, leftovers, run, sha, w2v
from tests.test_sources import udf_iso
from wim2vhd.wim import Wim, iso, view

SECTOR = 2048
APPLY = ["--size", "1G", "--layout", "native", "--no-boot", "--seed", "in-place", "--index", "1"]
BLOB = 32 << 20  # incompressible bytes in the WIM: more than the small file system has to spare


@pytest.fixture(scope="module")
def big_wim(fixture_wim, tmp_path_factory):
    """The fixture WIM with BLOB random bytes added to image 1 (wimupdate): a WIM of about 33 MiB."""
    d = tmp_path_factory.mktemp("bigwim")
    (d / "blob.bin").write_bytes(os.urandom(BLOB))
    shutil.copy(fixture_wim, d / "big.wim")
    run("wimupdate", d / "big.wim", "1", f"--command=add {d / 'blob.bin'} /blob.bin")
    os.unlink(d / "blob.bin")
    return d / "big.wim"


@pytest.fixture(scope="module")
def wim_disk(big_wim, tmp_path_factory):
    """(sha256, bytes allocated) of the disk that applying the WIM itself gives."""
    d = tmp_path_factory.mktemp("wimdisk")
    w2v("apply", big_wim, d / "w.vhdx", *APPLY)
    return sha(d / "w.vhdx"), os.stat(d / "w.vhdx").st_blocks * 512


def both(v: int, n: int) -> bytes:
    """An ISO 9660 both-byte-order field."""
    return v.to_bytes(n, "little") + v.to_bytes(n, "big")


def make_multi_extent(path, name=b"INSTALL.WIM;1"):
    """Rewrite the ISO 9660 file `name` as a multi-extent file (ECMA-119 9.1.6, flag bit 7: more
    records of the file follow): its first half stays, its second half moves to a new extent at the end
    of the image, and random bytes take its old place (a reader that took the file as one run of
    sectors would read them)."""
    data = bytearray(path.read_bytes())
    rec = data.find(bytes([len(name)]) + name) - 32
    rlen = data[rec]
    lba, size = int.from_bytes(data[rec + 2:rec + 6], "little"), int.from_bytes(data[rec + 10:rec + 14], "little")
    k = size // 2 // SECTOR * SECTOR
    start = lba * SECTOR
    tail = bytes(data[start + k:start + size])
    data[start + k:start + size] = os.urandom(size - k)
    new_lba = -(-len(data) // SECTOR)
    data += bytes(new_lba * SECTOR - len(data)) + tail
    data += bytes(-len(data) % SECTOR)
    first, second = bytearray(data[rec:rec + rlen]), bytearray(data[rec:rec + rlen])
    first[10:18], first[25] = both(k, 4), first[25] | 0x80
    second[2:10], second[10:18] = both(new_lba, 4), both(size - k, 4)
    sec0 = rec // SECTOR * SECTOR
    sec = data[sec0:rec] + first + second + data[rec + rlen:sec0 + SECTOR]
    assert not any(sec[SECTOR:]), "no room for a second record in the directory sector"
    data[sec0:sec0 + SECTOR] = sec[:SECTOR]
    data[16 * SECTOR + 80:16 * SECTOR + 88] = both(len(data) // SECTOR, 4)  # the volume space size
    path.write_bytes(data)


@pytest.fixture(scope="module")
def isos(big_wim, tmp_path_factory):
    d = tmp_path_factory.mktemp("isos")
    (d / "t" / "sources").mkdir(parents=True)
    shutil.copy(big_wim, d / "t" / "sources" / "install.wim")
    multi = d / "multi.iso"
    run("xorriso", "-as", "mkisofs", "-quiet", "-iso-level", "3", "-o", multi, d / "t")
    make_multi_extent(multi)
    shutil.rmtree(d / "t")
    udf = udf_iso(d / "udf.iso", {"sources/install.wim": big_wim.read_bytes()})
    return {"multi": multi, "udf": udf}


def test_the_multi_extent_iso_is_one(isos, big_wim, tmp):
    """Readers nobody here wrote (osirrox of libisofs, 7-Zip) read the crafted file as the WIM, and
    xorriso lists its two extents; so do we, far apart."""
    f = iso.find_install_image(str(isos["multi"]))
    assert f.filesystem == "ISO 9660" and len(f.extents) == 2
    assert f.extents[0][0] + f.extents[0][1] < f.extents[1][0]
    lbas = run("xorriso", "-indev", isos["multi"], "-find", "/sources/install.wim", "-exec", "report_lba", "--")
    assert lbas.stdout.count("/sources/install.wim") == 2, lbas.stdout
    run("osirrox", "-indev", isos["multi"], "-extract", "/sources/install.wim", tmp / "o.wim")
    assert sha(tmp / "o.wim") == sha(big_wim)
    if have("7zz"):
        run("7zz", "e", f"-o{tmp / 'z'}", isos["multi"], "sources/install.wim")
        assert sha(tmp / "z" / "install.wim") == sha(big_wim)


@pytest.mark.parametrize("kind", ["multi", "udf"])
def test_iso_applies_in_place_on_a_file_system_too_small_for_a_copy(isos, big_wim, wim_disk, tmp, kind):
    want, allocated = wim_disk
    # Room for the disk and 24 MiB more, not for a copy of the WIM as well.
    room = allocated + (24 << 20)
    assert os.path.getsize(big_wim) > room - allocated
    p = in_small_fs(tmp, str(room), f'''
        "$W2V" apply {isos[kind]} "$M/i.vhdx" {" ".join(APPLY)} --json > "$M/../summary.json"; echo "rc=$?"
        sha256sum "$M/i.vhdx"; rm -f "$M/i.vhdx"
        WIM2VHD_ISO_COPY=1 "$W2V" apply {isos[kind]} "$M/c.vhdx" {" ".join(APPLY)}; echo "rc=$?"
        echo --; ls -A "$M"''')
    first, copied = p.stdout.split("rc=")[1:3]
    assert first.startswith("0"), p.stdout + p.stderr
    assert want in first, "the disk applied from the ISO is the one the WIM gives"
    res = json.loads((tmp / "summary.json").read_text())
    assert res["image"]["install_image_read"] == "in place"
    ra = res["io"]["readahead"]
    if ra["threads"]:  # the read-ahead's helpers read the view too, and served wimlib from it
        assert ra["hits"] > 0 and ra["served"] > 0, ra
    # the same run through a copy does not fit: the file system is too small for it
    assert copied.startswith("4"), p.stdout + p.stderr
    assert "copying \\" in p.stderr and "out of the ISO needs" in p.stderr, p.stderr
    assert p.stdout.split("--\n")[-1].split() == [], "nothing is left behind"


def test_copy_fallback_says_so(isos, wim_disk, tmp):
    """Where the ISO is copied (here forced by WIM2VHD_ISO_COPY=1), the summary says so and why, and the
    disk is the same."""
    out = tmp / "c.vhdx"
    p = w2v("apply", isos["udf"], out, *APPLY, env={**os.environ, iso.COPY_ENV: "1"})
    assert "of the ISO was copied (WIM2VHD_ISO_COPY is set)" in p.stdout
    assert sha(out) == wim_disk[0]
    res = json.loads(w2v("info", isos["udf"], "--json").stdout)
    assert res["install_image_read"] == "in place"
    assert not leftovers(tmp)


# ---- the view itself -----------------------------------------------------------------------------------

extent_lists = st.lists(st.tuples(st.booleans(), st.integers(0, 5000)), min_size=0, max_size=8)


@settings(max_examples=60, deadline=None)
@given(extent_lists, st.lists(st.tuples(st.integers(0, 40000), st.integers(0, 9000)), max_size=10))
def test_view_reads_are_its_extents(tmp_path_factory, extents, reads):
    """Every read of a view is the bytes of its extents in order (zeros where an extent has no place
    in the file), cut at its end, whatever the offsets."""
    d = tmp_path_factory.mktemp("view")
    src = os.urandom(60000)
    (d / "src").write_bytes(src)
    ext, want, pos = [], b"", 0
    for zero, n in extents:
        if zero:
            ext.append((None, n))
            want += bytes(n)
        else:
            off = (pos * 7919) % (len(src) - n)
            ext.append((off, n))
            want += src[off:off + n]
        pos += 1
    with view.View(str(d / "v#view"), str(d / "src"), len(want), ext) as v:
        assert not os.path.exists(v.name)
        for off, n in reads:
            assert v.read(off, n) == want[off:off + n]


def test_wimlib_opens_a_view_of_scattered_pieces(big_wim, tmp):
    """A WIM cut in three pieces stored in reverse order with junk between: wimlib opens, lists and
    extracts it through the view (hashing every blob as it goes: WIMLIB_ERR_INVALID_RESOURCE_HASH
    otherwise) as it does the WIM; the view's descriptors are all closed after.  (The apply tests above
    read views with the read-ahead's helpers.)"""
    data = big_wim.read_bytes()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    pieces = [data[a:b] for a, b in zip(cuts, cuts[1:])]
    offsets = {}
    with open(tmp / "scattered", "wb") as f:
        for i in (2, 1, 0):
            f.write(os.urandom(777))
            offsets[i] = f.tell()
            f.write(pieces[i])
    name = str(tmp / "scattered#view.wim")
    with view.View(name, str(tmp / "scattered"), len(data), [(offsets[i], len(pieces[i])) for i in range(3)]) as v:
        with Wim(name) as w, Wim(str(big_wim)) as plain:
            assert [i.to_dict() for i in w.images()] == [i.to_dict() for i in plain.images()]
            assert v.open_count == 1
            w.extract_paths(1, ["/blob.bin"], str(tmp))
        assert v.open_count == 0
    digest = hashlib.sha256((tmp / "blob.bin").read_bytes()).hexdigest()
    run("wimextract", big_wim, "1", "/blob.bin", f"--dest-dir={tmp / 'ref'}")
    assert digest == sha(tmp / "ref" / "blob.bin")


def test_several_editions_of_an_iso_open_it_once(fixture_wim, tmp, monkeypatch):
    """--index all of an ISO: one view, one Wim (the header, blob table and XML read once) for every
    edition; each disk is the one that edition gives alone from the WIM, with the same seed."""
    from wim2vhd import api
    from wim2vhd.wim import wimlib
    src = udf_iso(tmp / "two.iso", {"sources/install.wim": open(fixture_wim, "rb").read()})
    opened, views = [], []
    real_init, real_view = wimlib.Wim.__init__, view.View.__init__

    def counting_init(self, path, **kw):
        opened.append(path)
        real_init(self, path, **kw)

    def counting_view(self, name, *a):
        views.append(name)
        real_view(self, name, *a)

    monkeypatch.setattr(wimlib.Wim, "__init__", counting_init)
    monkeypatch.setattr(view.View, "__init__", counting_view)
    args = dict(size="1G", layout="native", boot=False, seed="editions")
    res = api.apply_image(str(src), str(tmp / "e-{index}.vhdx"), index="all", **args)
    assert [r["image"]["index"] for r in res] == [1, 2]
    assert len(views) == 1 and opened == views, (opened, views)
    monkeypatch.undo()
    for i in (1, 2):  # (an edition's seed is the run's and its index, alone or not)
        alone = api.apply_image(fixture_wim, str(tmp / f"w-{i}.vhdx"), index=str(i), **args)
        assert sha(tmp / f"e-{i}.vhdx") == sha(alone["output"])
