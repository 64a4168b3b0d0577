"""BCD vocabulary: well-known objects, object types and element types.

An element type is a dword ``C F NNNNNN`` (hex): C is its class (1 library,
2 application, 3 device, 4 template), F its format (how the value is stored),
N its number.  Application elements (class 2) mean different things in
objects of different application types, so their names are looked up per
application type.  Names are the friendly names bcdedit shows.
"""
from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass


class Format(enum.IntEnum):
    """The format nibble of an element type, and how each is stored."""

    DEVICE = 1        # REG_BINARY: a device record (wim2vhd.boot.devices)
    STRING = 2        # REG_SZ
    OBJECT = 3        # REG_SZ holding "{guid}"
    OBJECT_LIST = 4   # REG_MULTI_SZ of "{guid}"
    INTEGER = 5       # REG_BINARY, 8 bytes little-endian
    BOOLEAN = 6       # REG_BINARY, 1 byte
    INTEGER_LIST = 7  # REG_BINARY, n x 8 bytes little-endian


class ElementClass(enum.IntEnum):
    LIBRARY = 1
    APPLICATION = 2
    DEVICE = 3
    TEMPLATE = 4


def element_class(element: int) -> int:
    return (element >> 28) & 0xF


def element_format(element: int) -> int:
    return (element >> 24) & 0xF


# -- well-known objects -------------------------------------------------------
WELL_KNOWN: dict[str, uuid.UUID] = {
    "{bootmgr}": uuid.UUID("9dea862c-5cdd-4e70-acc1-f32b344d4795"),
    "{fwbootmgr}": uuid.UUID("a5a30fa2-3d06-4e9f-b5f4-a01df9d1fcba"),
    "{memdiag}": uuid.UUID("b2721d73-1db4-4c62-bf78-c548a880142d"),
    "{ntldr}": uuid.UUID("466f5a88-0af2-4f76-9038-095b170dc21c"),
    "{globalsettings}": uuid.UUID("7ea2e1ac-2e61-4728-aaa3-896d9d0a9f0e"),
    "{dbgsettings}": uuid.UUID("4636856e-540f-4170-a130-a84776f4c654"),
    "{emssettings}": uuid.UUID("0ce4991b-e6b3-4b16-b23c-5e0d9250e5d9"),
    "{badmemory}": uuid.UUID("5189b25c-5558-4bf2-bca4-289b11bd29e2"),
    "{bootloadersettings}": uuid.UUID("6efb52bf-1766-41db-a6b3-0ee5eff72bd7"),
    "{resumeloadersettings}": uuid.UUID("1afa9c49-16ab-4a5c-901b-212802da9460"),
    "{hypervisorsettings}": uuid.UUID("7ff607e0-4395-11db-b0de-0800200c9a66"),
    "{ramdiskoptions}": uuid.UUID("ae5534e0-a924-466c-b836-758539a3ee3a"),
    # Aliases bcdedit resolves at run time: the running OS and {bootmgr}'s default.
    "{current}": uuid.UUID("fa926493-6f1c-4193-a414-58f0b2456d1e"),
    "{default}": uuid.UUID("1cae1eb7-a0df-4d4d-9851-4860e34ef535"),
}
ALIAS_OF: dict[uuid.UUID, str] = {v: k for k, v in WELL_KNOWN.items()}
ALIAS_OF[WELL_KNOWN["{ntldr}"]] = "{ntldr}"
WELL_KNOWN["{legacy}"] = WELL_KNOWN["{ntldr}"]  # bcdedit accepts both names

BOOTMGR = WELL_KNOWN["{bootmgr}"]
FWBOOTMGR = WELL_KNOWN["{fwbootmgr}"]
MEMDIAG = WELL_KNOWN["{memdiag}"]
GLOBALSETTINGS = WELL_KNOWN["{globalsettings}"]
DBGSETTINGS = WELL_KNOWN["{dbgsettings}"]
EMSSETTINGS = WELL_KNOWN["{emssettings}"]
BADMEMORY = WELL_KNOWN["{badmemory}"]
BOOTLOADERSETTINGS = WELL_KNOWN["{bootloadersettings}"]
RESUMELOADERSETTINGS = WELL_KNOWN["{resumeloadersettings}"]
HYPERVISORSETTINGS = WELL_KNOWN["{hypervisorsettings}"]
RAMDISKOPTIONS = WELL_KNOWN["{ramdiskoptions}"]

