"""`wim2vhd disk ...`: create, diff, info, convert, check."""
from __future__ import annotations

import sys
from typing import Any, Optional

import typer

from wim2vhd import api
from wim2vhd.cli import app
from wim2vhd.cli._common import ForceOpt, JsonOpt, Progress, SyncOpt, emit_json, force_opt, safe, sync_opt
from wim2vhd.units import format_size

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
    out: str = typer.Argument(..., help="The new disk; its format comes from the extension (.vhdx, .vhd, .qcow2, .img/.raw/.bin)."),
    size: str = typer.Option(..., "--size", "-s", help="Virtual size, e.g. 64G (K, M, G, T are binary)."),
    type: str = typer.Option("dynamic", "--type", "-t", help="fixed or dynamic."),
    block_size: Optional[str] = typer.Option(None, "--block-size", help=f"Block size of a dynamic disk: {BLOCK_DEFAULTS}."),
    sector_size: int = typer.Option(512, "--sector-size", help="Logical sector size: 512 or 4096 (4096: VHDX only)."),
    force: bool = ForceOpt,
    sync: bool = SyncOpt,
    json: bool = JsonOpt,
) -> None:
    """Create an empty virtual disk."""
    info = api.disk_create(out, size, type=type, block_size=block_size, sector_size=sector_size, force=force,
                           sync=sync)
    emit_json(info) if json else _print_info(info)


@disk_app.command("diff")
def diff(
    parent: str = typer.Argument(..., help="The parent VHD or VHDX, or for a .qcow2 child a disk of any format (never modified)."),
    child: str = typer.Argument(..., help="The new differencing disk: the parent's format, or .qcow2 (a backing file of any format)."),
    force: bool = force_opt("CHILD"),
    sync: bool = sync_opt("CHILD"),
    json: bool = JsonOpt,
) -> None:
    """Create a differencing child of a VHD or VHDX, or a qcow2 child of any disk."""
    info = api.disk_diff(parent, child, force=force, sync=sync)
    emit_json(info) if json else _print_info(info)


@disk_app.command("info")
def info(
    disk: str = typer.Argument(..., help="A raw, VHD, VHDX or qcow2 file."),
    json: bool = JsonOpt,
) -> None:
    """Format, type, sizes, IDs, the parent chain and the partition table."""
    i = api.disk_info(disk)
    emit_json(i) if json else _print_info(i)


@disk_app.command("convert")
def convert(
    src: str = typer.Argument(..., help="Input disk (raw, VHD, VHDX or qcow2; a differencing chain is flattened)."),
    out: str = typer.Argument(..., help="Output disk; its format comes from the extension (.vhdx, .vhd, .qcow2, .img/.raw/.bin)."),
    type: str = typer.Option("dynamic", "--type", "-t", help="fixed or dynamic."),
    block_size: Optional[str] = typer.Option(None, "--block-size", help=f"Block size of a dynamic output: {BLOCK_DEFAULTS}."),
    force: bool = ForceOpt,
    sync: bool = SyncOpt,
    json: bool = JsonOpt,
) -> None:
    """Convert between raw, VHD, VHDX and qcow2.  Copies only allocated, non-zero data."""
    with Progress(enabled=None if not json else False) as prog:
        i = api.disk_convert(src, out, type=type, block_size=block_size, force=force, sync=sync,
                             progress=prog)
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
    repair: bool = typer.Option(False, "--repair", help="Rewrite a damaged redundant copy (VHD footer copy, "
                                "VHDX header or region table) from its sound twin, or lower a qcow2's leaked "
                                "refcounts, in the disk and its parents; refused when neither copy is sound."),
    json: bool = JsonOpt,
) -> None:
    """Check every structure of a disk and its parent chain: one line per problem; exit 0 sound, 3 damaged."""
    from wim2vhd.disk.check import check as run_check
    r = run_check(disk, repair=repair)
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
