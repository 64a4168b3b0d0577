"""A build recipe: a TOML file that names a matrix of disks (sources x editions x formats x layouts).

    [defaults]                  # any apply option, named as on the command line without the dashes
    size = "64G"
    seed = "nightly"

    [[image]]
    source = "win.iso"          # paths are relative to the recipe's folder
    editions = [6, "Windows 11 Enterprise"]   # indexes, names as --name matches them, or "all"
    formats = ["vhdx", "vhd"]
    layouts = ["uefi"]
    output = "out/{name}-{layout}.{format}"
    reg_import = ["corp.reg"]   # an [[image]]'s keys override [defaults]

The apply options come from wim2vhd.options (ApplyOptions.flags: the one declaration of them); the
customizations are customize.from_options' (unattend, merge, reg_import, enable_rdp, driver).  Every
problem is found before any work, as a RecipeError (exit 2) that names the key and its line.
"""
from __future__ import annotations

import difflib
import os
import re
try:
    import tomllib
except ImportError:  # Python before 3.11
    tomllib = None
from dataclasses import dataclass, field
from typing import Any

from wim2vhd.errors import UsageError
from wim2vhd.options import ApplyOptions

# The customizations (customize.from_options' parameters) by their command-line names; paths and
# their kinds: "file", "files" (a list), "flag".
CUSTOM_KEYS = {"unattend": ("unattend", "file"), "merge": ("merge", "files"), "reg_import": ("reg_import", "files"),
               "enable_rdp": ("enable_rdp", "flag"), "driver": ("drivers", "files")}
# The matrix: which images, in which formats and layouts, to which files.
MATRIX_KEYS = ("source", "id", "editions", "formats", "layouts", "output")
IMAGE_ONLY = ("source", "id")
# Apply options a recipe names differently: one disk per job, so editions choose the images and
# formats the formats (each job passes its own to apply as --format).
NOT_IN_RECIPES = {"index": "choose images with editions = [...]", "name": "choose images with editions = [...]",
                  "format": "name the formats with formats = [...]"}
# Options that change how fast a disk is made, not its bytes: a change of them leaves a disk up to date.
HOW_NOT_WHAT = frozenset(("threads", "cache_size", "no_sync", "force"))
FORMATS = ("vhdx", "vhd", "raw")
PLACEHOLDERS = ("index", "name", "edition", "layout", "format", "arch")
ALL = "all"


class RecipeError(UsageError):
    """A problem of the recipe, found before any work: names the recipe, the line and the key."""


@dataclass
class ImageSpec:
    """One [[image]] table merged over [defaults], checked."""
    number: int                      # 1-based, in the recipe's order
    line: int                        # of its [[image]] header
    id: str                          # the first part of its jobs' ids
    source: str                      # absolute
    editions: list[int | str] | str | None   # None: the source's only image
    formats: list[str]
    layouts: list[str]
    output: str                      # the template, relative to the recipe's folder
    given: dict[str, Any]            # every option key (apply's and the customizations') as written
    keywords: dict[str, Any]         # ApplyOptions.from_keywords' keywords, paths resolved (no layout)
    custom: dict[str, Any]           # customize.from_options' keywords, paths resolved
    lines: dict[str, int] = field(default_factory=dict)   # key -> line (its own, else [defaults]')


@dataclass
class Recipe:
    path: str                        # absolute
    folder: str
    text: str
    images: list[ImageSpec]

    shown: str = ""                  # the path as the user gave it

    def where(self, line: int | None) -> str:
        name = self.shown or self.path
        return f"{name} line {line}" if line else name

    def error(self, line: int | None, message: str) -> RecipeError:
        return RecipeError(f"{self.where(line)}: {message}")

    def relative(self, path: str) -> str:
        """An absolute path as a manifest or a job list gives it: relative to the recipe's folder when
        it is in that folder (or below it), so that checkouts in other places agree; else absolute."""
        rel = os.path.relpath(path, self.folder)
        return path if rel == ".." or rel.startswith(".." + os.sep) else rel

    def resolve(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.folder, os.path.expanduser(path)))