# Titles bcdedit prints above an inheritable or device object it knows by name.
WELL_KNOWN_TITLES: dict[uuid.UUID, str] = {
    GLOBALSETTINGS: "Global Settings",
    DBGSETTINGS: "Debugger Settings",
    EMSSETTINGS: "EMS Settings",
    BADMEMORY: "RAM Defects",
    BOOTLOADERSETTINGS: "Boot Loader Settings",
    RESUMELOADERSETTINGS: "Resume Loader Settings",
    HYPERVISORSETTINGS: "Hypervisor Settings",
    RAMDISKOPTIONS: "Device options",
}


# -- object types ---------------------------------------------------------------
# Object type dword: top nibble 1 application, 2 inheritable, 3 device.
# Applications: bits 20-23 image type (1 firmware, 2 boot app, 3 legacy loader,
# 4 real mode), bits 0-19 application type.  Inheritable: bits 20-23 say who may
# inherit (1 any object, 2 applications of the type in bits 0-19, 3 devices).
class AppType(enum.IntEnum):
    FWBOOTMGR = 1
    BOOTMGR = 2
    OSLOADER = 3
    RESUME = 4
    MEMDIAG = 5
    NTLDR = 6
    SETUPLDR = 7
    BOOTSECTOR = 8
    STARTUP = 9
    BOOTAPP = 10


class ObjectType(enum.IntEnum):
    FWBOOTMGR = 0x10100001
    BOOTMGR = 0x10100002
    OSLOADER = 0x10200003
    RESUME = 0x10200004
    MEMDIAG = 0x10200005
    NTLDR = 0x10300006
    SETUPLDR = 0x10300007
    BOOTSECTOR = 0x10400008
    STARTUP = 0x10400009
    BOOTAPP = 0x1020000A
    INHERIT_ANY = 0x20100000
    INHERIT_BOOTMGR = 0x20200002
    INHERIT_OSLOADER = 0x20200003
    INHERIT_RESUME = 0x20200004
    INHERIT_MEMDIAG = 0x20200005
    INHERIT_DEVICE = 0x20300000
    DEVICE = 0x30000000


OBJECT_TYPE_TITLES: dict[int, str] = {
    ObjectType.FWBOOTMGR: "Firmware Boot Manager",
    ObjectType.BOOTMGR: "Windows Boot Manager",
    ObjectType.OSLOADER: "Windows Boot Loader",
    ObjectType.RESUME: "Resume from Hibernate",
    ObjectType.MEMDIAG: "Windows Memory Tester",
    ObjectType.NTLDR: "Windows Legacy OS Loader",
    ObjectType.SETUPLDR: "Windows Setup Loader",
    ObjectType.BOOTSECTOR: "Real-mode Boot Sector",
    ObjectType.STARTUP: "Real-mode Application",
    ObjectType.BOOTAPP: "Boot Application",
    ObjectType.DEVICE: "Device options",
}


def object_kind(object_type: int) -> int:
    return (object_type >> 28) & 0xF


def application_type(object_type: int) -> int | None:
    """The application type whose elements apply to an object of this type.

    Applications use their own; inheritable objects meant for one kind of
    application use that kind's; anything else has none.
    """
    kind = object_kind(object_type)
    if kind == 1 or (kind == 2 and (object_type >> 20) & 0xF == 2):
        return object_type & 0xFFFFF
    return None


def object_title(object_type: int, ident: uuid.UUID | None = None) -> str:
    if ident is not None and ident in WELL_KNOWN_TITLES:
        return WELL_KNOWN_TITLES[ident]
    if object_type in OBJECT_TYPE_TITLES:
        return OBJECT_TYPE_TITLES[object_type]
    kind = object_kind(object_type)
    if kind == 2:
        return "Inheritable Object"
    if kind == 1:
        return "Boot Application"
    return f"Object of type 0x{object_type:08x}"


# -- element types ----------------------------------------------------------------
@dataclass(frozen=True)
class ElementInfo:
    id: int
    name: str
    enum: dict[int, str] | None = None

    @property
    def format(self) -> int:
        return element_format(self.id)


