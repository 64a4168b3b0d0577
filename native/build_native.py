"""Build wim2vhd's one cffi extension, ``wim2vhd._native``.

Everything native lives in this folder: the C sources (``*.c``) and, under
``cdefs/``, the declarations cffi sees, one file per area, read in name order.
The extension links the system's libwim, libntfs-3g and hivex.

    make native      # rebuild in place (pip install -e . without build isolation)
"""
import pathlib
import sys

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef("\n".join(p.read_text() for p in sorted((HERE / "cdefs").glob("*.h"))))
ffibuilder.set_source(
    "wim2vhd._native",
    """
    #include "w2v_ntfs3g.h"
    #include <wimlib.h>
    #include <hivex.h>
    #include "w2v_block.h"
    #include "w2v_ntfsdev.h"
    #include "w2v_wim.h"
    """
    + "".join(f'#include "{h.name}"\n' for h in sorted(HERE.glob("w2v_*.h"))
              if h.name not in ("w2v_block_int.h", "w2v_ntfs3g.h")),
    sources=[str(p.relative_to(HERE.parent)) for p in sorted(HERE.glob("*.c"))],
    include_dirs=[str(HERE)],
    libraries=["wim", "ntfs-3g", "hivex", "pthread"],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function", "-std=gnu11"],
)
