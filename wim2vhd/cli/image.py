"""`wim2vhd apply`, `wim2vhd info` and `wim2vhd capture`."""
from __future__ import annotations

from typing import List, Optional

import typer

from wim2vhd import api
from wim2vhd.cli import app
from wim2vhd.cli._common import ForceOpt, JsonOpt, Progress, SyncOpt, emit_json, format_opt, safe
from wim2vhd.options import ApplyOptions
from wim2vhd.units import format_size

D = ApplyOptions()  # the defaults, declared once (wim2vhd.options)

RefOpt = typer.Option(None, "--ref", help="Other parts of a split WIM (a glob such as 'install*.swm'); repeatable.")


@app.command("info")
def info(
    image: str = typer.Argument(..., help="A WIM, ESD, split WIM (first part) or Windows ISO (its "
                                          "\\sources\\install.wim or install.esd)."),
    ref: Optional[List[str]] = RefOpt,
    json: bool = JsonOpt,
) -> None:
    """List the images in a WIM, ESD or ISO with their names, editions, architectures and sizes."""
    res = api.image_info(image, refs=tuple(ref or ()))
    if json:
        emit_json(res)
        return
    print(safe(f"{res['path']}: {len(res['images'])} image(s), {res['compression']} compression")
          + (f", {res['parts']} parts" if res["parts"] > 1 else ""))
    for i in res["images"]:
        print(safe(f"  {i['index']:>2}  {i['name']}"))
        extra = [x for x in (i.get("edition"), i.get("architecture"), i.get("version") and f"build {i['version']}") if x]
        counts = f"{i['files']} files, {i['directories']} directories"
        print(safe("      " + ", ".join(extra + [format_size(i["total_bytes"]), counts])))


