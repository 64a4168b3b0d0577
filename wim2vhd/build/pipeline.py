"""`wim2vhd build`: the recipe's jobs that are not up to date, N at once; the manifest; --check.

Every problem of the recipe is found before the first job starts (recipe.load, jobs.expand).  Each job
is one apply, atomic as apply is: a job that fails leaves nothing under its output's name (an older
output of it, now out of date, is removed) and the others go on, unless fail_fast.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from typing import Any, Iterable

from wim2vhd.build import jobs as jobs_mod, manifest, runner
from wim2vhd.build.jobs import Job
from wim2vhd.build.recipe import Recipe, RecipeError, load
from wim2vhd.errors import InputError, OutputError, OutputExists, UsageError, Wim2VhdError

Event = runner.Event


class JobsFailed(Wim2VhdError):
    """Some jobs of a build failed: the message names each with its reason; the exit code is theirs
    when they share one, else 1."""

    def __init__(self, failed: list[dict[str, Any]], total: int):
        codes = {f["exit_code"] for f in failed if f["state"] in ("failed", "different")}
        self.exit_code = codes.pop() if len(codes) == 1 else 1
        shown = "; ".join(f"{f['id']}: {f['error']}" for f in failed)
        super().__init__(f"{len(failed)} of {total} job(s) failed: {shown}")


class CheckFailed(Wim2VhdError):
    """A rebuild (--check) did not give the manifest's bytes."""
    exit_code = 1


def plan(recipe_path: str, only: Iterable[str] = ()) -> tuple[Recipe, list[Job], list[Job]]:
    """(the recipe, all its jobs, the jobs --only selects: all of them without it), all checked."""
    recipe = load(recipe_path)
    every = jobs_mod.expand(recipe)
    only = list(dict.fromkeys(only))
    if not only:
        return recipe, every, every
    ids = {j.id for j in every}
    unknown = [i for i in only if i not in ids]
    if unknown:
        raise UsageError(f"--only {unknown[0]}: the recipe has no such job; its jobs are {', '.join(sorted(ids))}")
    return recipe, every, [j for j in every if j.id in only]


def list_jobs(recipe_path: str, only: Iterable[str] = ()) -> dict[str, Any]:
    recipe, _, selected = plan(recipe_path, only)
    return {"recipe": recipe.path, "jobs": [j.to_dict(recipe) for j in selected]}


def _parallel(parallel: int | None, n_jobs: int) -> int:
    if parallel is None:
        return runner.default_jobs(n_jobs)
    if parallel < 1:
        raise UsageError(f"-j must be 1 or more, not {parallel}")
    return parallel


def _work(job: Job, out: str, *, force: bool, threads: int, epoch: str | None = None) -> runner.Work:
    kw = job.keywords()
    kw["force"] = force or bool(kw.get("force"))
    kw.setdefault("threads", threads)
    environ = {manifest.EPOCH: epoch} if job.seed is not None else {}
    return runner.Work(job.id, job.spec.source, out, kw, dict(job.spec.custom), environ)


