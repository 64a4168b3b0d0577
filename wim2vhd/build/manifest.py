"""The manifest of a build: every output with its sha256, its source, its options and the versions that
made it; by default manifest.json in the folder that holds the outputs.

    {"wim2vhd_manifest": 1, "recipe": "nightly.toml",
     "outputs": [{"id": "win11-6-uefi-vhdx", "output": "out/...vhdx", "sha256": ..., "size": ...,
                  "format": "vhdx", "layout": "uefi",
                  "source": {"path": "win11.iso", "sha256": ..., "size": ..., "index": 6, "name": ...,
                             "edition": ..., "architecture": ..., "install_image": "\\sources\\install.wim"},
                  "options": {...the recipe's keys...}, "seed": ..., "apply_seed": ...,
                  "inputs": {"corp.reg": sha256, ...}, "versions": {...}, "mtime_ns": ...}, ...]}

Paths are as the recipe gives them, relative to its folder, so that manifests made on several machines
(a CI matrix, each with its own checkout) can be merged.  A job is up to date when its output exists
with the manifest's hash and its source, inputs, options and versions are the manifest's: a file whose
size and modification time are the manifest's is taken to have its hash (as make trusts times);
any other is hashed.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

from wim2vhd.build.recipe import HOW_NOT_WHAT
from wim2vhd.errors import CorruptInput, InputError, from_oserror

if TYPE_CHECKING:
    from wim2vhd.build.jobs import Job
    from wim2vhd.build.recipe import Recipe

FORMAT = 1
KEY = "wim2vhd_manifest"
NAME = "manifest.json"
# A reproducible apply stamps this time, when it is set, on what it makes (apply.reproducible_time).
EPOCH = "SOURCE_DATE_EPOCH"
_CHUNK = 4 << 20


def sha256_file(path: str) -> str:
    """The file's sha256, reading its holes as zeros as any reader would (a dynamic disk has none)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(_CHUNK)
            view = memoryview(buf)
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(view[:n])
    except OSError as e:
        raise from_oserror(e, f"cannot read {path}") from None
    return h.hexdigest()


def tree_sha256(path: str) -> str:
    """A folder's digest: every file's path below it, kind and content (a --merge or --driver folder)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            kind = "l" if os.path.islink(full) else "f"
            h.update(f"{kind}:{rel}:".encode())
            h.update((os.readlink(full) if kind == "l" else sha256_file(full)).encode() + b"\n")
        for name in dirs:
            h.update(f"d:{os.path.relpath(os.path.join(root, name), path)}\n".encode())
    return h.hexdigest()


def digest(path: str) -> str:
    return tree_sha256(path) if os.path.isdir(path) else sha256_file(path)


class Hashes:
    """sha256 of files, each hashed once per run; one whose size and time are a manifest's is not read."""

    def __init__(self, known: dict[str, tuple[int, int, str]] | None = None):
        self.known = dict(known or {})   # absolute path -> (size, mtime_ns, sha256) from a manifest
        self.done: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        if path not in self.done:
            st = _stat(path)
            k = self.known.get(path)
            if st is not None and k is not None and (st.st_size, st.st_mtime_ns) == k[:2] and not os.path.isdir(path):
                self.done[path] = k[2]
            else:
                self.done[path] = digest(path)
        return self.done[path]


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def default_path(recipe: "Recipe") -> str:
    """manifest.json in the folder that holds every output of the recipe: the folders of the output
    templates down to their first placeholder (known without opening a source)."""
    dirs = []
    for spec in recipe.images:
        d = os.path.dirname(recipe.resolve(spec.output))
        dirs.append(os.path.dirname(d.split("{", 1)[0]) if "{" in d else d)
    return os.path.join(os.path.commonpath(dirs) if dirs else recipe.folder, NAME)


def load(path: str) -> dict[str, Any] | None:
    """The manifest at path, or None if there is none."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise from_oserror(e, f"cannot read the manifest {path}") from None
    except ValueError as e:
        raise CorruptInput(f"the manifest {path} is not JSON ({e}): remove it, or give another --manifest") from None
    if not isinstance(data, dict) or data.get(KEY) != FORMAT or not isinstance(data.get("outputs"), list):
        raise CorruptInput(f"{path} is not a wim2vhd build manifest (format {FORMAT})")
    return data


def write(path: str, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically (written beside it, synced, renamed)."""
    from wim2vhd.atomic import AtomicOutput
    with AtomicOutput(path, force=True) as ao:
        try:
            with open(ao.temp, "w") as f:
                json.dump(manifest, f, indent=2)
                f.write("\n")
        except OSError as e:
            raise from_oserror(e, f"cannot write the manifest {path}", output=True) from None
        ao.commit()