NX = {0: "OptIn", 1: "OptOut", 2: "AlwaysOff", 3: "AlwaysOn"}
PAE = {0: "Default", 1: "ForceEnable", 2: "ForceDisable"}
BOOTMENUPOLICY = {0: "Legacy", 1: "Standard"}
DEBUGTYPE = {0: "Serial", 1: "1394", 2: "USB", 3: "NET", 4: "Local"}
HVDEBUGTYPE = {0: "Serial", 1: "1394", 2: "None", 3: "Net"}
HVLAUNCHTYPE = {0: "Off", 1: "Auto"}
BOOTSTATUSPOLICY = {0: "DisplayAllFailures", 1: "IgnoreAllFailures",
                    2: "IgnoreShutdownFailures", 3: "IgnoreBootFailures",
                    4: "IgnoreCheckpointFailures", 5: "DisplayShutdownFailures",
                    6: "DisplayBootFailures", 7: "DisplayCheckpointFailures"}
DISPLAYMESSAGE = {0: "Default", 1: "Resume", 2: "HyperV", 3: "Recovery", 4: "StartupRepair",
                  5: "SystemImageRecovery", 6: "CommandPrompt", 7: "SystemRestore",
                  8: "PushButtonReset"}
SAFEBOOT = {0: "Minimal", 1: "Network", 2: "DsRepair"}
FIRSTMEGABYTEPOLICY = {0: "UseNone", 1: "UseAll", 2: "UsePrivate"}
CONFIGACCESSPOLICY = {0: "Default", 1: "DisallowMmConfig"}
TSCSYNCPOLICY = {0: "Default", 1: "Legacy", 2: "Enhanced"}
DRIVERLOADFAILUREPOLICY = {0: "Fatal", 1: "UseErrorControl"}
X2APICPOLICY = {0: "Default", 1: "Disable", 2: "Enable"}
BOOTUX = {0: "Disabled", 1: "Basic", 2: "Standard"}


def _table(*rows) -> dict[int, ElementInfo]:
    out = {}
    for row in rows:
        ident, name, *rest = row
        out[ident] = ElementInfo(ident, name, rest[0] if rest else None)
    return out


LIBRARY = _table(
    (0x11000001, "device"),
    (0x12000002, "path"),
    (0x12000004, "description"),
    (0x12000005, "locale"),
    (0x14000006, "inherit"),
    (0x15000007, "truncatememory"),
    (0x14000008, "recoverysequence"),
    (0x16000009, "recoveryenabled"),
    (0x1700000A, "badmemorylist"),
    (0x1600000B, "badmemoryaccess"),
    (0x1500000C, "firstmegabytepolicy", FIRSTMEGABYTEPOLICY),
    (0x1500000D, "relocatephysical"),
    (0x1500000E, "avoidlowmemory"),
    (0x1600000F, "traditionalkseg"),
    (0x16000010, "bootdebug"),
    (0x15000011, "debugtype", DEBUGTYPE),
    (0x15000012, "debugaddress"),
    (0x15000013, "debugport"),
    (0x15000014, "baudrate"),
    (0x15000015, "channel"),
    (0x12000016, "targetname"),
    (0x16000017, "noumex"),
    (0x15000018, "debugstart"),
    (0x12000019, "busparams"),
    (0x1500001A, "hostip"),
    (0x1500001B, "port"),
    (0x1600001C, "dhcp"),
    (0x1200001D, "key"),
    (0x1600001E, "vm"),
    (0x16000020, "bootems"),
    (0x15000022, "emsport"),
    (0x15000023, "emsbaudrate"),
    (0x12000030, "loadoptions"),
    (0x16000040, "advancedoptions"),
    (0x16000041, "optionsedit"),
    (0x15000042, "keyringaddress"),
    (0x11000043, "bootstatdevice"),
    (0x12000044, "bootstatfilepath"),
    (0x16000045, "preservebootstat"),
    (0x16000046, "graphicsmodedisabled"),
    (0x15000047, "configaccesspolicy", CONFIGACCESSPOLICY),
    (0x16000048, "nointegritychecks"),
    (0x16000049, "testsigning"),
    (0x1200004A, "fontpath"),
    (0x1500004B, "integrityservices"),
    (0x1500004C, "volumebandid"),
    (0x16000050, "extendedinput"),
    (0x15000051, "initialconsoleinput"),
    (0x15000052, "graphicsresolution"),
    (0x16000053, "restartonfailure"),
    (0x16000054, "highestmode"),
    (0x16000060, "isolatedcontext"),
    (0x15000065, "displaymessage", DISPLAYMESSAGE),
    (0x15000066, "displaymessageoverride", DISPLAYMESSAGE),
    (0x16000068, "nobootuxtext"),
    (0x16000069, "nobootuxprogress"),
    (0x1600006A, "nobootuxfade"),
    (0x1600006B, "bootuxreservepooldebug"),
    (0x1600006C, "bootuxdisabled"),
    (0x1500006D, "bootuxfadeframes"),
    (0x1600006E, "bootuxdumpstats"),
    (0x1600006F, "bootuxshowstats"),
    (0x16000071, "multibootsystem"),
    (0x16000072, "nokeyboard"),
    (0x15000073, "aliaswindowskey"),
    (0x16000074, "bootshutdowndisabled"),
    (0x15000075, "performancefrequency"),
    (0x15000076, "securebootrawpolicy"),
    (0x17000077, "allowedinmemorysettings"),
    (0x1600007A, "mobilegraphics"),
    (0x1600007B, "forcefipscrypto"),
    (0x1500007D, "booterrorux"),
    (0x1600007E, "flightsigning"),
)

