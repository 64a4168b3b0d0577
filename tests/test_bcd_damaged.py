"""Damaged BCD stores: every command that reads one (`bcd show`) or edits one (`bcd add-vhd`, `apply
--host-bcd`) refuses it the same way (exit 3, one line naming the store), and an edit leaves the store
byte-identical, with no .bak and no temporary file beside it.  An edit succeeds only on a store that
`bcd show` reads, and what it writes reads cleanly too.

Outside readers: regipy reads every store add-vhd wrote here (the new entry is there); hivexml and hivexget
(hivex's own programs, not our cffi binding) confirm that the hand-made damage is in the hive as meant.
"""
from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from wim2vhd.boot.elements import E
from wim2vhd.registry.hive import Hive, RegType, Value

from tests.support import cli, have, leftovers, ref, regipy_store, sha

BOOTMGR = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"
MEMDIAG = "{b2721d73-1db4-4c62-bf78-c548a880142d}"
ADD = ["--vhd-path", "\\vhds\\w.vhdx", "--firmware", "uefi"]


def _created(capsys, folder: Path) -> Path:
    p = folder / "BCD"
    code, _, err = cli(capsys, "bcd", "create", p, "--firmware", "uefi")
    assert code == 0, err
    (folder / "BCD.bak").unlink(missing_ok=True)
    return p


def _edit(path: Path, fn) -> None:
    """Change the hive at `path` through hivex (our binding), written back in place."""
    with Hive.open(path, write=True) as h:
        fn(h)
        h.commit(str(path) + ".new")
    os.replace(str(path) + ".new", path)


def _refused(capsys, path: Path, args: list, words: str | None = None) -> str:
    """The command exits 3 with one line; the store and its folder are as they were."""
    folder = path.parent
    before, listing = sha(path), sorted(os.listdir(folder))
    code, out, err = cli(capsys, *args)
    assert code == 3, (args, code, err)
    assert err.startswith("wim2vhd: error: ") and err.count("\n") == 1, err
    assert str(path) in err, err  # names the store
    if words:
        assert words in err, err
    assert sha(path) == before
    assert sorted(os.listdir(folder)) == listing and not leftovers(folder)
    return err


def _hivexml(path: Path) -> str:
    p = subprocess.run(["hivexml", str(path)], capture_output=True, text=True)
    return p.stdout if p.returncode == 0 else f"FAILED: {p.stderr}"


# -- (a) hand-made damage ----------------------------------------------------------------------------
def _no_type(h):
    obj = h.root.get_key(f"Objects\\{MEMDIAG}\\Description")
    obj.set_values([])


def _no_description(h):
    h.root.get_key(f"Objects\\{MEMDIAG}\\Description").delete()


def _type_not_dword(h):
    h.root.get_key(f"Objects\\{MEMDIAG}\\Description").set_value(Value("Type", RegType.SZ, b"x\0\0\0"))


def _short_type(h):
    h.root.get_key(f"Objects\\{MEMDIAG}\\Description").set_value(Value("Type", RegType.DWORD, b"\x05\x00"))


def _description(path: Path) -> str | None:
    """hivexget's listing of {memdiag}'s Description key (None: no such key)."""
    p = subprocess.run(["hivexget", str(path), f"Objects\\{MEMDIAG}\\Description"], capture_output=True, text=True)
    return p.stdout if p.returncode == 0 else None


# kind: (the damage, words of the refusal, what hivexget / hivexml (not our binding) find there)
HAND_MADE = {
    "no-type": (_no_type, "has no Description\\Type", lambda p: _description(p) == ""),
    "no-description": (_no_description, "has no Description\\Type", lambda p: _description(p) is None),
    "type-not-dword": (_type_not_dword, "no 4-byte REG_DWORD", lambda p: _description(p) == '"Type"="x"\n'),
    # hivex gives -1 for a DWORD it cannot read as 4 bytes
    "short-type": (_short_type, "no 4-byte REG_DWORD",
                   lambda p: '<value type="int32" key="Type" value="-1">' in _hivexml(p)),
}


@pytest.mark.skipif(not (have("hivexml") and have("hivexget")), reason="hivexml/hivexget missing")
@pytest.mark.parametrize("kind", sorted(HAND_MADE))
def test_a_damaged_object_is_refused_by_show_and_add_vhd(tmp_path, capsys, kind):
    fn, words, outside = HAND_MADE[kind]
    p = _created(capsys, tmp_path)
    assert not outside(p)
    _edit(p, fn)
    assert outside(p), _description(p)  # the damage is there, as meant
    _refused(capsys, p, ["bcd", "show", p], words)
    _refused(capsys, p, ["bcd", "show", p, "--json"], words)
    _refused(capsys, p, ["bcd", "add-vhd", p, *ADD], words)


