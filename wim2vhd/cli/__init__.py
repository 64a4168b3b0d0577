"""The command line: a thin layer over wim2vhd.api.

Each command parses its options, calls the API, and prints the result, as
text on a terminal or as JSON with --json.  Errors are printed on one line
with the exit code of their class (see wim2vhd.errors).
"""
from __future__ import annotations

import os
import sys

import typer

from wim2vhd.cli._common import safe
from wim2vhd.errors import Interrupted, Wim2VhdError

app = typer.Typer(
    name="wim2vhd",
    help="Turn Windows images (WIM, ESD, split WIM, ISO) into bootable VHD and VHDX disks, on Linux, unprivileged.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# typer re-exports click's exceptions (from click, or from its own vendored copy).
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _register() -> None:
    # Each module adds its commands to `app`.
    from wim2vhd.cli import bcd, build, disk, image, verify  # noqa: F401 (each adds its commands)


def _print_version(as_json: bool) -> None:
    from wim2vhd import __version__
    if as_json:
        from wim2vhd import api
        from wim2vhd.cli._common import emit_json
        emit_json(api.version())
        return
    from wim2vhd import hooks
    print(f"wim2vhd {__version__}")
    for line in hooks.missing_lines():  # nothing when every hook is installed
        print(line)


@app.callback(invoke_without_command=True)
def _main(ctx: typer.Context,
          version: bool = typer.Option(False, "--version", help="Print the version and exit (with --json: the "
                                       "libraries and whether each native hook is installed)."),
          as_json: bool = typer.Option(False, "--json", help="With --version: print it as JSON.")) -> None:
    """Turn Windows images (WIM, ESD, split WIM, ISO) into bootable VHD and VHDX disks, on Linux, unprivileged."""
    if version:
        _print_version(as_json)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        ctx.fail("Missing command.")  # what click says without invoke_without_command


def main(argv: list[str] | None = None) -> None:
    from wim2vhd.atomic import install_signal_handlers
    install_signal_handlers()
    _register()
    try:
        # Without standalone mode Click returns an Exit's code instead of exiting, and turns
        # Ctrl-C (KeyboardInterrupt) into a returned 130: pass both on.
        rv = app(args=argv, prog_name="wim2vhd", standalone_mode=False)
        if isinstance(rv, int) and rv:
            if rv == Interrupted.exit_code:
                print("wim2vhd: interrupted", file=sys.stderr)
            sys.exit(rv)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("wim2vhd: interrupted", file=sys.stderr)
        sys.exit(Interrupted.exit_code)
    except _ClickException as e:
        # Click's own errors (a bad option value, a missing argument) in one line, like ours.
        ctx = getattr(e, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(safe(f"wim2vhd: error: {e.format_message().rstrip('.')}{where}"), file=sys.stderr)
        sys.exit(e.exit_code)
    except Wim2VhdError as e:
        print(safe(f"wim2vhd: error: {e}"), file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("wim2vhd: interrupted", file=sys.stderr)
        sys.exit(Interrupted.exit_code)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as e:  # a bug of ours: one line, and the traceback on request
        if os.environ.get("WIM2VHD_DEBUG"):
            raise
        print(safe(f"wim2vhd: internal error: {type(e).__name__}: {e} (set WIM2VHD_DEBUG=1 for a traceback)"),
              file=sys.stderr)
        sys.exit(6)
