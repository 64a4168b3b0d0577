"""Boot Configuration Data stores: read, edit and write them like bcdedit and bcdboot.

A store is a registry hive whose root holds ``Description`` (store facts) and
``Objects``; each object is ``Objects\\{guid}`` with ``Description\\Type`` (a
REG_DWORD, see elements.ObjectType) and ``Elements\\xxxxxxxx\\Element`` (one
value per element, stored as its format says: see elements.Format).

    store = BcdStore.new_system_store(firmware="uefi")
    guid = store.add_os_loader("Windows 11", device=Vhd.located(r"\\vhds\\win.vhdx"),
                               default=True)
    store.save("/boot/BCD")                       # new file, fsync, rename

    with BcdStore.open("BCD", write=True) as store:  # refuses non-hives and non-BCD hives
        store.object("{bootmgr}").set(E.TIMEOUT, 5)
        store.save()                              # keeps BCD.bak

Element values are Python values (wim2vhd.boot.values); the objects bcdboot writes are made by
the add_* methods, with the paths and settings bcdboot uses.
"""
from __future__ import annotations

import os
import secrets
import tempfile
import uuid

from wim2vhd import repro
from wim2vhd.atomic import AtomicOutput
from wim2vhd.boot import elements as el
from wim2vhd.boot.devices import Boot, Device
from wim2vhd.boot.elements import E, ObjectType
from wim2vhd.boot.values import (ELEMENT_VALUE, ElementValue, as_uuid, decode_element, encode_element,
                                 guid_text, parse_guid)
from wim2vhd.errors import CorruptInput, InputError, InternalError, UnsupportedInput, UsageError, Wim2VhdError, from_oserror
from wim2vhd.registry.hive import Hive, Key, RegType, Value
from wim2vhd.registry.regf import KEY_ALL_ACCESS, KEY_READ, key_security_descriptor, set_key_security
from wim2vhd.security import WRITE_DAC

FIRMWARES = ("uefi", "bios")

# What Windows' bcdboot writes, per firmware.
LOADER_PATH = {"uefi": "\\Windows\\system32\\winload.efi", "bios": "\\Windows\\system32\\winload.exe"}
RESUME_PATH = {"uefi": "\\Windows\\system32\\winresume.efi", "bios": "\\Windows\\system32\\winresume.exe"}
MEMDIAG_PATH = {"uefi": "\\EFI\\Microsoft\\Boot\\memtest.efi", "bios": "\\boot\\memtest.exe"}
BOOTMGR_PATH = {"uefi": "\\EFI\\Microsoft\\Boot\\bootmgfw.efi", "bios": None}
# bcdboot (Windows 8 and later) lets the loader and resume apps keep this
# setting in memory for the kernel: "allowedinmemorysettings 0x15000075".
ALLOWED_IN_MEMORY = [0x15000075]
NX_OPTIN = 0
BOOTMENUPOLICY_STANDARD = 1
DEBUGTYPE_LOCAL = 4


# The key security Windows gives a store (windeploy-BCD, written by bcdboot, byte for byte; the
# same ACEs in pybcd-BCDTest, written by bcdedit): owner Administrators, group SYSTEM; the root and
# Description allow Administrators and SYSTEM full control; Objects and every key below it allow
# Administrators only KEY_READ | WRITE_DAC (SYSTEM keeps full control).
ROOT_SECURITY = key_security_descriptor(KEY_ALL_ACCESS)
OBJECTS_SECURITY = key_security_descriptor(KEY_READ | WRITE_DAC)


def windows_key_security(path: tuple[str, ...]) -> bytes:
    """The security descriptor of the key at `path` (names below the root) in a Windows store."""
    return OBJECTS_SECURITY if path and path[0].lower() == "objects" else ROOT_SECURITY


