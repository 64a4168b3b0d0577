"""`wim2vhd disk ...`: create, diff, info, convert, check."""
from __future__ import annotations

import sys
from typing import Any, Optional

import typer

from wim2vhd import api
from wim2vhd.cli import app
from wim2vhd.cli._common import (ForceOpt, JsonOpt, Progress, SyncOpt, emit_json, force_opt, format_opt, safe,
                                  source_format_opt, sync_opt)
from wim2vhd.units import format_size

EXTENSIONS = ".vhdx, .vhd, .qcow2, .img/.raw/.bin"


def read_format_opt(arg: str):
    """-f/--format of a command that only reads ARG."""
    return format_opt(f"Read {arg} as this format (any case); a file of another format is refused (exit 3). "
                      "Default: found from its content.")


def write_format_opt(arg: str, extra: str = ""):
    """-f/--format of the disk a command writes."""
    return format_opt(f"{arg}'s format (any case){extra}; it wins over {arg}'s extension ({EXTENSIONS}), "
                      "which says it otherwise.", replaces=arg)


# The block sizes of dynamic disks when --block-size is left out (wim2vhd.disk.vhdx, .vhd and .qcow2).
BLOCK_DEFAULTS = ("VHDX 1M to 256M, default 32M (Hyper-V's); VHD default 2M; qcow2 the cluster size, 512 to 2M, "
                  "default 64K; a raw disk has none")

disk_app = typer.Typer(help="Create, inspect and convert virtual disks (raw, VHD, VHDX, qcow2).", no_args_is_help=True)
app.add_typer(disk_app, name="disk")


def _print_info(info: dict[str, Any], indent: str = "") -> None:
    rows = [
        ("path", info.get("path")),
        ("format", f"{info['format']} ({info['type']})"),
        ("virtual size", f"{format_size(info['virtual_size'])} ({info['virtual_size']} bytes)"),
        ("file size", f"{format_size(info['file_size'])}, {format_size(info['allocated_on_host'])} on the host"),
        ("allocated", format_size(info["allocated_bytes"])),
        ("block size", format_size(info["block_size"]) if info.get("block_size") else None),
        ("sector size", info.get("logical_sector_size")),
        ("disk id", info.get("disk_id") or info.get("unique_id")),
    ]
    for k, v in rows:
        if v is not None:
            print(safe(f"{indent}{k:<13} {v}"))
    parts = info.get("partitions")
    if parts:
        print(safe(f"{indent}{'partitions':<13} {parts.get('scheme', '').upper()} "
                   f"{parts.get('disk_guid') or parts.get('disk_signature') or ''}"))
        for p in parts.get("partitions", []):
            kind = p.get("type_name") or p.get("type_guid") or p.get("mbr_type")
            print(safe(f"{indent}  {p.get('number', ''):>2}  start {p['start']:>14}  size {format_size(p['size']):>10}  "
                       f"{kind}  {p.get('name') or ''}"))
    if info.get("parent"):
        print(safe(f"{indent}parent:"))
        _print_info(info["parent"], indent + "  ")


@disk_app.command("create")
def create(
    out: str = typer.Argument(..., help=f"The new disk, in the format -f names, else its extension's ({EXTENSIONS})."),
    size: str = typer.Option(..., "--size", "-s", help="Virtual size, e.g. 64G (K, M, G, T are binary)."),
    type: str = typer.Option("dynamic", "--type", "-t", help="fixed or dynamic."),
    block_size: Optional[str] = typer.Option(None, "--block-size", help=f"Block size of a dynamic disk: {BLOCK_DEFAULTS}."),
    sector_size: int = typer.Option(512, "--sector-size", help="Logical sector size: 512 or 4096 (4096: VHDX only)."),
    format: Optional[str] = write_format_opt("OUT"),
    force: bool = ForceOpt,
    sync: bool = SyncOpt,
    json: bool = JsonOpt,
) -> None:
    """Create an empty virtual disk."""
    info = api.disk_create(out, size, type=type, block_size=block_size, sector_size=sector_size, force=force,
                           sync=sync, format=format)
    emit_json(info) if json else _print_info(info)


