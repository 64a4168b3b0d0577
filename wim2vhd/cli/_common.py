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


class Progress:
    """A rich progress display on a terminal; silent otherwise.  Call it as (stage, done, total)."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = is_tty() if enabled is None else enabled
        self._p = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "Progress":
        if self.enabled:
            from rich.progress import (BarColumn, DownloadColumn, Progress as RP, TextColumn,
                                       TimeElapsedColumn, TransferSpeedColumn)
            self._p = RP(TextColumn("{task.description:<10}"), BarColumn(), DownloadColumn(binary_units=True),
                         TransferSpeedColumn(), TimeElapsedColumn(), console=console, transient=False)
            self._p.__enter__()
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self._p:
            return
        t = self._tasks.get(stage)
        if t is None:
            t = self._tasks[stage] = self._p.add_task(stage, total=total or None)
        self._p.update(t, completed=done, total=total or None)

    def __exit__(self, *exc) -> None:
        if self._p:
            self._p.__exit__(*exc)