# -- objects -------------------------------------------------------------------------
class BcdObject:
    """One object of a store (a view on its registry key)."""

    def __init__(self, store: "BcdStore", key: Key, ident: uuid.UUID):
        self.store = store
        self.key = key
        self.id = ident

    def __repr__(self) -> str:
        return f"<BcdObject {self.alias or guid_text(self.id)} type 0x{self.type:08x}>"

    @property
    def type(self) -> int:
        d = self.key.child("Description")
        v = d.value("Type") if d is not None else None
        try:
            return v.as_dword() if v is not None else 0
        except CorruptInput:  # read_all() refuses it; a title for it is still wanted
            return 0

    def checked_type(self) -> int:
        """The type, from a 4-byte REG_DWORD Description\\Type; anything else is a damaged store."""
        d = self.key.child("Description")
        v = d.value("Type") if d is not None else None
        if v is None or v.type != RegType.DWORD or len(v.data) != 4:
            what = "has no Description\\Type" if v is None else "has a Description\\Type that is no 4-byte REG_DWORD"
            raise CorruptInput(f"{self.store.path or 'the BCD store'}: object {self.alias or guid_text(self.id)} "
                               f"{what}: the store is damaged", hint="restore it from a backup")
        return v.as_dword()

    @property
    def alias(self) -> str | None:
        return el.ALIAS_OF.get(self.id)

    @property
    def title(self) -> str:
        return el.object_title(self.type, self.id)

    def _elements_key(self, create: bool = False) -> Key | None:
        k = self.key.child("Elements")
        if k is None and create:
            k = self.key.add_child("Elements")
        return k

    def element_ids(self) -> list[int]:
        k = self._elements_key()
        if k is None:
            return []
        out = []
        for c in k.children():
            try:
                out.append(int(c.name, 16))
            except ValueError:
                continue  # not an element; bcdedit ignores it too
        return sorted(out)

    def raw(self, element: int) -> Value | None:
        k = self._elements_key()
        c = k.child(f"{element:08x}") if k is not None else None
        return c.value(ELEMENT_VALUE) if c is not None else None

    def get(self, element: int, default: ElementValue = None) -> ElementValue:
        v = self.raw(element)
        return decode_element(element, v) if v is not None else default

    def __contains__(self, element: int) -> bool:
        return self.raw(element) is not None

    def elements(self) -> dict[int, ElementValue]:
        out = {}
        for e in self.element_ids():
            v = self.raw(e)
            if v is not None:
                out[e] = decode_element(e, v)
        return out

    def set(self, element: int, value: ElementValue) -> None:
        self.store._require_writable()
        val = encode_element(element, value)
        k = self._elements_key(create=True).ensure_child(f"{element:08x}")
        k.set_value(val)

    def update(self, values: dict[int, ElementValue]) -> None:
        for e, v in values.items():
            self.set(e, v)

    def delete(self, element: int) -> bool:
        self.store._require_writable()
        k = self._elements_key()
        c = k.child(f"{element:08x}") if k is not None else None
        if c is None:
            return False
        c.delete()
        return True


