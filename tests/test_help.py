"""--help of every command, and the messages of issue 12's "Help and messages": what a user reads."""
import os
import re

import pytest

from wim2vhd.options import ApplyOptions

from tests.support import leftovers, w2v

COMMANDS = [[], ["info"], ["apply"], ["capture"], ["verify"], ["bcd"], ["bcd", "create"], ["bcd", "show"],
            ["bcd", "add-vhd"], ["disk"], ["disk", "create"], ["disk", "diff"], ["disk", "info"],
            ["disk", "convert"], ["disk", "check"]]
WIDE = {**os.environ, "COLUMNS": "250", "TERM": "dumb"}  # one line per option: no wrapping to match across


def help_of(*cmd):
    p = w2v(*cmd, "--help", env=WIDE)
    return p.stdout


def option_line(text, flag):
    """The option's row of the help table, with the lines its help wraps onto joined."""
    lines = text.splitlines()
    at = next((i for i, ln in enumerate(lines) if re.search(rf"\s{re.escape(flag)}\s", ln)), None)
    assert at is not None, (flag, text)
    row = [lines[at]]
    for ln in lines[at + 1:]:
        if re.match(r"[│|]\s+(\*\s+)?-", ln) or not ln.startswith(("│", "|")):
            break
        row.append(ln)
    return " ".join(" ".join(ln.strip("│| ").split()) for ln in row)


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "wim2vhd")
def test_help_names_values_plainly(cmd):
    """Arguments by name (OUT, not {out}, which looks like the {index} template); no <str> or <int>."""
    text = help_of(*cmd)
    usage = next(ln for ln in text.splitlines() if "Usage:" in ln)
    assert "{" not in usage and "}" not in usage, usage
    assert "<str>" not in text and "<int>" not in text, text


def test_apply_help():
    text = help_of("apply")
    assert "Usage: wim2vhd apply [OPTIONS] IMAGE OUT" in text
    for flag in ("--size", "--block-size", "--cache-size", "--recovery"):
        assert " SIZE " in option_line(text, flag), flag
    layout = option_line(text, "--layout")
    assert "uefi|bios|hybrid|native" in layout
    for word in ("hybrid (or windowstogo)", "bcdboot /f ALL", "Default: uefi"):
        assert word in layout, layout
    assert "dynamic|fixed" in option_line(text, "--type")
    assert "locate|partition" in option_line(text, "--bcd-devices")
    assert "512|4096" in option_line(text, "--sector-size")
    assert "default 2M" in option_line(text, "--block-size")
    assert "Replace OUT if it exists" in option_line(text, "--force")


def test_force_names_what_it_replaces():
    assert "Replace CHILD if it exists" in option_line(help_of("disk", "diff"), "--force")
    assert "Replace STORE if it exists" in option_line(help_of("bcd", "create"), "--force")
    assert "Replace OUT if it exists" in option_line(help_of("disk", "create"), "--force")


def test_info_names_iso_and_block_size_defaults():
    assert "ISO" in help_of("info")
    for cmd in (["disk", "create"], ["disk", "convert"]):
        line = option_line(help_of(*cmd), "--block-size")
        assert "default 32M" in line and "VHD default 2M" in line, line


def test_recovery_says_what_it_puts_there():
    line = option_line(help_of("apply"), "--recovery")
    for word in ("SIZE", "WinRE partition", "Winre.wim", "boot.sdi", "recovery entry"):
        assert word in line, line


def test_apply_block_size_names_every_format():
    line = option_line(help_of("apply"), "--block-size")
    for word in ("default 2M", "qcow2", "default 64K", "raw disk has none"):
        assert word in line, line


FORMAT_COMMANDS = [["apply"], ["capture"], ["disk", "create"], ["disk", "diff"], ["disk", "info"],
                   ["disk", "convert"], ["disk", "check"], ["verify"]]


@pytest.mark.parametrize("cmd", FORMAT_COMMANDS, ids=" ".join)
def test_f_is_format_and_force_has_no_short_form(cmd):
    """Issue 12: -f/--format on every command that reads or writes a disk, as qemu-img's -f."""
    text = help_of(*cmd)
    line = option_line(text, "--format")
    assert " -f " in line and "raw|vhd|vhdx|qcow2" in line and "any case" in line, line
    if "--force" in text:
        force = option_line(text, "--force")
        assert " -f " not in force and "Replace" in force, force
    if cmd == ["disk", "convert"]:
        src = option_line(text, "--source-format")
        assert " -F " in src and "SRC" in src, src


# -- messages ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["disk", "create", "{out}", "--size", "1G"],
                                  ["apply", "{wim}", "{out}", "--index", "1"],
                                  ["disk", "convert", "{wim}", "{out}"]])
@pytest.mark.parametrize("name", ["d.qcow3", "d"])
def test_unknown_extension_lists_the_formats(fixture_wim, tmp_path, args, name):
    out = tmp_path / name
    args = [a.format(out=out, wim=fixture_wim) for a in args]
    p = w2v(*args, check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    for word in ("vhdx (.vhdx)", "vhd (.vhd)", "raw (.img, .raw, .bin)", repr(str(out))):
        assert word in p.stderr, p.stderr
    assert not out.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("flag,value", [("--bcd-devices", "gpt"), ("--layout", "gpt"), ("--type", "sparse")])
def test_bad_choices_echo_the_value(fixture_wim, tmp_path, flag, value):
    p = w2v("apply", fixture_wim, tmp_path / "o.vhdx", "--index", "1", flag, value, check=False)
    assert p.returncode == 2 and f"'{value}'" in p.stderr and flag in p.stderr, p.stderr


def test_choices_take_any_case():
    o = ApplyOptions(layout="UEFI")
    o.check()
    assert o.layout == "uefi"
    o = ApplyOptions(layout="WindowsToGo")
    o.check()
    assert o.layout == "hybrid"


def test_disk_info_prints_the_full_path(tmp_path):
    w2v("disk", "create", tmp_path / "d.vhdx", "--size", "1G")
    p = w2v("disk", "info", "d.vhdx", cwd=tmp_path)
    first = p.stdout.splitlines()[0]
    assert first.split(None, 1) == ["path", str(tmp_path / "d.vhdx")], first
