"""`disk check` of qcow2 files as deep as qemu-img's: every L1/L2 entry and the refcounts rebuilt and
compared (wim2vhd/disk/qcow2_check.py).  The oracle for every case is `qemu-img check -f qcow2`
(exit 0 sound, 2 corruptions, 3 leaks only), or `qemu-img info` for the header bits: each damage made
here is one qemu-img also finds, and ours must find it too."""
import json
import os
import struct

import pytest

from tests.support import run, sha, w2v

CS = 1 << 16  # qemu-img's default cluster size, which these images use


def qemu_check(path) -> int:
    return run("qemu-img", "check", "-q", "-f", "qcow2", path, check=False).returncode


def ours(path, *extra):
    return w2v("disk", "check", path, *extra, check=False)


def header(path):
    raw = open(path, "rb").read(104)
    return {"l1_size": struct.unpack_from(">I", raw, 36)[0], "l1": struct.unpack_from(">Q", raw, 40)[0],
            "rt": struct.unpack_from(">Q", raw, 48)[0]}


def u64(path, off):
    with open(path, "rb") as f:
        f.seek(off)
        return struct.unpack(">Q", f.read(8))[0]


def put(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def l2_entries(path):
    """[(file offset of the entry, entry)] of every allocated L2 entry."""
    h = header(path)
    out = []
    for i in range(h["l1_size"]):
        l2 = u64(path, h["l1"] + 8 * i) & 0x00FFFFFFFFFFFE00
        if l2:
            for j in range(CS // 8):
                e = u64(path, l2 + 8 * j)
                if e:
                    out.append((l2 + 8 * j, e))
    return out


def refcount_entry(path, cluster):
    """File offset of the 16-bit refcount of a host cluster (in the first refcount block)."""
    block = u64(path, header(path)["rt"]) & ~0x1FF
    assert cluster < CS // 2
    return block + 2 * cluster


@pytest.fixture
def image(tmp_path):
    """A qcow2 qemu-img made from data with holes: random, zeros, random again."""
    raw = tmp_path / "src.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(3 * CS))
        f.seek(40 * CS)
        f.write(os.urandom(5 * CS))
        f.truncate(64 * 1024 * 1024)
    q = tmp_path / "d.qcow2"
    run("qemu-img", "convert", "-O", "qcow2", raw, q)
    assert qemu_check(q) == 0
    return q


def test_sound_files_pass(image, tmp_path):
    """qemu-img's files (plain, compressed, a child) and ours (create, convert, diff)."""
    comp = tmp_path / "c.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", image, comp)
    child = tmp_path / "child.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", image, "-F", "qcow2", child)
    v2 = tmp_path / "v2.qcow2"
    run("qemu-img", "convert", "-O", "qcow2", "-o", "compat=0.10", image, v2)
    w2v("disk", "convert", image, tmp_path / "ours.qcow2")
    w2v("disk", "diff", tmp_path / "ours.qcow2", tmp_path / "ourchild.qcow2")
    for f in (image, comp, child, v2, tmp_path / "ours.qcow2", tmp_path / "ourchild.qcow2"):
        p = ours(f)
        assert p.returncode == 0 and "sound" in p.stdout, (f, p.stdout, p.stderr)
        assert qemu_check(f) == 0, f


def damaged(image, how):
    before = sha(image)
    p = ours(image, "--json")
    assert sha(image) == before  # a check never writes
    return p


def test_leaked_cluster_is_found_and_repaired(image):
    size = os.path.getsize(image)
    spare = size // CS  # a cluster added at the end, counted but used by nothing
    os.truncate(image, size + CS)  # (qemu-img counts leaks only inside the file)
    put(image, refcount_entry(image, spare), struct.pack(">H", 1))
    assert qemu_check(image) == 3  # qemu-img: leaks only
    p = damaged(image, "leak")
    assert p.returncode == 3, p.stdout
    probs = json.loads(p.stdout)
    assert any("leaked" in x["message"] and str(spare) in x["message"] and x["repairable"] for x in probs), probs
    r = ours(image, "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert qemu_check(image) == 0 and ours(image).returncode == 0


def test_refcount_zero_of_a_used_cluster(image):
    off, e = l2_entries(image)[0]
    cluster = (e & 0x00FFFFFFFFFFFE00) // CS
    put(image, refcount_entry(image, cluster), struct.pack(">H", 0))
    assert qemu_check(image) == 2
    p = damaged(image, "refcount 0")
    assert p.returncode == 3
    msgs = " ".join(x["message"] for x in json.loads(p.stdout))
    assert "below their references" in msgs and str(cluster) in msgs, msgs
    assert ours(image, "--repair").returncode == 3  # not a repair we make: refused, file unchanged


def test_l2_entry_past_the_end(image):
    off, e = l2_entries(image)[0]
    far = (os.path.getsize(image) // CS + 1000) * CS
    put(image, off, struct.pack(">Q", (1 << 63) | far))
    assert qemu_check(image) == 2
    p = damaged(image, "past EOF")
    assert p.returncode == 3 and "past the end of the file" in p.stdout, p.stdout


def test_two_entries_share_a_cluster(image):
    entries = l2_entries(image)
    (off_a, a), (off_b, _) = entries[0], entries[-1]
    put(image, off_b, struct.pack(">Q", a))
    assert qemu_check(image) == 2
    p = damaged(image, "shared")
    msgs = " ".join(x["message"] for x in json.loads(p.stdout))
    assert p.returncode == 3 and "below their references" in msgs and "leaked" in msgs, msgs  # (and the one no longer used)


def test_reserved_bits_in_an_l2_entry(image):
    off, e = l2_entries(image)[0]
    put(image, off, struct.pack(">Q", e | 1 << 57))
    assert qemu_check(image) == 2
    p = damaged(image, "reserved")
    assert p.returncode == 3 and "reserved bits" in p.stdout, p.stdout


def test_misaligned_l1_table(image):
    h = header(image)
    put(image, 40, struct.pack(">Q", h["l1"] + 8))
    assert qemu_check(image) != 0  # qemu-img refuses to open it
    p = damaged(image, "L1 offset")
    assert p.returncode == 3 and "L1" in p.stdout, p.stdout


def test_corrupt_bit(image):
    raw = open(image, "rb").read(80)
    inc = struct.unpack_from(">Q", raw, 72)[0]
    put(image, 72, struct.pack(">Q", inc | 2))
    info = json.loads(run("qemu-img", "info", "--output=json", "-f", "qcow2", image).stdout)
    assert info["format-specific"]["data"]["corrupt"] is True
    p = damaged(image, "corrupt bit")
    assert p.returncode == 3 and "corrupt bit" in p.stdout, p.stdout