def _bytes_damage(kind: str, data: bytes) -> bytes:
    """Damage made by editing the bytes of a store bcd create wrote."""
    b = bytearray(data)
    if kind == "header-checksum":
        b[0x30] ^= 0x55
    elif kind == "hbin-signature":
        b[0x1000:0x1004] = b"hbim"
    elif kind == "hbin-size":
        struct.pack_into("<I", b, 0x1008, 0x7FFF0000)
    elif kind == "element-value-truncated":
        # the REG_SZ data of {memdiag}'s path, said to be longer than the cell that holds it; the data
        # cell starts with its 4-byte size (negative: in use), just before the string
        start = b.find("\\EFI\\Microsoft\\Boot\\memtest.efi".encode("utf-16-le"))
        assert start > 0
        size = struct.unpack_from("<i", b, start - 4)[0]
        assert size < 0
        # find the vk cell pointing at it and make its data length far larger than the cell
        off = start - 4 - 0x1000
        vk = b.find(b"vk", 0x1000)
        while vk > 0:
            if struct.unpack_from("<I", b, vk + 8)[0] == off:
                struct.pack_into("<I", b, vk + 4, 0x3000)
                break
            vk = b.find(b"vk", vk + 2)
        assert vk > 0
    else:
        raise AssertionError(kind)
    return bytes(b)


@pytest.mark.skipif(not have("hivexml"), reason="hivexml missing")
@pytest.mark.parametrize("kind", ["header-checksum", "hbin-signature", "hbin-size", "element-value-truncated"])
def test_a_damaged_hive_is_refused_by_show_and_add_vhd(tmp_path, capsys, kind):
    p = _created(capsys, tmp_path)
    assert not _hivexml(p).startswith("FAILED")
    p.write_bytes(_bytes_damage(kind, p.read_bytes()))
    assert _hivexml(p).startswith("FAILED")  # hivexml cannot read it either
    _refused(capsys, p, ["bcd", "show", p], "damaged")
    _refused(capsys, p, ["bcd", "add-vhd", p, *ADD], "damaged")


def test_a_raw_element_reads_but_add_vhd_keeps_it(tmp_path, capsys):
    """An element stored as another registry type than its format (an undecodable device, a string as
    binary) is no damage to the store: show lists it as hex, and add-vhd writes it back unchanged (regipy
    reads it there), unless it is one add-vhd must extend (displayorder, tests/test_fuzz_findings.py)."""
    p = _created(capsys, tmp_path)

    def raw(h):
        els = h.root.get_key(f"Objects\\{MEMDIAG}\\Elements")
        els.get_key(f"{E.DEVICE:08x}").set_value(Value("Element", RegType.BINARY, b"\x01\x02\x03"))
        els.get_key(f"{E.PATH:08x}").set_value(Value("Element", RegType.BINARY, b"\xff\xfe"))
    _edit(p, raw)
    code, out, err = cli(capsys, "bcd", "show", p)
    assert code == 0, err
    assert "hex:010203" in out and "hex:fffe" in out
    code, out, err = cli(capsys, "bcd", "add-vhd", p, *ADD)
    assert code == 0, err
    md = regipy_store(p)[MEMDIAG.lower()]["elements"]
    assert md[f"{E.DEVICE:08x}"][0] == "REG_BINARY" and md[f"{E.PATH:08x}"][0] == "REG_BINARY"
    assert cli(capsys, "bcd", "show", p)[0] == 0


def test_apply_host_bcd_refuses_a_damaged_store_before_the_disk(tmp_path, capsys):
    """apply --host-bcd checks the store as add-vhd does, before any disk is made (a missing image would
    be found later: the store's refusal comes first, with no disk and no leftovers)."""
    p = _created(capsys, tmp_path)
    _edit(p, _no_type)
    out = tmp_path / "win.vhdx"
    image = tmp_path / "missing.wim"
    image.write_bytes(b"")
    err = _refused(capsys, p, ["apply", image, out, "--layout", "native", "--host-bcd", p,
                               "--vhd-path", "\\vhds\\win.vhdx"], "Description\\Type")
    assert not out.exists(), err


@pytest.mark.parametrize("kind", ["no-type", "short-type"])
def test_apply_refuses_a_damaged_bcd_template(tmp_path, capsys, kind):
    """The image's BCD-Template is a store apply's boot stage edits (bcdboot.build_store): it is read with
    the same check, and a damaged one is refused by its name (hivexget/hivexml see the damage)."""
    from wim2vhd.boot import bcdboot
    from wim2vhd.boot.devices import Boot
    from wim2vhd.errors import CorruptInput
    fn, words, outside = HAND_MADE[kind]
    p = _created(capsys, tmp_path)
    devs = {"bootmgr": Boot(), "device": Boot(), "osdevice": Boot()}
    bcdboot.build_store(p.read_bytes(), "uefi", "Windows", devs, locale="en-US", memdiag=True).close()
    _edit(p, fn)
    assert outside(p)
    with pytest.raises(CorruptInput) as e:
        bcdboot.build_store(p.read_bytes(), "uefi", "Windows", devs, locale="en-US", memdiag=True)
    assert str(e.value).startswith("BCD-Template: object {memdiag} ") and words in str(e.value), e.value


