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


# Empty: the five findings in wim2vhd/disk/ (a parent path printed raw, header offsets of 2^63 and more,
# unbounded header sizes, a short VHDX metadata item) were fixed by the disk rewrite of issue 14; their
# inputs are kept as found-* regression cases.
KNOWN: tuple[Known, ...] = ()


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
