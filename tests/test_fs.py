"""NTFS and FAT32 formatting into partitions, checked with ntfsfix, ntfsinfo, fsck.fat and mtools."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess

import pytest

from wim2vhd import fs, repro
from wim2vhd.errors import EnvironmentFault, InputError, NoSpace, ToolFailed, UsageError
from wim2vhd.fs import (data_extents, format_layout, make_fat32, make_ntfs, read_fat32_boot,
                        read_ntfs_boot, rebuild_esp)
from wim2vhd.partition import RawFileTarget, plan_layout, write_table

from tests.support import seeded

MiB, GiB, TiB = 1 << 20, 1 << 30, 1 << 40
ENV = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}


def run(*args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=check, env=ENV)


def extract(disk_path, offset, size, out) -> str:
    """Copy a partition out of a sparse disk image into a sparse file, data extents only."""
    with open(disk_path, "rb") as src, open(out, "wb") as dst:
        dst.truncate(size)
        for start, length in data_extents(src.fileno()):
            s, e = max(start, offset), min(start + length, offset + size)
            pos = s
            while pos < e:
                buf = os.pread(src.fileno(), min(8 * MiB, e - pos), pos)
                os.pwrite(dst.fileno(), buf, pos - offset)
                pos += len(buf)
    return str(out)


def ntfs_ok(path) -> dict:
    cp = run("ntfsfix", "-n", path)
    assert "processed successfully" in cp.stdout, cp.stdout + cp.stderr
    info = run("ntfsinfo", "-m", path).stdout
    fields = {}
    for ln in info.splitlines():
        if ":" in ln:
            k, v = ln.strip().split(":", 1)
            fields.setdefault(k.strip(), v.strip())
    return fields


def fat_ok(path) -> str:
    cp = run("fsck.fat", "-n", path, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return cp.stdout


def leftovers(d) -> list[str]:
    return [n for n in os.listdir(d) if n.startswith(".wim2vhd-")]


def allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def region_digest(path, offset, size) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for start, length in data_extents(f.fileno()):
            s, e = max(start, offset), min(start + length, offset + size)
            if s < e:
                h.update(s.to_bytes(8, "little") + os.pread(f.fileno(), e - s, s))
    return h.hexdigest()


@pytest.fixture
def tmpd(tmp_path):
    d = tmp_path / "tmp"
    d.mkdir()
    return d


def new_disk(tmp_path, size, ss=512, layout="uefi", **kw):
    t = RawFileTarget.create(tmp_path / "disk.img", size, sector_size=ss)
    L = plan_layout(size, ss, layout, **kw)
    write_table(t, L)
    return t, L


# ---------------------------------------------------------------------------
# NTFS
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ss", [512, 4096])
def test_ntfs_in_uefi_disk(tmp_path, tmpd, ss):
    t, L = new_disk(tmp_path, 2 * GiB, ss)
    win = L.role("windows")
    r = make_ntfs(t, win.start, win.size, label="Windows", tmp_dir=tmpd)
    assert (r.fs, r.label, r.cluster_size, r.part_offset) == ("ntfs", "Windows", 4096, win.start)
    bs = read_ntfs_boot(t, win.start)
    assert bs["hidden_sectors"] == win.start // ss
    assert (bs["heads"], bs["sectors_per_track"], bs["bytes_per_sector"]) == (255, 63, ss)
    assert bs["serial"] == r.serial
    assert leftovers(tmpd) == []
    # nothing outside the partition was touched: the GPT is still valid
    t.close()
    if ss == 512:
        assert "No problems found" in run("sgdisk", "-v", tmp_path / "disk.img").stdout
    info = ntfs_ok(extract(tmp_path / "disk.img", win.start, win.size, tmp_path / "p.img"))
    assert info["Volume Name"] == "Windows"
    assert info["Sector Size"] == str(ss) and info["Cluster Size"] == "4096"


@pytest.mark.parametrize("cluster", [512, 65536])
def test_ntfs_cluster_size(tmp_path, tmpd, cluster):
    t, L = new_disk(tmp_path, 1 * GiB, 512, "native")
    p = L.partitions[0]
    make_ntfs(t, p.start, p.size, cluster_size=cluster, label="Data", tmp_dir=tmpd)
    t.close()
    info = ntfs_ok(extract(tmp_path / "disk.img", p.start, p.size, tmp_path / "p.img"))
    assert info["Cluster Size"] == str(cluster) and info["Volume Name"] == "Data"


@pytest.mark.parametrize("zeroed", [False, True])
def test_huge_ntfs_copies_only_metadata(tmp_path, tmpd, zeroed):
    size = 2 * TiB + 2 * MiB
    t, L = new_disk(tmp_path, size, 512, "native")
    p = L.partitions[0]
    r = make_ntfs(t, p.start, p.size, tmp_dir=tmpd, target_zeroed=zeroed)
    # The 64 MiB $LogFile (all 0xFF) dominates; the rest is a few MiB.
    assert r.bytes_copied < 72 * MiB
    assert allocated(tmp_path / "disk.img") < 80 * MiB
    assert leftovers(tmpd) == []
    assert read_ntfs_boot(t, p.start)["hidden_sectors"] == 2048
    t.close()
    info = ntfs_ok(extract(tmp_path / "disk.img", p.start, p.size, tmp_path / "p.img"))
    assert int(info["Volume Size in Clusters"]) == p.size // 4096 - 1  # the last sector holds the backup boot sector


def test_ntfs_past_32_bit_sectors_has_no_hidden_sectors(tmp_path, tmpd):
    t, L = new_disk(tmp_path, 2 * TiB + 64 * MiB, 512, "uefi", recovery_size=16 * MiB)
    rec = L.role("recovery")
    assert rec.start // 512 > 0xFFFFFFFF
    make_ntfs(t, rec.start, rec.size, label="Recovery", tmp_dir=tmpd)
    bs = read_ntfs_boot(t, rec.start)
    assert bs["hidden_sectors"] == 0 and bs["heads"] == 255
    t.close()
    assert ntfs_ok(extract(tmp_path / "disk.img", rec.start, rec.size, tmp_path / "p.img"))["Volume Name"] == "Recovery"


def test_ntfs_serial_from_seed(tmp_path, tmpd):
    t, L = new_disk(tmp_path, 1 * GiB, 512, "native")
    p = L.partitions[0]
    serials = []
    for seed in ("a", "a", "b", None):
        r = seeded(seed, make_ntfs, t, p.start, p.size, tmp_dir=tmpd)
        bs = read_ntfs_boot(t, p.start)
        backup = read_ntfs_boot(t, p.end - 512)
        assert bs["serial"] == backup["serial"] == r.serial
        serials.append(r.serial)
    want = int.from_bytes(repro.derive("a", f"ntfs-serial:{p.start}", 8), "little")
    assert serials[0] == serials[1] == want
    assert len({serials[0], serials[2], serials[3]}) == 3
    t.close()
    ntfs_ok(extract(tmp_path / "disk.img", p.start, p.size, tmp_path / "p.img"))


# ---------------------------------------------------------------------------
# FAT32
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ss", [512, 4096])
def test_fat32_esp_with_files(tmp_path, tmpd, ss):
    t, L = new_disk(tmp_path, 1 * GiB, ss)
    esp = L.role("esp")
    host = tmp_path / "bootmgfw.efi"
    host.write_bytes(os.urandom(300_000))
    files = {
        "EFI/Microsoft/Boot/bootmgfw.efi": host,
        "EFI/Boot/bootx64.efi": str(host),
        "EFI/Microsoft/Boot/BCD": b"regf" + bytes(8188),
        "EFI/Microsoft/Boot/en-US": None,
        "EFI/Microsoft/Recovery/": None,
        "readme.txt": b"hello\n",
    }
    attrs = {"EFI/Microsoft/Boot/BCD": "hs", "EFI/Microsoft/Recovery": "+h+s"}
    r = seeded("s", make_fat32, t, esp.start, esp.size, label="system", files=files, attributes=attrs, tmp_dir=tmpd)
    assert (r.fs, r.label, r.files) == ("fat32", "SYSTEM", 4)
    assert r.serial == int.from_bytes(repro.derive("s", f"fat-volume-id:{esp.start}", 4), "little")
    bs = read_fat32_boot(t, esp.start)
    assert (bs["hidden_sectors"], bs["heads"], bs["sectors_per_track"], bs["bytes_per_sector"]) == \
        (esp.start // ss, 255, 63, ss)
    assert bs["volume_label"] == b"SYSTEM     " and bs["volume_id"] == r.serial
    assert leftovers(tmpd) == []
    t.close()
    img = tmp_path / "disk.img"
    fat_ok(extract(img, esp.start, esp.size, tmp_path / "p.img"))
    spec = f"{img}@@{esp.start}"
    listing = run("mdir", "-i", spec, "-/", "-a", "-b", "::/").stdout.splitlines()
    assert {"::/EFI/Microsoft/Boot/bootmgfw.efi", "::/EFI/Boot/bootx64.efi", "::/EFI/Microsoft/Boot/BCD",
            "::/EFI/Microsoft/Boot/en-US/", "::/EFI/Microsoft/Recovery/", "::/readme.txt"} <= set(listing)
    assert run("mtype", "-i", spec, "::/readme.txt").stdout == "hello\n"
    got = subprocess.run(["mcopy", "-i", spec, "::/EFI/Boot/bootx64.efi", "-"], capture_output=True, env=ENV,
                         check=True).stdout
    assert got == host.read_bytes()
    attr = run("mattrib", "-i", spec, "-/", "::/").stdout
    lines = {ln[12:].strip(): ln[:12] for ln in attr.splitlines()}
    assert "S" in lines["::/EFI/Microsoft/Boot/BCD"] and "H" in lines["::/EFI/Microsoft/Boot/BCD"]
    assert "H" in lines["::/EFI/Microsoft/Recovery"] and "H" not in lines["::/EFI/Boot/bootx64.efi"]
    assert "Volume Serial Number is %04X-%04X" % (r.serial >> 16, r.serial & 0xFFFF) in \
        run("mdir", "-i", spec, "::/").stdout


def test_fat32_case_insensitive_directories_merge(tmp_path, tmpd):
    t, L = new_disk(tmp_path, 1 * GiB)
    esp = L.role("esp")
    make_fat32(t, esp.start, esp.size, files={"EFI/Boot/a.efi": b"a", "efi/BOOT/b.efi": b"b"}, tmp_dir=tmpd)
    t.close()
    listing = run("mdir", "-i", f"{tmp_path / 'disk.img'}@@{esp.start}", "-/", "-b", "::/").stdout.split()
    assert "::/EFI/Boot/a.efi" in listing and "::/EFI/Boot/b.efi" in listing


def test_rebuild_esp_after_ntfs(tmp_path, tmpd):
    t, L = new_disk(tmp_path, 2 * GiB, 512, "uefi", recovery_size=64 * MiB)
    first = format_layout(t, L, esp_files={"EFI/Old/old.efi": os.urandom(2 * MiB), "EFI/Boot/bootx64.efi": b"v1"},
                          tmp_dir=tmpd, target_zeroed=True)
    assert sorted(first) == [1, 3, 4]
    esp, win = L.role("esp"), L.role("windows")
    img = tmp_path / "disk.img"
    before = region_digest(img, win.start, L.partitions[-1].end - win.start)
    r = rebuild_esp(t, {"EFI/Boot/bootx64.efi": b"v2-longer", "EFI/Microsoft/Boot/BCD": b"x" * 5000},
                    attributes={"EFI/Microsoft/Boot/BCD": "hs"}, tmp_dir=tmpd)
    assert r.serial == first[1].serial  # the volume id survives a rebuild
    assert r.bytes_copied < 1 * MiB  # only what changed
    assert region_digest(img, win.start, L.partitions[-1].end - win.start) == before
    assert leftovers(tmpd) == []
    t.close()
    fat_ok(extract(img, esp.start, esp.size, tmp_path / "p.img"))
    spec = f"{img}@@{esp.start}"
    listing = run("mdir", "-i", spec, "-/", "-a", "-b", "::/").stdout.split()
    assert "::/EFI/Old/old.efi" not in listing and "::/EFI/Microsoft/Boot/BCD" in listing
    assert run("mtype", "-i", spec, "::/EFI/Boot/bootx64.efi").stdout == "v2-longer"
    ntfs_ok(extract(img, win.start, win.size, tmp_path / "w.img"))


def test_format_over_old_content(tmp_path, tmpd):
    t, L = new_disk(tmp_path, 1 * GiB)
    esp, win = L.role("esp"), L.role("windows")
    junk = bytes([0xA5]) * MiB
    # over the ESP's boot sectors, FATs and first clusters, and wherever mkntfs writes metadata
    ntfs_meta = [off for off, n in make_ntfs(t, win.start, win.size, tmp_dir=tmpd).extents for off in
                 range(win.start + off // MiB * MiB, win.start + off + n, MiB)]
    for off in list(range(esp.start, esp.start + 16 * MiB, MiB)) + ntfs_meta:
        t.write(off, junk)
    format_layout(t, L, esp_files={"EFI/Boot/bootx64.efi": b"MZ"}, tmp_dir=tmpd)
    t.close()
    fat_ok(extract(tmp_path / "disk.img", esp.start, esp.size, tmp_path / "e.img"))
    ntfs_ok(extract(tmp_path / "disk.img", win.start, win.size, tmp_path / "w.img"))


def test_target_without_copy_from_file(tmp_path, tmpd):
    class WriteOnly(RawFileTarget):
        copy_from_file = None  # only read/write, like a minimal target

    RawFileTarget.create(tmp_path / "disk.img", 1 * GiB).close()
    t = WriteOnly(tmp_path / "disk.img")
    L = plan_layout(t.size, 512, "native")
    write_table(t, L)
    p = L.partitions[0]
    make_ntfs(t, p.start, p.size, tmp_dir=tmpd, target_zeroed=True)
    t.close()
    ntfs_ok(extract(tmp_path / "disk.img", p.start, p.size, tmp_path / "p.img"))


def test_on_a_vhdx(tmp_path, tmpd):
    """Through the real virtual-disk object (its C copier skips zero units), then checked from qemu-img's raw copy."""
    from wim2vhd.disk import create_disk

    path = tmp_path / "disk.vhdx"
    d = create_disk(str(path), 4 * GiB)
    L = plan_layout(d.size, d.sector_size, "uefi", recovery_size=64 * MiB)
    write_table(d, L)
    format_layout(d, L, esp_files={"EFI/Old/a.efi": os.urandom(MiB)}, tmp_dir=tmpd, target_zeroed=True)
    rebuild_esp(d, {"EFI/Boot/bootx64.efi": b"MZ" * 1000}, tmp_dir=tmpd)
    d.close()
    run("qemu-img", "check", path)
    raw = tmp_path / "disk.raw"
    run("qemu-img", "convert", "-O", "raw", path, raw)
    assert "No problems found" in run("sgdisk", "-v", raw).stdout
    esp, win, rec = L.role("esp"), L.role("windows"), L.role("recovery")
    out = fat_ok(extract(raw, esp.start, esp.size, tmp_path / "e.img"))
    used = int(re.search(r"files, (\d+)/\d+ clusters", out).group(1))
    assert used < 16  # root, EFI, Boot, bootx64.efi: the old 1 MiB file's clusters were freed
    ntfs_ok(extract(raw, win.start, win.size, tmp_path / "w.img"))
    ntfs_ok(extract(raw, rec.start, rec.size, tmp_path / "r.img"))


