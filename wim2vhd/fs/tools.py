"""The formatting tools (mkntfs, mkfs.fat, mtools): found on the system, run with a fixed locale."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Mapping

from wim2vhd.errors import EnvironmentFault, ToolFailed

TOOL_PACKAGES = {"mkntfs": "ntfs-3g", "mkfs.fat": "dosfstools", "mcopy": "mtools", "mattrib": "mtools"}

_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_tool(name: str) -> str:
    """The tool's path; EnvironmentFault naming the Debian package when it is missing."""
    # mkfs.fat lives in /usr/sbin, which is not on an ordinary user's PATH on Debian.
    path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if not path:
        pkg = TOOL_PACKAGES.get(name, name)
        raise EnvironmentFault(f"{name} not found: install the Debian package {pkg} (apt-get install {pkg})")
    return path


def run(name: str, args: list[str], *, env: Mapping[str, str] | None = None) -> str:
    exe = find_tool(name)
    full_env = dict(os.environ)
    full_env["LC_ALL"] = "C"
    if env:
        full_env.update(env)
    try:
        cp = subprocess.run([exe, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            errors="replace", env=full_env)
    except OSError as e:
        raise EnvironmentFault(f"cannot run {name}: {e.strerror}") from None
    if cp.returncode != 0:
        raise ToolFailed(name, cp.returncode, cp.stderr.strip() or cp.stdout)
    return cp.stdout


def mtools_env() -> dict[str, str]:
    # Skip mtools' sanity checks (it would complain about the hidden sectors of
    # a partition image), and ignore any ~/.mtoolsrc drive definitions.
    return {"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}


