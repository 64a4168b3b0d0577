"""`wim2vhd verify DISK`: a gate for build pipelines (see wim2vhd.verify)."""
from __future__ import annotations

import sys

import typer

from wim2vhd import api
from wim2vhd.cli import app
from typing import Optional

from wim2vhd.cli._common import JsonOpt, emit_json, format_opt, safe
from wim2vhd.errors import CorruptInput


@app.command("verify")
def verify(
    disk: str = typer.Argument(..., help="A raw, VHD or VHDX disk (a differencing child too), as apply makes them."),
    format: Optional[str] = format_opt("Read DISK as this format (any case); a file of another format is refused "
                                       "(exit 3). Default: found from its content."),
    json: bool = JsonOpt,
) -> None:
    """Check that a disk is bootable as far as can be known without Windows: partition table, file
    systems, BCD store, the files it names, the fallback loader, hives.  Exit 0 when sound; 3, with
    one line per problem, when not."""
    res = api.verify(disk, format=format)
    if json:
        emit_json(res)
    else:
        for w in res["warnings"]:
            print(safe(f"{disk}: warning: {w}"), file=sys.stderr)
        for p in res["problems"]:
            print(safe(f"{disk}: {p}"))
        if res["sound"]:
            n = sum(c["result"] == "ok" for c in res["checks"])
            what = ", ".join(x for x in (res["layout"] and f"{res['layout']} layout", res["architecture"]) if x)
            print(safe(f"{disk}: sound ({n} checks passed; {what})"))
    if not res["sound"]:
        raise typer.Exit(CorruptInput.exit_code)
