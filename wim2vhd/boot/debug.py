"""--debug: the kernel debugger settings, as `bcdedit /dbgsettings` and `bcdedit /set {default} debug on`
write them (Convert-WindowsImage's -EnableDebugger does the same with bcdedit).

    serial[:PORT[:BAUD]]     debugtype Serial, debugport PORT (1), baudrate BAUD (115200)
    net:HOSTIP:PORT[:KEY]    debugtype NET, hostip, port, key (made when not given, and printed)
    local                    debugtype Local (local kernel debugging: `kd -kl`)

{dbgsettings} gets exactly these elements (what it held before goes, as with bcdedit /dbgsettings),
and the default loader `debug Yes`.  The elements (elements.py, Microsoft's BcdLibraryInteger_*
names): debugtype 0x15000011, debugport 0x15000013, baudrate 0x15000014, hostip 0x1500001A, port
0x1500001B, key 0x1200001D; debug 0x260000A0 (BcdOSLoaderBoolean_KernelDebuggerEnabled).

hostip is an integer element holding the IPv4 address as the number whose big-endian bytes are the
address (10.0.0.1 is 0x0A000001), stored little-endian like every integer element: so Microsoft's
own XDE tooling writes it (the address bytes reversed into an 8-byte value).

A KDNET key is four words of base 36 (0-9, a-z) separated by dots, each a 64-bit number: the
256-bit key bcdedit makes when given none, and prints.  The key made here comes from repro.derived,
so a run with --seed makes the same key.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from wim2vhd import repro
from wim2vhd.errors import UsageError

DEBUGTYPE = {"serial": 0, "net": 3, "local": 4}   # elements.DEBUGTYPE: Serial, NET, Local
DEFAULT_PORT = 1
DEFAULT_BAUD = 115200
BAUD_RATES = (9600, 19200, 38400, 57600, 115200)  # what bcdedit /dbgsettings serial baudrate takes
MAX_COM = 255
KEY_WORDS = 4
_WORD = re.compile(r"[0-9a-z]{1,13}")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"

USAGE = "serial[:PORT[:BAUD]], net:HOSTIP:PORT[:KEY] or local"


@dataclass(frozen=True)
class Debug:
    """One --debug setting; key None for net: made at the boot stage (make_key)."""
    type: str
    port: int | None = None
    baud: int | None = None
    host: str | None = None
    key: str | None = None

    def to_dict(self) -> dict:
        out: dict = {"type": self.type}
        if self.type == "serial":
            out.update(port=self.port, baudrate=self.baud)
        elif self.type == "net":
            out.update(hostip=self.host, port=self.port, key=self.key)
        out["text"] = self.text()
        return out

    def text(self) -> str:
        if self.type == "serial":
            return f"serial COM{self.port} at {self.baud} baud"
        if self.type == "net":
            return f"net to {self.host}:{self.port}, key {self.key}"
        return "local"


def _bad(spec: str, why: str) -> UsageError:
    return UsageError(f"--debug {spec!r}: {why} (use {USAGE})")


def _number(spec: str, text: str, what: str, lo: int, hi: int) -> int:
    t = text.strip()
    if not t.isdigit() or not lo <= int(t) <= hi:
        raise _bad(spec, f"the {what} must be a number from {lo} to {hi}, not {text!r}")
    return int(t)


def check_key(spec: str, key: str) -> str:
    words = key.strip().lower().split(".")
    if len(words) != KEY_WORDS or not all(_WORD.fullmatch(w) and int(w, 36) < 1 << 64 for w in words):
        raise _bad(spec, f"the key must be {KEY_WORDS} words of 0-9 and a-z separated by dots, each at most a "
                         f"64-bit number (as bcdedit makes them), not {key!r}")
    return ".".join(words)


def parse(spec: str) -> Debug:
    """A --debug value, checked (UsageError, exit 2, for anything else)."""
    parts = spec.strip().split(":")
    kind = parts[0].strip().lower()
    if kind == "local":
        if len(parts) > 1:
            raise _bad(spec, "local takes nothing after it")
        return Debug("local")
    if kind == "serial":
        if len(parts) > 3:
            raise _bad(spec, "serial takes a port and a baud rate at most")
        port_text = parts[1].strip().lower() if len(parts) > 1 else str(DEFAULT_PORT)
        port_text = port_text[3:] if port_text.startswith("com") else port_text  # COM1 or 1
        port = _number(spec, port_text, "port", 1, MAX_COM)
        baud = _number(spec, parts[2], "baud rate", 1, 10 ** 7) if len(parts) > 2 else DEFAULT_BAUD
        if baud not in BAUD_RATES:
            raise _bad(spec, f"the baud rate must be one of {', '.join(map(str, BAUD_RATES))}, not {baud}")
        return Debug("serial", port=port, baud=baud)
    if kind in ("net", "network"):  # Convert-WindowsImage calls it Network
        if len(parts) not in (3, 4):
            raise _bad(spec, "net takes the host's IPv4 address and a port, and a key if you have one")
        try:
            host = str(ipaddress.IPv4Address(parts[1].strip()))
        except ValueError:
            raise _bad(spec, f"the host must be an IPv4 address, not {parts[1]!r}") from None
        port = _number(spec, parts[2], "port", 1, 65535)
        key = check_key(spec, parts[3]) if len(parts) == 4 else None
        return Debug("net", port=port, host=host, key=key)
    raise _bad(spec, f"unknown debugger type {parts[0]!r}")


def _base36(n: int) -> str:
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = _DIGITS[d] + out
        if not n:
            return out


def make_key() -> str:
    """A new KDNET key: 4 random 64-bit words in base 36 (derived from the seed in a reproducible run)."""
    raw = repro.derived("kdnet-key", 8 * KEY_WORDS)
    return ".".join(_base36(int.from_bytes(raw[i:i + 8], "little")) for i in range(0, len(raw), 8))


def hostip_value(host: str) -> int:
    return int(ipaddress.IPv4Address(host))


def apply(store, loader, debug: Debug) -> Debug:
    """{dbgsettings} and `debug Yes` on `loader`; returns the settings written (with the key made)."""
    from wim2vhd.boot.elements import DBGSETTINGS, E, ObjectType
    if debug.type == "net" and debug.key is None:
        debug = Debug("net", port=debug.port, host=debug.host, key=make_key())
    d = store.ensure_object(ObjectType.INHERIT_ANY, DBGSETTINGS)
    for e in d.element_ids():  # as bcdedit /dbgsettings: only what this type has
        d.delete(e)
    d.set(E.DEBUGTYPE, DEBUGTYPE[debug.type])
    if debug.type == "serial":
        d.update({E.DEBUGPORT: debug.port, E.BAUDRATE: debug.baud})
    elif debug.type == "net":
        d.update({E.HOSTIP: hostip_value(debug.host), E.NETPORT: debug.port, E.NETKEY: debug.key})
    store.object(loader).set(E.DEBUG, True)
    return debug
