"""Build wim2vhd's one cffi extension, ``wim2vhd._native``.

Everything native lives in this folder: the C sources (``*.c``), their public
headers (``w2v_*.h``), and under ``cdefs/`` what cffi must see of the system's
libraries (wimlib, hivex), one file per library.  Our own headers are not
declared twice: cffi reads them directly, minus the preprocessor lines.
The extension links the system's libwim, libntfs-3g and hivex.

    make native      # rebuild in place (pip install -e . without build isolation)
    make sanitize    # a separate build with AddressSanitizer and UBSan (native/build_sanitized.py)

W2V_SANITIZE=1 in the environment adds the sanitizers' flags; only build_sanitized.py sets it.
"""
import os
import pathlib
import re

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

# Headers of our C code that Python calls (w2v_block_int.h, w2v_got.h and w2v_ntfs3g.h are internal).
PUBLIC_HEADERS = ("w2v_block.h", "w2v_ntfsdev.h", "w2v_wim.h", "w2v_ntfsvol.h", "w2v_readahead.h")


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
    libraries=["wim", "ntfs-3g", "hivex", "pthread"],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function", "-std=gnu11"] + (SANITIZE if _sanitized else []),
    extra_link_args=SANITIZE[:1] if _sanitized else [],
)
