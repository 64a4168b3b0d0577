"""Partition planning, GPT/MBR writing and reading, checked with sgdisk, sfdisk and fdisk."""
from __future__ import annotations

import json
import re
import subprocess
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wim2vhd.errors import CorruptInput, NoSpace, UsageError
from wim2vhd.partition import (ATTR_WINRE, ESP_SIZE, GPT_SIGNATURE, MSR_SIZE, NAME_BASIC_DATA, NAME_ESP, NAME_MSR,
                               TYPE_BASIC_DATA, TYPE_ESP, TYPE_MSR, TYPE_WINRE, DiskLayout, Partition,
                               RawFileTarget, build_mbr, gpt_reserved_lbas, lba_to_chs, min_disk_size, plan_layout,
                               read_table, write_table)

from tests.support import seeded

MiB, GiB, TiB = 1 << 20, 1 << 30, 1 << 40


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check,
                          env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def make_disk(tmp_path, size, ss=512, name="disk.img") -> RawFileTarget:
    return RawFileTarget.create(tmp_path / name, size, sector_size=ss)


def head(path, n=512) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def sfdisk_json(path) -> dict:
    return json.loads(run("sfdisk", "--json", str(path)).stdout)["partitiontable"]


def fdisk_gpt_4k(path) -> tuple[dict, list[dict]]:
    """fdisk -b 4096 -x: header fields and partition rows (sfdisk here has no --sector-size)."""
    cp = run("fdisk", "-b", "4096", "-x", "-o", "Device,Start,End,Type-UUID,UUID,Name,Attrs", str(path))
    assert "corrupt" not in (cp.stderr + cp.stdout).lower(), cp.stderr + cp.stdout
    head, rows = {}, []
    lines = cp.stdout.splitlines()
    for ln in lines:
        m = re.match(r"^(Disk identifier|First usable LBA|Last usable LBA|Alternative LBA|"
                     r"Partition entries starting LBA|Disklabel type): (\S+)", ln)
        if m:
            head[m.group(1)] = m.group(2)
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Device"))
    for ln in lines[start + 1:]:
        if not ln.strip():
            continue
        f = ln.split(None, 5)
        rest = f[5] if len(f) > 5 else ""
        rows.append({"start": int(f[1]), "end": int(f[2]), "type": f[3], "uuid": f[4], "rest": rest})
    return head, rows


# ---------------------------------------------------------------------------
# Planning (pure)
# ---------------------------------------------------------------------------


def test_uefi_plan_shape():
    L = seeded("s", plan_layout, 64 * GiB, 512, "uefi", recovery_size=1 * GiB)
    assert L.scheme == "gpt" and L.layout == "uefi"
    esp, msr, win, rec = L.partitions
    assert (esp.role, esp.fs, esp.type_guid, esp.name, esp.start, esp.size) == \
        ("esp", "fat32", TYPE_ESP, NAME_ESP, MiB, 260 * MiB)
    assert (msr.role, msr.fs, msr.type_guid, msr.name, msr.start, msr.size) == \
        ("msr", None, TYPE_MSR, NAME_MSR, esp.end, 16 * MiB)
    assert (win.role, win.fs, win.type_guid, win.name, win.start) == \
        ("windows", "ntfs", TYPE_BASIC_DATA, NAME_BASIC_DATA, msr.end)
    assert (rec.role, rec.type_guid, rec.attributes, rec.start, rec.size) == \
        ("recovery", TYPE_WINRE, 0x8000000000000001, win.end, 1 * GiB)
    assert rec.end == 64 * GiB - MiB  # the last MiB holds the backup GPT
    assert [p.number for p in L.partitions] == [1, 2, 3, 4]


def test_uefi_without_recovery_ends_on_last_whole_mib():
    L = plan_layout(10 * GiB + 123 * 512, 512, "uefi")
    assert len(L.partitions) == 3
    assert L.partitions[-1].end == 10 * GiB


def test_bios_and_native_plans():
    b = seeded("x", plan_layout, 20 * GiB, 512, "bios")
    assert b.scheme == "mbr" and len(b.partitions) == 1
    p = b.partitions[0]
    assert (p.start, p.end, p.mbr_type, p.active, p.fs) == (MiB, 20 * GiB, 0x07, True, "ntfs")
    assert b.disk_signature and b.disk_guid is None
    n = plan_layout(20 * GiB, 4096, "native")
    assert n.scheme == "gpt" and [q.type_guid for q in n.partitions] == [TYPE_BASIC_DATA]
    assert n.partitions[0].start == MiB and n.partitions[0].end == 20 * GiB - MiB
    m = plan_layout(20 * GiB, 512, "native", mbr=True)
    assert m.scheme == "mbr" and m.partitions[0].active is False


