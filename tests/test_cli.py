"""The CLI's own surface: usage mistakes are one line and exit 2, help is there for every command."""
import json

import pytest

from tests.conftest import w2v

COMMANDS = [["info"], ["apply"], ["capture"], ["disk", "create"], ["disk", "diff"], ["disk", "info"],
            ["disk", "convert"], ["bcd", "create"], ["bcd", "show"], ["bcd", "add-vhd"]]


@pytest.mark.parametrize("argv", [
    ["frob"],                                         # no such command
    ["apply"],                                        # a missing argument
    ["capture", "a.vhdx", "b.wim", "--partition", "abc"],  # a bad option value
    ["disk", "create", "x.vhdx", "--size", "1G", "--nope"],  # an unknown option
])
def test_usage_errors_are_one_line(argv, tmp):
    p = w2v(*argv, check=False, cwd=tmp)
    assert p.returncode == 2
    assert p.stderr.startswith("wim2vhd: error: ") and p.stderr.count("\n") == 1, p.stderr
    assert "--help" in p.stderr and "Traceback" not in p.stderr
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("argv", COMMANDS)
def test_every_command_has_help(argv):
    out = w2v(*argv, "--help").stdout
    assert "Usage" in out and len(out.splitlines()) > 5


def test_json_goes_to_stdout(tmp):
    res = json.loads(w2v("disk", "create", tmp / "a.vhdx", "--size", "1G", "--json").stdout)
    assert res["virtual_size"] == 1 << 30


def test_version():
    from wim2vhd import __version__
    assert w2v("--version").stdout.strip() == f"wim2vhd {__version__}"