def build(recipe_path: str, *, parallel: int | None = None, only: Iterable[str] = (), rebuild: bool = False,
          fail_fast: bool = False, manifest_path: str | None = None, event: Event | None = None) -> dict[str, Any]:
    """Build every job of the recipe (or those `only` names) that is not up to date; write the manifest.
    Returns the summary (see the README); its "failed" count says whether every job succeeded."""
    from wim2vhd.versions import versions
    t0 = time.monotonic()
    _parallel(parallel, 1)  # a bad -j before anything else
    recipe, every, selected = plan(recipe_path, only)
    mpath = os.path.abspath(manifest_path) if manifest_path else manifest.default_path(recipe)
    old = manifest.load(mpath)
    old_by_id = {e.get("id"): e for e in (old or {}).get("outputs", ())}
    vers = versions()
    epoch = os.environ.get(manifest.EPOCH)
    hashes = manifest.Hashes(manifest.known_files(recipe, old))
    todo: list[tuple[Job, str]] = []
    rows: dict[str, dict[str, Any]] = {}
    for job in selected:
        why = "--rebuild" if rebuild else manifest.why_stale(recipe, job, old_by_id.get(job.id), hashes, vers, epoch)
        rows[job.id] = {"id": job.id, "output": job.output, "state": "skipped" if why is None else "queued",
                        "reason": why or "up to date"}
        if why is not None:
            todo.append((job, why))
    for job, why in todo:  # before any work: an existing file that is not this build's is not replaced
        ours = old_by_id.get(job.id, {}).get("output") == job.output
        if os.path.lexists(job.path) and not ours and not job.spec.keywords.get("force"):
            raise OutputExists(f"{job.output} exists and {os.path.relpath(mpath)} does not list it (job {job.id}): "
                               f"remove it, or set force = true in the recipe")
    for path, shown in [(j.path, j.output) for j, _ in todo] + [(mpath, "the manifest " + mpath)]:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot make the folder of {shown}: {e.strerror}") from None
    n = _parallel(parallel, len(todo))
    threads = runner.threads_per_job(min(n, max(1, len(todo))))
    works = [_work(job, job.path, force=True, threads=threads, epoch=epoch) for job, _ in todo]
    entries = {e.get("id"): e for e in (old or {}).get("outputs", ())}
    reasons = {job.id: why for job, why in todo}
    by_id = {job.id: job for job, _ in todo}
    state = {"written": old}

    recipe_ids = {j.id for j in every}

    def save() -> None:
        new = manifest.new(recipe, [e for i, e in entries.items() if i in recipe_ids])
        if new != state["written"]:
            manifest.write(mpath, new)
            state["written"] = new

    def finished(o: runner.Outcome) -> None:
        """Each job's outcome in the manifest as soon as it is known: an interrupted build keeps what it made."""
        job, row = by_id[o.id], rows[o.id]
        row.update(state="built" if o.ok else o.state, seconds=o.seconds)
        sha = o.result["sha256"] if o.ok else None
        if not o.ok and o.state == "stopped" and job.id not in entries and os.path.isfile(job.path):
            # Interrupted after its disk was renamed into place (only a complete disk is) but before the
            # job said so: the disk is whole, so it is listed, not left unaccounted for.
            sha = manifest.sha256_file(job.path)
            row.update(state="built", sha256=sha)
        if sha is not None:
            entries[job.id] = manifest.entry(recipe, job, sha256=sha, hashes=hashes, versions=vers, epoch=epoch)
            row["sha256"] = sha
        else:
            row.update(error=o.error, exit_code=o.exit_code)
            if o.state == "failed" and reasons[o.id] != "--rebuild" and entries.pop(job.id, None) is not None \
                    and os.path.isfile(job.path):
                os.unlink(job.path)  # out of date, and its job failed: nothing under its name
        save()

    try:
        if works:
            runner.run(works, n, fail_fast=fail_fast, event=event, finished=finished)
    finally:
        # Also when interrupted (a Ctrl-C may have cut a save short): the manifest lists every job that
        # finished.  A second Ctrl-C waits for this write (atomic: the old manifest or the new one).
        import signal
        main = threading.current_thread() is threading.main_thread()
        prev = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            save()
        finally:
            if main:
                signal.signal(signal.SIGINT, prev)
    listed = [rows[j.id] for j in selected]
    count = {s: sum(1 for r in listed if r["state"] == s) for s in ("built", "skipped", "failed", "stopped", "not run")}
    return {"recipe": recipe.path, "manifest": mpath, "parallel": n, "jobs": listed, **count,
            "seconds": round(time.monotonic() - t0, 3)}


def failure(res: dict[str, Any]) -> JobsFailed | None:
    """The error to exit with when some jobs of a build (or a check) did not succeed, else None."""
    bad = [r for r in res["jobs"] if r["state"] in ("failed", "stopped", "not run")]
    return JobsFailed(bad, len(res["jobs"])) if bad else None


