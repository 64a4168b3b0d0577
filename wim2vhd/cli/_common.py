"""What the command modules share: output as text or JSON."""
from __future__ import annotations

import json
import sys
import unicodedata
from typing import Any

import typer

from wim2vhd.disk import FORMAT_NAMES

JsonOpt = typer.Option(False, "--json", help="Print the result as JSON on stdout.")
def force_opt(what: str = "OUT") -> Any:
    """--force, naming the argument it replaces (OUT, CHILD, STORE).  No short form: -f is --format,
    as qemu-img's -f is (issue 12)."""
    return typer.Option(False, "--force", help=f"Replace {what} if it exists.")




def _format_value(flag: str, replaces: str | None) -> Any:
    """The callback of a format option: the name in lower case, or a one-line usage error.  -f was
    --force's short form: a value that is no format's name (a path, usually) says so."""
    def check(value: str | None) -> str | None:
        if value is None or value.strip().lower() in FORMAT_NAMES:
            return None if value is None else value.strip().lower()
        from wim2vhd.errors import UsageError
        names = ", ".join(FORMAT_NAMES)
        if replaces and flag.startswith("-f"):
            raise UsageError(f"-f {value!r} is no format: -f is --format now ({names}); "
                             f"use --force to replace {replaces}")
        raise UsageError(f"{flag} must be one of {names}, not {value!r}")
    return check


def format_opt(help: str, *, replaces: str | None = None) -> Any:
    """-f/--format FORMAT (raw, vhd, vhdx, qcow2, any case); replaces: the argument --force replaces,
    for the message a -f meant as --force gets."""
    return typer.Option(None, "--format", "-f", help=help, callback=_format_value("-f/--format", replaces))


def source_format_opt(help: str) -> Any:
    return typer.Option(None, "--source-format", "-F", help=help, callback=_format_value("-F/--source-format", None))


ForceOpt = force_opt()
def sync_opt(what: str = "OUT") -> Any:
    """--sync/--no-sync, naming the argument it writes."""
    return typer.Option(True, "--sync/--no-sync",
                        help=f"Wait until {what} is on the device before renaming it into place (the default).  "
                             f"--no-sync leaves the writing to the kernel: faster where memory is plentiful; "
                             f"{what} still appears whole or not at all, but a crash soon after may damage it.")


SyncOpt = sync_opt()

# Progress goes to stderr, and only on a terminal; results go to stdout with print() (no markup, no wrapping).
_console = None


def console():
    """The rich console on stderr, made when first needed (rich takes a while to import)."""
    global _console
    if _console is None:
        from rich.console import Console
        _console = Console(stderr=True, highlight=False)
    return _console


def safe(text: Any, *, lines: bool = False) -> str:
    """text with every control character shown as an escape (\\x1b, \\u202e...), so that no file's
    names or messages can drive the user's terminal; lines=True keeps the newlines between lines."""
    out = []
    for ch in str(text):
        if ch == "\n" and lines or ch == "\t" or unicodedata.category(ch)[0] != "C":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def is_tty() -> bool:
    return sys.stderr.isatty()


class Progress:
    """A rich progress display on a terminal; silent otherwise.  Call it as (stage, done, total).

    A stage that reports bytes shows a bar, bytes and speed; one that does not shows a pulsing
    bar while it runs.  When the next stage starts, the ones before it are shown finished."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = is_tty() if enabled is None else enabled
        self._p = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "Progress":
        if self.enabled:
            from rich.progress import (BarColumn, DownloadColumn, Progress as RP, ProgressColumn, TextColumn,
                                       TimeElapsedColumn, TransferSpeedColumn)
            from rich.text import Text

            class IfSized(ProgressColumn):
                """The wrapped column for stages that report bytes, nothing for the others."""

                def __init__(self, inner):
                    super().__init__()
                    self.inner = inner

                def render(self, task):
                    return self.inner.render(task) if task.fields.get("sized") else Text("")

            self._p = RP(TextColumn("{task.description:<10}"), BarColumn(),
                         IfSized(DownloadColumn(binary_units=True)), IfSized(TransferSpeedColumn()),
                         TimeElapsedColumn(), console=console(), transient=False)
            self._p.__enter__()
        return self

    def _finish(self, t: Any) -> None:
        task = next(x for x in self._p.tasks if x.id == t)
        if not task.finished:
            total = task.total if task.fields.get("sized") else 1
            self._p.update(t, total=total, completed=total)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self._p:
            return
        t = self._tasks.get(stage)
        if t is None:
            for other in self._tasks.values():
                self._finish(other)
            t = self._tasks[stage] = self._p.add_task(stage, total=None, sized=False)
        if total:
            self._p.update(t, completed=done, total=total, sized=True)

    def __exit__(self, *exc) -> None:
        if self._p:
            if exc[0] is None:
                for t in self._tasks.values():
                    self._finish(t)
            self._p.__exit__(*exc)
