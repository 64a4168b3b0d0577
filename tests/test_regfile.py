"""The .reg parser's limits (issue 14): what it refuses as a bad input (exit 3) and with which line, how much it
reads, how long it takes on long continued hex data, and that input-derived text reaches messages quoted.
The limits are Windows' registry element size limits (Win32 documentation, "Registry Element Size Limits"):
255 characters a key name, 16,383 a value name, 512 levels."""
import os
import subprocess
import sys
import textwrap

import pytest

from tests.support import w2v
from wim2vhd.registry import regedit as regfile
from wim2vhd.errors import CorruptInput, InputError, UnsupportedInput

HEAD = "Windows Registry Editor Version 5.00\r\n\r\n"
KEY = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Vendor"


def parse(body: str, header: str = HEAD):
    return regfile.parse((header + body).encode("utf-8"), "t.reg")


def refused(body: str, header: str = HEAD) -> InputError:
    with pytest.raises(InputError) as e:
        parse(body, header)
    assert e.value.exit_code == 3
    return e.value


# -- roots and hives: bad inputs, not usage errors ------------------------------------------------------------
@pytest.mark.parametrize("key,kind,words", [
    ("HKEY_LOCAL_MACHIN\\SOFTWARE\\X", CorruptInput, "has no known root"),
    ("HKLMX\\SOFTWARE", CorruptInput, "has no known root"),
    ("HKEY_LOCAL_MACHINE\\SAM\\X", UnsupportedInput, "in no hive of the image"),
    ("-HKEY_LOCAL_MACHINE\\SOFTWARE", UnsupportedInput, "root of the SOFTWARE hive"),
])
def test_unknown_roots_and_hives_are_bad_inputs(key, kind, words):
    e = refused(f"[{KEY}]\r\n\"a\"=\"b\"\r\n\r\n[{key}]\r\n")
    assert isinstance(e, kind)
    assert str(e).startswith("t.reg:6: ") and words in str(e)


# -- Windows' limits, each at the limit and one past it ----------------------------------------------------------
def test_key_name_length():
    ok = "k" * regfile.MAX_KEY_NAME
    assert parse(f"[{KEY}\\{ok}]\r\n").ops[0].key.endswith("\\" + ok)
    e = refused(f"[{KEY}]\r\n[{KEY}\\{ok}x\\y]\r\n")
    assert str(e).startswith("t.reg:4: ") and "256 characters" in str(e) and "at most 255" in str(e)


def test_value_name_length():
    ok = "v" * regfile.MAX_VALUE_NAME
    assert parse(f"[{KEY}]\r\n\"{ok}\"=dword:1\r\n").ops[1].name == ok
    e = refused(f"[{KEY}]\r\n\"a\"=dword:1\r\n\"{ok}v\"=dword:1\r\n")
    assert str(e).startswith("t.reg:5: ") and "16384 characters" in str(e) and "at most 16383" in str(e)


def test_nesting_depth():
    # HKEY_LOCAL_MACHINE\SOFTWARE is two levels below the root; the rest make up 512 and 513
    ok = KEY.split("\\", 1)[0] + "\\SOFTWARE" + "\\k" * (regfile.MAX_DEPTH - 1)
    assert len(regfile.split_key(parse(f"[{ok}]\r\n").ops[0].key)) == regfile.MAX_DEPTH + 1
    e = refused(f"\r\n[{ok}\\k]\r\n")
    assert str(e).startswith("t.reg:4: ") and "513 levels" in str(e) and "at most 512" in str(e)


@pytest.mark.parametrize("t", ["2", "7"])
def test_utf16_string_data_of_odd_length(t):
    assert parse(f"[{KEY}]\r\n\"s\"=hex({t}):41,00,00,00\r\n").ops[1].data == b"A\0\0\0"
    e = refused(f"[{KEY}]\r\n\"s\"=hex({t}):41,00,\\\r\n  00\r\n")
    assert str(e).startswith("t.reg:4: ") and "3 bytes" in str(e) and "even" in str(e)
    # REGEDIT4 holds them in the ANSI code page: any length, made UTF-16 on import
    v4 = parse(f"[{KEY}]\r\n\"s\"=hex({t}):41,42,00\r\n", header="REGEDIT4\r\n\r\n")
    assert v4.ops[1].data == "AB\0".encode("utf-16-le")


def test_hex_forms_still_read():
    """The one-pass hex reader takes what the regular expression took, and refuses what it refused."""
    ops = parse(f"[{KEY}]\r\n\"a\"=hex:\r\n\"b\"=hex: de , AD,0,\r\n\"c\"=hex:01,\\\r\n   02,\\\r\n 3\r\n").ops
    assert [o.data for o in ops[1:]] == [b"", b"\xde\xad\x00", b"\x01\x02\x03"]
    for bad in ["01,,02", "012", "0 1", ",", "01;02", "0x", "\u0661"]:
        assert "bad hex data" in str(refused(f"[{KEY}]\r\n\"a\"=hex:{bad}\r\n"))


# -- quoting what comes from the file ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["HKEY_\x1b[2J\\X", "HKEY_LOCAL_MACHINE\\SAM\x00\x1b]0;pwned\x07\\X",
                                 "-HKEY_LOCAL_MACHINE\\SOFTWARE\\" + "\x1b" * 300])
