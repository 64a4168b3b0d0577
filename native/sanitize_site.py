"""Installed as sitecustomize.py beside the sanitized build (native/build_sanitized.py): Python started with
the ASan runtime preloaded keeps it for the Python programs it starts (this interpreter, the wim2vhd console
script: anything in its environment's bin/, and a wrapper such as setpriv that starts one), and starts every
other program without it.  qemu-img and
qemu-io hang with ASan preloaded (their coroutines switch stacks), and other tools only add noise."""
import os
import subprocess
import sys

_PRELOAD = os.environ.pop("LD_PRELOAD", None)
if _PRELOAD:
    os.environ["W2V_ASAN_PRELOAD"] = _PRELOAD
_PRELOAD = _PRELOAD or os.environ.get("W2V_ASAN_PRELOAD")
_BIN = os.path.realpath(os.path.join(sys.prefix, "bin"))
_popen_init = subprocess.Popen.__init__


def _ours(program) -> bool:
    import shutil
    path = shutil.which(os.fspath(program)) if program is not None else None
    if path is None:
        return False
    path = os.path.abspath(path)
    return os.path.dirname(path) == os.path.join(sys.prefix, "bin") or \
        os.path.dirname(os.path.realpath(path)) == _BIN or os.path.realpath(path) == os.path.realpath(sys.executable)


def _init(self, args, *a, **kw):
    if _PRELOAD:
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        # ours, or a wrapper that starts ours (setpriv ... wim2vhd, as the tests run it as nobody)
        if not kw.get("shell") and any(_ours(x) for x in [kw.get("executable"), *argv] if x is not None):
            env = dict(kw.get("env") if kw.get("env") is not None else os.environ)
            env["LD_PRELOAD"] = _PRELOAD
            kw["env"] = env
    _popen_init(self, args, *a, **kw)


if _PRELOAD:
    subprocess.Popen.__init__ = _init