@disk_app.command("diff")
def diff(
    parent: str = typer.Argument(..., help="The parent VHD or VHDX, or for a .qcow2 child a disk of any format (never modified)."),
    child: str = typer.Argument(..., help="The new differencing disk: the parent's format, or qcow2 (a backing file "
                                          "of any format), as -f names it, else CHILD's extension."),
    format: Optional[str] = write_format_opt("CHILD", ": the parent's (found from its content) or qcow2"),
    force: bool = force_opt("CHILD"),
    sync: bool = sync_opt("CHILD"),
    json: bool = JsonOpt,
) -> None:
    """Create a differencing child of a VHD or VHDX, or a qcow2 child of any disk."""
    info = api.disk_diff(parent, child, force=force, sync=sync, format=format)
    emit_json(info) if json else _print_info(info)


@disk_app.command("info")
def info(
    disk: str = typer.Argument(..., help="A raw, VHD, VHDX or qcow2 file."),
    format: Optional[str] = read_format_opt("DISK"),
    json: bool = JsonOpt,
) -> None:
    """Format, type, sizes, IDs, the parent chain and the partition table."""
    i = api.disk_info(disk, format=format)
    emit_json(i) if json else _print_info(i)


@disk_app.command("convert")
def convert(
    src: str = typer.Argument(..., help="Input disk (raw, VHD, VHDX or qcow2; a differencing chain is flattened)."),
    out: str = typer.Argument(..., help=f"Output disk, in the format -f names, else its extension's ({EXTENSIONS})."),
    type: str = typer.Option("dynamic", "--type", "-t", help="fixed or dynamic."),
    block_size: Optional[str] = typer.Option(None, "--block-size", help=f"Block size of a dynamic output: {BLOCK_DEFAULTS}."),
    format: Optional[str] = write_format_opt("OUT"),
    source_format: Optional[str] = source_format_opt("Read SRC as this format (any case); a file of another "
                                                     "format is refused (exit 3). Default: found from its content."),
    force: bool = ForceOpt,
    sync: bool = SyncOpt,
    json: bool = JsonOpt,
) -> None:
    """Convert between raw, VHD, VHDX and qcow2.  Copies only allocated, non-zero data.  -f names OUT's
    format and -F the source's (qemu-img convert's -O and -f)."""
    with Progress(enabled=None if not json else False) as prog:
        i = api.disk_convert(src, out, type=type, block_size=block_size, force=force, sync=sync,
                             format=format, source_format=source_format, progress=prog)
    if json:
        emit_json(i)
    else:
        _print_info(i)
        print(safe(f"converted {format_size(i['data_bytes_read'])} of data in {i['seconds']} s"))
    if i.get("note"):
        print(safe(f"wim2vhd: note: {i['note']}"), file=sys.stderr)


@disk_app.command("check")
def check(
    disk: str = typer.Argument(..., help="A VHD, VHDX or qcow2 file (its parents are checked too)."),
    format: Optional[str] = format_opt("Check DISK as this format (any case), as if its extension said it; a file "
                                       "whose content is another format's is refused (exit 3). Default: found from "
                                       "its content, else its extension."),
    repair: bool = typer.Option(False, "--repair", help="Rewrite a damaged redundant copy (VHD footer copy, "
                                "VHDX header or region table) from its sound twin, or lower a qcow2's leaked "
                                "refcounts, in the disk and its parents; refused when neither copy is sound."),
    json: bool = JsonOpt,
) -> None:
    """Check every structure of a disk and its parent chain: one line per problem; exit 0 sound, 3 damaged."""
    r = api.disk_check(disk, repair=repair, format=format)
    problems = r["problems"]
    if json:
        emit_json([p.to_dict() for p in problems])
    else:
        for p in problems:
            print(safe(p.line()))
        if r["sound"]:
            chain = f", a chain of {len(r['chain'])} disks" if len(r["chain"]) > 1 else ""
            print(safe(f"{disk}: sound ({r['format']} {r['type']}{chain})"))
    if not r["sound"]:
        left = sum(not p.repaired for p in problems)
        print(safe(f"wim2vhd: error: {disk} is damaged: {left} problem{'s' if left != 1 else ''}"
                   + ("" if repair or not any(p.fix for p in problems) else " (--repair can fix some)")),
              file=sys.stderr)
        raise typer.Exit(3)
