"""The native hooks in wimlib and libntfs-3g (native/w2v_got.c), and what their absence costs.

Each hook rewrites one library's GOT slots so that the library's own calls reach a function of
ours.  Whether that works depends on how the distribution linked the library: one linked with
-Bsymbolic-functions calls its own functions directly, and the hook is not installed.  wim2vhd
then works as before, only bigger or slower; `need` says so once per process, on stderr, and
`wim2vhd --version --json` lists every hook with whether it is installed and why not.

W2V_NO_HOOKS=1 turns every hook off.  The user asked for that, so it is not warned about: the
hooks are reported with the reason "W2V_NO_HOOKS" by --version, and nothing else is said.
W2V_TEST_HOOK_FAIL=<symbol> (for the tests only) makes the hook of that symbol fail as if its
slot were missing, so that a group's rollback can be tested.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

from wim2vhd._lib import ffi, lib

# By the index native/w2v_hooks.h gives each.
NAMES = ("readahead", "read-window", "compact-allocation", "clock", "iso-in-place")

# What the missing hook costs, as said to the user.
COSTS = {
    "readahead": "apply will be slower (wimlib decompresses every chunk on its one thread)",
    "read-window": "apply will be slower (wimlib reads every chunk a second time, and each small file "
                   "with a read of its own)",
    "compact-allocation": "dynamic disks will be 2 to 2.5 times larger (libntfs-3g spreads new files "
                          "across the volume)",
    "clock": "with --seed the identifiers are still reproducible, but the NTFS volume is not "
             "(libntfs-3g stamps what it creates with the current time)",
    "iso-in-place": "an ISO's install image is copied beside the output before it is applied (as much "
                    "free space as the image, and the time to copy it)",
}

# Why not, by state (native/w2v_hooks.h); {sym} is the symbol at fault, {soname} the library.
REASONS = {
    lib.W2V_HOOK_OFF: "W2V_NO_HOOKS",
    lib.W2V_HOOK_NO_LIBRARY: "no library with the soname {soname} is loaded",
    lib.W2V_HOOK_NO_SLOT: "its build binds {sym} directly",
    lib.W2V_HOOK_FOREIGN: "its slot for {sym} leads elsewhere: another hook was there first",
    lib.W2V_HOOK_PROTECT: "its slot for {sym} could not be made writable",
    lib.W2V_HOOK_NOT_RELA: "its PLT relocation for {sym} is not an ELF64 RELA jump slot",
    lib.W2V_HOOK_FORCED: "W2V_TEST_HOOK_FAIL={sym}",
    lib.W2V_HOOK_NEEDS: "it needs the {needs} hook",
}

_said: set[str] = set()
_said_lock = threading.Lock()


def _str(p: Any) -> str | None:
    return ffi.string(p).decode() if p != ffi.NULL else None


def _info(index: int) -> dict[str, Any]:
    inf = ffi.new("struct w2v_hook_info *")
    lib.w2v_hook_info(index, inf)
    symbols = []
    while (s := lib.w2v_hook_symbol(index, len(symbols))) != ffi.NULL:
        symbols.append(ffi.string(s).decode())
    state = int(inf.state)
    soname = _str(inf.soname)
    reason = None
    if state != lib.W2V_HOOK_INSTALLED:
        reason = REASONS.get(state, "not tried").format(sym=_str(inf.failed), soname=soname,
                                                      needs=_str(inf.needs))
    return {"name": _str(inf.name), "library": soname, "symbols": symbols,
            "installed": state == lib.W2V_HOOK_INSTALLED, "reason": reason,
            "slots": int(inf.slots), "patched": int(inf.patched)}


def status() -> list[dict[str, Any]]:
    """Every hook, installed where it can be (harmless: each passes every call on until asked)."""
    for i in range(len(NAMES)):
        lib.w2v_hook_install(i)
    return [_info(i) for i in range(len(NAMES))]


def missing_lines() -> list[str]:
    """One line per hook that is not installed, for plain --version."""
    hooks = status()
    if all(h["reason"] == "W2V_NO_HOOKS" for h in hooks):
        return ["hooks: all off (W2V_NO_HOOKS)"]
    return [f"hook {h['name']}: not installed in {h['library']} ({h['reason']}): {COSTS[h['name']]}"
            for h in hooks if not h["installed"]]


def need(name: str) -> bool:
    """Install hook `name` if it is not yet; whether it is.  A hook that cannot be installed is said
    once per process, on stderr, with what it costs (not under W2V_NO_HOOKS, which asked for it)."""
    index = NAMES.index(name)
    if lib.w2v_hook_install(index) == lib.W2V_HOOK_INSTALLED:
        return True
    h = _info(index)
    with _said_lock:
        if h["reason"] == "W2V_NO_HOOKS" or name in _said:
            return False
        _said.add(name)
    print(f"wim2vhd: the {name} hook could not be installed in {h['library']} ({h['reason']}): {COSTS[name]}",
          file=sys.stderr)
    return False


def libraries() -> list[dict[str, Any]]:
    """The libraries linked: soname, file loaded, version built against, and the running version
    where the library tells it (wimlib does; libntfs-3g and hivex have no such call)."""
    out = []
    for i in range(lib.W2V_LIB_COUNT):
        inf = ffi.new("struct w2v_lib_info *")
        lib.w2v_lib_info(i, inf)
        name = _str(inf.name)
        running = None
        if name == "wimlib":
            v = int(lib.wimlib_get_version())
            running = f"{v >> 20}.{(v >> 10) & 0x3FF}.{v & 0x3FF}"
        out.append({"name": name, "soname": _str(inf.soname), "path": _str(inf.path),
                    "built_against": _str(inf.built) or None, "version": running})
    return out