BOOTMGR_ELEMENTS = _table(
    (0x24000001, "displayorder"),
    (0x24000002, "bootsequence"),
    (0x23000003, "default"),
    (0x25000004, "timeout"),
    (0x26000005, "resume"),
    (0x23000006, "resumeobject"),
    (0x24000007, "startupsequence"),
    (0x24000010, "toolsdisplayorder"),
    (0x26000020, "displaybootmenu"),
    (0x26000021, "noerrordisplay"),
    (0x21000022, "bcddevice"),
    (0x22000023, "bcdfilepath"),
    (0x26000024, "hormenabled"),
    (0x26000025, "hiberboot"),
    (0x22000026, "passwordoverride"),
    (0x22000027, "pinpassphraseoverride"),
    (0x26000028, "processcustomactionsfirst"),
    (0x27000030, "customactions"),
    (0x26000031, "persistbootsequence"),
    (0x26000032, "skipstartupsequence"),
    (0x22000040, "fverecoveryurl"),
    (0x22000041, "fverecoverymessage"),
)

OSLOADER_ELEMENTS = _table(
    (0x21000001, "osdevice"),
    (0x22000002, "systemroot"),
    (0x23000003, "resumeobject"),
    (0x26000010, "detecthal"),
    (0x22000011, "kernel"),
    (0x22000012, "hal"),
    (0x22000013, "dbgtransport"),
    (0x25000020, "nx", NX),
    (0x25000021, "pae", PAE),
    (0x26000022, "winpe"),
    (0x26000024, "nocrashautoreboot"),
    (0x26000025, "lastknowngood"),
    (0x26000030, "nolowmem"),
    (0x25000031, "removememory"),
    (0x25000032, "increaseuserva"),
    (0x25000033, "perfmem"),
    (0x26000040, "vga"),
    (0x26000041, "quietboot"),
    (0x26000042, "novesa"),
    (0x26000043, "novga"),
    (0x25000050, "clustermodeaddressing"),
    (0x26000051, "usephysicaldestination"),
    (0x25000052, "restrictapiccluster"),
    (0x22000053, "evstore"),
    (0x26000054, "uselegacyapicmode"),
    (0x25000055, "x2apicpolicy", X2APICPOLICY),
    (0x26000060, "onecpu"),
    (0x25000061, "numproc"),
    (0x26000062, "maxproc"),
    (0x25000063, "configflags"),
    (0x26000064, "maxgroup"),
    (0x26000065, "groupaware"),
    (0x25000066, "groupsize"),
    (0x26000070, "usefirmwarepcisettings"),
    (0x25000071, "msi"),
    (0x25000072, "pciexpress"),
    (0x25000080, "safeboot", SAFEBOOT),
    (0x26000081, "safebootalternateshell"),
    (0x26000090, "bootlog"),
    (0x26000091, "sos"),
    (0x260000A0, "debug"),
    (0x260000A1, "halbreakpoint"),
    (0x260000A2, "useplatformclock"),
    (0x260000A3, "forcelegacyplatform"),
    (0x260000A4, "useplatformtick"),
    (0x260000A5, "disabledynamictick"),
    (0x250000A6, "tscsyncpolicy", TSCSYNCPOLICY),
    (0x260000B0, "ems"),
    (0x250000C0, "forcefailure"),
    (0x250000C1, "driverloadfailurepolicy", DRIVERLOADFAILUREPOLICY),
    (0x250000C2, "bootmenupolicy", BOOTMENUPOLICY),
    (0x260000C3, "onetimeadvancedoptions"),
    (0x260000C4, "onetimeoptionsedit"),
    (0x250000E0, "bootstatuspolicy", BOOTSTATUSPOLICY),
    (0x260000E1, "disableelamdrivers"),
    (0x250000F0, "hypervisorlaunchtype", HVLAUNCHTYPE),
    (0x220000F1, "hypervisorpath"),
    (0x260000F2, "hypervisordebug"),
    (0x250000F3, "hypervisordebugtype", HVDEBUGTYPE),
    (0x250000F4, "hypervisordebugport"),
    (0x250000F5, "hypervisorbaudrate"),
    (0x250000F6, "hypervisorchannel"),
    (0x250000F7, "bootux", BOOTUX),
    (0x260000F8, "hypervisordisableslat"),
    (0x220000F9, "hypervisorbusparams"),
    (0x250000FA, "hypervisornumproc"),
    (0x250000FB, "hypervisorrootprocpernode"),
    (0x260000FC, "hypervisoruselargevtlb"),
    (0x250000FD, "hypervisorhostip"),
    (0x250000FE, "hypervisorhostport"),
    (0x250000FF, "hypervisordebugpages"),
    (0x25000100, "tpmbootentropy"),
    (0x22000110, "hypervisorusekey"),
    (0x22000112, "hypervisorproductskutype"),
    (0x25000113, "hypervisorrootproc"),
    (0x26000114, "hypervisordhcp"),
    (0x25000115, "hypervisoriommupolicy"),
    (0x26000116, "hypervisorusevapic"),
    (0x22000117, "hypervisorloadoptions"),
    (0x25000118, "hypervisormsrfilterpolicy"),
    (0x25000119, "hypervisormmionxpolicy"),
    (0x2500011A, "hypervisorschedulertype"),
    (0x25000120, "xsavepolicy"),
    (0x25000130, "claimedtpmcounter"),
)

