"""Customizations made while an image is applied: answer file, merged folders, registry imports, Remote
Desktop, staged drivers.  No mount and no second pass: the apply pipeline calls two hooks.

    c = Customizations(unattend="unattend.xml", merge=("overlay",), reg_import=("tweaks.reg",),
                       enable_rdp=True, drivers=("virtio/viostor",))
    c.validate()                     # every input checked; nothing read from the image yet
    c.apply_to_image(wim, index)     # before the disk exists: the image's hives, edited in memory
    c.apply_to_volume(disk, win)     # right after extraction: files written, hives replaced

Where things go (paths in the Windows volume):

    --unattend FILE   \\Windows\\Panther\\unattend.xml (Windows Setup reads it in the specialize and oobe passes)
    --merge DIR       DIR's contents into the volume root, merged with the image's folders; files replace files
    --driver DIR      \\Windows\\wim2vhd\\Drivers\\<n>-<DIR's name>\\..., n = 1, 2, ... in the order given, and each
                      folder of it that holds an .inf added to DevicePath (SOFTWARE\\Microsoft\\Windows\\
                      CurrentVersion, REG_EXPAND_SZ, ';'-separated) as %SystemRoot%\\wim2vhd\\Drivers\\...
                      Plug and Play searches DevicePath for devices it has no driver for, at first boot and
                      later; this is staging, not DISM's offline install into the driver store, so a driver
                      needed to reach the boot disk (a storage controller's) is not found in time.
    --reg-import FILE regedit files (see wim2vhd.registry.regedit) into config\\SYSTEM (CurrentControlSet through
                      Select\\Current), config\\SOFTWARE, config\\DEFAULT, and HKEY_CURRENT_USER into
                      \\Users\\Default\\NTUSER.DAT (the profile new users start from)
    --enable-rdp      fDenyTSConnections = 0 under the current control set's Control\\Terminal Server, as
                      Convert-WindowsImage's -RemoteDesktopEnable does (the firewall rules are left as they are)
    --no-expand-on-native-boot
                      VirtualDiskExpandOnMount = 4 (REG_DWORD) under the current control set's
                      Services\\FsDepends\\Parameters, as Convert-WindowsImage's -ExpandOnNativeBoot:$false does:
                      Windows booted natively from a dynamic VHD(X) then leaves the file at the size it has
                      instead of expanding it to the disk's full size

Order: merges (in the order given), drivers, the answer file (it wins over a merged one), then the hives
(imports in order, then --enable-rdp, --no-expand-on-native-boot, then DevicePath).  New files and folders inherit their folder's
inheritable ACEs (wim2vhd.ntfs does that); a file that is replaced, hives included, keeps the security
descriptor it had.
"""
from __future__ import annotations

import os
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Sequence

from wim2vhd.registry import regedit
from wim2vhd.errors import CorruptInput, InputError, UsageError

UNATTEND_PATH = "Windows\\Panther\\unattend.xml"
DRIVERS_DIR = "Windows\\wim2vhd\\Drivers"
DRIVERS_DEVICEPATH = "%SystemRoot%\\wim2vhd\\Drivers"
DEVICEPATH_KEY = "Microsoft\\Windows\\CurrentVersion"
DEVICEPATH_DEFAULT = "%SystemRoot%\\inf"  # Windows' own entry, which must stay first (and stay at all)
TS_KEY = "Control\\Terminal Server"
FSDEPENDS_KEY = "Services\\FsDepends\\Parameters"
# FsDepends' VirtualDiskExpandOnMount: 4 is the value Convert-WindowsImage writes to turn off the
# expansion of a natively booted dynamic virtual disk (its -ExpandOnNativeBoot:$false).
NO_EXPAND_ON_MOUNT = 4

# Characters Windows does not allow in a file name, and names it reserves for devices.
_BAD_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(\..*)?$", re.IGNORECASE)


def _windows_name_problem(name: str) -> str | None:
    if _BAD_CHARS.search(name):
        return "has a character Windows does not allow in file names (<>:\"/\\|?* or a control character)"
    if name.endswith((" ", ".")):
        return "ends with a space or a dot, which Windows drops"
    if _RESERVED.match(name):
        return "is a device name Windows reserves"
    if len(name.encode("utf-16-le")) > 510:
        return "is longer than 255 characters"
    return None


def _safe_component(name: str) -> str:
    s = re.sub(r'[<>:"/\\|?*;%\x00-\x1f]', "_", name).rstrip(" .") or "driver"
    return s[:64]


