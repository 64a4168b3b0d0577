"""What a command is given as IMAGE: a WIM, an ESD, the first part of a split WIM, or a Windows ISO
(read in place, or through a temporary copy); and the output names several images get."""
from __future__ import annotations

import contextlib
import os
import re
from typing import Any

from wim2vhd.errors import InputError
from wim2vhd.wim import iso


@contextlib.contextmanager
def open_source(image: str, *, temp_dir: str | None = None, metadata_only: bool = False):
    """(path wimlib opens, path inside the ISO or None, how the ISO is read or None): a Windows ISO's
    install.wim/esd is read in place through wim2vhd.wim.iso (or, where it cannot be, a temporary copy
    removed when the block ends); anything else is passed on."""
    if os.fspath(image).lower().endswith(".iso"):
        found = iso.find_install_image(image)
        with iso.open_image(image, temp_dir=temp_dir, metadata_only=metadata_only, found=found) as (p, how):
            yield p, found.path, how
    else:
        yield image, None, None


def file_component(text: str, fallback: str) -> str:
    """text made safe as one file name component (no slashes or control characters), else fallback."""
    return re.sub(r"[/\\\x00-\x1f]", "_", text).strip() or fallback


def output_name(template: str, index: int, name: str) -> str:
    """OUT with {index} and {name} filled in (the name made safe as one file name component)."""
    return template.replace("{index}", str(index)).replace("{name}", file_component(name, f"image{index}"))


def check_parts(image: str, wim: Any, refs: tuple[str, ...]) -> None:
    """Refuse a later part of a split WIM, or its first part without the others (--ref)."""
    if wim.part_number > 1:
        raise InputError(f"{image} is part {wim.part_number} of a split WIM of {wim.total_parts} parts: give the "
                         f"first part as IMAGE and the others with --ref")
    if wim.total_parts > 1 and not refs:
        stem = os.path.splitext(image)[0]
        raise InputError(f"{image} is part 1 of a split WIM of {wim.total_parts} parts: pass the others too",
                         hint=f"--ref '{stem}*.swm'")