RESUME_ELEMENTS = _table(
    (0x21000001, "filedevice"),
    (0x22000002, "filepath"),
    (0x26000003, "customsettings"),
    (0x26000004, "pae"),
    (0x21000005, "associatedosdevice"),
    (0x26000006, "debugoptionenabled"),
    (0x25000007, "bootux", BOOTUX),
    (0x25000008, "bootmenupolicy", BOOTMENUPOLICY),
    (0x26000024, "hormenabled"),
)

MEMDIAG_ELEMENTS = _table(
    (0x25000001, "passcount"),
    (0x25000002, "testmix"),
)

NTLDR_ELEMENTS = _table(
    (0x22000001, "bpbstring"),
)

STARTUP_ELEMENTS = _table(
    (0x26000001, "pxesoftreboot"),
    (0x22000002, "applicationname"),
)

DEVICE_ELEMENTS = _table(
    (0x35000001, "ramdiskimageoffset"),
    (0x35000002, "ramdisktftpclientport"),
    (0x31000003, "ramdisksdidevice"),
    (0x32000004, "ramdisksdipath"),
    (0x35000005, "ramdiskimagelength"),
    (0x36000006, "exportascd"),
    (0x35000007, "ramdisktftpblocksize"),
    (0x35000008, "ramdisktftpwindowsize"),
    (0x36000009, "ramdiskmcenabled"),
    (0x3600000A, "ramdiskmctftpfallback"),
    (0x3600000B, "ramdisktftpvarwindow"),
)

APPLICATION_ELEMENTS: dict[int, dict[int, ElementInfo]] = {
    AppType.FWBOOTMGR: BOOTMGR_ELEMENTS,
    AppType.BOOTMGR: BOOTMGR_ELEMENTS,
    AppType.OSLOADER: OSLOADER_ELEMENTS,
    AppType.RESUME: RESUME_ELEMENTS,
    AppType.MEMDIAG: MEMDIAG_ELEMENTS,
    AppType.NTLDR: NTLDR_ELEMENTS,
    AppType.SETUPLDR: NTLDR_ELEMENTS,
    AppType.STARTUP: STARTUP_ELEMENTS,
}