def new(recipe: "Recipe", outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """A manifest of these outputs, sorted by job id: the same whether one machine made them or a
    merge of many."""
    return {KEY: FORMAT, "recipe": os.path.basename(recipe.path),
            "outputs": sorted(outputs, key=lambda e: str(e.get("id")))}


def inputs_of(recipe: "Recipe", job: "Job", hashes: Hashes) -> dict[str, str]:
    """{path as the recipe gives it: sha256} of what the job reads besides its source."""
    return {recipe.relative(p): hashes(p) for p in job.inputs()[1:]}


def compared(entry: dict[str, Any]) -> dict[str, Any]:
    """What must be the same for an output to be up to date: what its bytes depend on."""
    src = entry["source"]
    return {"source": [src["sha256"], src["index"]], "format": entry["format"], "layout": entry["layout"],
            "options": {k: v for k, v in entry["options"].items() if k not in HOW_NOT_WHAT},
            "apply_seed": entry.get("apply_seed"), "source_date_epoch": entry.get("source_date_epoch"),
            "inputs": entry["inputs"], "versions": entry["versions"]}


def entry(recipe: "Recipe", job: "Job", *, sha256: str, hashes: Hashes, versions: dict[str, Any],
          epoch: str | None) -> dict[str, Any]:
    """The manifest's record of a job's output (which exists)."""
    st = os.stat(job.path)
    src = os.stat(job.spec.source)
    source = {"path": recipe.relative(job.spec.source), "sha256": hashes(job.spec.source), "size": src.st_size,
              "mtime_ns": src.st_mtime_ns, "index": job.index, "name": job.image["name"],
              "edition": job.image.get("edition"), "architecture": job.image.get("architecture")}
    if job.install_image:
        source["install_image"] = job.install_image
    return {"id": job.id, "output": job.output, "sha256": sha256, "size": st.st_size, "format": job.format,
            "layout": job.layout, "source": source, "options": job.options(), "seed": job.seed,
            "apply_seed": job.apply_seed, "source_date_epoch": epoch if job.seed is not None else None,
            "inputs": inputs_of(recipe, job, hashes), "versions": versions, "mtime_ns": st.st_mtime_ns}


def known_files(recipe: "Recipe", manifest: dict[str, Any] | None) -> dict[str, tuple[int, int, str]]:
    """{absolute path: (size, mtime_ns, sha256)} of the sources and outputs a manifest names."""
    out: dict[str, tuple[int, int, str]] = {}
    for e in (manifest or {}).get("outputs", ()):
        try:
            out[recipe.resolve(e["output"])] = (e["size"], e["mtime_ns"], e["sha256"])
            s = e["source"]
            out[recipe.resolve(s["path"])] = (s["size"], s["mtime_ns"], s["sha256"])
        except (KeyError, TypeError):
            continue
    return out


def why_stale(recipe: "Recipe", job: "Job", old: dict[str, Any] | None, hashes: Hashes,
              versions: dict[str, Any], epoch: str | None) -> str | None:
    """None when the job's output is up to date with its manifest entry `old`; else why it is not."""
    if old is None:
        return "not in the manifest"
    if not os.path.isfile(job.path):
        return "no output"
    try:
        before = compared(old)
    except (KeyError, TypeError):
        return "its manifest entry is incomplete"
    now = compared({"format": job.format, "layout": job.layout,
                    "source": {"sha256": hashes(job.spec.source), "index": job.index},
                    "options": job.options(), "apply_seed": job.apply_seed,
                    "source_date_epoch": epoch if job.seed is not None else None,
                    "inputs": inputs_of(recipe, job, hashes), "versions": versions})
    for key, what in (("source", "the source changed"), ("inputs", "an input changed"),
                      ("options", "the options changed"), ("apply_seed", "the seed changed"),
                      ("source_date_epoch", f"{EPOCH} changed"),
                      ("format", "the format changed"), ("layout", "the layout changed"),
                      ("versions", "the versions changed")):
        if now[key] != before[key]:
            return what
    if hashes(job.path) != old.get("sha256"):
        return "the output is not the one the manifest lists"
    return None


def merge(recipe: "Recipe", paths: list[str]) -> dict[str, Any]:
    """The manifests found at paths (files, or folders searched for *.json manifests) as one:
    {"manifest": ..., "merged": [files]}.  Two that list one job with different hashes are refused."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".json")]
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise InputError(f"--merge-manifests {p}: no such file or folder")
    named = {os.path.abspath(p) for p in paths}
    entries: dict[str, tuple[dict[str, Any], str]] = {}
    merged = []
    for f in files:
        try:
            m = load(f)
        except CorruptInput:
            if os.path.abspath(f) in named:  # named itself: it must be one
                raise
            continue  # another JSON file in a folder
        if m is None:
            continue
        merged.append(f)
        for e in m["outputs"]:
            i = e.get("id")
            if i in entries and entries[i][0].get("sha256") != e.get("sha256"):
                raise InputError(f"{entries[i][1]} and {f} list different outputs for job {i} "
                                 f"(sha256 {str(entries[i][0].get('sha256'))[:12]}... and {str(e.get('sha256'))[:12]}...)")
            entries[i] = (e, f)
    if not merged:
        raise InputError(f"no wim2vhd build manifest in {', '.join(paths)}")
    return {"manifest": new(recipe, [e for e, _ in entries.values()]), "merged": merged}