@dataclass
class _Entry:
    dest: str            # path in the volume, '\\'-separated, no leading backslash
    kind: str            # "d" or "f"
    host: str | None     # host file for "f", host folder (or None) for "d"
    origin: str          # the option that asked for it, for messages


@dataclass
class Customizations:
    """What to change in each applied image.  Paths are host paths."""

    unattend: str | None = None
    merge: Sequence[str] = ()
    reg_import: Sequence[str] = ()
    enable_rdp: bool = False
    drivers: Sequence[str] = ()
    expand_on_native_boot: bool = True   # False: --no-expand-on-native-boot

    _plan: list[_Entry] | None = field(default=None, init=False, repr=False)
    _regs: list[regedit.RegFile] = field(default_factory=list, init=False, repr=False)
    _device_paths: list[str] = field(default_factory=list, init=False, repr=False)
    _prepared: tuple[int, dict[str, bytes], dict[str, int]] | None = field(default=None, init=False, repr=False)
    last_report: dict[str, Any] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.merge = tuple(os.fspath(m) for m in (self.merge or ()))
        self.reg_import = tuple(os.fspath(r) for r in (self.reg_import or ()))
        self.drivers = tuple(os.fspath(d) for d in (self.drivers or ()))
        self.unattend = os.fspath(self.unattend) if self.unattend else None

    @property
    def empty(self) -> bool:
        return not (self.unattend or self.merge or self.reg_import or self.enable_rdp or self.drivers
                    or not self.expand_on_native_boot)

    def hives(self) -> list[str]:
        """The hives (keys of regedit.HIVE_FILES) these customizations change."""
        self.validate()
        names = {regedit.locate(op.key).hive for rf in self._regs for op in rf.ops}
        if self.enable_rdp or not self.expand_on_native_boot:
            names.add("SYSTEM")
        if self.drivers:
            names.add("SOFTWARE")
        return sorted(names)

    # -- validation: everything that can be checked without the image ------------------------------------
    def validate(self) -> None:
        """Check every input (files exist, .reg files parse, names are valid on Windows, merges agree with
        each other); raise the error for the first problem.  Idempotent."""
        if self._plan is not None:
            return
        plan: dict[str, _Entry] = {}

        def add(dest: str, kind: str, host: str | None, origin: str) -> None:
            parts = dest.split("\\")
            for i in range(1, len(parts)):  # the folders above it
                add_one("\\".join(parts[:i]), "d", None, origin)
            add_one(dest, kind, host, origin)

        def add_one(dest: str, kind: str, host: str | None, origin: str) -> None:
            name = dest.rsplit("\\", 1)[-1]
            problem = _windows_name_problem(name)
            if problem:
                raise UsageError(f"{origin}: {host or name!r}: the name {name!r} {problem}")
            old = plan.get(dest.lower())
            if old is None:
                plan[dest.lower()] = _Entry(dest, kind, host, origin)
            elif old.kind != kind:
                raise UsageError(f"{origin}: {host or dest} would make \\{dest} a "
                                 f"{'folder' if kind == 'd' else 'file'}, but {old.origin} puts a "
                                 f"{'file' if old.kind == 'f' else 'folder'} there")
            elif kind == "f":  # a later file wins; the entry keeps its place in the order
                plan[dest.lower()] = _Entry(old.dest, kind, host, origin)

        for m in self.merge:
            origin = f"--merge {m}"
            _need_dir(m, "--merge")
            for host, rel, kind in _walk(m, origin):
                add(rel, kind, host, origin)
        self._device_paths = []
        for n, d in enumerate(self.drivers, 1):
            origin = f"--driver {d}"
            _need_dir(d, "--driver")
            base = f"{n}-{_safe_component(os.path.basename(os.path.normpath(os.path.abspath(d))))}"
            add(f"{DRIVERS_DIR}\\{base}", "d", d, origin)
            infs = set()
            for host, rel, kind in _walk(d, origin):
                add(f"{DRIVERS_DIR}\\{base}\\{rel}", kind, host, origin)
                if kind == "f" and rel.lower().endswith(".inf"):
                    infs.add(rel.rsplit("\\", 1)[0] if "\\" in rel else "")
            if not infs:
                raise InputError(f"--driver {d}: no .inf file in it: Windows finds drivers by their INF files")
            for sub in sorted(infs, key=lambda s: (s.count("\\"), s.lower())):
                self._device_paths.append(f"{DRIVERS_DEVICEPATH}\\{base}" + (f"\\{sub}" if sub else ""))
        if self.unattend:
            _check_unattend(self.unattend)
            add(UNATTEND_PATH, "f", self.unattend, "--unattend")
        self._regs = [regedit.load(r) for r in self.reg_import]
        # a merged hive would be overwritten by the edited copy of the image's own
        edited = set()
        for rf in self._regs:
            edited |= {regedit.locate(op.key).hive for op in rf.ops}
        if self.enable_rdp or not self.expand_on_native_boot:
            edited.add("SYSTEM")
        if self.drivers:
            edited.add("SOFTWARE")
        for h in sorted(edited):
            e = plan.get(regedit.HIVE_FILES[h].lower())
            if e is not None:
                raise UsageError(f"{e.origin} replaces \\{regedit.HIVE_FILES[h]}, which --reg-import, --enable-rdp, "
                                 f"--no-expand-on-native-boot or --driver also change: merge a hive, or edit it, "
                                 f"not both")
        self._plan = list(plan.values())

    # -- hook 1: before anything is written ----------------------------------------------------------------
    def apply_to_image(self, wim, index: int) -> None:
        """Read the image's hives and make the registry changes in memory, so that a hive that is missing,
        damaged or without Select\\Current fails before the disk is created."""
        self.validate()
        self._prepared = None
        hives = self.hives()
        edited: dict[str, bytes] = {}
        counts: dict[str, int] = {}
        if hives:
            with tempfile.TemporaryDirectory(prefix="wim2vhd-hives-") as tmp:
                files = {h: regedit.HIVE_FILES[h] for h in hives}
                wim.extract_paths(index, ["/" + f.replace("\\", "/") for f in files.values()], tmp)
                for h in hives:
                    # wimlib extracts the image's own spelling of the path
                    local = _find_nocase(tmp, files[h])
                    if local is None or not os.path.isfile(local):
                        raise InputError(f"image {index} has no \\{files[h]}: is it a Windows image?")
                    edited[h], counts[h] = self._edit_hive(h, local, index)
        self._prepared = (index, edited, counts)

    def _edit_hive(self, name: str, local: str, index: int) -> tuple[bytes, int]:
        from wim2vhd.registry.hive import Hive, RegType, Value
        shown = f"\\{regedit.HIVE_FILES[name]} of image {index}"
        _refuse_dirty_hive(local, shown)
        try:
            hive = Hive.open(local, write=True)
        except CorruptInput as e:
            raise CorruptInput(f"{shown} is not a usable registry hive ({e.message.split(' (', 1)[-1].rstrip(')')})",
                               hint=e.hint) from None
        hive.path = shown
        changes = 0
        try:
            ccs = None
            if name == "SYSTEM":
                ccs = _current_control_set(hive, shown)
            for rf in self._regs:
                for op in rf.ops:
                    loc = regedit.locate(op.key)
                    if loc.hive != name:
                        continue
                    path = loc.path
                    if loc.current_control_set:
                        path = "\\".join([ccs, *regedit.split_key(path)[1:]])
                    _apply_op(hive, path, op)
                    changes += 1
            if name == "SYSTEM" and self.enable_rdp:
                _ensure_key(hive, f"{ccs}\\{TS_KEY}").set_value(Value.dword("fDenyTSConnections", 0))
                changes += 1
            if name == "SYSTEM" and not self.expand_on_native_boot:
                _ensure_key(hive, f"{ccs}\\{FSDEPENDS_KEY}").set_value(
                    Value.dword("VirtualDiskExpandOnMount", NO_EXPAND_ON_MOUNT))
                changes += 1
            if name == "SOFTWARE" and self._device_paths:
                key = _ensure_key(hive, DEVICEPATH_KEY)
                old = key.value("DevicePath")
                try:
                    current = old.as_str() if old is not None else DEVICEPATH_DEFAULT
                except CorruptInput:  # not a string: the default path list, as Windows has it
                    current = DEVICEPATH_DEFAULT
                key.set_value(Value("DevicePath", RegType.EXPAND_SZ,
                                    (extend_device_path(current, self._device_paths) + "\0").encode("utf-16-le")))
                changes += 1
            out = local + ".new"
            hive.commit(out)
            with open(out, "rb") as f:
                return f.read(), changes
        finally:
            hive.close()

    # -- hook 2: right after extraction ----------------------------------------------------------------------
    def apply_to_volume(self, disk, win) -> None:
        """Write the files and the edited hives into the Windows partition `win` of `disk`."""
        from wim2vhd.ntfs import NtfsWindow
        from wim2vhd.ntfs import NtfsVolume
        self.validate()
        prepared = self._prepared
        self._prepared = None
        if self.hives() and prepared is None:
            raise UsageError("Customizations.apply_to_image must run before apply_to_volume")
        index, hives, counts = prepared if prepared else (None, {}, {})
        files = 0
        with NtfsWindow(disk, win.start, win.size, compact=True) as dev, NtfsVolume(dev) as vol:
            self._check_volume(vol)
            for e in self._plan:
                if e.kind == "d":
                    vol.mkdir(e.dest, exist_ok=True)
                    continue
                keep = vol.get_security(e.dest) if vol.exists(e.dest) else None
                try:
                    with open(e.host, "rb") as f:
                        vol.write_file(e.dest, f)
                except OSError as err:
                    raise InputError(f"{e.origin}: cannot read {e.host}: {err.strerror}") from None
                if keep is not None:
                    vol.set_security(e.dest, keep)
                files += 1
            for name, data in hives.items():
                path = regedit.HIVE_FILES[name]
                keep = vol.get_security(path)
                vol.write_file(path, data)
                vol.set_security(path, keep)
        self.last_report = self.report(files=files, hive_changes=counts)

    def _check_volume(self, vol) -> None:
        """Where the plan meets the image's tree: a file may replace a file, a folder merges into a folder;
        nothing replaces a folder with a file (or the reverse), and nothing is written through a link."""
        for e in self._plan:
            if not vol.exists(e.dest):
                continue
            st = vol.stat(e.dest)
            what = e.host or f"\\{e.dest}"
            if st.reparse_tag:
                raise UsageError(f"{e.origin}: {what} would be written to \\{e.dest}, which is a link (junction or "
                                 f"symbolic link) in the image; wim2vhd does not write through links")
            if st.is_dir and e.kind == "f":
                raise UsageError(f"{e.origin}: {what} would replace the folder \\{e.dest} of the image with a file")
            if not st.is_dir and e.kind == "d":
                raise UsageError(f"{e.origin}: {what} would replace the file \\{e.dest} of the image with a folder")

    # -- what was done -------------------------------------------------------------------------------------
    def report(self, files: int = 0, hive_changes: dict[str, int] | None = None) -> dict[str, Any]:
        self.validate()
        return {
            "unattend": f"\\{UNATTEND_PATH}" if self.unattend else None,
            "merged": list(self.merge),
            "files_written": files,
            "drivers": [f"\\{DRIVERS_DIR}\\{p.split(DRIVERS_DEVICEPATH + chr(92), 1)[1]}"
                        for p in self._device_paths],
            "enable_rdp": self.enable_rdp,
            "expand_on_native_boot": self.expand_on_native_boot,
            "registry": dict(hive_changes or {}),
        }