def element_info(element: int, object_type: int | None = None) -> ElementInfo | None:
    """What bcdedit calls `element` in an object of `object_type` (None if unknown)."""
    cls = element_class(element)
    if cls == ElementClass.LIBRARY:
        return LIBRARY.get(element)
    if cls == ElementClass.APPLICATION and object_type is not None:
        app = application_type(object_type)
        table = APPLICATION_ELEMENTS.get(app) if app is not None else None
        return table.get(element) if table else None
    if cls == ElementClass.DEVICE:
        return DEVICE_ELEMENTS.get(element)
    return None


def element_name(element: int, object_type: int | None = None) -> str:
    """The friendly name, or ``custom:XXXXXXXX`` as bcdedit prints unknown ones."""
    info = element_info(element, object_type)
    return info.name if info else f"custom:{element:08x}"


def element_by_name(name: str, object_type: int | None = None) -> int:
    """The element type for a friendly name (or custom:XXXXXXXX / 0xXXXXXXXX)."""
    low = name.strip().lower()
    if low.startswith("custom:"):
        return int(low[7:], 16)
    if low.startswith("0x"):
        return int(low, 16)
    tables: list[dict[int, ElementInfo]] = []
    if object_type is not None:
        app = application_type(object_type)
        if app in APPLICATION_ELEMENTS:
            tables.append(APPLICATION_ELEMENTS[app])
        if object_kind(object_type) == 3:
            tables.append(DEVICE_ELEMENTS)
    tables.append(LIBRARY)
    for t in tables:
        for info in t.values():
            if info.name == low:
                return info.id
    raise KeyError(name)


# Element types the high-level operations use, by their meaning.
class E:
    DEVICE = 0x11000001
    PATH = 0x12000002
    DESCRIPTION = 0x12000004
    LOCALE = 0x12000005
    INHERIT = 0x14000006
    RECOVERYSEQUENCE = 0x14000008
    RECOVERYENABLED = 0x16000009
    BADMEMORYACCESS = 0x1600000B
    DEBUGTYPE = 0x15000011
    DEBUGPORT = 0x15000013
    BAUDRATE = 0x15000014
    HOSTIP = 0x1500001A     # an IPv4 address as an integer (wim2vhd.boot.debug)
    NETPORT = 0x1500001B
    NETKEY = 0x1200001D
    BOOTEMS = 0x16000020
    ISOLATEDCONTEXT = 0x16000060
    DISPLAYMESSAGE = 0x15000065
    DISPLAYMESSAGEOVERRIDE = 0x15000066
    ALLOWEDINMEMORYSETTINGS = 0x17000077
    # {bootmgr} / {fwbootmgr}
    DISPLAYORDER = 0x24000001
    DEFAULT = 0x23000003
    TIMEOUT = 0x25000004
    BOOTMGR_RESUMEOBJECT = 0x23000006
    TOOLSDISPLAYORDER = 0x24000010
    # OS loader
    OSDEVICE = 0x21000001
    SYSTEMROOT = 0x22000002
    RESUMEOBJECT = 0x23000003
    DETECTHAL = 0x26000010
    NX = 0x25000020
    WINPE = 0x26000022
    DEBUG = 0x260000A0
    BOOTMENUPOLICY = 0x250000C2
    # resume
    FILEDEVICE = 0x21000001
    FILEPATH = 0x22000002
    RESUME_BOOTMENUPOLICY = 0x25000008
    # hypervisor settings
    HYPERVISORDEBUGTYPE = 0x250000F3
    HYPERVISORDEBUGPORT = 0x250000F4
    HYPERVISORBAUDRATE = 0x250000F5
    # device options (a RAM disk's)
    RAMDISKSDIDEVICE = 0x31000003
    RAMDISKSDIPATH = 0x32000004
    # Set to Yes on the WinRE loader by Windows (reagentc and Setup); bcdedit has no name for it and
    # shows it as custom:46000010 (seen in stores of Windows 10 and 11, e.g. 25H2's).
    WINRE_46000010 = 0x46000010
