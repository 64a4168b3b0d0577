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
    raised_in: str      # path of the innermost wim2vhd frame, relative to the repository
    breaks: str         # "exception": not an InputError; "message": an InputError whose text is not printable
    what: str


KNOWN: tuple[Known, ...] = (
    Known("parent-path-unquoted", ("vhd", "vhdx"), "ParentError", "wim2vhd/disk/base.py", "message",
          "a differencing disk's parent locator is printed raw in 'parent disk not found (looked for: ...)': "
          "control characters from the file reach the terminal"),
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
        if (target in k.targets and type(e).__name__ == k.exception and where == k.raised_in
                and breaks == k.breaks):
            return k.label
    return None
