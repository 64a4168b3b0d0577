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


def _quiet(args: list[str]) -> str | None:
    if not shutil.which(args[0]):
        return None
    try:
        cp = subprocess.run(args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                            env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    return cp.stdout.strip() if cp.returncode == 0 and cp.stdout.strip() else None


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


def package_of(path: str) -> str | None:
    """'name version' of the distribution package that installed path, or None."""
    real = os.path.realpath(path)
    # With a merged /usr a file has two names, and dpkg knows the one its package gave it.
    other = [re.sub(r"^/usr(?=/(s?bin|lib)/)", "", q) if q.startswith("/usr/") else "/usr" + q for q in (path, real)]
    for p in dict.fromkeys((path, real, *other)):
        out = _quiet(["dpkg-query", "-S", p])
        if out:
            name = out.splitlines()[0].split(":")[0].strip()
            ver = _quiet(["dpkg-query", "-W", "-f=${Version}", name])
            if ver:
                return f"{name} {ver}"
    out = _quiet(["rpm", "-qf", "--qf", "%{NAME} %{VERSION}-%{RELEASE}", real])
    return out or None


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
    packages: dict[str, str] = {}
    for name, (stem, module) in LIBRARIES.items():
        path = _loaded(stem)
        pkg = package_of(path) if path else None
        if pkg:
            n, v = pkg.split(" ", 1)
            packages[n] = v
        if name == "wimlib":
            res[name] = ffi.string(lib.wimlib_get_version_string()).decode()
        elif pkg:
            res[name] = _upstream(pkg)
        else:
            res[name] = _quiet(["pkg-config", "--modversion", module]) or "unknown"
    files = []
    for tool in TOOLS:
        try:
            files.append(find_tool(tool))
        except EnvironmentFault:
            continue
    for path in (*files, *(f for f in GRUB_FILES if os.path.exists(f))):
        pkg = package_of(path)
        if pkg:
            n, v = pkg.split(" ", 1)
            packages[n] = v
    res["packages"] = dict(sorted(packages.items()))
    return res