@pytest.mark.parametrize("layout,kw", [("uefi", {}), ("uefi", {"recovery_size": 512 * MiB}),
                                       ("bios", {}), ("bios", {"recovery_size": 512 * MiB}), ("native", {}),
                                       ("native", {"mbr": True})])
@pytest.mark.parametrize("ss", [512, 4096])
def test_too_small_says_how_big(layout, kw, ss):
    need = min_disk_size(layout, ss, **kw)
    plan_layout(need, ss, layout, **kw)  # exactly the minimum is fine
    with pytest.raises(NoSpace) as ei:
        plan_layout(need - MiB, ss, layout, **kw)
    msg = str(ei.value)
    assert "too small" in msg and f"at least {need // MiB} MiB" in msg and "\n" not in msg


@pytest.mark.parametrize("kw,match", [
    ({"layout": "gpt"}, "unknown layout"),
    ({"sector_size": 1024}, "sector size"),
    ({"layout": "native", "recovery_size": 512 * MiB}, "only planned in the uefi, bios, hybrid layouts"),
    ({"layout": "uefi", "mbr": True}, "mbr=True only applies"),
    ({"recovery_size": 1000}, "whole number of MiB"),
    ({"esp_size": 16 * MiB}, "cannot hold FAT32"),
    ({"layout": "bios", "disk_size": 3 * TiB}, "cannot address past"),
])
def test_bad_plan_arguments(kw, match):
    args = {"disk_size": 64 * GiB, "sector_size": 512, "layout": "uefi", **kw}
    with pytest.raises(UsageError, match=match):
        plan_layout(args.pop("disk_size"), args.pop("sector_size"), args.pop("layout"), **args)


def test_bios_4k_sectors_reaches_past_2tib():
    L = plan_layout(3 * TiB, 4096, "bios")
    assert L.partitions[0].end == 3 * TiB


@settings(max_examples=300, deadline=None)
@given(size=st.integers(min_value=1, max_value=64 * TiB), ss=st.sampled_from([512, 4096]),
       layout=st.sampled_from(["uefi", "bios", "native"]), rec=st.integers(0, 4).map(lambda n: n * 256 * MiB))
def test_plan_invariants(size, ss, layout, rec):
    kw = {"recovery_size": rec} if layout != "native" else {}
    try:
        L = plan_layout(size, ss, layout, **kw)
    except NoSpace:
        assert size < min_disk_size(layout, ss, **kw)
        return
    except UsageError as e:  # only MBR past its 32-bit sector limit
        assert layout == "bios" and size // ss > 0xFFFFFFFF, e
        return
    assert size >= min_disk_size(layout, ss, **kw) - MiB  # a partial last MiB may still fit
    n_lbas = size // ss
    first, tail = gpt_reserved_lbas(ss)
    lo, hi = (first * ss, (n_lbas - tail) * ss) if L.scheme == "gpt" else (ss, n_lbas * ss)
    prev_end = 0
    for p in L.partitions:
        assert p.start % MiB == 0 and p.size % MiB == 0 and p.size > 0
        assert lo <= p.start and p.end <= hi and p.start >= prev_end
        prev_end = p.end
    # the last partition reaches the last whole MiB of the usable area
    assert hi - L.partitions[-1].end < MiB
    # contiguous: no gap between partitions
    for a, b in zip(L.partitions, L.partitions[1:]):
        assert a.end == b.start
    if layout == "uefi":
        assert [p.size for p in L.partitions[:2]] == [ESP_SIZE, MSR_SIZE]
        assert (L.partitions[-1].size == rec) if rec else L.partitions[-1].role == "windows"


def test_seed_gives_same_ids_and_none_gives_random():
    a = seeded("lab-1", plan_layout, 64 * GiB, 512, "uefi", recovery_size=GiB)
    b = seeded("lab-1", plan_layout, 64 * GiB, 512, "uefi", recovery_size=GiB)
    c = seeded("lab-2", plan_layout, 64 * GiB, 512, "uefi", recovery_size=GiB)
    assert a == b
    ids = lambda L: [L.disk_guid] + [p.guid for p in L.partitions]  # noqa: E731
    assert not set(ids(a)) & set(ids(c))
    assert len(set(ids(a))) == 5
    for g in ids(a):
        assert uuid.UUID(g).version == 4
    r1, r2 = plan_layout(64 * GiB, 512, "uefi"), plan_layout(64 * GiB, 512, "uefi")
    assert r1.disk_guid != r2.disk_guid
    assert seeded("q", plan_layout, GiB, 512, "bios").disk_signature == seeded("q", plan_layout, GiB, 512, "bios").disk_signature
    assert seeded("q", plan_layout, GiB, 512, "bios").disk_signature != seeded("r", plan_layout, GiB, 512, "bios").disk_signature