# -- helpers -------------------------------------------------------------------------------------------------
def extend_device_path(current: str, extra: Sequence[str]) -> str:
    """DevicePath with `extra` folders appended once each (compared without regard to case)."""
    parts = [p for p in current.split(";") if p.strip()]
    if not any(p.strip().lower() == DEVICEPATH_DEFAULT.lower() for p in parts):
        parts.insert(0, DEVICEPATH_DEFAULT)
    seen = {p.strip().lower() for p in parts}
    for x in extra:
        if x.lower() not in seen:
            parts.append(x)
            seen.add(x.lower())
    return ";".join(parts)


def _refuse_dirty_hive(local: str, shown: str) -> None:
    """A hive whose base block has different primary and secondary sequence numbers was not fully
    written: its latest changes are only in its transaction logs (.LOG1/.LOG2), which hivex does not
    replay.  Editing it would write a clean hive without them, and Windows would then never replay the
    logs: refuse, rather than lose changes silently.  (hivex's commit leaves the numbers equal.)"""
    with open(local, "rb") as f:
        base = f.read(12)
    if len(base) == 12 and base[:4] == b"regf":
        primary, secondary = int.from_bytes(base[4:8], "little"), int.from_bytes(base[8:12], "little")
        if primary != secondary:
            raise InputError(f"{shown} is dirty (sequence numbers {primary} and {secondary}): its last changes are "
                             f"only in its transaction logs, which wim2vhd cannot replay",
                             hint="apply without registry changes, or let Windows load the hive once and capture again")