def merge_manifests(recipe_path: str, paths: list[str], *, manifest_path: str | None = None) -> dict[str, Any]:
    """Join the manifests of a fanned-out build (each machine built some jobs: --only) into the recipe's.
    The sources are not opened (the machine that merges need not have them)."""
    if not paths:
        raise UsageError("--merge-manifests needs the folders (or files) that hold the manifests")
    recipe = load(recipe_path)
    mpath = os.path.abspath(manifest_path) if manifest_path else manifest.default_path(recipe)
    res = manifest.merge(recipe, paths)
    try:
        os.makedirs(os.path.dirname(mpath), exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot make the folder of the manifest {mpath}: {e.strerror}") from None
    manifest.write(mpath, res["manifest"])
    return {"manifest": mpath, "merged": res["merged"], "outputs": len(res["manifest"]["outputs"]),
            "ids": [e["id"] for e in res["manifest"]["outputs"]]}


def check(recipe_path: str, *, parallel: int | None = None, only: Iterable[str] = (),
          manifest_path: str | None = None, event: Event | None = None) -> dict[str, Any]:
    """Rebuild the jobs into a temporary folder and compare each sha256 with the manifest's: the same
    recipe and seed give the same bytes on any machine with the manifest's versions."""
    from wim2vhd.versions import versions
    t0 = time.monotonic()
    _parallel(parallel, 1)
    recipe, every, selected = plan(recipe_path, only)
    unseeded = [j for j in selected if j.seed is None]
    if unseeded:
        spec = unseeded[0].spec
        raise RecipeError(f"{recipe.where(spec.line)}: --check needs reproducible jobs, and job {unseeded[0].id} has "
                          f"no seed: set seed = \"...\" in [defaults]")
    mpath = os.path.abspath(manifest_path) if manifest_path else manifest.default_path(recipe)
    old = manifest.load(mpath)
    if old is None:
        raise InputError(f"--check: no manifest at {mpath}: build first, or give --manifest PATH")
    by_id = {e.get("id"): e for e in old["outputs"]}
    missing = [j.id for j in selected if j.id not in by_id]
    if missing:
        raise InputError(f"--check: {mpath} does not list job {missing[0]}: build it first")
    vers = versions()
    folder = os.path.dirname(mpath)
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".w2v-tmp-check-", dir=folder)
    try:
        n = _parallel(parallel, len(selected))
        threads = runner.threads_per_job(min(n, len(selected)))
        # Each job as the manifest says it was made: with its SOURCE_DATE_EPOCH (or none).
        works = [_work(j, os.path.join(tmp, f"{j.id}.{j.format}"), force=False, threads=threads,
                       epoch=by_id[j.id].get("source_date_epoch")) for j in selected]
        outcomes = {o.id: o for o in runner.run(works, n, event=event)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for j in selected:
        o, e = outcomes[j.id], by_id[j.id]
        row: dict[str, Any] = {"id": j.id, "output": j.output, "expected": e.get("sha256"), "seconds": o.seconds}
        if not o.ok:
            row.update(state=o.state, error=o.error, exit_code=o.exit_code)
        else:
            row["got"] = o.result["sha256"]
            row["state"] = "same" if row["got"] == row["expected"] else "different"
            if row["state"] == "different":
                diff = {k: [e.get("versions", {}).get(k), v] for k, v in vers.items()
                        if e.get("versions", {}).get(k) != v}
                row["error"] = ("the rebuild differs" + (f"; versions differ: {', '.join(diff)}" if diff else
                                                         " with the same versions"))
                row["versions_differ"] = diff
                row["exit_code"] = CheckFailed.exit_code
        rows.append(row)
    count = {s: sum(1 for r in rows if r["state"] == s) for s in ("same", "different", "failed")}
    return {"recipe": recipe.path, "manifest": mpath, "jobs": rows, **count,
            "seconds": round(time.monotonic() - t0, 3)}


def check_failure(res: dict[str, Any]) -> Wim2VhdError | None:
    bad = [r for r in res["jobs"] if r["state"] != "same"]
    if not bad:
        return None
    err = JobsFailed(bad, len(res["jobs"]))
    if all(r["state"] == "different" for r in bad):
        err.exit_code = CheckFailed.exit_code
    return err