def test_chs():
    assert lba_to_chs(2048) == bytes([0x20, 0x21, 0x00])
    assert lba_to_chs(1) == bytes([0x00, 0x02, 0x00])
    assert lba_to_chs(1024 * 255 * 63) == b"\xfe\xff\xff"
    assert lba_to_chs(1024 * 255 * 63 - 1) == b"\xfe\xff\xff"  # (1023, 254, 63) itself
    assert lba_to_chs(1023 * 255 * 63) == bytes([0, 0xC1, 0xFF])


# ---------------------------------------------------------------------------
# Writing, checked with the real tools
# ---------------------------------------------------------------------------


def test_uefi_512_with_sgdisk_and_sfdisk(tmp_path):
    t = make_disk(tmp_path, 64 * GiB)
    L = seeded("x", plan_layout, t.size, 512, "uefi", recovery_size=GiB)
    write_table(t, L)
    t.close()
    v = run("sgdisk", "-v", str(tmp_path / "disk.img"))
    assert "No problems found" in v.stdout, v.stdout
    pt = sfdisk_json(tmp_path / "disk.img")
    assert pt["label"] == "gpt" and pt["id"].lower() == L.disk_guid and pt["sectorsize"] == 512
    assert pt["firstlba"] == 34 and pt["lastlba"] == 64 * GiB // 512 - 34
    assert len(pt["partitions"]) == 4
    for got, want in zip(pt["partitions"], L.partitions):
        assert got["start"] * 512 == want.start and got["size"] * 512 == want.size
        assert got["type"].lower() == want.type_guid and got["uuid"].lower() == want.guid
        assert got["name"] == want.name
    assert pt["partitions"][3]["attrs"] == "RequiredPartition GUID:63"
    assert "attrs" not in pt["partitions"][0]
    info = run("sgdisk", "-i", "4", str(tmp_path / "disk.img")).stdout
    assert "Attribute flags: 8000000000000001" in info
    assert "Partition name: 'Basic data partition'" in info
    assert "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC (Windows RE)" in info
    info1 = run("sgdisk", "-i", "1", str(tmp_path / "disk.img")).stdout
    assert "(EFI system partition)" in info1 and "Attribute flags: 0000000000000000" in info1
    # protective MBR exactly as sgdisk writes it
    mbr = head(tmp_path / "disk.img")
    assert mbr[446:462] == bytes.fromhex("000002 00 ee feffff 01000000 ffffff07".replace(" ", ""))
    assert mbr[510:] == b"\x55\xaa"


def test_uefi_4096_with_fdisk(tmp_path):
    t = make_disk(tmp_path, 64 * GiB, 4096)
    L = seeded("y", plan_layout, t.size, 4096, "uefi", recovery_size=GiB)
    write_table(t, L)
    t.close()
    head, rows = fdisk_gpt_4k(tmp_path / "disk.img")
    n = 64 * GiB // 4096
    assert head["Disklabel type"] == "gpt" and head["Disk identifier"].lower() == L.disk_guid
    assert int(head["First usable LBA"]) == 6 and int(head["Last usable LBA"]) == n - 6
    assert int(head["Alternative LBA"]) == n - 1 and int(head["Partition entries starting LBA"]) == 2
    assert len(rows) == 4
    for got, want in zip(rows, L.partitions):
        assert got["start"] * 4096 == want.start and (got["end"] + 1) * 4096 == want.end
        assert got["type"].lower() == want.type_guid and got["uuid"].lower() == want.guid
        assert got["rest"].startswith(want.name)
    assert rows[3]["rest"].endswith("RequiredPartition GUID:63")
    # read at 512 bytes a 4K image is not a GPT; our reader finds it anyway
    back = read_table(RawFileTarget(tmp_path / "disk.img", sector_size=512))
    assert back.sector_size == 4096 and back.disk_guid == L.disk_guid


