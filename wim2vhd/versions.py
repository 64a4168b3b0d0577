"""The versions of what makes wim2vhd's output: itself, the libraries it links and the tools it runs.

A reproducible build (apply --seed, build's manifest) gives the same bytes on any machine with the same
versions of these, so the manifest records them and `build --check` says which differ.

wimlib says its own version (wimlib_get_version_string); libntfs-3g and hivex have no such call, so
their version is the one of the package that installed the file this process loaded (dpkg or rpm), or
else what pkg-config says of the headers the extension was built with.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from typing import Any

# The libraries the native extension links: name in the manifest -> file name stem, pkg-config module.
LIBRARIES = {"wimlib": ("libwim.so", "wimlib"), "libntfs-3g": ("libntfs-3g.so", "libntfs-3g"),
             "hivex": ("libhivex.so", "hivex")}
# The tools whose output lands in a disk (fs/tools.py, boot/biosboot.py).
TOOLS = ("mkntfs", "mkfs.fat", "mcopy", "grub-mkimage")
GRUB_FILES = ("/usr/lib/grub/i386-pc/boot.img",)  # boot/biosboot.py's boot code


def _quiet(args: list[str], *, partial: bool = False) -> str | None:
    """The command's output, or None when it fails (partial: its output even then, as dpkg-query -S
    gives for the paths it knows when some are not)."""
    if not shutil.which(args[0]):
        return None
    try:
        cp = subprocess.run(args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                            env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    ok = cp.returncode == 0 or partial
    return cp.stdout.strip() if ok and cp.stdout.strip() else None


def _loaded(stem: str) -> str | None:
    """The file of a shared library this process has mapped (the native extension's dependencies)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split(maxsplit=5)[-1].strip()
                if os.path.basename(path).startswith(stem):
                    return path
    except OSError:
        pass
    return None


def _names(path: str) -> list[str]:
    """The names a file may have in the package database: with a merged /usr, dpkg knows the one its
    package gave it (/lib/... or /usr/lib/..., /sbin/... or /usr/sbin/...)."""
    real = os.path.realpath(path)
    other = [re.sub(r"^/usr(?=/(s?bin|lib)/)", "", q) if q.startswith("/usr/") else "/usr" + q for q in (path, real)]
    return list(dict.fromkeys((path, real, *other)))


def packages_of(paths: list[str]) -> dict[str, str]:
    """{path: "name version"} of the distribution packages that installed the paths (those known):
    two dpkg-query runs for all of them, else rpm for each."""
    names = {n: p for p in paths for n in _names(p)}
    owners: dict[str, str] = {}
    out = _quiet(["dpkg-query", "-S", *names], partial=True)
    for line in (out or "").splitlines():
        pkg, _, file = line.partition(": ")
        if file in names and "," not in pkg:
            owners.setdefault(names[file], pkg.split(":")[0].strip())
    if owners:
        listed = _quiet(["dpkg-query", "-W", "-f=${Package} ${Version}\\n", *sorted(set(owners.values()))],
                        partial=True)
        vers = dict(line.split(" ", 1) for line in (listed or "").splitlines() if " " in line)
        return {p: f"{pkg} {vers[pkg]}" for p, pkg in owners.items() if pkg in vers}
    res = {}
    for p in paths:
        out = _quiet(["rpm", "-qf", "--qf", "%{NAME} %{VERSION}-%{RELEASE}", os.path.realpath(p)])
        if out:
            res[p] = out
    return res


def _upstream(package: str) -> str:
    """'libntfs-3g89 1:2022.10.3-1+deb12u4' -> '2022.10.3' (no epoch, no distribution revision)."""
    ver = package.split(" ", 1)[1]
    ver = ver.split(":", 1)[-1]
    return ver.rsplit("-", 1)[0] if "-" in ver else ver


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, Any]:
    """{"wim2vhd", "wimlib", "libntfs-3g", "hivex": version, "packages": {name: version}} for this
    process: the libraries as loaded, the tools as found on PATH."""
    from wim2vhd import __version__
    from wim2vhd._lib import ffi, lib
    from wim2vhd.fs.tools import find_tool
    from wim2vhd.errors import EnvironmentFault
    res: dict[str, Any] = {"wim2vhd": __version__}
    loaded = {name: _loaded(stem) for name, (stem, _) in LIBRARIES.items()}
    files = [p for p in loaded.values() if p]
    for tool in TOOLS:
        try:
            files.append(find_tool(tool))
        except EnvironmentFault:
            continue
    files += [f for f in GRUB_FILES if os.path.exists(f)]
    owners = packages_of(files)
    for name, (_, module) in LIBRARIES.items():
        pkg = owners.get(loaded[name] or "")
        if name == "wimlib":
            res[name] = ffi.string(lib.wimlib_get_version_string()).decode()
        elif pkg:
            res[name] = _upstream(pkg)
        else:
            res[name] = _quiet(["pkg-config", "--modversion", module]) or "unknown"
    res["packages"] = dict(sorted(pkg.split(" ", 1) for pkg in set(owners.values())))
    return res
