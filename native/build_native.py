"""Build wim2vhd's one cffi extension, ``wim2vhd._native``.

Everything native lives in this folder: the C sources (``*.c``), their public
headers (``w2v_*.h``), and under ``cdefs/`` what cffi must see of the system's
libraries (wimlib, hivex), one file per library.  Our own headers are not
declared twice: cffi reads them directly, minus the preprocessor lines.
The extension links the system's libwim, libntfs-3g, hivex and zlib (qcow2's compressed clusters).

    make native      # rebuild in place (pip install -e . without build isolation)
    make sanitize    # a separate build with AddressSanitizer and UBSan (native/build_sanitized.py)

W2V_SANITIZE=1 in the environment adds the sanitizers' flags; only build_sanitized.py sets it.
"""
import ctypes.util
import os
import pathlib
import re
import subprocess

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

# Headers of our C code that Python calls (w2v_block_int.h, w2v_got.h, w2v_ntfs3g.h and w2v_vfile_int.h
# are internal).
PUBLIC_HEADERS = ("w2v_block.h", "w2v_ntfs_device.h", "w2v_wim.h", "w2v_ntfs_files.h", "w2v_readahead.h",
                  "w2v_hooks.h", "w2v_vfile.h")

# The libraries linked: (macro suffix, -l name, pkg-config name).  The GOT hooks (w2v_got.c) find
# each by its exact soname, the one the linker resolves -l<name> to, as the loader will.  wimlib's
# version comes from wimlib.h itself (its .pc file can lag behind: Debian 12's says 1.13.5 of 1.13.6).
LIBRARIES = (("WIM", "wim", None), ("NTFS3G", "ntfs-3g", "libntfs-3g"), ("HIVEX", "hivex", "hivex"))


def soname(lib: str) -> str:
    """The soname of lib<lib>.so as the system's loader cache knows it (libwim.so.15, ...)."""
    name = ctypes.util.find_library(lib)
    if not name or not re.fullmatch(r"lib[\w.+-]+\.so\.\d+", name):
        raise SystemExit(f"native/build_native.py: cannot find the soname of lib{lib} (got {name!r}); "
                         f"is its -dev package installed?")
    return name


def built_version(pkg: str) -> str:
    """The version pkg-config gives for pkg's headers, or "" without pkg-config."""
    try:
        return subprocess.run(["pkg-config", "--modversion", pkg], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def library_macros() -> list[tuple[str, str]]:
    out = []
    for macro, lib, pkg in LIBRARIES:
        out.append((f"W2V_SONAME_{macro}", f'"{soname(lib)}"'))
        if pkg:
            out.append((f"W2V_VERSION_{macro}", f'"{built_version(pkg)}"'))
    return out



def header_cdef(path: pathlib.Path) -> str:
    """A C header as cffi declarations: include guards and includes dropped, constants as `...`."""
    out = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if s.startswith("#"):
            m = re.match(r"#\s*define\s+(\w+)\s+\S", s)
            if m:
                out.append(f"#define {m.group(1)} ...")
            continue
        out.append(line)
    return "\n".join(out)


# Every finding fatal (UBSan too), frames kept for readable reports.
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
_sanitized = os.environ.get("W2V_SANITIZE") == "1"

ffibuilder = FFI()
ffibuilder.cdef("\n".join([p.read_text() for p in sorted((HERE / "cdefs").glob("*.h"))]
                          + [header_cdef(HERE / h) for h in PUBLIC_HEADERS]))
ffibuilder.set_source(
    "wim2vhd._native",
    '#include "w2v_ntfs3g.h"\n#include <wimlib.h>\n#include <hivex.h>\n'
    + "".join(f'#include "{h}"\n' for h in PUBLIC_HEADERS),
    # relative for setuptools; cffi's own compile (the sanitized build) runs in its temporary directory
    sources=[str(p if _sanitized else p.relative_to(HERE.parent)) for p in sorted(HERE.glob("*.c"))],
    include_dirs=[str(HERE)],
    define_macros=library_macros(),
    libraries=["wim", "ntfs-3g", "hivex", "z", "pthread", "dl"],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function", "-std=gnu11"] + (SANITIZE if _sanitized else []),
    extra_link_args=SANITIZE[:1] if _sanitized else [],
)