def _current_control_set(hive, shown: str) -> str:
    sel = hive.get_key("Select")
    cur = sel.value("Current") if sel is not None else None
    try:
        n = cur.as_dword() if cur is not None else None
    except CorruptInput:  # refused just below
        n = None
    if not n:
        raise CorruptInput(f"{shown} has no Select\\Current: its current control set is unknown")
    name = f"ControlSet{n:03d}"
    if hive.get_key(name) is None:
        raise CorruptInput(f"{shown}: Select\\Current is {n}, but there is no {name}")
    return name


def _ensure_key(hive, path: str):
    k = hive.root
    for part in regedit.split_key(path):
        k = k.ensure_child(part)
    return k


def _apply_op(hive, path: str, op: regedit.Op) -> None:
    from wim2vhd.registry.hive import Value
    if isinstance(op, regedit.CreateKey):
        _ensure_key(hive, path)
    elif isinstance(op, regedit.SetValue):
        _ensure_key(hive, path).set_value(Value(op.name, op.type, op.data))
    elif isinstance(op, regedit.DeleteValue):
        k = hive.get_key(path)
        if k is not None:
            k.delete_value(op.name)
    elif isinstance(op, regedit.DeleteKey):
        k = hive.get_key(path)
        if k is not None:
            k.delete()


