"""The CLI's own surface: usage mistakes are one line and exit 2, help is there for every command."""
import json

import pytest

from tests.support import W2V, w2v


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


def _on_a_terminal(argv, cwd):
    """Run wim2vhd with a pseudo-terminal as stdout and stderr; return what it drew, escapes removed."""
    import os
    import re
    import subprocess
    master, slave = os.openpty()
    p = subprocess.Popen([W2V, *map(str, argv)], stdout=slave, stderr=slave, stdin=subprocess.DEVNULL,
                         cwd=cwd, env={**os.environ, "COLUMNS": "100", "TERM": "xterm"})
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 65536)
        except OSError:
            break
        if not b:
            break
        chunks.append(b)
    os.close(master)
    assert p.wait(timeout=120) == 0
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", b"".join(chunks).decode(errors="replace"))


def test_progress_on_a_terminal_and_quiet_otherwise(fixture_wim, tmp):
    out = _on_a_terminal(["apply", fixture_wim, tmp / "t.vhdx", "--index", "1", "--size", "1G"], tmp)
    last = {}
    for line in out.replace("\r", "\n").splitlines():
        parts = line.split()
        if parts and parts[0] in ("create", "partition", "format", "apply", "boot", "finalize"):
            last[parts[0]] = line
    assert list(last) == ["create", "partition", "format", "apply", "boot", "finalize"]
    assert "KiB" in last["apply"] and "?" not in "".join(last.values())
    assert "applied image 1" in out
    p = w2v("apply", fixture_wim, tmp / "q.vhdx", "--index", "1", "--size", "1G")
    assert p.stderr == "" and "applied image 1" in p.stdout


def test_no_control_character_from_a_file_reaches_the_terminal(fixture_wim, tmp):
    """A WIM whose image name holds C1 control NEL and a bidi override (set by wimlib-imagex, not by
    us; XML admits no ESC): `info` and a failing `apply` show them as escapes; JSON keeps the name."""
    import shutil
    from tests.support import run
    wim = tmp / "evil.wim"
    shutil.copy(fixture_wim, wim)
    evil = "Win\x85\u202eevil"
    run("wimlib-imagex", "info", wim, "1", evil)
    p = w2v("info", wim)
    assert "\x85" not in p.stdout and "\u202e" not in p.stdout, p.stdout
    assert "Win\\x85\\u202eevil" in p.stdout, p.stdout
    p = w2v("apply", wim, tmp / "o.vhdx", "--index", "1", "--size", "300M", check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "\x85" not in p.stderr and "\u202e" not in p.stderr, p.stderr
    assert "\\u202e" in p.stderr, p.stderr  # the image's name is in the message, escaped
    assert evil in json.loads(w2v("info", wim, "--json").stdout)["images"][0]["name"]
