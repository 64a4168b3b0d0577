"""One hierarchy of errors, split by who is at fault, each with an exit code.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``;
no traceback is shown for anything below :class:`Wim2VhdError`.  Messages say
what is wrong and, where it helps, what to do about it.

Exit codes:
  2  usage: a bad option or argument                     (UsageError)
  3  input: a file we were given is missing, corrupt or unsupported (InputError)
  4  output: the target exists, or there is no room     (OutputError)
  5  environment: a tool or library is missing or failed (EnvironmentFault)
  6  internal: a bug in wim2vhd                          (InternalError)
  130 interrupted                                        (Interrupted)
"""
from __future__ import annotations

import errno as _errno
import os


class Wim2VhdError(Exception):
    """Base of every error wim2vhd raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} ({hint})")


# -- the user's fault -------------------------------------------------------
class UsageError(Wim2VhdError):
    """A bad option value or combination."""

    exit_code = 2


class InputError(Wim2VhdError):
    """An input file is missing, unreadable, corrupt or of a kind we do not support."""

    exit_code = 3


class CorruptInput(InputError):
    """An input file is damaged: a bad signature, checksum, CRC or table entry."""


class UnsupportedInput(InputError):
    """An input is valid but uses something wim2vhd does not support."""


class ImageNotFound(InputError):
    """No image in the WIM has the index or name asked for."""


class ParentError(InputError):
    """A differencing disk's parent is missing or is not the disk it was made from."""


class OutputError(Wim2VhdError):
    """The output cannot be written: it exists, or there is no room."""

    exit_code = 4


class OutputExists(OutputError):
    pass


class NoSpace(OutputError):
    """The virtual disk or the host file system is too small."""


# -- the environment's fault ------------------------------------------------
class EnvironmentFault(Wim2VhdError):
    """A tool or library wim2vhd relies on is missing or failed."""

    exit_code = 5


class ToolFailed(EnvironmentFault):
    def __init__(self, tool: str, returncode: int, stderr: str = ""):
        last = (stderr or "").strip().splitlines()[-1:] or [""]
        super().__init__(f"{tool} failed with exit code {returncode}" + (f": {last[0]}" if last[0] else ""))
        self.tool = tool
        self.returncode = returncode


# -- ours -------------------------------------------------------------------
class InternalError(Wim2VhdError):
    exit_code = 6


class Interrupted(Wim2VhdError):
    exit_code = 130


def from_errno(code: int, what: str) -> Wim2VhdError:
    """An OS error number from the native layer, as the right kind of error."""
    code = abs(code)
    msg = f"{what}: {os.strerror(code)}"
    # Errno values from the host's file system.  A full NTFS volume inside the disk comes
    # back from wimlib instead (wim.py), and apply checks the fit before writing.
    if code in (_errno.ENOSPC, _errno.EDQUOT):
        return NoSpace(msg, hint="the file system that holds the output is full: free space there or write elsewhere")
    if code == _errno.EFBIG:
        return NoSpace(msg, hint="the output's file system cannot hold a file this large: write elsewhere")
    if code in (_errno.ENOENT, _errno.EACCES, _errno.EPERM, _errno.EROFS):
        return InputError(msg)
    if code == _errno.EINVAL:
        return CorruptInput(msg)
    return EnvironmentFault(msg)


def from_oserror(e: OSError, what: str | None = None) -> Wim2VhdError:
    name = what or (e.filename and str(e.filename)) or "I/O"
    return from_errno(e.errno or _errno.EIO, name)
