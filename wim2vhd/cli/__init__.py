"""The command line: a thin layer over wim2vhd.api.

Each command parses its options, calls the API, and prints the result, as
text on a terminal or as JSON with --json.  Errors are printed on one line
with the exit code of their class (see wim2vhd.errors).
"""
from __future__ import annotations

import os
import sys

import typer

from wim2vhd.errors import Interrupted, Wim2VhdError

app = typer.Typer(
    name="wim2vhd",
    help="Turn Windows images (WIM, ESD, split WIM) into bootable VHD and VHDX disks, on Linux, unprivileged.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# typer re-exports click's exceptions (from click, or from its own vendored copy).
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _register() -> None:
    # Each module adds its commands to `app`.
    from wim2vhd.cli import disk  # noqa: F401
    for name in ("image", "bcd"):
        try:
            __import__(f"wim2vhd.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"wim2vhd.cli.{name}":
                raise


def main(argv: list[str] | None = None) -> None:
    from wim2vhd.atomic import install_signal_handlers
    install_signal_handlers()
    _register()
    try:
        app(args=argv, prog_name="wim2vhd", standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("wim2vhd: interrupted", file=sys.stderr)
        sys.exit(Interrupted.exit_code)
    except _ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except Wim2VhdError as e:
        print(f"wim2vhd: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("wim2vhd: interrupted", file=sys.stderr)
        sys.exit(Interrupted.exit_code)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as e:  # a bug of ours: one line, and the traceback on request
        if os.environ.get("WIM2VHD_DEBUG"):
            raise
        print(f"wim2vhd: internal error: {type(e).__name__}: {e} (set WIM2VHD_DEBUG=1 for a traceback)",
              file=sys.stderr)
        sys.exit(6)