def _find_nocase(top: str, rel: str) -> str | None:
    """The host path below `top` whose names match `rel`'s ('\\'-separated) without regard to case, as
    Windows matches names; None if there is none."""
    d = top
    for part in rel.split("\\"):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            return None
        match = next((n for n in names if n.lower() == part.lower()), None)
        if match is None:
            return None
        d = os.path.join(d, match)
    return d


def _need_dir(path: str, option: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"{option} {path}: no such folder")
    if not os.path.isdir(path):
        raise InputError(f"{option} {path}: not a folder")


def _walk(top: str, origin: str):
    """(host path, path relative to top with '\\', 'd' or 'f') for everything below `top`, parents first;
    host symlinks are followed (a loop or a dangling link is an error), anything else not a file or a
    folder is an error."""
    seen = {os.path.realpath(top)}

    def rec(d: str, rel: str):
        try:
            names = sorted(os.listdir(d))
        except OSError as e:
            raise InputError(f"{origin}: cannot read {d}: {e.strerror}") from None
        for name in names:
            host = os.path.join(d, name)
            r = f"{rel}\\{name}" if rel else name
            if os.path.isdir(host):
                real = os.path.realpath(host)
                if real in seen:
                    raise InputError(f"{origin}: {host} links back to a folder above it")
                seen.add(real)
                yield host, r, "d"
                yield from rec(host, r)
                seen.discard(real)
            elif os.path.isfile(host):
                if not os.access(host, os.R_OK):
                    raise InputError(f"{origin}: cannot read {host}: permission denied")
                yield host, r, "f"
            elif os.path.islink(host):
                raise InputError(f"{origin}: {host} is a link to nothing")
            else:
                raise InputError(f"{origin}: {host} is not a file or a folder")

    return list(rec(top, ""))


def _check_unattend(path: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"--unattend {path}: no such file")
    if not os.path.isfile(path):
        raise InputError(f"--unattend {path}: not a file")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        line = e.position[0] if e.position else "?"
        raise InputError(f"--unattend {path}:{line}: not well-formed XML ({str(e).split(':')[0]})") from None
    except OSError as e:
        raise InputError(f"--unattend {path}: {e.strerror}") from None
    if root.tag.rsplit("}", 1)[-1] != "unattend":
        raise InputError(f"--unattend {path}: the root element is <{root.tag.rsplit('}', 1)[-1]}>, not <unattend>: "
                         f"is this a Windows answer file?")


def from_options(unattend: str | None = None, merge: Sequence[str] | None = None,
                 reg_import: Sequence[str] | None = None, enable_rdp: bool = False,
                 drivers: Sequence[str] | None = None, expand_on_native_boot: bool = True) -> Customizations | None:
    """Customizations for the apply command's options, validated; None when there are none."""
    c = Customizations(unattend=unattend, merge=tuple(merge or ()), reg_import=tuple(reg_import or ()),
                       enable_rdp=enable_rdp, drivers=tuple(drivers or ()),
                       expand_on_native_boot=expand_on_native_boot)
    if c.empty:
        return None
    c.validate()
    return c