def test_4k_disk_is_not_a_512_gpt(tmp_path):
    t = make_disk(tmp_path, 8 * GiB, 4096)
    write_table(t, plan_layout(t.size, 4096, "native"))
    t.close()
    # sfdisk assumes 512-byte sectors on a file: it finds no GPT at LBA 1
    pt = json.loads(run("sfdisk", "--json", str(tmp_path / "disk.img")).stdout)["partitiontable"]
    assert pt["label"] == "dos"  # only the protective MBR is visible at 512
    assert pt["partitions"][0]["type"] == "ee"


def test_bios_mbr_matches_sfdisk(tmp_path):
    t = make_disk(tmp_path, 20 * GiB)
    L = seeded("b", plan_layout, t.size, 512, "bios")
    write_table(t, L)
    t.close()
    pt = sfdisk_json(tmp_path / "disk.img")
    assert pt["label"] == "dos" and int(pt["id"], 16) == L.disk_signature
    (p,) = pt["partitions"]
    assert (p["start"], p["size"], p["type"], p.get("bootable")) == (2048, 20 * GiB // 512 - 2048, "7", True)
    assert run("sfdisk", "-V", str(tmp_path / "disk.img")).returncode == 0
    # the same partition made by sfdisk itself gives the same 16-byte entry (CHS included)
    ref = tmp_path / "ref.img"
    with open(ref, "wb") as f:
        f.truncate(20 * GiB)
    subprocess.run(["sfdisk", "-q", str(ref)], input="start=2048, type=7, bootable\n", text=True,
                   check=True, capture_output=True)
    assert head(tmp_path / "disk.img")[446:512] == head(ref)[446:512]


def test_bios_recovery_partition_is_type_27_after_windows(tmp_path):
    """bios with a WinRE partition, as Windows Setup leaves an MBR disk: a second primary partition of
    type 0x27 after Windows, not active; sfdisk (not ours) reads it, and makes the same entries."""
    t = make_disk(tmp_path, 20 * GiB)
    L = seeded("br", plan_layout, t.size, 512, "bios", recovery_size=GiB)
    write_table(t, L)
    t.close()
    pt = sfdisk_json(tmp_path / "disk.img")
    win, rec = pt["partitions"]
    assert (win["start"], win["type"], win.get("bootable")) == (2048, "7", True)
    assert (rec["start"], rec["size"], rec["type"], rec.get("bootable")) == (
        win["start"] + win["size"], GiB // 512, "27", None)
    assert rec["start"] + rec["size"] == 20 * GiB // 512
    assert run("sfdisk", "-V", str(tmp_path / "disk.img")).returncode == 0
    ref = tmp_path / "ref.img"
    with open(ref, "wb") as f:
        f.truncate(20 * GiB)
    subprocess.run(["sfdisk", "-q", str(ref)], text=True, check=True, capture_output=True,
                   input=f"start=2048, size={win['size']}, type=7, bootable\nstart={rec['start']}, type=27\n")
    assert head(tmp_path / "disk.img")[446:510] == head(ref)[446:510]
    back = read_table(RawFileTarget(tmp_path / "disk.img"))
    assert [p.role for p in back.partitions] == ["data", "recovery"]


@pytest.mark.parametrize("size", [100 * MiB, 9 * GiB])
def test_mbr_chs_like_sfdisk_for_small_disks(tmp_path, size):
    # small disks have a real CHS end; sfdisk computes it with 255/63 too
    ref = tmp_path / "ref.img"
    with open(ref, "wb") as f:
        f.truncate(size)
    subprocess.run(["sfdisk", "-q", str(ref)], input="start=2048, type=7, bootable\n", text=True,
                   check=True, capture_output=True)
    L = plan_layout(size, 512, "bios")
    assert build_mbr(L)[446:462] == head(ref)[446:462]


def test_native_gpt_and_mbr(tmp_path):
    t = make_disk(tmp_path, 8 * GiB, name="g.img")
    write_table(t, plan_layout(t.size, 512, "native"))
    t.close()
    assert "No problems found" in run("sgdisk", "-v", str(tmp_path / "g.img")).stdout
    (p,) = sfdisk_json(tmp_path / "g.img")["partitions"]
    assert p["type"] == TYPE_BASIC_DATA.upper() and p["name"] == NAME_BASIC_DATA and p["start"] == 2048
    t = make_disk(tmp_path, 8 * GiB, name="m.img")
    write_table(t, plan_layout(t.size, 512, "native", mbr=True))
    t.close()
    (p,) = sfdisk_json(tmp_path / "m.img")["partitions"]
    assert p["type"] == "7" and "bootable" not in p


@pytest.mark.parametrize("layout,ss", [("uefi", 512), ("uefi", 4096), ("bios", 512)])
def test_boot_code_is_kept(tmp_path, layout, ss):
    t = make_disk(tmp_path, 2 * GiB, ss)
    code = bytes((i * 7 + 3) & 0xFF for i in range(440))
    t.write(0, code)
    write_table(t, plan_layout(t.size, ss, layout))
    assert t.read(0, 440) == code
    assert t.read(510, 2) == b"\x55\xaa"


def test_mbr_over_gpt_erases_gpt_headers(tmp_path):
    t = make_disk(tmp_path, 2 * GiB)
    write_table(t, plan_layout(t.size, 512, "uefi"))
    write_table(t, plan_layout(t.size, 512, "bios"))
    assert t.read(512, 8) != GPT_SIGNATURE and t.read(t.size - 512, 8) != GPT_SIGNATURE
    t.close()
    assert sfdisk_json(tmp_path / "disk.img")["label"] == "dos"


def test_same_seed_same_bytes(tmp_path):
    imgs = []
    for i, seed in enumerate(["s", "s", "t"]):
        t = make_disk(tmp_path, 4 * GiB, name=f"{i}.img")
        write_table(t, seeded(seed, plan_layout, t.size, 512, "uefi", recovery_size=256 * MiB))
        imgs.append(t.read(0, 34 * 512) + t.read(t.size - 33 * 512, 33 * 512))
        t.close()
    assert imgs[0] == imgs[1] and imgs[0] != imgs[2]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size_mib=st.integers(min_value=300, max_value=4 * 1024 * 1024), extra=st.integers(0, 2047),
       rec=st.sampled_from([0, 300 * MiB]))
def test_written_tables_verify(tmp_path_factory, size_mib, extra, rec):
    d = tmp_path_factory.mktemp("h")
    size = size_mib * MiB + extra * 512
    try:
        L = plan_layout(size, 512, "uefi", recovery_size=rec)
    except NoSpace:
        return
    t = make_disk(d, size)
    write_table(t, L)
    back = read_table(t)
    t.close()
    assert back.partitions == tuple(
        Partition(p.number, p.start, p.size, p.role if p.role != "windows" else "data", None, p.type_guid, p.guid,
                  name=p.name, attributes=p.attributes) for p in L.partitions)
    v = run("sgdisk", "-v", str(d / "disk.img"))
    assert "No problems found" in v.stdout, v.stdout


# ---------------------------------------------------------------------------
# Reading back
# ---------------------------------------------------------------------------


def test_read_back_roundtrip_and_dict(tmp_path):
    t = make_disk(tmp_path, 16 * GiB)
    L = seeded("r", plan_layout, t.size, 512, "uefi", recovery_size=GiB)
    write_table(t, L)
    back = read_table(t)
    assert back.scheme == "gpt" and back.disk_guid == L.disk_guid and not back.warnings
    assert [(p.start, p.size, p.type_guid, p.guid, p.name, p.attributes) for p in back.partitions] == \
           [(p.start, p.size, p.type_guid, p.guid, p.name, p.attributes) for p in L.partitions]
    assert [p.role for p in back.partitions] == ["esp", "msr", "data", "recovery"]
    d = back.to_dict()
    assert d["partitions"][3]["type_name"] == "Windows recovery environment"
    json.dumps(d)


def test_reads_a_table_made_by_sgdisk(tmp_path):
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(4 * GiB)
    run("sgdisk", "-o", "-n", "1:2048:+100M", "-t", "1:EF00", "-c", "1:ESP é",
        "-n", "2:0:+1G", "-t", "2:0700", "-A", "2:set:0", "-A", "2:set:63", str(img))
    info = run("sgdisk", "-i", "2", str(img)).stdout
    guid = re.search(r"Partition unique GUID: (\S+)", info).group(1).lower()
    back = read_table(RawFileTarget(img))
    p1, p2 = back.partitions
    assert (p1.start, p1.size, p1.type_guid, p1.name) == (MiB, 100 * MiB, TYPE_ESP, "ESP é")
    assert (p2.start, p2.size, p2.guid, p2.attributes) == (101 * MiB, GiB, guid, ATTR_WINRE)


def test_reads_an_mbr_made_by_sfdisk(tmp_path):
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(GiB)
    subprocess.run(["sfdisk", "-q", str(img)], input="label-id: 0x12345678\nstart=2048, size=204800, type=c\n"
                   "start=206848, type=7, bootable\n", text=True, check=True, capture_output=True)
    back = read_table(RawFileTarget(img))
    assert back.scheme == "mbr" and back.disk_signature == 0x12345678
    assert [(p.number, p.start, p.size, p.mbr_type, p.active) for p in back.partitions] == \
           [(1, MiB, 100 * MiB, 0x0C, False), (2, 101 * MiB, GiB - 101 * MiB, 0x07, True)]


def test_blank_disk_has_no_table(tmp_path):
    assert read_table(make_disk(tmp_path, 64 * MiB)) is None


def _corrupt(t: RawFileTarget, offset: int) -> None:
    b = bytearray(t.read(offset, 1))
    b[0] ^= 0xFF
    t.write(offset, bytes(b))


@pytest.mark.parametrize("ss", [512, 4096])
def test_damaged_primary_uses_backup(tmp_path, ss):
    t = make_disk(tmp_path, 2 * GiB, ss)
    L = seeded("d", plan_layout, t.size, ss, "uefi")
    write_table(t, L)
    _corrupt(t, ss + 60)  # inside the disk GUID of the primary header
    back = read_table(t)
    assert back.disk_guid == L.disk_guid and len(back.partitions) == 3
    assert any("primary GPT header: CRC32 mismatch" in w and "backup" in w for w in back.warnings)


def test_damaged_entries_and_backup_is_corrupt_input(tmp_path):
    t = make_disk(tmp_path, 2 * GiB)
    write_table(t, plan_layout(t.size, 512, "uefi"))
    _corrupt(t, 2 * 512 + 5)  # primary entry array
    back = read_table(t)
    assert any("partition entries: CRC32 mismatch" in w for w in back.warnings)
    _corrupt(t, t.size - 512 + 17)  # backup header CRC field
    with pytest.raises(CorruptInput, match="primary GPT partition entries: CRC32 mismatch"):
        read_table(t)


def test_damaged_backup_only_warns(tmp_path):
    t = make_disk(tmp_path, 2 * GiB)
    write_table(t, plan_layout(t.size, 512, "native"))
    _corrupt(t, t.size - 512 + 60)
    back = read_table(t)
    assert len(back.partitions) == 1
    assert any(w.startswith("backup GPT header: CRC32 mismatch") for w in back.warnings)


def test_protective_mbr_without_gpt_is_corrupt(tmp_path):
    t = make_disk(tmp_path, 2 * GiB)
    write_table(t, plan_layout(t.size, 512, "uefi"))
    t.write(512, bytes(512))
    t.write(t.size - 512, bytes(512))
    with pytest.raises(CorruptInput, match="no GPT header"):
        read_table(t)


# ---------------------------------------------------------------------------
# write_table's own checks
# ---------------------------------------------------------------------------


def test_write_rejects_mismatches(tmp_path):
    t = make_disk(tmp_path, 2 * GiB)
    with pytest.raises(UsageError, match="4096-byte sectors"):
        write_table(t, plan_layout(t.size, 4096, "native"))
    with pytest.raises(NoSpace, match="disk holds"):
        write_table(t, plan_layout(4 * GiB, 512, "native"))
    bad = DiskLayout("gpt", t.size, 512, (Partition(1, MiB, 100 * MiB, type_guid=TYPE_BASIC_DATA, guid=str(uuid.uuid4())),
                                         Partition(2, 50 * MiB, 100 * MiB, type_guid=TYPE_BASIC_DATA,
                                                   guid=str(uuid.uuid4()))), disk_guid=str(uuid.uuid4()))
    with pytest.raises(UsageError, match="overlap"):
        write_table(t, bad)
    outside = DiskLayout("gpt", t.size, 512, (Partition(1, 0, MiB, type_guid=TYPE_BASIC_DATA),),
                         disk_guid=str(uuid.uuid4()))
    with pytest.raises(NoSpace, match="outside the usable area"):
        write_table(t, outside)
    long_name = DiskLayout("gpt", t.size, 512, (Partition(1, MiB, MiB, type_guid=TYPE_BASIC_DATA, name="x" * 37),),
                           disk_guid=str(uuid.uuid4()))
    with pytest.raises(UsageError, match="36 UTF-16"):
        write_table(t, long_name)
    # nothing was written by any of the failed attempts
    assert read_table(t) is None


def test_raw_target_rejects_odd_sector_size(tmp_path):
    (tmp_path / "x.img").write_bytes(b"")
    with pytest.raises(UsageError, match="512 or 4096"):
        RawFileTarget(tmp_path / "x.img", sector_size=2048)
