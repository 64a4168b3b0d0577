"""The options of apply, declared once: each one's type, default, command-line flag and checks.

The CLI builds an ApplyOptions from its flags and wim2vhd.api.apply_image takes one; the Python API
also takes the same options as keywords (ApplyOptions.from_keywords), by the names the CLI uses
without the dashes: size="64G", type="fixed", recovery="1G", block_size="2M", cache_size="32M".

The pipeline's stages take the few values they need from it, not the whole object.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

from wim2vhd.errors import InputError, UsageError
from wim2vhd.partition import LAYOUT_ALIASES, LAYOUTS, RECOVERY_LAYOUTS, layout_name
from wim2vhd.units import MiB, parse_size

DISK_TYPES = ("dynamic", "fixed")
# A language tag as Windows names its boot resource folders (en-US, de-DE, zh-TW, sr-Latn-RS).
LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}")
DEFAULT_LOCALE = "en-US"
BCD_DEVICES = ("locate", "partition")
SECTOR_SIZES = (512, 4096)
# Absorbs libntfs-3g's rewrites as well as a cache six times larger, at a fraction of the memory
# (docs/performance.md, "What the code does").
DEFAULT_CACHE = 32 * MiB
# Read-ahead decompression helpers at most (native/w2v_readahead.c).
MAX_THREADS = 8


def _opt(default: Any, flag: str, *, size: bool = False, keyword: str | None = None, path: bool = False) -> Any:
    """A field with its command-line flag; size: given as "64G" or bytes; keyword: its name in the
    Python API when that differs from the field's; path: names files (a recipe resolves them from its
    folder)."""
    return field(default=default, metadata={"flag": flag, "size": size, "keyword": keyword, "path": path})


@dataclass(frozen=True)
class Flag:
    """One option as its flag names it (ApplyOptions.flags)."""
    keyword: str      # its name in from_keywords
    field: str        # the ApplyOptions field
    flag: str         # "--no-boot"
    negated: bool     # the flag turns a True default off
    type: str         # the field's annotation, e.g. "str | None"
    size: bool        # "64G" or bytes
    path: bool        # names files


@dataclass
class ApplyOptions:
    """How apply builds each disk; the defaults are the CLI's."""

    index: str | int | None = _opt(None, "--index")       # a number, "1,3,6" or "all"
    name: str | None = _opt(None, "--name")
    refs: tuple[str, ...] = _opt((), "--ref", path=True)             # the other parts of a split WIM
    size: int | None = _opt(None, "--size", size=True)    # None: apply.default_size of the image
    disk_type: str = _opt("dynamic", "--type", keyword="type")
    disk_format: str | None = _opt(None, "--format", keyword="format")  # raw|vhd|vhdx|qcow2; None: OUT's extension
    layout: str = _opt("uefi", "--layout")
    mbr: bool = _opt(False, "--mbr")
    recovery_size: int = _opt(0, "--recovery", size=True, keyword="recovery")
    label: str = _opt("Windows", "--label")
    seed: str | None = _opt(None, "--seed")
    sector_size: int = _opt(512, "--sector-size")
    block_size: int | None = _opt(None, "--block-size", size=True)  # None: apply.APPLY_BLOCK_SIZE
    cache_size: int = _opt(DEFAULT_CACHE, "--cache-size", size=True)
    threads: int | None = _opt(None, "--threads")         # read-ahead helpers; None: by CPU count, 0: none
    locale: str | None = _opt(None, "--locale")           # None: the image's default language (apply.boot_locale)
    bcd_devices: str = _opt("locate", "--bcd-devices")
    bios_boot_code: str | None = _opt(None, "--bios-boot-code", path=True)
    debug: str | None = _opt(None, "--debug")             # serial[:PORT[:BAUD]], net:HOSTIP:PORT[:KEY], local
    boot: bool = _opt(True, "--no-boot")                  # the flag turns it off
    force: bool = _opt(False, "--force")
    sync: bool = _opt(True, "--no-sync")                  # False: page-cache writes, no fsync (wim2vhd.atomic)
    customize: Any = _opt(None, "--unattend, --merge, --reg-import, ...")  # a customize.Customizations
    # Native VHD boot in one command: the host's BCD store gets an entry for the disk once it is complete
    host_bcd: str | None = _opt(None, "--host-bcd", path=True)  # the host's store, e.g. the ESP's EFI/Microsoft/Boot/BCD
    vhd_path: str | None = _opt(None, "--vhd-path")       # where the disk will be on its host volume: \vhds\win.vhdx
    host_mbr: str | None = _opt(None, "--host-mbr")       # that volume as SIG:OFFSET; neither: bcdedit's [locate]
    host_gpt: str | None = _opt(None, "--host-gpt")       # or as DISK-GUID:PARTITION-GUID

    @classmethod
    def keywords(cls) -> dict[str, str]:
        """{keyword: field name} for every option."""
        return {f.metadata["keyword"] or f.name: f.name for f in dataclasses.fields(cls)}

    @classmethod
    def flags(cls) -> dict[str, "Flag"]:
        """Every option with one command-line flag, by that flag without its dashes ("-" as "_"), as a
        recipe names it: size, type, ref, no_boot, bios_boot_code, ..."""
        out = {}
        for f in dataclasses.fields(cls):
            flag = f.metadata["flag"]
            if "," in flag:  # several flags (the customizations): not one option
                continue
            negated = flag.startswith("--no-") and f.default is True
            out[flag[2:].replace("-", "_")] = Flag(f.metadata["keyword"] or f.name, f.name, flag, negated,
                                                   f.type, f.metadata["size"], f.metadata["path"])
        return out

    @classmethod
    def from_keywords(cls, **keywords: Any) -> "ApplyOptions":
        """Options from the Python API's (and recipes') keywords; sizes may be "64G" or bytes."""
        names = cls.keywords()
        unknown = sorted(set(keywords) - set(names))
        if unknown:
            raise UsageError(f"unknown apply option {unknown[0]!r}: the options are {', '.join(sorted(names))}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in keywords.items():
            f = fields[names[key]]
            if f.metadata["size"] and value is not None and not isinstance(value, int):
                value = parse_size(value, what=f.metadata["flag"].lstrip("-").replace("-", " "))
            if f.name == "refs":
                value = tuple(value or ())
            values[f.name] = value
        return cls(**values)

    def check(self) -> None:
        """Refuse a combination no disk can be made from, before anything is read or written."""
        if layout_name(self.layout) is None:
            names = ", ".join(LAYOUTS) + "".join(f" ({a} is {n})" for a, n in LAYOUT_ALIASES.items())
            raise UsageError(f"--layout must be one of {names}, not {self.layout!r}")
        self.layout = layout_name(self.layout)  # windowstogo is hybrid from here on
        if self.disk_format is not None:
            from wim2vhd.disk import named_format
            self.disk_format = named_format(self.disk_format).format_name  # any case
        if self.disk_type not in DISK_TYPES:
            raise UsageError(f"--type must be fixed or dynamic, not {self.disk_type!r}")
        if self.size is not None and self.size <= 0:
            # 0 is no size, not "the default": leave out --size for that.
            raise UsageError("--size must be more than 0 (leave it out for the default: 25 GiB or more, "
                             "by the image)")
        if self.mbr and self.layout != "native":
            raise UsageError("--mbr goes with --layout native (bios and hybrid are always MBR, uefi always GPT)")
        if self.recovery_size and self.layout not in RECOVERY_LAYOUTS:
            raise UsageError(f"--recovery goes with --layout {', '.join(RECOVERY_LAYOUTS[:-1])} or "
                             f"{RECOVERY_LAYOUTS[-1]}, not {self.layout!r}")
        if self.recovery_size and not self.boot:
            # WinRE is started from the store (recoverysequence): without one it would never run.
            raise UsageError("--recovery adds WinRE to the boot store: it cannot go with --no-boot")
        if self.bcd_devices not in BCD_DEVICES:
            raise UsageError(f"--bcd-devices must be one of {', '.join(BCD_DEVICES)}, not {self.bcd_devices!r}")
        if self.locale is not None and not LOCALE_RE.fullmatch(self.locale):
            raise UsageError(f"--locale must be a language tag such as en-US or de-DE, not {self.locale!r}")
        if self.sector_size not in SECTOR_SIZES:
            raise UsageError(f"--sector-size must be 512 or 4096, not {self.sector_size}")
        if self.threads is not None and not 0 <= self.threads <= MAX_THREADS:
            raise UsageError(f"--threads must be 0 to {MAX_THREADS}")
        if self.layout in ("bios", "hybrid") and self.sector_size != 512:
            raise UsageError(f"BIOS boot needs 512-byte sectors: --layout {self.layout} takes no "
                             f"--sector-size {self.sector_size}")
        if self.bios_boot_code is not None:
            if self.layout not in ("bios", "hybrid") or not self.boot:
                raise UsageError("--bios-boot-code goes with --layout bios or hybrid (and without --no-boot)")
            from wim2vhd.boot.biosboot import check_code_size
            try:  # checked before any work: the code itself is read by the boot stage
                size = os.stat(self.bios_boot_code).st_size
            except OSError as e:
                raise InputError(f"--bios-boot-code {self.bios_boot_code}: {e.strerror}") from None
            check_code_size(size)
        if self.debug is not None:
            self.debug_settings()
            if self.layout == "native" or not self.boot:
                raise UsageError("--debug is written to the disk's boot store: it cannot go with --layout native "
                                 "or --no-boot")
        if self.customize is not None:
            self.customize.validate()
        self._check_host_bcd()

    def debug_settings(self):
        """--debug, parsed (wim2vhd.boot.debug.Debug), or None."""
        if self.debug is None:
            return None
        from wim2vhd.boot import debug
        return debug.parse(self.debug)

    def host_device(self) -> Any:
        """The host volume of --host-mbr / --host-gpt as a boot.devices.Device (None: [locate])."""
        from wim2vhd.boot.edit import host_device
        return host_device(None, self.host_gpt, self.host_mbr)

    def _check_host_bcd(self) -> None:
        if self.host_bcd is None:
            if self.vhd_path is not None or self.host_mbr is not None or self.host_gpt is not None:
                raise UsageError("--vhd-path, --host-mbr and --host-gpt go with --host-bcd STORE")
            return
        if self.layout != "native":
            raise UsageError("--host-bcd adds a native VHD boot entry: it goes with --layout native")
        if self.vhd_path is None:
            raise UsageError("--host-bcd needs --vhd-path: where the disk will be on its host volume, "
                             "e.g. '\\vhds\\win.vhdx'")
        from wim2vhd.boot.edit import normalize_windows_path
        normalize_windows_path(self.vhd_path, "--vhd-path")
        self.host_device()
