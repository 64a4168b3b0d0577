"""What the command modules share: output as text or JSON."""
from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console

JsonOpt = typer.Option(False, "--json", help="Print the result as JSON on stdout.")
ForceOpt = typer.Option(False, "--force", "-f", help="Replace OUT if it exists.")

console = Console(stderr=True, highlight=False)


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def is_tty() -> bool:
    return sys.stderr.isatty()
