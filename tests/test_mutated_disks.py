"""Issue 14: mutated inputs for the commands that read a disk or an image (`disk info`, `disk check`,
`disk convert`, `info`) give exit 0 or 3 with at most one line, never another exit, a traceback or a
change to the input, and a failed convert leaves nothing.  The fuzzers (tests/fuzz/) cover the parsers;
this runs the command lines themselves, in this process (tests.support.cli), on seeded damage to the
structures each format keeps at known places.  The sound seeds are checked with qemu-img first, so that
the damage is ours to find, not a bad seed."""
import os
import random
import struct

import pytest

from tests.support import cli, leftovers, run, sha

MiB = 1 << 20


def _seed_disk(tmp_path, capsys, fmt):
    p = tmp_path / f"seed.{fmt}"
    code, _, err = cli(capsys, "disk", "create", p, "--size", "64M")
    assert code == 0, err
    from wim2vhd.disk import open_disk
    with open_disk(str(p), writable=True) as d:  # data in a few blocks, so that BAT/L2 entries are used
        for off in (0, 3 * MiB, 40 * MiB):
            d.write(off, os.urandom(8192))
    qfmt = {"vhd": "vpc"}.get(fmt, fmt)
    run("qemu-img", "info", "-f", qfmt, p)  # an outside reader opens the seed
    return p


# Where each format keeps its structures (the ranges mutations aim at), from the start of the file;
# negative: from the end (a VHD's footer).
REGIONS = {
    "vhd": [(-512, 512), (0, 512), (512, 1024), (1536, 2048)],       # footer, its copy, dynamic header, BAT
    "vhdx": [(0, 64 * 1024), (64 * 1024, 8192), (128 * 1024, 8192),  # file identifier, both headers
             (192 * 1024, 4096), (256 * 1024, 4096),                 # both region tables
             (1 * MiB, 64 * 1024), (2 * MiB, 64 * 1024)],            # metadata, BAT (where ours are)
    "qcow2": [(0, 112), (64 * 1024, 64 * 1024), (128 * 1024, 64 * 1024), (192 * 1024, 64 * 1024)],
}


def _mutations(data: bytes, regions, rng: random.Random, n: int):
    size = len(data)
    for i in range(n):
        b = bytearray(data)
        start, length = rng.choice(regions)
        start = size + start if start < 0 else start
        end = min(size, start + length)
        if start >= end:
            continue
        how = rng.choice(["flip", "flip", "int", "int64", "zero", "truncate"])
        at = rng.randrange(start, end)
        if how == "flip":
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(start, end)] ^= 1 << rng.randrange(8)
        elif how == "int" and at + 4 <= size:
            struct.pack_into(rng.choice(["<I", ">I"]), b, at & ~3, rng.choice([0, 1, 0xFFFFFFFF, rng.getrandbits(32)]))
        elif how == "int64" and (at & ~7) + 8 <= size:
            struct.pack_into(rng.choice(["<Q", ">Q"]), b, at & ~7, rng.choice([0, 2**64 - 1, 2**63, rng.getrandbits(40)]))
        elif how == "zero":
            b[at:at + rng.randint(4, 512)] = bytes(len(b[at:at + rng.randint(4, 512)]))
        else:
            b = b[:rng.randrange(0, size)]
        yield f"{i:03d}-{how}", bytes(b)


def _one_line(err: str) -> bool:
    return err.count("\n") <= 1 and "Traceback" not in err


@pytest.mark.parametrize("fmt,seed", [("vhd", 1), ("vhdx", 2), ("qcow2", 3)])
def test_mutated_disks(tmp_path, capsys, fmt, seed):
    src = _seed_disk(tmp_path, capsys, fmt)
    data = src.read_bytes()
    rng = random.Random(seed)
    problems, codes = [], {}
    for name, mutated in _mutations(data, REGIONS[fmt], rng, 40):
        d = tmp_path / name
        d.mkdir()
        p = d / f"in.{fmt}"
        p.write_bytes(mutated)
        before = sha(p)
        out = d / "out.img"
        for args in (("disk", "info", p), ("disk", "check", p), ("disk", "convert", p, out)):
            code, _, err = cli(capsys, *args)
            codes[code] = codes.get(code, 0) + 1
            if code not in (0, 3) or not _one_line(err if code else ""):
                problems.append(f"{name}: {' '.join(map(str, args[:2]))} exit {code}: {err.strip()[:300]}")
        if sha(p) != before:
            problems.append(f"{name}: the input changed")
        if leftovers(d) or (code != 0 and out.exists()):  # a failed convert leaves nothing
            problems.append(f"{name}: left {sorted(os.listdir(d))}")
    assert not problems, "\n".join(problems)
    assert codes.get(3) and codes.get(0), codes  # the damage reached both outcomes


