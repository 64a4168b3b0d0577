"""A recipe's matrix as jobs: one disk each, with a stable id, its output, its inputs and its options.

A job's id is IMAGE-INDEX-LAYOUT-FORMAT (IMAGE: the [[image]]'s id, by default its source's file name
without the extension), e.g. win11-6-uefi-vhdx: the same recipe gives the same ids on every machine,
whatever the order of its tables, so a CI system can hand them out (build --only ID).

Expanding opens every source (only its metadata) to resolve the editions, and checks every job's
options as apply would, so that nothing starts before every problem of the recipe is known.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Any

from wim2vhd.build.recipe import (ALL, CUSTOM_KEYS, PLACEHOLDERS, ImageSpec, Recipe, RecipeError)
from wim2vhd.errors import InputError, UsageError
from wim2vhd.options import ApplyOptions


@dataclass
class Job:
    id: str
    spec: ImageSpec
    index: int
    image: dict[str, Any]        # ImageInfo.to_dict() of the edition
    layout: str
    format: str
    output: str                  # as the template gives it (relative to the recipe's folder, or absolute)
    path: str                    # absolute
    install_image: str | None    # the path inside an ISO source

    @property
    def seed(self) -> str | None:
        return self.spec.keywords.get("seed")

    @property
    def apply_seed(self) -> str | None:
        """The seed this job gives apply: `apply SOURCE OUT --index N --seed APPLY_SEED` and the job's
        options make the same bytes.  Each job's own, so that no two disks of a recipe share an
        identifier (two of them may meet in one VM)."""
        return None if self.seed is None else f"{self.seed}:{self.id}"

    def keywords(self) -> dict[str, Any]:
        """ApplyOptions.from_keywords' keywords for this job."""
        kw = dict(self.spec.keywords, layout=self.layout, index=self.index, format=self.format)
        if self.seed is not None:
            kw["seed"] = self.apply_seed
        return kw

    def options(self) -> dict[str, Any]:
        """The recipe's options of this job, as written (paths as the recipe gives them)."""
        return dict(sorted(self.spec.given.items())) | {"layout": self.layout, "format": self.format}

    def inputs(self) -> list[str]:
        """Every file and folder the job reads, absolute: the source, the other parts of a split WIM,
        the customizations' files and folders, a BIOS boot code."""
        out = [self.spec.source]
        for ref in self.spec.keywords.get("refs", ()):
            out += sorted(glob.glob(ref)) if any(c in ref for c in "*?[") else [ref]
        if self.spec.keywords.get("bios_boot_code"):
            out.append(self.spec.keywords["bios_boot_code"])
        for name, kind in CUSTOM_KEYS.values():
            value = self.spec.custom.get(name)
            if kind == "file" and value:
                out.append(value)
            elif kind == "files":
                out += list(value or ())
        return list(dict.fromkeys(out))

    def to_dict(self, recipe: Recipe) -> dict[str, Any]:
        """The job as --list-jobs prints it; paths relative to the recipe's folder."""
        return {"id": self.id, "output": self.output, "format": self.format, "layout": self.layout,
                "source": recipe.relative(self.spec.source), "index": self.index, "name": self.image["name"],
                "edition": self.image.get("edition"), "arch": self.image.get("architecture"),
                "inputs": [recipe.relative(p) for p in self.inputs()]}


def _located(recipe: Recipe, spec: ImageSpec, e: Exception, prefix: str = "") -> RecipeError:
    """A problem of one [[image]] found by apply's own checks, at the line of the key it names (its
    flag, e.g. --recovery, read as the recipe's key), else at the table's header."""
    msg = getattr(e, "message", None) or str(e)
    hint = getattr(e, "hint", None)
    line = None
    names = {f.flag: (key, key) for key, f in ApplyOptions.flags().items()}
    names.update({f"--{k.replace('_', '-')}": (k, k) for k in CUSTOM_KEYS})
    names.update({"--index": ("editions", "editions"), "--name": ("editions", "editions"),
                  "--layout": ("layout", "layouts")})  # (as the message says it, the key of its line)
    for flag, (shown, key) in sorted(names.items(), key=lambda kv: -len(kv[0])):
        if re.search(re.escape(flag) + r"(?![\w-])", msg):
            msg = re.sub(re.escape(flag) + r"(?![\w-])", shown, msg)
            if line is None and key in spec.lines:
                line = spec.lines[key]
    text = f"{prefix}{msg}" + (f" ({hint})" if hint else "")
    return recipe.error(line or spec.line, text)


def _fill(template: str, job: dict[str, Any]) -> str:
    from wim2vhd.wim.sources import file_component
    out = template
    for key in PLACEHOLDERS:
        value = str(job[key])
        out = out.replace("{" + key + "}", file_component(value, f"image{job['index']}"))
    return out


def _open_source(recipe: Recipe, spec: ImageSpec) -> tuple[list[Any], str | None]:
    """(the ImageInfo of every image, the path inside an ISO) of spec's source, from its metadata."""
    from wim2vhd.wim.sources import check_parts, open_source
    from wim2vhd.errors import Wim2VhdError
    from wim2vhd.wim import Wim
    line = spec.lines.get("source")
    if not os.path.exists(spec.source):
        raise recipe.error(line, f"source: {recipe.relative(spec.source)}: no such file")
    refs = tuple(spec.keywords.get("refs", ()))
    try:
        with open_source(spec.source, metadata_only=True) as (src, inner, _how), Wim(src, refs=refs) as wim:
            check_parts(spec.source, wim, refs)
            return wim.images(), inner
    except (UsageError, InputError) as e:
        raise _located(recipe, spec, e, "source: ") from None
    except Wim2VhdError as e:
        e.message = f"{recipe.where(line)}: source: {e.message}"
        e.args = (e.message if not e.hint else f"{e.message} ({e.hint})",)
        raise