@app.command("apply")
def apply_cmd(
    image: str = typer.Argument(..., help="A WIM, ESD, split WIM (first part) or Windows ISO."),
    out: str = typer.Argument(..., help="The disk to write, in the format -f names, else its extension's: .vhdx, "
                                        ".vhd, .qcow2, or .img/.raw/.bin (raw)."),
    index: Optional[str] = typer.Option(None, "--index", "-i",
                                        help="Image number (see `wim2vhd info`); several as 1,3,6 or all, one disk each: "
                                             "then OUT must hold {index} or {name}, e.g. 'win-{index}.vhdx'."),
    name: Optional[str] = typer.Option(None, "--name", "-n",
                                       help="Image name, instead of --index, as Convert-WindowsImage's -Edition: "
                                            "any case, and a unique part of a name or display name is enough "
                                            "('pro', 'enterprise n')."),
    ref: Optional[List[str]] = RefOpt,
    size: Optional[str] = typer.Option(None, "--size", "-s",
                                       help="Virtual disk size, e.g. 64G. Default: 25G, or 1.5x the image plus 4G if larger."),
    type: Optional[str] = typer.Option(None, "--type", "-t", help=f"fixed or dynamic (default {D.disk_type})."),
    layout: Optional[str] = typer.Option(None, "--layout", "-l",
                                         help="uefi: GPT with ESP, MSR, Windows. bios: MBR, one active NTFS partition. "
                                              "hybrid (or windowstogo): MBR with an active FAT32 system partition "
                                              "holding the UEFI and the BIOS boot files (bcdboot /f ALL), then NTFS: "
                                              "boots on either firmware. native: one NTFS partition for native VHD "
                                              f"boot. Any case. Default: {D.layout}."),
    mbr: bool = typer.Option(False, "--mbr", help="With --layout native: MBR instead of GPT."),
    recovery: Optional[str] = typer.Option(None, "--recovery", metavar="SIZE",
                                           help="With --layout uefi, bios or hybrid: a WinRE partition of this size after "
                                                "Windows, holding the image's Winre.wim (moved there, as Setup "
                                                "does) with boot.sdi, started from the boot menu's recovery entry."),
    label: Optional[str] = typer.Option(None, "--label", help=f"NTFS volume label (default {D.label})."),
    seed: Optional[str] = typer.Option(None, "--seed", help="Reproducible builds: derive every GUID, signature and serial from this and the image, and pin every "
                                          "time stamp the run makes to SOURCE_DATE_EPOCH or else the image's time: the same "
                                          "image, options and seed give the same bytes."),
    sector_size: Optional[int] = typer.Option(None, "--sector-size",
                                              help="Logical sector size: 512, or 4096 for VHDX and raw with --layout "
                                                   f"uefi or native; default {D.sector_size}."),
    block_size: Optional[str] = typer.Option(None, "--block-size", help="Block size of a dynamic VHD or VHDX "
                                             "(default 2M for both; VHDX takes 1M to 256M); qcow2: the cluster "
                                             "size, default 64K; a raw disk has none."),
    cache_size: Optional[str] = typer.Option(None, "--cache-size",
                                             help=f"Write-back cache of the disk layer (default {format_size(D.cache_size)})."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Helper threads that decompress the image ahead of "
                                          "wimlib (0: none). Default: one per CPU beyond the first, at most 4."),
    locale: Optional[str] = typer.Option(None, "--locale", help="Boot manager locale, e.g. de-DE. Default: the image's default language "
                                               "(en-US if it names none)."),
    bcd_devices: Optional[str] = typer.Option(None, "--bcd-devices",
                                              help="locate: BCD devices found at boot (survive new disk IDs, "
                                                   "differencing). partition: fully qualified partition devices. "
                                                   f"Default: {D.bcd_devices}."),
    bios_boot_code: Optional[str] = typer.Option(None, "--bios-boot-code", help="bios and hybrid layouts: your own MBR boot code (up to 440 bytes, or a whole 512-byte MBR) instead of GRUB's, which chain-loads \\bootmgr from the active partition."),
    debug: Optional[str] = typer.Option(None, "--debug", metavar="TYPE",
                                        help="Turn on the kernel debugger (Convert-WindowsImage's -EnableDebugger): "
                                             "serial[:PORT[:BAUD]] (COM1, 115200 by default), net:HOSTIP:PORT[:KEY] "
                                             "(a key is made and printed when not given), or local."),
    no_boot: bool = typer.Option(False, "--no-boot", help="Skip the boot stage (no boot files, BCD or boot code)."),
    unattend: Optional[str] = typer.Option(None, "--unattend", help="Answer file, written as \\Windows\\Panther\\unattend.xml."),
    merge: Optional[List[str]] = typer.Option(None, "--merge", help="Copy this folder's contents into the volume root "
                                              "(e.g. Setup\\Scripts\\SetupComplete.cmd); repeatable, later ones win."),
    reg_import: Optional[List[str]] = typer.Option(None, "--reg-import",
                                                   help="Import a regedit .reg file into the image's hives (HKLM\\SYSTEM, "
                                                        "HKLM\\SOFTWARE, HKU\\.DEFAULT, HKCR; HKCU goes to the default user "
                                                        "profile, Users\\Default\\NTUSER.DAT); repeatable."),
    enable_rdp: bool = typer.Option(False, "--enable-rdp", help="Allow Remote Desktop connections (fDenyTSConnections=0; "
                                    "firewall rules unchanged)."),
    no_expand_on_native_boot: bool = typer.Option(False, "--no-expand-on-native-boot",
                                                  help="Booted natively, Windows does not expand a dynamic disk to "
                                                       "its full size (Convert-WindowsImage's "
                                                       "-ExpandOnNativeBoot:$false; FsDepends VirtualDiskExpandOnMount=4)."),
    driver: Optional[List[str]] = typer.Option(None, "--driver",
                                               help="Stage a folder of drivers (INF files) for Windows to install at first "
                                                    "boot: copied to \\Windows\\wim2vhd\\Drivers\\<n>-<name> and added "
                                                    "to DevicePath. Staging, not DISM's offline install: a boot-critical "
                                                    "storage driver is not found in time. Repeatable."),
    host_bcd: Optional[str] = typer.Option(None, "--host-bcd",
                                           help="Native VHD boot in one command: add the disk's boot entry to this host "
                                                "BCD store (e.g. the ESP's EFI/Microsoft/Boot/BCD), as `bcd add-vhd` "
                                                "does (replaced atomically, the old one kept as STORE.bak). With "
                                                "--layout native and --vhd-path. The store is checked before the disk "
                                                "is made and changed only once the disk is complete; should that edit "
                                                "fail, the disk stays and the error says so (exit 4)."),
    vhd_path: Optional[str] = typer.Option(None, "--vhd-path", help="With --host-bcd: where the disk will be on its "
                                           "host volume, e.g. '\\vhds\\win.vhdx'."),
    host_mbr: Optional[str] = typer.Option(None, "--host-mbr", help="With --host-bcd: the host volume as SIG:OFFSET "
                                           "(MBR disk signature, partition offset in bytes). Default: searched at "
                                           "boot (bcdedit's locate)."),
    host_gpt: Optional[str] = typer.Option(None, "--host-gpt", help="With --host-bcd: the host volume as "
                                           "DISKGUID:PARTGUID (a GPT partition)."),
    format: Optional[str] = format_opt("OUT's format (any case); it wins over OUT's extension, which says it "
                                       "otherwise.", replaces="OUT"),
    force: bool = ForceOpt,
    sync: bool = SyncOpt,
    json: bool = JsonOpt,
) -> None:
    """Apply a Windows image to a new bootable virtual disk.

    The stages: create, partition, format, apply, boot, finalize.  The disk is written
    under a temporary name beside OUT and renamed only when complete.
    """
    custom = None
    if unattend or merge or reg_import or enable_rdp or driver or no_expand_on_native_boot:  # (a slow import)
        from wim2vhd.pipeline import customize
        custom = customize.from_options(unattend=unattend, merge=merge, reg_import=reg_import,
                                        enable_rdp=enable_rdp, drivers=driver,
                                        expand_on_native_boot=not no_expand_on_native_boot)
    given = dict(index=index, name=name, refs=tuple(ref or ()), size=size, type=type, layout=layout, mbr=mbr,
                 recovery=recovery, label=label, seed=seed, sector_size=sector_size, block_size=block_size,
                 cache_size=cache_size, locale=locale, bcd_devices=bcd_devices, bios_boot_code=bios_boot_code,
                 debug=debug, boot=not no_boot, force=force, customize=custom, threads=threads, sync=sync,
                 host_bcd=host_bcd, vhd_path=vhd_path, host_mbr=host_mbr, host_gpt=host_gpt, format=format)
    # An option left out takes ApplyOptions' default (None here means "not given").
    options = ApplyOptions.from_keywords(**{k: v for k, v in given.items() if v is not None})
    with Progress(enabled=None if not json else False) as prog:
        res = api.apply_image(image, out, options, progress=prog)
    if json:
        emit_json(res)
        return
    for r in res if isinstance(res, list) else [res]:
        _print_applied(r)


