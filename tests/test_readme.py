"""The README's table of apply's options is complete: every option `apply --help` offers has a row (issue
12: "The README's tables show the new options"), so a new option cannot land undocumented."""
import re
from pathlib import Path

import typer.main

from wim2vhd.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"


def _apply_flags() -> set[str]:
    import wim2vhd.cli.image  # noqa: F401  (registers the command)
    group = typer.main.get_command(app)
    apply = group.commands["apply"]
    flags = set()
    for param in apply.params:
        if param.param_type_name == "option" and param.name != "help":
            flags.update(f for f in param.opts + param.secondary_opts if f.startswith("--"))
    return flags


def _table_rows() -> str:
    text = README.read_text()
    start = text.index("Every option of `apply`")
    end = text.index("\n\n", text.index("| --- |", start))
    return text[start:end]


def test_every_apply_option_has_a_readme_row():
    rows = _table_rows()
    first_cells = [ln.split("|")[1] for ln in rows.splitlines() if ln.startswith("| ")]
    documented = set(re.findall(r"--[a-z0-9-]+", " ".join(first_cells)))
    missing = sorted(_apply_flags() - documented)
    assert not missing, f"apply options without a row in README's table: {missing}"


def test_the_check_sees_options():
    """The flags come from the real command (a broken lookup would make the test above pass vacuously)."""
    flags = _apply_flags()
    assert {"--index", "--layout", "--recovery", "--no-expand-on-native-boot", "--json"} <= flags
