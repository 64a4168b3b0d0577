"""No help text holds what rich would take for markup: `--help` once printed "searched at boot ()" for
"searched at boot ([locate])", rich having swallowed `[locate]` as a style tag."""
import re

import typer.main

from wim2vhd.cli import app

# rich's tag syntax: '[' then a letter, '/', '#' or '@', up to ']' (e.g. [bold], [/], [locate]).
TAG = re.compile(r"(?<!\\)\[[A-Za-z/#@][^\[\]]*\]")


def _commands(cmd, path=()):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, path + (name,))


def test_no_help_text_looks_like_rich_markup():
    from wim2vhd.cli import bcd, build, disk, image, verify  # noqa: F401  (every command registered)
    root = typer.main.get_command(app)
    found = []
    for path, cmd in _commands(root):
        texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
        found += [(" ".join(path), m) for t in texts for m in TAG.findall(t)]
    assert not found, found
    assert len(list(_commands(root))) > 10  # the walk saw the commands