def _print_applied(res) -> None:
    d = res["disk"]
    print(safe(f"applied image {res['image']['index']} ({res['image']['name']}) to {res['output']}"))
    print(safe(f"  {d['format']} {d['type']}, {format_size(d['virtual_size'])} virtual, "
               f"{format_size(d['file_size'])} file, layout {res['layout'].get('layout')}"))
    boot = res.get("boot") or {}
    if boot.get("winre"):
        print(safe(f"  WinRE: {boot['winre']['winre']} on the recovery partition, loader {boot['winre']['loader']}"))
    if boot.get("debug"):
        print(safe(f"  kernel debugger: {boot['debug']['text']}"))
    print(safe("  " + ", ".join(f"{k} {v:.2f}s" for k, v in res["stages"].items()) + f"; total {res['seconds']:.2f}s"))
    if res.get("host_bcd"):
        h = res["host_bcd"]
        print(safe(f"  boot entry {h['id']} ({h['device']}) added to {h['store']}; the old store is {h['backup']}"))
    read = res["image"].get("install_image_read")
    if read and read != "in place":  # an ISO that could not be read in place says so
        print(safe(f"  {res['image']['install_image']} of the ISO was {read}"))


@app.command("capture")
def capture_cmd(
    disk: str = typer.Argument(..., help="A VHD, VHDX, qcow2 (differencing too) or raw disk holding Windows."),
    format: Optional[str] = format_opt("Read DISK as this format (any case); a file of another format is refused "
                                       "(exit 3). Default: found from its content.", replaces="OUT"),
    out: str = typer.Argument(..., help="The WIM to write."),
    partition: Optional[int] = typer.Option(None, "--partition", "-p",
                                            help="Partition number. Default: the NTFS partition that holds \\Windows."),
    name: Optional[str] = typer.Option(None, "--name", help="Image name. Default: the product name found in the "
                                                            "image's registry (e.g. 'Windows 10 Enterprise'), "
                                                            "made unique in OUT."),
    description: Optional[str] = typer.Option(None, "--description", help="Image description."),
    compress: Optional[str] = typer.Option(None, "--compress",
                                           help="lzx (default), xpress, lzms (solid, like ESD; the default for "
                                                "*.esd) or none. With --append, OUT's own compression is used."),
    append: bool = typer.Option(False, "--append", help="Add the image to the existing WIM or ESD OUT (not to a "
                                                        "split WIM)."),
    force: bool = ForceOpt,
    sync: bool = SyncOpt,
    json: bool = JsonOpt,
) -> None:
    """Capture a disk's Windows volume into a WIM, keeping every Windows attribute (unprivileged)."""
    with Progress(enabled=None if not json else False) as prog:
        res = api.capture(disk, out, partition=partition, name=name, description=description,
                          compress=compress, append=append, force=force, sync=sync, format=format,
                          progress=prog)
    if json:
        emit_json(res)
    else:
        i = res["image"]
        print(safe(f"captured partition {res['partition']} of {res['source']} as image {i['index']} "
                   f"({i['name']}) of {res['output']}: {i['files']} files, {format_size(i['total_bytes'])}, "
                   f"{res['seconds']:.2f}s"))