def test_mutated_wims(tmp_path, capsys, fixture_wim):
    """`info` on a WIM damaged in its header, XML, lookup table and resources: exit 0 or 3, one line,
    unchanged (wimlib reads it; the XML and header errors are mapped in wim/wimlib.py)."""
    data = open(fixture_wim, "rb").read()
    hdr = data[:208]
    xml_off = struct.unpack_from("<Q", hdr, 0x48 + 8)[0] if len(hdr) >= 0x60 else 0  # XML resource offset
    regions = [(0, 208), (max(0, xml_off), 4096), (208, 4096), (len(data) // 2, 4096)]
    rng = random.Random(4)
    problems, codes = [], {}
    for name, mutated in _mutations(data, regions, rng, 40):
        p = tmp_path / f"{name}.wim"
        p.write_bytes(mutated)
        before = sha(p)
        code, _, err = cli(capsys, "info", p)
        codes[code] = codes.get(code, 0) + 1
        if code not in (0, 3) or not _one_line(err if code else ""):
            problems.append(f"{name}: info exit {code}: {err.strip()[:300]}")
        if sha(p) != before:
            problems.append(f"{name}: the input changed")
        p.unlink()
    assert not problems, "\n".join(problems)
    assert codes.get(3), codes


REG = """Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\\SOFTWARE\\wim2vhd\\Sweep]
"Text"="hello"
"Number"=dword:0000002a
@="default"
"Expand"=hex(2):25,00,53,00,79,00,73,00,00,00
"Multi"=hex(7):61,00,00,00,62,00,00,00,00,00
"Long"=hex:01,02,03,04,05,06,07,08,09,0a,0b,0c,0d,0e,0f,10,\\
  11,12,13,14,15,16,17,18

[-HKEY_LOCAL_MACHINE\\SOFTWARE\\wim2vhd\\Gone]

[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\Sweep]
"Start"=dword:00000004
"Old"=-
"""


def _reg_mutations(text: str, rng: random.Random, n: int):
    lines = text.split("\n")
    for i in range(n):
        how = rng.choice(["byte", "byte", "line", "dup", "cut", "ctl", "encoding"])
        if how == "byte":
            b = bytearray(text.encode("utf-8"))
            b[rng.randrange(len(b))] = rng.choice(b"\\\"[]=:,-@;\x00\x1b\xff0fx(")
            data = bytes(b)
        elif how == "line":
            ls = list(lines)
            ls[rng.randrange(len(ls))] = rng.choice(['"x"=hex(7):61,00', '[HKEY_NOWHERE\\x]', '"y"=dword:1ffffffff',
                                                     '"z"=hex:zz', '[HKEY_LOCAL_MACHINE\\SOFTWARE\\' + "k" * 300 + "]",
                                                     '"v"=hex(2):00', 'garbage', '"a"="unterminated'])
            data = "\n".join(ls).encode()
        elif how == "dup":
            at = rng.randrange(len(lines))
            data = "\n".join(lines[:at] + [lines[at]] * rng.randint(2, 50) + lines[at:]).encode()
        elif how == "cut":
            data = text.encode()[:rng.randrange(len(text))]
        elif how == "ctl":
            at = rng.randrange(len(text))
            data = (text[:at] + rng.choice(["\x1b[31m", "\x00", "\u202e", "\r", "\\"]) + text[at:]).encode()
        else:
            data = rng.choice([b"\xff\xfe" + text.encode("utf-16-le")[:-rng.randrange(1, 9)],
                               b"\xef\xbb\xbf" + text.encode("utf-8"), text.encode("utf-16-be")])
        yield f"{i:03d}-{how}", data


def test_mutated_reg_imports(tmp_path, capsys, fixture_wim):
    """`apply --reg-import` with damaged .reg files: exit 0 or 3, one line, the .reg unchanged, and no
    disk or temporary file left when it fails.  A .reg is parsed before the disk is made, so a refused one
    costs nothing; the few that parse are applied (read back with hivexget in test_customize)."""
    rng = random.Random(5)
    problems, codes = [], {}
    for name, data in _reg_mutations(REG, rng, 30):
        reg = tmp_path / f"{name}.reg"
        reg.write_bytes(data)
        before = sha(reg)
        out = tmp_path / f"{name}.vhdx"
        code, _, err = cli(capsys, "apply", fixture_wim, out, "--index", "1", "--size", "1G", "--no-boot",
                           "--reg-import", reg)
        codes[code] = codes.get(code, 0) + 1
        if code not in (0, 3) or not _one_line(err if code else ""):
            problems.append(f"{name}: apply exit {code}: {err.strip()[:300]}")
        if any(c in err for c in "\x1b\x00\u202e"):
            problems.append(f"{name}: a control character from the .reg reached the terminal: {err!r}")
        if sha(reg) != before:
            problems.append(f"{name}: the .reg changed")
        if code != 0 and (out.exists() or leftovers(tmp_path)):
            problems.append(f"{name}: a failed apply left {sorted(os.listdir(tmp_path))}")
        if out.exists():
            out.unlink()
    assert not problems, "\n".join(problems)
    assert codes.get(3) and codes.get(0), codes
