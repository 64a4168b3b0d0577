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
    _name_values(app)


def _metavars() -> dict[str, str]:
    """What --help shows for the value of an option, by its flag: SIZE for sizes, the choices where
    there are few (from wim2vhd.options, which checks them)."""
    from wim2vhd.cli._common import FORMAT_NAMES
    from wim2vhd.options import BCD_DEVICES, DISK_TYPES, SECTOR_SIZES
    from wim2vhd.partition import LAYOUTS
    names = {"--size": "SIZE", "--block-size": "SIZE", "--cache-size": "SIZE", "--recovery": "SIZE",
             "--type": "|".join(DISK_TYPES), "--layout": "|".join(LAYOUTS), "--bcd-devices": "|".join(BCD_DEVICES),
             "--sector-size": "|".join(map(str, SECTOR_SIZES)), "--firmware": "uefi|bios",
             "--index": "N|LIST|all", "--threads": "N", "--partition": "N", "--ref": "GLOB",
             "--bios-boot-code": "FILE", "--unattend": "FILE", "--reg-import": "FILE", "--merge": "DIR",
             "--driver": "DIR", "--format": "|".join(FORMAT_NAMES), "--source-format": "|".join(FORMAT_NAMES), "--locale": "LOCALE", "--vhd-path": "PATH", "--compress": "lzx|xpress|lzms|none"}
    return names


def _command_class() -> type:
    """Commands whose usage line names the arguments as the help does (IMAGE OUT): typer 0.27 writes a
    required argument as {IMAGE}, which looks like apply's {index} template."""
    from typer.core import TyperCommand

    class Command(TyperCommand):
        def collect_usage_pieces(self, ctx):
            return [p[1:-1] if p.startswith("{") and p.endswith("}") else p
                    for p in super().collect_usage_pieces(ctx)]
    return Command


def _plain_text():
    """A string type that shows no `<str>` beside an argument's name in --help (typer shows the type's
    metavar there, or `<str>` when it has none; an empty one shows nothing)."""
    from typer.main import get_click_type
    from typer.models import ArgumentInfo
    base = type(get_click_type(annotation=str, parameter_info=ArgumentInfo()))

    class PlainText(base):
        def get_metavar(self, param, ctx=None):
            return ""
    return PlainText()


def _name_values(typer_app: typer.Typer) -> None:
    """Give every argument and valued option a metavar (typer's own are `{out}` and `<str>`, which look
    like the {index} template and say nothing): arguments by their name (OUT), options by _metavars,
    else TEXT or N by type.  An option that names its own metavar keeps it."""
    import inspect
    from typer.core import TyperCommand
    from typer.models import ArgumentInfo, OptionInfo
    names, command, text = _metavars(), _command_class(), _plain_text()
    groups = [typer_app]
    while groups:
        t = groups.pop()
        groups += [g.typer_instance for g in t.registered_groups if g.typer_instance is not None]
        for cmd in t.registered_commands:
            if cmd.cls is None or cmd.cls is TyperCommand:
                cmd.cls = command
            for pname, prm in inspect.signature(cmd.callback).parameters.items():
                info = prm.default
                if not isinstance(info, (ArgumentInfo, OptionInfo)) or info.metavar is not None:
                    continue
                if isinstance(info, ArgumentInfo):
                    info.metavar = pname.upper()
                    if prm.annotation in (str, "str") and info.click_type is None and info.parser is None:
                        info.click_type = text
                    continue
                if prm.annotation in (bool, "bool"):
                    continue
                flag = next((d for d in info.param_decls if d.startswith("--")), None)
                is_int = "int" in str(prm.annotation)
                info.metavar = names.get(flag, "N" if is_int else "TEXT")


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


def _short_force_hint(ctx) -> str:
    """What a -f meant as --force (its short form until issue 12 gave -f to --format) is told."""
    import re
    if ctx is None:  # (click's parser names no command when -f ends the line)
        from wim2vhd.cli._common import FORMAT_NAMES
        return f"; -f is --format now ({', '.join(FORMAT_NAMES)}); --force has no short form"
    params = {o: p for p in ctx.command.params for o in p.opts}
    force = params.get("--force")
    if force is None:
        return ""
    m = re.match(r"Replace (\w+)", force.help or "")
    what = m.group(1) if m else "the output"
    from wim2vhd.cli._common import FORMAT_NAMES
    now = f"-f is --format now ({', '.join(FORMAT_NAMES)})" if "--format" in params else "--force has no short form"
    return f"; {now}; use --force to replace {what}"


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
        hint = _short_force_hint(ctx) if getattr(e, "option_name", None) == "-f" else ""
        print(safe(f"wim2vhd: error: {e.format_message().rstrip('.')}{hint}{where}"), file=sys.stderr)
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
