"""`wim2vhd bcd ...`: create, show and edit Boot Configuration Data stores."""
from __future__ import annotations

from typing import Optional

import typer

from wim2vhd import api
from wim2vhd.cli import app
from wim2vhd.cli._common import JsonOpt, emit_json, force_opt, safe

# The BCD library is imported by the commands that use it, so that every other command starts
# without it (a third of the CLI's import time).

bcd_app = typer.Typer(help="Create, show and edit Windows BCD stores (no Windows needed).", no_args_is_help=True)
app.add_typer(bcd_app, name="bcd")

FirmwareHelp = "uefi (bootmgfw.efi, winload.efi) or bios (bootmgr, winload.exe)."


def _firmware(value: Optional[str]) -> Optional[str]:
    # checked by the store module, which names the choices
    return None if value is None else value.strip().lower()


@bcd_app.command("create")
def create(
    store: str = typer.Argument(..., help="The new store file (e.g. EFI/Microsoft/Boot/BCD)."),
    firmware: str = typer.Option("uefi", "--firmware", help=FirmwareHelp),
    locale: str = typer.Option("en-US", "--locale", help="Locale of the boot menus."),
    force: bool = force_opt("STORE"),
    json: bool = JsonOpt,
) -> None:
    """Make a new system store: {bootmgr}, {memdiag} and the settings objects bcdboot writes."""
    info = api.bcd_create(store, firmware=_firmware(firmware), force=force, locale=locale)
    if json:
        emit_json(info)
    else:
        print(safe(f"created {info['store']} ({info['firmware']}, {len(info['objects'])} objects)"))


@bcd_app.command("show")
def show(
    store: str = typer.Argument(..., help="A BCD store (never modified)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show GUIDs instead of names like {bootmgr} (bcdedit /v)."),
    json: bool = JsonOpt,
) -> None:
    """Every object and element, like `bcdedit /enum all`; unknown values as hex."""
    info = api.bcd_show(store, verbose=verbose)
    if json:
        emit_json({k: v for k, v in info.items() if k != "text"})
    else:
        print(safe(info["text"], lines=True), end="")


@bcd_app.command("add-vhd")
def add_vhd(
    store: str = typer.Argument(..., help="The BCD store to add to (replaced atomically; the old one is kept as STORE.bak)."),
    vhd_path: str = typer.Option(..., "--vhd-path", help="The VHD/VHDX on its host volume, e.g. '\\vhds\\win.vhdx'."),
    host: Optional[str] = typer.Option(None, "--host", help="locate (search every volume for the file; the default) or boot."),
    host_gpt: Optional[str] = typer.Option(None, "--host-gpt", help="The host volume as DISKGUID:PARTGUID (a GPT partition)."),
    host_mbr: Optional[str] = typer.Option(None, "--host-mbr", help="The host volume as SIG:OFFSET (MBR disk signature, partition offset in bytes; 0x-hex or decimal)."),
    description: str = typer.Option("Windows", "--description", help="The boot menu entry's name."),
    default: bool = typer.Option(False, "--default", help="Make the new entry {bootmgr}'s default."),
    firmware: Optional[str] = typer.Option(None, "--firmware", help=FirmwareHelp + " Default: what the store is for."),
    locale: str = typer.Option("en-US", "--locale", help="Locale of the new entry."),
    json: bool = JsonOpt,
) -> None:
    """Add a Windows Boot Loader (+ resume) that boots from a VHD/VHDX; prints its GUID."""
    from wim2vhd.boot.edit import host_device
    h = host_device(host, host_gpt, host_mbr)
    info = api.bcd_add_vhd(store, vhd_path, host=h, description=description, default=default,
                           firmware=_firmware(firmware), locale=locale)
    if json:
        emit_json(info)
    else:
        print(safe(info["id"]))