# -- where each key is: tomllib keeps no line numbers, so the text is scanned ----------------------
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=""")


def key_lines(text: str) -> dict[tuple[str, int], dict[str, int]]:
    """{(table, n): {key: line}}: ("", 0) the top level, ("defaults", 0), ("image", k) the k-th [[image]]
    (1-based); the key "" is the table's header line.  Multi-line strings and arrays are stepped over."""
    out: dict[tuple[str, int], dict[str, int]] = {("", 0): {}}
    counts: dict[str, int] = {}
    table = ("", 0)
    depth = 0          # open brackets of a multi-line array or inline table
    in_string = None   # the quotes of an open multi-line string
    for n, line in enumerate(text.splitlines(), 1):
        if in_string:
            if in_string in line:
                in_string = None
            continue
        if depth == 0:
            m = _HEADER.match(line)
            if m and not _KEY.match(line):
                name = m.group(2).strip().strip("\"'")
                counts[name] = counts.get(name, 0) + 1 if m.group(1) == "[[" else 0
                table = (name, counts[name])
                out.setdefault(table, {})[""] = n
                continue
            m = _KEY.match(line)
            if m:
                key = m.group(1).strip("\"'")
                out.setdefault(table, {}).setdefault(key, n)
        body = line.split("=", 1)[-1] if depth == 0 else line
        for q in ('"""', "'''"):
            if body.count(q) % 2:  # a multi-line string opens here
                in_string = q
        if in_string:
            continue
        body = re.sub(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'", "", body).split("#", 1)[0]
        depth = max(0, depth + body.count("[") + body.count("{") - body.count("]") - body.count("}"))
    return out


# -- values -------------------------------------------------------------------------------------------
def _types(annotation: str, size: bool) -> tuple[type, ...]:
    words = set(re.findall(r"\w+", annotation))
    if size:
        return (str, int)
    return tuple(t for t in (bool, int, str) if t.__name__ in words)


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _str_list(value: Any) -> list[str] | None:
    """A string or a list of strings as a list; None for anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _type_name(types: tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "a number", str: "a string"}
    return " or ".join(names[t] for t in types)


def _known_keys(table: str) -> list[str]:
    keys = [k for k in ApplyOptions.flags() if k not in NOT_IN_RECIPES]
    keys += list(CUSTOM_KEYS) + [k for k in MATRIX_KEYS if table == "image" or k not in IMAGE_ONLY]
    return sorted(keys)


def _unknown(key: str, table: str) -> str:
    if key in NOT_IN_RECIPES:
        return f"{key!r} is not a recipe key: {NOT_IN_RECIPES[key]}"
    known = _known_keys(table)
    near = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"unknown key {key!r} in [{'[image]' if table == 'image' else table}]{hint}; the keys are {', '.join(known)}"


def _check_value(key: str, value: Any) -> str | None:
    """What is wrong with the value of one key, or None."""
    flags = ApplyOptions.flags()
    if key in flags:
        f = flags[key]
        if f.path and "tuple" in f.type:
            return None if _str_list(value) is not None else "must be a path or a list of paths"
        types = (bool,) if f.negated else _types(f.type, f.size)
        if types and not _is(value, types):
            return f"must be {_type_name(types)}, not {value!r}"
        if f.size and isinstance(value, str):
            from wim2vhd.units import parse_size
            try:
                parse_size(value, what=key)
            except UsageError:
                return f"must be a size such as \"64G\" (K, M, G or T) or a number of bytes, not {value!r}"
        return None
    if key in CUSTOM_KEYS:
        kind = CUSTOM_KEYS[key][1]
        if kind == "flag" and not isinstance(value, bool):
            return f"must be true or false, not {value!r}"
        if kind == "file" and not isinstance(value, str):
            return f"must be a path, not {value!r}"
        if kind == "files" and _str_list(value) is None:
            return "must be a path or a list of paths"
        return None
    if key in ("source", "output", "id"):
        if not isinstance(value, str) or not value.strip():
            return f"must be a non-empty string, not {value!r}"
        if key == "id" and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            return f"must be letters, digits, '.', '_' and '-' (it names jobs on the command line), not {value!r}"
        return None
    if key == "editions":
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in items):
            return f"must be image numbers, image names or \"all\", not {value!r}"
        if isinstance(value, list) and len(value) > 1 and any(isinstance(v, str) and v.lower() == ALL for v in value):
            return "\"all\" stands alone: editions = \"all\""
        return None
    if key in ("formats", "layouts"):
        items = _str_list(value)
        if not items:
            return "must be a name or a list of names"
        allowed = FORMATS if key == "formats" else _layouts()
        bad = [v for v in items if v not in allowed]
        if bad:
            return f"has {bad[0]!r}: use {', '.join(allowed)}"
        if len(set(items)) != len(items):
            return "names one twice"
        return None
    return None


def _layouts() -> tuple[str, ...]:
    from wim2vhd.partition import LAYOUTS
    return LAYOUTS


def _check_table(recipe: Recipe, table: str, values: dict[str, Any], lines: dict[str, int]) -> None:
    known = set(_known_keys(table))
    for key, value in values.items():
        line = lines.get(key, lines.get(""))
        if key not in known:
            raise recipe.error(line, _unknown(key, table))
        problem = _check_value("layouts" if key == "layout" else key, value)
        if problem:
            raise recipe.error(line, f"{key} {problem}")
    if "layout" in values and "layouts" in values:
        raise recipe.error(lines.get("layout"), "give layout or layouts, not both")


def load(path: str) -> Recipe:
    """The recipe at path, every key and value checked (not yet the sources: see jobs.expand)."""
    if tomllib is None:
        from wim2vhd.errors import EnvironmentFault
        raise EnvironmentFault("recipes need Python 3.11 or later (its tomllib reads TOML)")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise RecipeError(f"recipe {path}: no such file") from None
    except OSError as e:
        raise RecipeError(f"recipe {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text: a recipe is a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from None
    recipe = Recipe(os.path.abspath(path), os.path.dirname(os.path.abspath(path)), text, [], shown=os.fspath(path))
    lines = key_lines(text)
    for key in data:
        if key not in ("defaults", "image"):
            raise recipe.error(lines[("", 0)].get(key) or lines.get((key, 0), {}).get(""),
                               f"unknown table or key {key!r}: a recipe has [defaults] and [[image]] tables")
    defaults = data.get("defaults", {})
    images = data.get("image", [])
    if not isinstance(defaults, dict):
        raise recipe.error(lines[("", 0)].get("defaults"), "defaults must be a table: [defaults]")
    if not isinstance(images, list) or not all(isinstance(t, dict) for t in images):
        raise recipe.error(lines[("", 0)].get("image"), "image must be an array of tables: [[image]]")
    if not images:
        raise recipe.error(None, "no [[image]] table: nothing to build")
    dlines = lines.get(("defaults", 0), {})
    _check_table(recipe, "defaults", defaults, dlines)
    for n, table in enumerate(images, 1):
        ilines = lines.get(("image", n), {})
        _check_table(recipe, "image", table, ilines)
        recipe.images.append(_image(recipe, n, defaults, table, dlines, ilines))
    return recipe


def _image(recipe: Recipe, n: int, defaults: dict, table: dict, dlines: dict, ilines: dict) -> ImageSpec:
    """One [[image]] over [defaults]: its matrix, its apply keywords and its customizations."""
    merged: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for values, where in ((defaults, dlines), (table, ilines)):
        if "layout" in values:  # the singular, as apply names it
            values = {**{k: v for k, v in values.items() if k != "layout"}, "layouts": values["layout"]}
            where = {**where, "layouts": where.get("layout")}
        for key, value in values.items():
            merged[key] = value
            lines[key] = where.get(key) or where.get("")
    header = ilines.get("")
    if "source" not in merged:
        raise recipe.error(header, f"[[image]] {n} has no source: source = \"install.wim\" (a WIM, ESD, split WIM or ISO)")
    if "output" not in merged:
        raise recipe.error(header, f"[[image]] {n} has no output: e.g. output = \"out/{{name}}-{{layout}}.{{format}}\"")
    source = recipe.resolve(merged["source"])
    flags = ApplyOptions.flags()
    keywords: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    given: dict[str, Any] = {}
    for key, value in merged.items():
        if key in flags:
            f = flags[key]
            given[key] = value
            if f.path:
                paths = _str_list(value) or []
                value = tuple(recipe.resolve(p) for p in paths) if "tuple" in f.type else recipe.resolve(value)
            keywords[f.keyword] = (not value) if f.negated else value
        elif key in CUSTOM_KEYS:
            name, kind = CUSTOM_KEYS[key]
            given[key] = value
            if kind == "file":
                value = recipe.resolve(value)
            elif kind == "files":
                value = [recipe.resolve(p) for p in _str_list(value) or []]
            custom[name] = value
    stem = os.path.splitext(os.path.basename(merged["source"]))[0]
    image_id = merged.get("id") or (re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or f"image{n}")
    editions = merged.get("editions")
    if isinstance(editions, str) and editions.lower() == ALL:
        editions = ALL
    elif editions is not None and not isinstance(editions, list):
        editions = [editions]
    layouts = _str_list(merged.get("layouts")) or [ApplyOptions().layout]
    formats = _str_list(merged.get("formats")) or [None]
    return ImageSpec(n, header or 0, image_id, source, editions, formats, layouts, merged["output"], given,
                     keywords, custom, lines)
