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

Element values are Python values: Device (devices.py), str, uuid.UUID,
list[uuid.UUID], int, bool, list[int]; anything stored in a way wim2vhd does
not model exactly is a RawValue and is written back unchanged.
"""
from __future__ import annotations

import os
import secrets
import struct
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any

from wim2vhd import repro
from wim2vhd.atomic import AtomicOutput
from wim2vhd.boot import elements as el
from wim2vhd.boot.devices import Boot, Device, Locate, Vhd, decode_device, encode_device
from wim2vhd.boot.elements import E, Format, ObjectType
from wim2vhd.boot.hive import Hive, Key, RegType, Value, decode_multi_sz, decode_sz, encode_multi_sz, encode_sz
from wim2vhd.errors import (CorruptInput, InputError, InternalError, OutputExists, UnsupportedInput,
                            UsageError, Wim2VhdError, from_oserror)

ELEMENT_VALUE = "Element"
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


# -- element values ------------------------------------------------------------------
@dataclass(frozen=True)
class RawValue:
    """An element value kept as stored (wrong registry type, odd length, unknown format)."""

    type: int
    data: bytes = field(repr=False)

    def text(self) -> str:
        return "hex:" + self.data.hex()


class PaddedStr(str):
    """A string element with bytes after its terminating NUL: Windows sometimes
    writes a second NUL, or leftovers of an older value.  The text is the
    string; `tail` is kept so the value re-encodes to the same bytes."""

    tail: bytes = b""

    def __new__(cls, text: str, tail: bytes):
        s = super().__new__(cls, text)
        s.tail = tail
        return s


ElementValue = Any  # Device | str | uuid.UUID | list[uuid.UUID] | int | bool | list[int] | RawValue


def _guid_text(g: uuid.UUID) -> str:
    return "{%s}" % g


def _parse_guid(s: str) -> uuid.UUID:
    if not (s.startswith("{") and s.endswith("}") and len(s) == 38):
        raise ValueError(s)
    return uuid.UUID(s[1:-1])


def encode_element(element: int, value: ElementValue) -> Value:
    """The registry value (named "Element") that stores `value` for `element`."""
    if isinstance(value, RawValue):
        return Value(ELEMENT_VALUE, value.type, value.data)
    fmt = el.element_format(element)
    if fmt == Format.DEVICE:
        if not isinstance(value, Device):
            raise TypeError(f"element {element:08x} holds a device, not {value!r}")
        return Value(ELEMENT_VALUE, RegType.BINARY, encode_device(value))
    if fmt == Format.STRING:
        if not isinstance(value, str):
            raise TypeError(f"element {element:08x} holds a string, not {value!r}")
        tail = value.tail if isinstance(value, PaddedStr) else b""
        return Value(ELEMENT_VALUE, RegType.SZ, encode_sz(value) + tail)
    if fmt == Format.OBJECT:
        return Value(ELEMENT_VALUE, RegType.SZ, encode_sz(_guid_text(_as_uuid(value))))
    if fmt == Format.OBJECT_LIST:
        return Value(ELEMENT_VALUE, RegType.MULTI_SZ,
                     encode_multi_sz([_guid_text(_as_uuid(v)) for v in value]))
    if fmt == Format.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"element {element:08x} holds an integer, not {value!r}")
        return Value(ELEMENT_VALUE, RegType.BINARY, struct.pack("<Q", value & (2**64 - 1)))
    if fmt == Format.BOOLEAN:
        if not isinstance(value, bool):
            raise TypeError(f"element {element:08x} holds a boolean, not {value!r}")
        return Value(ELEMENT_VALUE, RegType.BINARY, bytes([1 if value else 0]))
    if fmt == Format.INTEGER_LIST:
        return Value(ELEMENT_VALUE, RegType.BINARY, b"".join(struct.pack("<Q", int(v)) for v in value))
    raise TypeError(f"element {element:08x} has unknown format {fmt}: give a RawValue")


def decode_element(element: int, value: Value) -> ElementValue:
    """The Python value of an element; RawValue when it is not stored as its format says."""
    fmt = el.element_format(element)
    t, data = value.type, value.data
    out: ElementValue = None
    try:
        if fmt == Format.DEVICE and t == RegType.BINARY:
            out = decode_device(data)
        elif fmt == Format.STRING and t == RegType.SZ:
            out = _decode_string(data)
        elif fmt == Format.OBJECT and t == RegType.SZ:
            out = _parse_guid(decode_sz(data))
        elif fmt == Format.OBJECT_LIST and t == RegType.MULTI_SZ:
            out = [_parse_guid(s) for s in decode_multi_sz(data)]
        elif fmt == Format.INTEGER and t == RegType.BINARY and len(data) == 8:
            out = struct.unpack("<Q", data)[0]
        elif fmt == Format.BOOLEAN and t == RegType.BINARY and len(data) == 1 and data[0] in (0, 1):
            out = bool(data[0])
        elif fmt == Format.INTEGER_LIST and t == RegType.BINARY and len(data) % 8 == 0:
            out = [v for (v,) in struct.iter_unpack("<Q", data)]
    except (ValueError, UnicodeDecodeError):
        out = None
    if out is None or encode_element(element, out).data != data:
        return RawValue(int(t), data)
    return out


def _decode_string(data: bytes) -> str:
    """REG_SZ text up to its first NUL; anything after it rides along as a PaddedStr tail."""
    if len(data) % 2:
        raise ValueError("odd-length UTF-16")
    for i in range(0, len(data), 2):
        if data[i:i + 2] == b"\0\0":
            text = data[:i].decode("utf-16-le")
            tail = data[i + 2:]
            return PaddedStr(text, tail) if tail else text
    raise ValueError("no NUL terminator")


def _as_uuid(v) -> uuid.UUID:
    if isinstance(v, uuid.UUID):
        return v
    if isinstance(v, str):
        return parse_object_id(v)
    raise TypeError(f"not an object identifier: {v!r}")


def parse_object_id(text: str) -> uuid.UUID:
    """`{bootmgr}`-style names and GUIDs with or without braces (not {default}/{current})."""
    s = text.strip()
    low = s.lower()
    if low in ("{default}", "{current}"):
        raise UsageError(f"{text} names an object only on a running Windows: give its GUID")
    if low in el.WELL_KNOWN:
        return el.WELL_KNOWN[low]
    try:
        return uuid.UUID(low.strip("{}"))
    except ValueError:
        raise UsageError(f"{text!r} is not a BCD object identifier (a GUID or a name like {{bootmgr}})") from None


def format_value(element: int, value: ElementValue, object_type: int | None = None,
                 names: dict[uuid.UUID, str] | None = None) -> list[str]:
    """The value as bcdedit prints it: one or more lines."""
    def obj(g: uuid.UUID) -> str:
        return names.get(g, _guid_text(g)) if names is not None else _guid_text(g)

    if isinstance(value, RawValue):
        return [value.text()]
    if isinstance(value, Device):
        return [value.text()]
    if isinstance(value, bool):
        return ["Yes" if value else "No"]
    if isinstance(value, str):
        return [value]
    if isinstance(value, uuid.UUID):
        return [obj(value)]
    if isinstance(value, int):
        info = el.element_info(element, object_type)
        if info and info.enum and value in info.enum:
            return [info.enum[value]]
        return [str(value)] if info else [f"0x{value:x}"]
    if isinstance(value, list):
        if el.element_format(element) == Format.INTEGER_LIST:
            return [f"0x{v:x}" for v in value] or [""]
        return [obj(v) for v in value] or [""]
    return [repr(value)]


def value_to_json(value: ElementValue):
    if isinstance(value, RawValue):
        return {"reg_type": value.type, "hex": value.data.hex()}
    if isinstance(value, Device):
        return dict(value.to_json(), text=value.text())
    if isinstance(value, uuid.UUID):
        return _guid_text(value)
    if isinstance(value, list):
        return [_guid_text(v) if isinstance(v, uuid.UUID) else v for v in value]
    return value


# -- objects -------------------------------------------------------------------------
class BcdObject:
    """One object of a store (a view on its registry key)."""

    def __init__(self, store: "BcdStore", key: Key, ident: uuid.UUID):
        self.store = store
        self.key = key
        self.id = ident

    def __repr__(self) -> str:
        return f"<BcdObject {self.alias or _guid_text(self.id)} type 0x{self.type:08x}>"

    @property
    def type(self) -> int:
        d = self.key.child("Description")
        v = d.value("Type") if d is not None else None
        try:
            return v.as_dword() if v is not None else 0
        except ValueError:
            return 0

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
        return cls(hive, None)

    @classmethod
    def new_system_store(cls, firmware: str, *, locale: str = "en-US", timeout: int = 30,
                         bootmgr_device: Device | None = None, memdiag: bool = True) -> "BcdStore":
        """What bcdboot starts from: the settings objects, {bootmgr} (and
        {fwbootmgr} on UEFI) and, unless memdiag=False, {memdiag}."""
        _check_firmware(firmware)
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
            # the same checks as open(); messages name the store, not the temporary file
            try:
                store = cls.open(tmp, write=write)
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
            self.hive.commit(tmp)
            with open(tmp, "rb") as f:
                return f.read()
        finally:
            os.unlink(tmp)

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
        except ValueError:
            return False

    @property
    def description_values(self) -> list[Value]:
        return self._description_key.values() if self._description_key is not None else []

    # -- objects ---------------------------------------------------------------------
    def objects(self) -> list[BcdObject]:
        out = []
        for k in self._objects_key.children():
            try:
                ident = _parse_guid(k.name)
            except ValueError:
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
        return _as_uuid(ident)

    def find(self, ident: uuid.UUID | str) -> BcdObject | None:
        g = self.resolve(ident)
        k = self._objects_key.child(_guid_text(g))
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
        g = _as_uuid(ident) if ident is not None else repro.uuid_for("bcd-object")
        if self._objects_key.child(_guid_text(g)) is not None:
            raise UsageError(f"the BCD store already has an object {el.ALIAS_OF.get(g, _guid_text(g))}")
        k = self._objects_key.add_child(_guid_text(g))
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
        _check_firmware(fw)
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
        _check_firmware(firmware)
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
        """A "Resume from Hibernate" object; filedevice holds hiberfil.sys (default: device)."""
        fw = self._firmware(firmware)
        r = self.add_object(ObjectType.RESUME)
        r.update({E.DEVICE: device, E.PATH: path or RESUME_PATH[fw], E.DESCRIPTION: description,
                  E.LOCALE: locale, E.INHERIT: [el.RESUMELOADERSETTINGS],
                  E.ALLOWEDINMEMORYSETTINGS: ALLOWED_IN_MEMORY,
                  E.FILEDEVICE: filedevice or device, E.FILEPATH: filepath,
                  E.RESUME_BOOTMENUPOLICY: BOOTMENUPOLICY_STANDARD})
        return r.id

    def add_os_loader(self, description: str, device: Device, osdevice: Device | None = None, *,
                      path: str | None = None, systemroot: str = "\\Windows", locale: str = "en-US",
                      firmware: str | None = None, resume: bool = True, default: bool = False,
                      display_first: bool = False, nx: int = NX_OPTIN,
                      bootmenupolicy: int = BOOTMENUPOLICY_STANDARD,
                      ident: uuid.UUID | str | None = None) -> uuid.UUID:
        """A "Windows Boot Loader" object, as bcdboot writes it; returns its GUID.

        `device` holds winload (`path`), `osdevice` the Windows directory
        (`systemroot`; default: device).  With resume=True a resume object for
        the same devices is added and linked.  The entry joins {bootmgr}'s
        displayorder (last, or first with display_first) and becomes its
        default with default=True, or when {bootmgr} has no default yet.
        """
        fw = self._firmware(firmware)
        osdev = osdevice or device
        loader = self.add_object(ObjectType.OSLOADER, ident)
        loader.update({E.DEVICE: device, E.PATH: path or LOADER_PATH[fw], E.DESCRIPTION: description,
                       E.LOCALE: locale, E.INHERIT: [el.BOOTLOADERSETTINGS],
                       E.ALLOWEDINMEMORYSETTINGS: ALLOWED_IN_MEMORY,
                       E.OSDEVICE: osdev, E.SYSTEMROOT: systemroot})
        resume_id = None
        if resume:
            resume_id = self.add_resume(device, osdev, firmware=fw, locale=locale)
            loader.set(E.RESUMEOBJECT, resume_id)
        loader.update({E.NX: nx, E.BOOTMENUPOLICY: bootmenupolicy})
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
                               f"{obj.alias or _guid_text(obj.id)} is not a list of objects (registry type "
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
                self.hive.commit(out.temp)
                if os.path.exists(target):
                    os.chmod(out.temp, os.stat(target).st_mode & 0o7777)
                with BcdStore.open(out.temp):  # read it back through the checks any store gets
                    pass
                if os.path.exists(target) and backup:
                    _replace_backup(target)
                out.commit()  # fsync, rename over the target, fsync the directory
        except OSError as e:
            raise from_oserror(e, target) from None
        if path is not None and self.path is None:
            self.path = target
        return target


def _check_firmware(fw: str) -> None:
    if fw not in FIRMWARES:
        raise UsageError(f"firmware must be uefi or bios, not {fw!r}")


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


# -- reading a whole store as text or JSON --------------------------------------------------
_TYPE_RANK = {ObjectType.FWBOOTMGR: 0, ObjectType.BOOTMGR: 1, ObjectType.OSLOADER: 2,
              ObjectType.RESUME: 3, ObjectType.MEMDIAG: 4}


def _sort_key(order: list[uuid.UUID]):
    """bcdedit /enum all order: boot managers, loaders, resume, tools, other
    applications, inheritable settings, device options; then display order."""
    def key(o: BcdObject):
        t = o.type
        rank = _TYPE_RANK.get(t, {1: 5, 2: 6, 3: 7}.get(el.object_kind(t), 8))
        pos = order.index(o.id) if o.id in order else len(order)
        return (rank, pos, str(o.id))
    return key


def _format_name(element: int) -> str:
    try:
        return Format(el.element_format(element)).name.lower()
    except ValueError:
        return "unknown"


def describe(store: BcdStore, *, verbose: bool = False) -> list[dict]:
    """Every object with every element: id, names, values, display text."""
    objs = store.objects()
    bm = store.find(el.BOOTMGR)
    order: list[uuid.UUID] = []
    default = None
    if bm is not None:
        for e in (E.DISPLAYORDER, E.TOOLSDISPLAYORDER):
            v = bm.get(e)
            if isinstance(v, list):
                order += v
        d = bm.get(E.DEFAULT)
        default = d if isinstance(d, uuid.UUID) else None
    names: dict[uuid.UUID, str] = {}
    if not verbose:
        names = dict(el.ALIAS_OF)
        if default is not None:
            names[default] = "{default}"
    out = []
    for o in sorted(objs, key=_sort_key(order)):
        t = o.type
        elems = []
        for eid, val in o.elements().items():
            info = el.element_info(eid, t)
            elems.append({
                "id": f"0x{eid:08x}",
                "name": el.element_name(eid, t),
                "format": _format_name(eid),
                "lines": format_value(eid, val, t, names),
                "value": value_to_json(val),
                "known": info is not None,
            })
        out.append({
            "id": _guid_text(o.id),
            "identifier": names.get(o.id, _guid_text(o.id)),
            "alias": o.alias,
            "type": f"0x{t:08x}",
            "title": o.title,
            "elements": elems,
        })
    return out


def render_text(objects: list[dict]) -> str:
    """bcdedit /enum all style text."""
    blocks = []
    for o in objects:
        lines = [o["title"], "-" * len(o["title"]), f"{'identifier':<24}{o['identifier']}"]
        for e in o["elements"]:
            first, *rest = e["lines"]
            lines.append(f"{e['name']:<24}{first}".rstrip())
            lines += [" " * 24 + r for r in rest]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


__all__ = [
    "BcdStore", "BcdObject", "RawValue", "encode_element", "decode_element", "describe",
    "render_text", "parse_object_id", "format_value", "PaddedStr",
]


# -- whole-file operations (what the `wim2vhd bcd` commands do) -------------------------------
def create_store_file(path: str | os.PathLike, *, firmware: str = "uefi", force: bool = False,
                      locale: str = "en-US") -> dict:
    """A new system store at `path` (refused if it exists, unless force)."""
    _check_firmware(firmware)
    p = os.path.abspath(os.fspath(path))
    if os.path.lexists(p) and not force:
        raise OutputExists(f"{p} exists: use --force to replace it")
    with BcdStore.new_system_store(firmware, locale=locale) as store:
        store.save(p, overwrite=force, backup=True)
        return {"store": p, "firmware": firmware,
                "objects": [_guid_text(o.id) for o in store.objects()]}


def normalize_windows_path(path: str, what: str = "path") -> str:
    """A path on a Windows volume as BCD holds it: backslashes, rooted, no drive letter."""
    p = path.strip().replace("/", "\\")
    if len(p) >= 2 and p[1] == ":":
        raise UsageError(f"{what} {path!r} must not name a drive: give the path from the volume's root, "
                         "e.g. \\vhds\\win.vhdx, and say where the volume is with --host*")
    if not p.startswith("\\"):
        p = "\\" + p
    if p == "\\" or p.endswith("\\"):
        raise UsageError(f"{what} {path!r} must name a file")
    if "\0" in p:
        raise UsageError(f"{what} must not contain NUL")
    return p


def add_vhd_entry(path: str | os.PathLike, vhd_path: str, *, host: Device | None = None,
                  description: str = "Windows", default: bool = False, firmware: str | None = None,
                  locale: str = "en-US", backup: bool = True) -> dict:
    """Add a Windows Boot Loader (+ resume) booting from a VHD/VHDX to the store at `path`.

    `host` holds the VHD file: None or Locate.by_path(...) for bcdedit's
    `[locate]`, Boot(), MbrPartition or GptPartition.  The store is replaced
    atomically and the old one kept as STORE.bak.
    """
    p = os.path.abspath(os.fspath(path))
    vp = normalize_windows_path(vhd_path, "--vhd-path")
    if host is None or (isinstance(host, Locate) and host.kind == 1 and not host.path):
        host = Locate.by_path(vp)
    device = Vhd(vp, host)
    with BcdStore.open(p, write=True) as store:
        if store.find(el.BOOTMGR) is None:
            raise InputError(f"{p} has no Windows Boot Manager ({{bootmgr}}) to list the entry in",
                             hint="make a system store with `wim2vhd bcd create`")
        fw = store._firmware(firmware)
        guid = store.add_os_loader(description, device, device, firmware=fw, locale=locale,
                                   default=default)
        loader = store.object(guid)
        resume = loader.get(E.RESUMEOBJECT)
        store.save(p, overwrite=True, backup=backup)
        is_default = store.object(el.BOOTMGR).get(E.DEFAULT) == guid
    return {"store": p, "id": _guid_text(guid),
            "resume": _guid_text(resume) if isinstance(resume, uuid.UUID) else None,
            "device": device.text(), "firmware": fw, "default": is_default,
            "backup": p + ".bak" if backup else None}
