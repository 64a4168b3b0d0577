"""One hierarchy of errors, split by who is at fault, each with an exit code.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``;
no traceback is shown for anything below :class:`Wim2VhdError`.  Messages say
what is wrong and, where it helps, what to do about it.

Exit codes:
  2  usage: a bad option or argument                     (UsageError)
  3  input: a file we were given is missing, corrupt or unsupported (InputError)
  4  output or host I/O: the target exists, there is no room, or the host's storage failed (OutputError)
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
    #: the OS error number this error was made from (from_errno), or None
    errno: int | None = None
    #: errno is what a system call on the file the message names said (not a library's guess)
    host: bool = False

    def __init__(self, message: str, *, hint: str | None = None, errno: int | None = None, host: bool = False):
        self.message = message
        self.hint = hint
        if errno is not None:
            self.errno = errno
        if host:
            self.host = True
        super().__init__(message if not hint else f"{message} ({hint})")

    def renamed(self, old: str, new: str) -> "Wim2VhdError":
        """The same error with the path `old` named `new` (a temporary file as the output it becomes)."""
        e = type(self).__new__(type(self))
        e.__dict__.update(self.__dict__)
        Wim2VhdError.__init__(e, self.message.replace(old, new), errno=self.errno, host=self.host,
                              hint=self.hint.replace(old, new) if self.hint else None)
        return e


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


class HostIOError(OutputError):
    """The host's storage failed under a read or a write (EIO)."""


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


# Errors of the host's storage and file system, whoever's file they hit.
HOST_ERRNOS = frozenset((_errno.EIO, _errno.ENOSPC, _errno.EDQUOT, _errno.EFBIG))
EIO_HINT = "the host's storage failed: see the kernel log, dmesg"
HOST_FULL_HINT = "the file system that holds the output is full: free space there or write elsewhere"


def from_errno(code: int, what: str, *, output: bool = False, host: bool = False) -> Wim2VhdError:
    """An OS error number from the native layer, as the right kind of error.

    output: `what` is a file we write (an output, or a store we edit), so that a denied or read-only
    file is an output error (exit 4), not a bad input (exit 3).  host: the number is what a system call
    on that file said (see Wim2VhdError.host)."""
    e = _from_errno(abs(code), what, output)
    e.host = host
    return e


def _from_errno(code: int, what: str, output: bool) -> Wim2VhdError:
    msg = f"{what}: {os.strerror(code)}"
    # Errno values from the host's file system.  A full NTFS volume inside the disk comes
    # back from wimlib instead (wim.py), and apply checks the fit before writing.
    if code in (_errno.ENOSPC, _errno.EDQUOT):
        return NoSpace(msg, hint=HOST_FULL_HINT, errno=code)
    if code == _errno.EFBIG:
        return NoSpace(msg, hint="the output's file system cannot hold a file this large: write elsewhere",
                       errno=code)
    if code == _errno.EIO:
        return HostIOError(msg, hint=EIO_HINT, errno=code)
    if code in (_errno.ENOENT, _errno.EACCES, _errno.EPERM, _errno.EROFS, _errno.EISDIR, _errno.ENOTDIR):
        return (OutputError if output else InputError)(msg, errno=code)
    if code == _errno.EINVAL and not output:
        return CorruptInput(msg, errno=code)
    if code == _errno.EBADMSG:  # the native layer's word for data it cannot decode (a qcow2's deflate stream)
        return CorruptInput(f"{what}: damaged data (a compressed cluster that does not inflate)", errno=code)
    return EnvironmentFault(msg, errno=code)


def from_oserror(e: OSError, what: str | None = None, *, output: bool = False) -> Wim2VhdError:
    name = what or (e.filename and str(e.filename)) or "I/O"
    if e.filename2:  # a rename or a link: the new name is the one at fault more often
        name = f"{name}: {e.filename2}"
    return from_errno(e.errno or _errno.EIO, name, output=output, host=True)


def host_error(code: int, path: str, *, reading: bool = False) -> Wim2VhdError:
    """What a failed system call on `path` means to the user, in one line that names `path`: the
    host file system is full, the host's storage failed, or the file cannot be written."""
    code = abs(code) or _errno.EIO
    why = os.strerror(code)
    if code in (_errno.ENOSPC, _errno.EDQUOT):
        return NoSpace(f"no space left on the host file system for {path}",
                       hint=f"{why}: free space there or write elsewhere", errno=code)
    if code == _errno.EFBIG:
        return NoSpace(f"the host file system cannot hold {path}: the file is too large for it",
                       hint="write elsewhere", errno=code)
    if code == _errno.EIO:
        return HostIOError(f"cannot {'read' if reading else 'write'} {path}: {why}", hint=EIO_HINT, errno=code)
    if reading:
        return from_errno(code, f"cannot read {path}")
    return OutputError(f"cannot write {path}: {why}", errno=code)