def test_an_edit_that_does_not_read_back_is_not_renamed_into_place(tmp_path, capsys, monkeypatch):
    """save() reads what it wrote with the same check (BcdStore.read_all), not only the hive's: a written
    store whose {memdiag} lost its type (made so here, after hivex wrote it) stays a temporary file that is
    removed; the store and its folder are as they were, and the error is ours (exit 6, one line)."""
    from wim2vhd.boot.store import BcdStore
    p = _created(capsys, tmp_path)
    commit = BcdStore._commit

    def damaged_commit(self, path):
        commit(self, path)
        _edit(Path(path), _no_type)
    monkeypatch.setattr(BcdStore, "_commit", damaged_commit)
    before, listing = sha(p), sorted(os.listdir(tmp_path))
    code, out, err = cli(capsys, "bcd", "add-vhd", p, *ADD)
    assert code == 6 and err.count("\n") == 1, err
    assert f"the store written for {p} does not read back" in err and "has no Description\\Type" in err, err
    assert sha(p) == before and sorted(os.listdir(tmp_path)) == listing


# -- (b) a seeded mutation sweep ---------------------------------------------------------------------
def _mutations(data: bytes, rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    """n damaged copies of `data`, mostly inside the hbins (the base block is checksummed: damage there
    is found at once, and it is tried only now and then)."""
    out = []
    hbins = range(0x1000, len(data))
    for i in range(n):
        b = bytearray(data)
        how = rng.choice(["flip", "flip", "flip", "zero", "int", "int", "truncate", "header"])
        if how == "flip":
            for _ in range(rng.randint(1, 4)):
                b[rng.choice(hbins)] ^= 1 << rng.randrange(8)
        elif how == "zero":
            at, k = rng.choice(hbins), rng.randint(2, 64)
            b[at:at + k] = bytes(len(b[at:at + k]))
        elif how == "int":
            # a cell-aligned 32-bit field (sizes, offsets, counts, lengths) set to something else
            at = rng.randrange(0x1000, len(data) - 4) & ~3
            struct.pack_into("<I", b, at, rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, rng.getrandbits(32),
                                                      rng.getrandbits(12), struct.unpack_from("<I", b, at)[0] ^ 0x80000000]))
        elif how == "truncate":
            b = b[:rng.randrange(0x1000, len(data))]
        else:
            b[rng.randrange(0, 0x200)] ^= 1 << rng.randrange(8)
        out.append((f"{i:03d}-{how}", bytes(b)))
    return out


def _sweep(capsys, tmp_path: Path, original: bytes, seed: int, n: int) -> dict:
    rng = random.Random(seed)
    counts = {"shown": 0, "refused": 0, "edited": 0}
    problems = []
    for name, data in _mutations(original, rng, n):
        d = tmp_path / name
        d.mkdir()
        p = d / "BCD"
        p.write_bytes(data)
        before = sha(p)
        show, _, show_err = cli(capsys, "bcd", "show", p)
        add, add_out, add_err = cli(capsys, "bcd", "add-vhd", p, *ADD)
        for cmd, code, err in (("show", show, show_err), ("add-vhd", add, add_err)):
            if code not in (0, 3) or err.count("\n") > 1:
                problems.append(f"{name}: {cmd} exit {code}: {err.strip()}")
        if add != 0:
            if sha(p) != before or sorted(os.listdir(d)) != ["BCD"]:
                problems.append(f"{name}: add-vhd failed ({add_err.strip()}) and left {sorted(os.listdir(d))}, "
                                f"store {'changed' if sha(p) != before else 'same'}")
        elif show != 0:
            problems.append(f"{name}: add-vhd edited a store show refuses ({show_err.strip()})")
        else:
            again, _, again_err = cli(capsys, "bcd", "show", p)
            if again != 0:
                problems.append(f"{name}: add-vhd wrote a store show refuses ({again_err.strip()})")
            elif sha(d / "BCD.bak") != before:
                problems.append(f"{name}: the .bak is not the store as it was")
            elif add_out.strip() not in regipy_store(p):  # regipy reads the new entry where add-vhd put it
                problems.append(f"{name}: regipy does not find {add_out.strip()} in what add-vhd wrote")
        counts["shown" if show == 0 else "refused"] += 1
        counts["edited"] += add == 0
        if not problems:
            shutil.rmtree(d)
    assert not problems, "\n".join(problems)
    return counts


def test_sweep_a_created_store(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    original = _created(capsys, src).read_bytes()
    counts = _sweep(capsys, tmp_path, original, seed=14, n=75)
    print(counts)
    assert counts["shown"] and counts["refused"]  # the sweep reaches both sides


def test_sweep_a_store_windows_wrote(tmp_path, capsys):
    original = ref("windeploy-BCD-efi").read_bytes()
    counts = _sweep(capsys, tmp_path, original, seed=1414, n=75)
    print(counts)
    assert counts["shown"] and counts["refused"]