# -- the store -------------------------------------------------------------------------
class BcdStore:
    """A BCD store held by hivex; edits stay in memory until save()."""

    def __init__(self, hive: Hive, path: str | None):
        self.hive = hive
        self.path = path
        # True for a store wim2vhd makes (new, or from a template): every key gets Windows' own
        # security descriptors when it is written, whatever the template held.  An opened store
        # keeps its own; a key added to it shares its parent's (hivex copies the parent's sk).
        self.windows_security = False
        root = hive.root
        self._objects_key = root.child("Objects")
        self._description_key = root.child("Description")

    # -- opening and creating ------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, *, write: bool = False) -> "BcdStore":
        """Open a store; a file that is not a hive, or a hive that is not a BCD
        store, is refused (CorruptInput / UnsupportedInput) and never touched."""
        p = os.fspath(path)
        if not os.path.exists(p):
            raise InputError(f"{p} does not exist", hint="make one with `wim2vhd bcd create`")
        hive = Hive.open(p, write=write)
        try:
            root = hive.root
            if root.child("Objects") is None or root.child("Description") is None:
                raise UnsupportedInput(f"{p} is a registry hive but not a BCD store "
                                       "(it has no Objects and Description keys)")
            return cls(hive, p)
        except BaseException:
            hive.close()
            raise

    @classmethod
    def new(cls, *, system: bool = True) -> "BcdStore":
        """An empty store (no objects), in memory; save() it to a path."""
        hive = Hive.new("NewStoreRoot")
        root = hive.root
        desc = root.add_child("Description")
        # Windows names the hive it loads the system store as "BCD00000000".
        desc.set_value(Value.sz("KeyName", "BCD00000000" if system else "BCD00000001"))
        if system:
            desc.set_value(Value.dword("System", 1))
        root.add_child("Objects")
        store = cls(hive, None)
        store.windows_security = True
        return store

    @classmethod
    def new_system_store(cls, firmware: str, *, locale: str = "en-US", timeout: int = 30,
                         bootmgr_device: Device | None = None, memdiag: bool = True) -> "BcdStore":
        """What bcdboot starts from: the settings objects, {bootmgr} (and
        {fwbootmgr} on UEFI) and, unless memdiag=False, {memdiag}."""
        check_firmware(firmware)
        store = cls.new(system=True)
        store.add_settings()
        dev = bootmgr_device or Boot()
        store.add_boot_manager(firmware=firmware, device=dev, locale=locale, timeout=timeout)
        if memdiag:
            store.add_memdiag(device=dev, firmware=firmware, locale=locale)
        return store

    @classmethod
    def from_bytes(cls, data: bytes, *, write: bool = False, name: str = "BCD") -> "BcdStore":
        """A store from bytes (e.g. read out of a disk image); save() needs a path."""
        fd, tmp = tempfile.mkstemp(prefix="wim2vhd-bcd-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            # the same checks as open(), and a store read to be edited reads cleanly (read_all), as a
            # file edits are; messages name the store, not the temporary file
            try:
                store = cls.open(tmp, write=write)
                if write:
                    _checked(store)
            except Wim2VhdError as e:
                raise type(e)(str(e).replace(tmp, name)) from None
        finally:
            os.unlink(tmp)  # hivex holds the data in memory (write) or a mapping (read)
        store.path = None
        store.hive.path = None
        return store

    def to_bytes(self) -> bytes:
        """The whole store as a hive file's bytes (to copy into a disk image)."""
        self._require_writable()
        fd, tmp = tempfile.mkstemp(prefix="wim2vhd-bcd-")
        os.close(fd)
        try:
            self._commit(tmp)
            with open(tmp, "rb") as f:
                return f.read()
        finally:
            os.unlink(tmp)

    def _commit(self, path: str) -> None:
        """The hive to `path`, with Windows' key security when windows_security is set."""
        self.hive.commit(path)
        if self.windows_security:
            with open(path, "r+b") as f:
                try:
                    data = set_key_security(f.read(), windows_key_security)
                except ValueError as e:  # hivex wrote it, so this is ours to fix
                    raise InternalError(f"cannot set the BCD store's key security: {e}") from None
                f.seek(0)
                f.write(data)
                f.truncate()

    def close(self) -> None:
        self.hive.close()

    def __enter__(self) -> "BcdStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def writable(self) -> bool:
        return self.hive.writable

    def _require_writable(self) -> None:
        if not self.hive.writable:
            raise InternalError("BCD store was opened read-only")

    @property
    def is_system_store(self) -> bool:
        v = self._description_key.value("System") if self._description_key is not None else None
        try:
            return v is not None and v.as_dword() == 1
        except CorruptInput:
            return False

    @property
    def description_values(self) -> list[Value]:
        return self._description_key.values() if self._description_key is not None else []

    def read_all(self) -> list[tuple[BcdObject, int, dict[int, ElementValue]]]:
        """Every object with its type and decoded elements, as `bcd show` lists them (it lists these), and
        the store's own facts: the one check that a store reads cleanly, which every edit runs on the store
        before it and on what it writes.  A store that does not read (its hive damaged where this looks,
        an object without a REG_DWORD type) is CorruptInput naming the store and what is wrong."""
        self.description_values, self.is_system_store, self.firmware
        return [(o, o.checked_type(), o.elements()) for o in self.objects()]

    # -- objects ---------------------------------------------------------------------
    def objects(self) -> list[BcdObject]:
        out = []
        for k in self._objects_key.children():
            try:
                ident = parse_guid(k.name)
            except CorruptInput:  # not an object: bcdedit skips it too
                continue
            out.append(BcdObject(self, k, ident))
        return out

    def resolve(self, ident: uuid.UUID | str) -> uuid.UUID:
        """An object id from a GUID or a name; {default} is {bootmgr}'s default."""
        if isinstance(ident, str) and ident.strip().lower() == "{default}":
            bm = self.find(el.BOOTMGR)
            d = bm.get(E.DEFAULT) if bm is not None else None
            if not isinstance(d, uuid.UUID):
                raise InputError(f"{self.path or 'the store'} has no default boot entry")
            return d
        return as_uuid(ident)

    def find(self, ident: uuid.UUID | str) -> BcdObject | None:
        g = self.resolve(ident)
        k = self._objects_key.child(guid_text(g))
        return BcdObject(self, k, g) if k is not None else None

    def object(self, ident: uuid.UUID | str) -> BcdObject:
        o = self.find(ident)
        if o is None:
            name = el.ALIAS_OF.get(self.resolve(ident)) or str(ident)
            raise InputError(f"{self.path or 'the BCD store'} has no object {name}")
        return o

    def add_object(self, object_type: int, ident: uuid.UUID | str | None = None) -> BcdObject:
        """A new object of `object_type` (a new random GUID unless `ident` is given)."""
        self._require_writable()
        g = as_uuid(ident) if ident is not None else repro.uuid_for("bcd-object")
        if self._objects_key.child(guid_text(g)) is not None:
            raise UsageError(f"the BCD store already has an object {el.ALIAS_OF.get(g, guid_text(g))}")
        k = self._objects_key.add_child(guid_text(g))
        k.add_child("Description").set_value(Value.dword("Type", object_type))
        k.add_child("Elements")
        return BcdObject(self, k, g)

    def ensure_object(self, object_type: int, ident: uuid.UUID | str) -> BcdObject:
        return self.find(ident) or self.add_object(object_type, ident)

    def delete_object(self, ident: uuid.UUID | str) -> None:
        self._require_writable()
        o = self.object(ident)
        o.key.delete()

    @property
    def firmware(self) -> str | None:
        """"uefi" or "bios" as the store's boot manager suggests, or None."""
        if self.find(el.FWBOOTMGR) is not None:
            return "uefi"
        bm = self.find(el.BOOTMGR)
        if bm is None:
            return None
        p = bm.get(E.PATH)
        if isinstance(p, str) and p.lower().endswith(".efi"):
            return "uefi"
        return "bios"

    def _firmware(self, firmware: str | None) -> str:
        fw = firmware or self.firmware
        if fw is None:
            raise UsageError("cannot tell whether this BCD store is for UEFI or BIOS: give the firmware")
        check_firmware(fw)
        return fw

    # -- what bcdboot writes ---------------------------------------------------------
    def add_settings(self) -> None:
        """The inheritable settings objects bcdboot creates (kept if present)."""
        g = self.ensure_object(ObjectType.INHERIT_ANY, el.GLOBALSETTINGS)
        if E.INHERIT not in g:
            g.set(E.INHERIT, [el.DBGSETTINGS, el.EMSSETTINGS, el.BADMEMORY])
        d = self.ensure_object(ObjectType.INHERIT_ANY, el.DBGSETTINGS)
        if E.DEBUGTYPE not in d:
            d.set(E.DEBUGTYPE, DEBUGTYPE_LOCAL)
        ems = self.ensure_object(ObjectType.INHERIT_ANY, el.EMSSETTINGS)
        if E.BOOTEMS not in ems:
            ems.set(E.BOOTEMS, False)
        self.ensure_object(ObjectType.INHERIT_ANY, el.BADMEMORY)
        bl = self.ensure_object(ObjectType.INHERIT_OSLOADER, el.BOOTLOADERSETTINGS)
        if E.INHERIT not in bl:
            bl.set(E.INHERIT, [el.GLOBALSETTINGS, el.HYPERVISORSETTINGS])
        hv = self.ensure_object(ObjectType.INHERIT_OSLOADER, el.HYPERVISORSETTINGS)
        if E.HYPERVISORDEBUGTYPE not in hv:
            hv.update({E.HYPERVISORDEBUGTYPE: 0, E.HYPERVISORDEBUGPORT: 1, E.HYPERVISORBAUDRATE: 115200})
        rl = self.ensure_object(ObjectType.INHERIT_RESUME, el.RESUMELOADERSETTINGS)
        if E.INHERIT not in rl:
            rl.set(E.INHERIT, [el.GLOBALSETTINGS])

    def add_boot_manager(self, *, firmware: str, device: Device | None = None, path: str | None = None,
                         locale: str = "en-US", timeout: int = 30,
                         description: str = "Windows Boot Manager",
                         firmware_manager: bool = True) -> uuid.UUID:
        """{bootmgr} (and, on UEFI with firmware_manager, {fwbootmgr} listing it)."""
        check_firmware(firmware)
        bm = self.add_object(ObjectType.BOOTMGR, el.BOOTMGR)
        bm.set(E.DEVICE, device or Boot())
        p = path if path is not None else BOOTMGR_PATH[firmware]
        if p:
            bm.set(E.PATH, p)
        bm.update({E.DESCRIPTION: description, E.LOCALE: locale, E.INHERIT: [el.GLOBALSETTINGS]})
        if el.MEMDIAG in {o.id for o in self.objects()}:
            bm.set(E.TOOLSDISPLAYORDER, [el.MEMDIAG])
        bm.set(E.TIMEOUT, timeout)
        if firmware == "uefi" and firmware_manager and self.find(el.FWBOOTMGR) is None:
            fw = self.add_object(ObjectType.FWBOOTMGR, el.FWBOOTMGR)
            fw.update({E.DISPLAYORDER: [el.BOOTMGR], E.TIMEOUT: 0})
        return el.BOOTMGR

    def add_memdiag(self, *, device: Device | None = None, firmware: str | None = None,
                    locale: str = "en-US", path: str | None = None,
                    description: str = "Windows Memory Diagnostic") -> uuid.UUID:
        """{memdiag}, listed in {bootmgr}'s toolsdisplayorder."""
        fw = self._firmware(firmware)
        md = self.add_object(ObjectType.MEMDIAG, el.MEMDIAG)
        md.update({E.DEVICE: device or Boot(), E.PATH: path or MEMDIAG_PATH[fw],
                   E.DESCRIPTION: description, E.LOCALE: locale,
                   E.INHERIT: [el.GLOBALSETTINGS], E.BADMEMORYACCESS: True})
        bm = self.find(el.BOOTMGR)
        if bm is not None:
            tools = self._object_list(bm, E.TOOLSDISPLAYORDER)
            if el.MEMDIAG not in tools:
                bm.set(E.TOOLSDISPLAYORDER, tools + [el.MEMDIAG])
        return el.MEMDIAG

    def add_resume(self, device: Device, filedevice: Device | None = None, *,
                   firmware: str | None = None, locale: str = "en-US", path: str | None = None,
                   filepath: str = "\\hiberfil.sys",
                   description: str = "Windows Resume Application") -> uuid.UUID:
        """A "Resume from Hibernate" object as bcdboot writes it: `device` holds winresume,
        and there is no filedevice unless one is given.  (bcdboot's windeploy-BCD has none;
        Windows sets it when it makes hiberfil.sys.  A locate filedevice would search
        every volume for \\hiberfil.sys and resume whichever it finds first.)"""
        fw = self._firmware(firmware)
        r = self.add_object(ObjectType.RESUME)
        r.update({E.DEVICE: device, E.PATH: path or RESUME_PATH[fw], E.DESCRIPTION: description,
                  E.LOCALE: locale, E.INHERIT: [el.RESUMELOADERSETTINGS],
                  E.ALLOWEDINMEMORYSETTINGS: ALLOWED_IN_MEMORY})
        if filedevice is not None:
            r.set(E.FILEDEVICE, filedevice)
        r.update({E.FILEPATH: filepath, E.RESUME_BOOTMENUPOLICY: BOOTMENUPOLICY_STANDARD})
        return r.id

    def add_os_loader(self, description: str, device: Device, osdevice: Device | None = None, *,
                      locale: str = "en-US", firmware: str | None = None, resume: bool = True,
                      default: bool = False, display_first: bool = False) -> uuid.UUID:
        """A "Windows Boot Loader" object, as bcdboot writes it; returns its GUID.

        `device` holds winload, `osdevice` the Windows directory (default: device).  With resume=True a resume object on
        `device` is added and linked.  The entry joins {bootmgr}'s
        displayorder (last, or first with display_first) and becomes its
        default with default=True, or when {bootmgr} has no default yet.
        """
        fw = self._firmware(firmware)
        osdev = osdevice or device
        loader = self.add_object(ObjectType.OSLOADER)
        loader.update({E.DEVICE: device, E.PATH: LOADER_PATH[fw], E.DESCRIPTION: description,
                       E.LOCALE: locale, E.INHERIT: [el.BOOTLOADERSETTINGS],
                       E.ALLOWEDINMEMORYSETTINGS: ALLOWED_IN_MEMORY,
                       E.OSDEVICE: osdev, E.SYSTEMROOT: "\\Windows"})
        resume_id = None
        if resume:
            # the resume app is found like winload (by its own path, or the partition itself)
            resume_id = self.add_resume(device, firmware=fw, locale=locale)
            loader.set(E.RESUMEOBJECT, resume_id)
        loader.update({E.NX: NX_OPTIN, E.BOOTMENUPOLICY: BOOTMENUPOLICY_STANDARD})
        bm = self.find(el.BOOTMGR)
        if bm is not None:
            self.add_to_display_order(loader.id, first=display_first)
            if default or not isinstance(bm.get(E.DEFAULT), uuid.UUID):
                self.set_default(loader.id)
        elif default:
            raise UsageError("the BCD store has no {bootmgr} to make this entry the default of")
        return loader.id

    def add_to_display_order(self, ident: uuid.UUID | str, *, first: bool = False) -> None:
        g = self.resolve(ident)
        bm = self.object(el.BOOTMGR)
        order = [x for x in self._object_list(bm, E.DISPLAYORDER) if x != g]
        bm.set(E.DISPLAYORDER, [g] + order if first else order + [g])

    def _object_list(self, obj: BcdObject, element: int) -> list[uuid.UUID]:
        """An object list element to extend ([] when absent); one stored as something else is a damaged store,
        refused before anything is edited (it would be lost)."""
        v = obj.get(element)
        if v is None:
            return []
        if not isinstance(v, list):
            raise CorruptInput(f"{self.path or 'the BCD store'}: the {el.element_name(element, obj.type)} of "
                               f"{obj.alias or guid_text(obj.id)} is not a list of objects (registry type "
                               f"{getattr(v, 'type', '?')}): the store is damaged", hint="bcd show lists it as hex")
        return v

    def set_default(self, ident: uuid.UUID | str) -> None:
        """Make an entry {bootmgr}'s default (and its resume object bootmgr's resumeobject)."""
        g = self.resolve(ident)
        target = self.object(g)
        bm = self.object(el.BOOTMGR)
        bm.set(E.DEFAULT, g)
        r = target.get(E.RESUMEOBJECT)
        if isinstance(r, uuid.UUID):
            bm.set(E.BOOTMGR_RESUMEOBJECT, r)

    # -- saving ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike | None = None, *, overwrite: bool | None = None,
             backup: bool = True) -> str:
        """Write the store to `path` (default: where it was opened) atomically.

        The hive goes to a new file beside the target, is fsync'ed, read back,
        then renamed over the target; the directory is fsync'ed.  When a file is
        replaced and backup=True, the old one is kept as TARGET.bak.  An existing
        target other than the opened store needs overwrite=True.
        """
        self._require_writable()
        target = os.path.abspath(os.fspath(path)) if path is not None else self.path
        if target is None:
            raise InternalError("a new BCD store needs a path to save to")
        target = os.path.abspath(target)
        if os.path.islink(target):
            target = os.path.realpath(target)  # edit the store, not the link to it
        same = self.path is not None and os.path.realpath(self.path) == os.path.realpath(target)
        if overwrite is None:
            overwrite = same
        try:
            with AtomicOutput(target, force=overwrite) as out:
                self._commit(out.temp)
                if os.path.exists(target):
                    os.chmod(out.temp, os.stat(target).st_mode & 0o7777)
                _read_back(out.temp, target)
                if os.path.exists(target) and backup:
                    _replace_backup(target)
                out.commit()  # fsync, rename over the target, fsync the directory
        except OSError as e:
            raise from_oserror(e, target, output=True) from None
        if path is not None and self.path is None:
            self.path = target
        return target


def check_firmware(fw: str) -> None:
    if fw not in FIRMWARES:
        raise UsageError(f"firmware must be uefi or bios, not {fw!r}")


def _checked(store: BcdStore) -> None:
    try:
        store.read_all()
    except BaseException:
        store.close()
        raise


def _read_back(temp: str, target: str) -> None:
    """What save() wrote reads as `bcd show` reads a store (BcdStore.read_all), or it is not renamed into
    place: the store it came from read cleanly (edits check it first), so this is ours to fix."""
    try:
        with BcdStore.open(temp) as back:
            back.read_all()
    except InputError as e:
        raise InternalError(f"the store written for {target} does not read back: {e.message.replace(temp, target)}") from None


def _replace_backup(target: str) -> None:
    """TARGET.bak := the current TARGET (a hard link when possible), atomically."""
    bak = target + ".bak"
    tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(bak)}.{secrets.token_hex(4)}.w2v-tmp")
    try:
        try:
            os.link(target, tmp)
        except OSError:
            with open(target, "rb") as src, open(tmp, "wb") as dst:
                while True:
                    b = src.read(1 << 20)
                    if not b:
                        break
                    dst.write(b)
                dst.flush()
                os.fsync(dst.fileno())
        os.replace(tmp, bak)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
