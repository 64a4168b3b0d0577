"""Read-ahead decompression (native/w2v_readahead.c): helper threads decompress wimlib's chunks
before it asks for them.  Whatever they do, the disk must be byte for byte the one wimlib alone
writes, and wimlib's own checks (SHA-1, decompression errors) must still decide what is corrupt."""
import json
import os
import random
import re
import subprocess

import pytest

from tests.support import run, w2v


def _tree(root, seed=1):
    """Files for every kind of chunk: compressible text (many chunks, the last one short), random
    bytes (chunks stored uncompressed, which wimlib copies without decompressing), empty files,
    duplicates (one blob for several files) and hard links."""
    r = random.Random(seed)
    words = ["".join(r.choice("abcdefghij") for _ in range(r.randint(2, 9))) for _ in range(500)]
    root.mkdir()
    for i in range(60):
        n = r.choice([100, 5000, 32768, 40000, r.randint(1, 400_000)])
        (root / f"t{i}.txt").write_text(" ".join(r.choice(words) for _ in range(n // 6 + 1))[:n])
    for i in range(5):
        (root / f"r{i}.bin").write_bytes(r.randbytes(r.choice([1000, 70000])))
    (root / "empty").write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "dup.txt").write_bytes((root / "t3.txt").read_bytes())
    os.link(root / "t5.txt", root / "sub" / "link.txt")


@pytest.fixture(scope="module")
def wims(tmp_path_factory):
    """The same tree as an LZX, XPRESS, non-solid LZMS and a solid (ESD-like) WIM, two images each."""
    tmp = tmp_path_factory.mktemp("ra")
    _tree(tmp / "a", 1)
    _tree(tmp / "b", 2)
    out = {}
    for name, args in {"lzx": ["--compress=lzx"], "xpress": ["--compress=xpress"],
                       "lzms": ["--compress=lzms"], "solid": ["--solid"]}.items():
        p = tmp / f"{name}.wim"
        run("wimcapture", tmp / "a", p, "one", *args)
        run("wimappend", tmp / "b", p, "two", *(args if name == "solid" else []))
        out[name] = p
    return out


def _apply(wim, out, threads, *extra, index="2"):
    p = w2v("apply", wim, out, "--index", index, "--layout", "native", "--no-boot", "--size", "1G",
            "--seed", "ra", "--threads", str(threads), "--json", *extra)
    return json.loads(p.stdout)["io"]["readahead"]


@pytest.mark.parametrize("kind", ["lzx", "xpress", "lzms"])
def test_helpers_serve_every_chunk_and_change_no_byte(wims, tmp, kind):
    alone = _apply(wims[kind], tmp / "alone.vhdx", 0)
    assert alone["threads"] == 0 and alone["hits"] == 0
    helped = _apply(wims[kind], tmp / "helped.vhdx", 2)
    assert helped["threads"] == 2 and helped["resources"] > 40
    # Every compressed chunk wimlib read came from a helper; none was planned in vain.
    assert helped["hits"] > helped["resources"] and helped["misses"] == 0 and helped["skipped"] == 0
    assert not helped["gave_up"]
    assert (tmp / "alone.vhdx").read_bytes() == (tmp / "helped.vhdx").read_bytes()


def test_small_uncompressed_files_read_through_a_window(tmp):
    """Files that do not compress are stored as they are, and wimlib reads them one after another
    with a pread each: those reads are answered from one larger read, with the same disk."""
    r = random.Random(7)
    (tmp / "src").mkdir()
    for i in range(200):
        (tmp / "src" / f"r{i:03d}.bin").write_bytes(r.randbytes(r.randint(200, 6000)))
    for i in range(10):  # and some that compress: without them there is no plan at all
        (tmp / "src" / f"t{i}.txt").write_text(f"line {i}\n" * 3000)
    for kind in ("lzx", "none"):  # with chunks to plan, and with none at all (only the window)
        wim = tmp / f"{kind}.wim"
        run("wimcapture", tmp / "src", wim, kind, f"--compress={kind}")
        alone = _apply(wim, tmp / f"alone-{kind}.vhdx", 0, index="1")
        helped = _apply(wim, tmp / f"helped-{kind}.vhdx", 1, index="1")
        assert alone["windowed"] == 0 and helped["windowed"] > 150, (kind, helped)
        assert (helped["threads"] > 0) == (kind == "lzx") and (helped["hits"] > 0) == (kind == "lzx")
        assert (tmp / f"alone-{kind}.vhdx").read_bytes() == (tmp / f"helped-{kind}.vhdx").read_bytes()


def test_damaged_file_read_through_the_window_is_found_by_wimlib(tmp):
    """The window hands wimlib the file's bytes as they are: a damaged file stored uncompressed still
    fails wimlib's SHA-1 check, with a one-line error and nothing left behind."""
    r = random.Random(3)
    (tmp / "src").mkdir()
    for i in range(50):
        (tmp / "src" / f"r{i:02d}.bin").write_bytes(r.randbytes(3000))
    wim = tmp / "none.wim"
    run("wimcapture", tmp / "src", wim, "none", "--compress=none")
    text = run("wiminfo", "--blobs", wim).stdout
    offsets = sorted(int(m) for block in text.split("\n\n") if "METADATA" not in block
                     for m in re.findall(r"Offset in WIM += (\d+)", block))
    data = bytearray(wim.read_bytes())
    data[offsets[len(offsets) // 2] + 100] ^= 0x5A  # a file in the middle of a run of adjacent ones
    bad = tmp / "bad.wim"
    bad.write_bytes(bytes(data))
    out = tmp / "bad.vhdx"
    p = w2v("apply", bad, out, "--index", "1", "--layout", "native", "--no-boot", "--size", "1G",
            "--threads", "1", check=False)
    assert p.returncode == 3, p.stderr
    assert p.stderr.count("\n") == 1 and "damaged" in p.stderr and "SHA-1" in p.stderr, p.stderr
    assert not out.exists() and not [f for f in os.listdir(tmp) if "w2v-tmp" in f]


def test_solid_resources_are_left_to_wimlib(wims, tmp):
    """ESD-style solid resources are not planned: wimlib decompresses them itself, as before."""
    helped = _apply(wims["solid"], tmp / "s.vhdx", 2)
    assert helped["resources"] == 0 and helped["hits"] == 0
    _apply(wims["solid"], tmp / "s0.vhdx", 0)
    assert (tmp / "s.vhdx").read_bytes() == (tmp / "s0.vhdx").read_bytes()


def test_split_wim_other_parts_are_decompressed_by_wimlib(wims, tmp):
    """Only the opened part is planned; chunks from the others miss the plan and wimlib
    decompresses them itself, with the same result."""
    run("wimsplit", wims["lzx"], tmp / "s.swm", "1")
    parts = sorted(tmp.glob("s*.swm"))
    assert len(parts) > 2
    ref = ["--ref", str(tmp / "s*.swm")]
    # Image 1: its files were captured first, so part 1 holds some of them.
    helped = _apply(tmp / "s.swm", tmp / "h.vhdx", 1, *ref, index="1")
    _apply(tmp / "s.swm", tmp / "a.vhdx", 0, *ref, index="1")
    whole = _apply(wims["lzx"], tmp / "w.vhdx", 1, index="1")
    assert 0 < helped["hits"] < whole["hits"] and helped["misses"] == 0
    assert (tmp / "h.vhdx").read_bytes() == (tmp / "a.vhdx").read_bytes()


def _blob_offsets(wim):
    """(offset, compressed size, uncompressed size) of the WIM's compressed file resources."""
    text = run("wiminfo", "--blobs", wim).stdout
    out = []
    for block in text.split("\n\n"):
        if "COMPRESSED" in block and "METADATA" not in block:
            num = {k: int(v) for k, v in re.findall(r"(Uncompressed size|Compressed size|Offset in WIM) += (\d+)",
                                                   block)}
            out.append((num["Offset in WIM"], num["Compressed size"], num["Uncompressed size"]))
    return out


@pytest.mark.parametrize("threads", [0, 2])
def test_corrupt_chunk_is_found_by_wimlib_either_way(wims, tmp, threads):
    """A damaged compressed chunk: a helper's decompression of it fails or differs, so it is not used;
    wimlib decompresses the bytes it read and reports the damage, with helpers or without."""
    bad = tmp / "bad.wim"
    data = bytearray(wims["lzx"].read_bytes())
    off, csize, usize = max(_blob_offsets(wims["lzx"]), key=lambda b: b[2])
    assert usize > 4 * 32768 and csize < usize
    for k in range(64):  # the middle of the resource's data, past its chunk table
        data[off + csize // 2 + k] ^= 0x5A
    bad.write_bytes(bytes(data))
    out = tmp / "bad.vhdx"
    p = w2v("apply", bad, out, "--index", "1", "--layout", "native", "--no-boot", "--size", "1G",
            "--threads", str(threads), check=False)
    assert p.returncode == 3, p.stderr
    assert p.stderr.count("\n") == 1 and "corrupt" in p.stderr.lower(), p.stderr
    assert not out.exists() and not [f for f in os.listdir(tmp) if "w2v-tmp" in f]


def test_a_plan_that_does_not_match_is_given_up(wims, tmp):
    """The helpers planned for image 1 while wimlib applies image 2 (of other files): every chunk
    misses, the plan is dropped, and the volume is what wimlib alone writes."""
    from wim2vhd._lib import ffi, lib
    from wim2vhd.pipeline.apply import ApplyJob, apply
    from wim2vhd.options import ApplyOptions
    from wim2vhd.wim.wimlib import READAHEAD_BYTES, Wim

    def apply2(out, plan_for):
        with Wim(str(wims["lzx"])) as w:
            stats = ffi.new("struct w2v_readahead_stats *")
            ra = lib.w2v_readahead_plan(w.ptr, plan_for, str(wims["lzx"]).encode(), READAHEAD_BYTES)
            assert ra != ffi.NULL and lib.w2v_readahead_run(ra, 1) == 1
            try:
                apply(ApplyJob(str(wims["lzx"]), str(out), 2),
                      ApplyOptions(size=1 << 30, layout="native", boot=False, seed="ra", threads=0), None, wim=w)
            finally:
                lib.w2v_readahead_stop(ra, stats)
        return stats

    wrong = apply2(tmp / "m.vhdx", 1)
    assert wrong.hits == 0 and wrong.misses >= 64 and wrong.gave_up == 1
    right = apply2(tmp / "a.vhdx", 2)
    assert right.hits > 0 and right.misses == 0 and not right.gave_up
    assert (tmp / "m.vhdx").read_bytes() == (tmp / "a.vhdx").read_bytes()


def test_threads_checked(wims, tmp):
    p = w2v("apply", wims["lzx"], tmp / "x.vhdx", "--index", "1", "--threads", "99", check=False)
    assert p.returncode == 2 and "--threads" in p.stderr and p.stderr.count("\n") == 1


def test_a_plan_made_in_the_background_and_dropped(wims, tmp):
    """A stage that fails before apply drops the plan its thread made (waiting for the thread):
    the Wim stays usable, and a plan that is used serves every chunk."""
    from wim2vhd.wim import Wim
    with Wim(str(wims["lzx"])) as w:
        dropped = w.readahead(1, 1)
        stats = dropped.close()
        assert stats["threads"] == 0 and stats["hits"] == 0
        assert dropped.close()["threads"] == 0   # twice is harmless
        img = tmp / "vol.img"
        with open(img, "wb") as f:
            f.truncate(256 << 20)
        subprocess.run(["mkntfs", "-Q", "-F", "-q", str(img)], check=True, capture_output=True)
        used = w.extract_ntfs(1, str(img), readahead=w.readahead(1, 1))
        assert used["threads"] == 1 and used["hits"] > 0 and used["misses"] == 0
        # wimlib's reads of chunks a helper (or wimlib's thread, helping) had read already
        assert used["served"] > 0 and used["served"] <= used["hits"] + used["skipped"]