def test_messages_quote_control_characters(key):
    msg = str(refused(f"[{key}]\r\n"))
    assert not any(ord(c) < 0x20 or ord(c) == 0x7f for c in msg), repr(msg)
    assert "\\x1b" in msg


# -- how much is read -------------------------------------------------------------------------------------------
def _child(code: str, *args, cpu_seconds=30, memory=2 << 30):
    """Run code in a Python child with its CPU time and address space capped, so that a regression fails the
    test (the child killed by SIGXCPU, or a MemoryError) instead of eating the machine."""
    prelude = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_CPU, ({cpu_seconds}, {cpu_seconds}))
        resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
        from wim2vhd.registry import regedit as regfile
        from wim2vhd.errors import InputError
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_devices_fifos_and_huge_files_are_refused(tmp):
    fifo = tmp / "pipe.reg"
    os.mkfifo(fifo)  # no writer: opening it for reading would wait forever
    huge = tmp / "huge.reg"
    with open(huge, "wb") as f:
        f.truncate(regfile.MAX_FILE + 1)  # sparse
    p = _child("""
        for path in sys.argv[1:]:
            try:
                regfile.load(path)
            except InputError as e:
                print(e.exit_code, e)
    """, "/dev/zero", fifo, huge)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 3, p.stdout
    assert lines[0].startswith("3 --reg-import /dev/zero: not a regular file")
    assert lines[1].startswith(f"3 --reg-import {fifo}: not a regular file")
    assert lines[2].startswith(f"3 --reg-import {huge}: {regfile.MAX_FILE + 1} bytes") and "split it" in lines[2]


def test_load_reads_a_file(tmp):
    p = tmp / "ok.reg"
    p.write_bytes((HEAD + f"[{KEY}]\r\n\"a\"=dword:2a\r\n").encode("utf-16-le"))
    assert regfile.load(p).ops[1].data == b"\x2a\0\0\0"
    (tmp / "empty.reg").write_bytes(b"")
    with pytest.raises(InputError, match="empty.reg:1: not a .reg file"):
        regfile.load(tmp / "empty.reg")
    with pytest.raises(InputError, match="is a directory"):
        regfile.load(tmp)


def test_cli_refuses_dev_zero(tmp):
    """apply gives up on --reg-import /dev/zero at once: one line, exit 3, nothing written (the WIM is never
    opened: .reg files are read first)."""
    out = tmp / "o.vhdx"
    p = w2v("apply", tmp / "no.wim", out, "--size", "1G", "--layout", "native", "--no-boot",
            "--reg-import", "/dev/zero", check=False)
    assert p.returncode == 3, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "/dev/zero: not a regular file" in p.stderr, p.stderr
    assert not os.path.exists(out)


# -- time linear in the size ------------------------------------------------------------------------------------
def test_continued_hex_is_joined_in_linear_time():
    """8 MB of hex data continued over 480,000 lines.  Joining them by appending to one string copied the data
    so far on every line (over a minute of CPU for this input on the development machine, 4.6 s for a quarter
    of it); in one join it takes about a second.  No time is asserted: the child runs under a CPU cap of 30 s
    (as pytest-timeout would), which only the quadratic join exceeds, and the result is checked whole."""
    p = _child("""
        n = 480_000
        body = ("Windows Registry Editor Version 5.00\\r\\n\\r\\n[HKLM\\\\SOFTWARE\\\\X]\\r\\n\\"big\\"=hex:"
                + "41,42,43,44,\\\\\\r\\n  " * n + "00\\r\\n")
        rf = regfile.parse(body.encode(), "big.reg")
        assert rf.ops[1].data == b"ABCD" * n + b"\\0"
        print(len(body))
    """)
    assert p.returncode == 0, (p.returncode, p.stderr[-500:])
    assert int(p.stdout) > 8_000_000


def test_parsing_memory_is_bounded_by_the_file(tmp_path):
    """Issue 14: reading a .reg is bounded by its size, parsing included.  A 30 MiB UTF-16 export of
    300k values is parsed in a child process, whose peak RSS (ru_maxrss, less where it started) must stay
    under 5x the file: what the import holds (about 3x here) and one copy of the text.  The parser
    before this measured 7.2x (a copy of the bytes per slice, a list of every line)."""
    import codecs
    import subprocess
    import sys
    body = "".join(f'"value{i:07d}"="some string data number {i}"\r\n' for i in range(300_000))
    text = "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Big]\r\n" + body
    reg = tmp_path / "big.reg"
    reg.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    # VmHWM (this process's peak RSS; ru_maxrss would start at the parent's, kept across exec)
    probe = ("import sys\n"
             "from wim2vhd.registry import regedit\n"
             "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
             "start = hwm()\n"
             "ops = regedit.load(sys.argv[1]).ops\n"
             "print(len(ops), (hwm() - start) * 1024)\n")
    out = subprocess.run([sys.executable, "-c", probe, reg], capture_output=True, text=True, check=True).stdout
    n, grew = map(int, out.split())
    assert n == 300_001  # the key and every value
    assert grew < 5 * reg.stat().st_size, (grew >> 20, reg.stat().st_size >> 20)