# ---------------------------------------------------------------------------
# Failures: clear one-line errors, nothing left behind
# ---------------------------------------------------------------------------


def _untouched(t, start, size) -> bool:
    return all(t.read(off, 4096) == bytes(4096) for off in range(start, start + size, max(4096, size // 64)))


@pytest.mark.parametrize("kind,kw,exc,match", [
    ("ntfs", {"cluster_size": 3000}, UsageError, "power of two"),
    ("ntfs", {"cluster_size": 256}, UsageError, "power of two"),
    ("ntfs", {"label": "x" * 33}, UsageError, "longer than 32"),
    ("ntfs", {"sector_size": 4096}, UsageError, "does not match"),
    ("ntfs", {"part_offset": 1000}, UsageError, "whole number"),
    ("ntfs", {"part_size": 1 * MiB}, NoSpace, "too small for NTFS"),
    ("ntfs", {"part_offset": 900 * MiB, "part_size": 200 * MiB}, NoSpace, "past the end"),
    ("ntfs", {"tmp_dir": "/nonexistent/dir"}, UsageError, "does not exist"),
    ("fat", {"label": "TOO LONG LABEL"}, UsageError, "1 to 11"),
    ("fat", {"label": "A/B"}, UsageError, "1 to 11"),
    ("fat", {"label": "ÉFI"}, UsageError, "ASCII"),
    ("fat", {"cluster_size": 3 * 512}, UsageError, "power of two"),
    ("fat", {"volume_id": 1 << 32}, UsageError, "32 bits"),
    ("fat", {"files": {"../x": b""}}, UsageError, "plain relative path"),
    ("fat", {"files": {"a?b": b""}}, UsageError, "valid FAT file name"),
    ("fat", {"files": {"EFI/a": b"", "efi/A": b""}}, UsageError, "collides"),
    ("fat", {"files": {"EFI": b"", "EFI/x": b""}}, UsageError, "is a file"),
    ("fat", {"files": {"x": "/nonexistent/file.efi"}}, InputError, "not found"),
    ("fat", {"files": {"x": b""}, "attributes": {"y": "h"}}, UsageError, "not among the ESP files"),
    ("fat", {"files": {"x": b""}, "attributes": {"x": "hq"}}, UsageError, "FAT attributes"),
    ("fat", {"files": {"big": bytes(300 * MiB)}}, NoSpace, "ESP files need"),
    ("fat", {"part_size": 20 * MiB}, NoSpace, "fewer than the 65525"),
    ("fat", {"cluster_size": 64 * 1024}, NoSpace, "fewer than the 65525"),
])
def test_bad_input(tmp_path, tmpd, kind, kw, exc, match):
    t, L = new_disk(tmp_path, 1 * GiB)
    p = L.role("windows" if kind == "ntfs" else "esp")
    args = {"part_offset": p.start, "part_size": p.size, "tmp_dir": tmpd, **kw}
    fn = make_ntfs if kind == "ntfs" else make_fat32
    with pytest.raises(exc, match=match) as ei:
        fn(t, args.pop("part_offset"), args.pop("part_size"), **args)
    assert "\n" not in str(ei.value)
    assert leftovers(tmpd) == []
    assert _untouched(t, p.start, p.size)


def test_mkntfs_failure_is_tool_failed(tmp_path, tmpd):
    t, L = new_disk(tmp_path, 1 * GiB, 512, "native")
    p = L.partitions[0]
    # a 2 MiB cluster on an 8 MiB volume: accepted by our checks, refused by mkntfs
    with pytest.raises(ToolFailed, match=r"^mkntfs failed with exit code 1: Bitmap allocation error$"):
        make_ntfs(t, p.start, 8 * MiB, cluster_size=2 * MiB, tmp_dir=tmpd)
    assert leftovers(tmpd) == [] and _untouched(t, p.start, 8 * MiB)


def _path_with(tmp_path, *tools) -> str:
    b = tmp_path / "bin"
    b.mkdir(exist_ok=True)
    for tool in tools:
        os.symlink(fs.find_tool(tool), b / tool)
    return str(b)


@pytest.mark.parametrize("present,missing,pkg", [
    ((), "mkntfs", "ntfs-3g"),
    ((), "mkfs.fat", "dosfstools"),
    (("mkfs.fat",), "mcopy", "mtools"),
])
def test_missing_tool_names_the_package(tmp_path, tmpd, monkeypatch, present, missing, pkg):
    t, L = new_disk(tmp_path, 1 * GiB)
    bin_dir = _path_with(tmp_path, *present)
    monkeypatch.setenv("PATH", bin_dir)
    monkeypatch.setattr(fs.tools, "_SBIN", ())
    p = L.role("windows" if missing == "mkntfs" else "esp")
    with pytest.raises(EnvironmentFault, match=f"{missing} not found: install the Debian package {pkg}"):
        if missing == "mkntfs":
            make_ntfs(t, p.start, p.size, tmp_dir=tmpd)
        else:
            make_fat32(t, p.start, p.size, files={"a": b"1"}, tmp_dir=tmpd)
    assert leftovers(tmpd) == [] and _untouched(t, p.start, p.size)


def test_rebuild_esp_needs_an_esp(tmp_path, tmpd):
    t, _ = new_disk(tmp_path, 1 * GiB, 512, "bios")
    with pytest.raises(UsageError, match="no EFI system partition"):
        rebuild_esp(t, {"a": b"1"}, tmp_dir=tmpd)
    blank = RawFileTarget.create(tmp_path / "blank.img", 1 * GiB)
    with pytest.raises(UsageError, match="no EFI system partition"):
        rebuild_esp(blank, {"a": b"1"}, tmp_dir=tmpd)