def _editions(recipe: Recipe, spec: ImageSpec, images: list[Any]) -> list[int]:
    line = spec.lines.get("editions", spec.line)
    listing = "; ".join(f"{i.index}: {i.name}" for i in images) or "none"
    if spec.editions == ALL:
        return [i.index for i in images]
    if spec.editions is None:
        if len(images) == 1:
            return [1]
        raise recipe.error(spec.line, f"{spec.source} holds {len(images)} images: choose with editions = [...] "
                                      f"(numbers, names or \"all\"; {listing})")
    out: list[int] = []
    for e in spec.editions:
        if isinstance(e, int):
            found = next((i.index for i in images if i.index == e), None)
        elif e.isdigit():
            found = next((i.index for i in images if i.index == int(e)), None)
        else:
            found = next((i.index for i in images if i.name == e), None)
        if found is None:
            raise recipe.error(line, f"editions: {spec.source} has no image {e!r}; images: {listing}")
        if found in out:
            raise recipe.error(line, f"editions: image {found} is named twice")
        out.append(found)
    return out


def expand(recipe: Recipe) -> list[Job]:
    """Every job of the recipe, checked: sources, editions, options, customizations, outputs."""
    from wim2vhd.pipeline import customize
    from wim2vhd.pipeline.apply import check_image_layout
    from wim2vhd.disk import format_for_path
    jobs: list[Job] = []
    by_id: dict[str, Job] = {}
    by_path: dict[str, Job] = {}
    opened: dict[tuple[str, tuple[str, ...]], tuple[list[Any], str | None]] = {}
    for spec in recipe.images:
        key = (spec.source, tuple(spec.keywords.get("refs", ())))
        if key not in opened:
            opened[key] = _open_source(recipe, spec)
        images, inner = opened[key]
        indexes = _editions(recipe, spec, images)
        bad = re.findall(r"\{([^{}]*)\}", spec.output)
        unknown = [b for b in bad if b not in PLACEHOLDERS]
        if unknown:
            raise recipe.error(spec.lines.get("output"), f"output: unknown placeholder {{{unknown[0]}}}; "
                                                         f"use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        if spec.custom:
            try:
                customize.from_options(**spec.custom)
            except (UsageError, InputError) as e:
                raise _located(recipe, spec, e) from None
        for index in indexes:
            img = next(i for i in images if i.index == index)
            for layout in spec.layouts:
                try:
                    opts = ApplyOptions.from_keywords(**spec.keywords, layout=layout, index=index)
                    opts.check()
                    check_image_layout(layout, index, img)
                except (UsageError, InputError) as e:
                    raise _located(recipe, spec, e) from None
                for fmt in spec.formats:
                    jobs.append(_job(recipe, spec, img, layout, fmt, opts, inner, format_for_path))
    for job in jobs:
        for seen, what in ((by_id, job.id), (by_path, job.path)):
            other = seen.get(what)
            if other is not None:
                line = job.spec.lines.get("output") if seen is by_path else (job.spec.lines.get("id") or job.spec.line)
                if seen is by_path:
                    raise recipe.error(line, f"jobs {other.id} and {job.id} would both make {job.output}: put "
                                             "{index}, {layout} or {format} in output")
                raise recipe.error(line, f"[[image]] {other.spec.number} and {job.spec.number} both make job "
                                         f"{job.id}: give one of them its own id = \"...\"")
            seen[what] = job
    inputs = {p: j for j in jobs for p in j.inputs()}
    for job in jobs:
        if job.path in inputs:
            raise recipe.error(job.spec.lines.get("output"), f"job {job.id} would write {job.output}, an input of "
                                                             f"job {inputs[job.path].id}: choose another output")
    return jobs


def _job(recipe: Recipe, spec: ImageSpec, img: Any, layout: str, fmt: str | None, opts: ApplyOptions,
         inner: str | None, format_for_path: Any) -> Job:
    line = spec.lines.get("output")
    values = {"index": img.index, "name": img.name, "edition": img.edition or img.name,
              "layout": layout, "format": fmt or "", "arch": img.architecture or "unknown"}
    if fmt is None:  # no formats: the output's extension says it
        try:
            fmt = format_for_path(_fill(spec.output, values)).format_name
        except UsageError as e:
            raise recipe.error(line, f"output: {e.message}; or give formats = [...] and end output in .{{format}}") from None
        values["format"] = fmt
    output = os.path.normpath(_fill(spec.output, values))
    try:
        got = format_for_path(output).format_name
    except UsageError:
        got = None
    if got != fmt:
        raise recipe.error(line, f"output {output!r} is not a {fmt} file name: end output in .{{format}}")
    if fmt == "vhd" and opts.sector_size != 512:
        raise recipe.error(spec.lines.get("sector_size", line), "sector_size: VHD supports only 512-byte sectors; "
                                                                 "use the vhdx format for 4096")
    job_id = f"{spec.id}-{img.index}-{layout}-{fmt}"
    return Job(job_id, spec, img.index, img.to_dict(), layout, fmt, output, recipe.resolve(output), inner)
