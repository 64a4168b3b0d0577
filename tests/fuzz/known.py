"""Findings the fuzzers hit in code this branch does not fix (wim2vhd/disk/, whose header checks are being
rewritten elsewhere: issue 14).  A finding listed here does not stop a fuzz run; anything else does.  Each has
a known-<label>* input in tests/fuzz/corpus/<target>/ that shows it, and tests/test_fuzz.py reports when one of
those inputs no longer breaks the promise (then the entry here goes, and the input is renamed found-*).

A finding is matched by its target, its exception type and the file of the innermost wim2vhd frame it was
raised in, never by its message alone.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass


@dataclass(frozen=True)
class Known:
    label: str
    targets: tuple[str, ...]
    exception: str      # type name
    raised_in: tuple[str, ...]  # the innermost wim2vhd frame is in one of these (relative to the repository)
    breaks: str         # "exception": not an InputError; "message": an InputError whose text is not printable
    what: str


KNOWN: tuple[Known, ...] = (
    Known("parent-path-unquoted", ("vhd", "vhdx"), "ParentError", ("wim2vhd/disk/base.py",), "message",
          "a differencing disk's parent locator is printed raw in 'parent disk not found (looked for: ...)': "
          "control characters from the file reach the terminal"),
    Known("header-offset-overflow", ("vhd", "vhdx"), "OverflowError", ("wim2vhd/disk/base.py",), "exception",
          "an offset read from a header (a VHD dynamic header's BAT offset, a VHDX metadata region's offset) "
          "of 2^63 or more reaches os.pread unchecked: 'Python int too large to convert to C long' (exit 6)"),
    Known("parent-locator-offset-overflow", ("vhd",), "OverflowError", ("wim2vhd/disk/vhd.py",), "exception",
          "a VHD parent locator's platform data offset of 2^63 or more reaches os.pread in parent_paths: "
          "OverflowError (exit 6)"),
    Known("header-size-unbounded", ("vhd", "vhdx"), "MemoryError", ("wim2vhd/disk/base.py", "wim2vhd/disk/vhd.py"),
          "exception", "a size read from a header (a VHD's Max Table Entries, a parent locator's data length) is "
          "read in one buffer whatever it says: gigabytes asked of os.pread, a MemoryError under the fuzzer's "
          "6 GiB limit (exit 6)"),
    Known("metadata-item-length", ("vhdx",), "ValueError", ("wim2vhd/disk/vhdx.py",), "exception",
          "a VHDX metadata item shorter than its type (a page-83 disk ID of under 16 bytes) reaches "
          "uuid.UUID(bytes_le=...): ValueError (exit 6)"),
)


def innermost(e: BaseException) -> str:
    """The repository-relative file of the innermost wim2vhd frame of e's traceback ("" if none)."""
    where = ""
    for fr in traceback.extract_tb(e.__traceback__):
        i = fr.filename.replace("\\", "/").rfind("/wim2vhd/")
        if i >= 0:
            where = fr.filename[i + 1:]
    return where


def classify(target: str, e: BaseException, breaks: str) -> str | None:
    where = innermost(e)
    for k in KNOWN:
        if (target in k.targets and type(e).__name__ == k.exception and where in k.raised_in
                and breaks == k.breaks):
            return k.label
    return None
