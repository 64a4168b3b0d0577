"""`wim2vhd build RECIPE`: a recipe's matrix of disks, with a manifest (wim2vhd.build)."""
from __future__ import annotations

from typing import Any, List, Optional

import typer

from wim2vhd import api
from wim2vhd.cli import app
from wim2vhd.cli._common import JsonOpt, console, emit_json, is_tty


@app.command("build")
def build_cmd(
    recipe: str = typer.Argument(..., help="The recipe: a TOML file with a defaults table and image tables (see the README)."),
    paths: Optional[List[str]] = typer.Argument(None, help="With --merge-manifests: the folders (or files) that "
                                                           "hold the manifests to join.", show_default=False),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Jobs at once (default: what the cores and the "
                                                                  "memory allow)."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Build just this job (an id from --list-jobs); "
                                                                 "repeatable."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build the jobs even when they are up to date."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failure (the jobs running are "
                                                             "stopped, the others not started)."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="The manifest to read and write (default: "
                                                                   "manifest.json in the outputs' folder)."),
    list_jobs: bool = typer.Option(False, "--list-jobs", help="Print the jobs (id, output, inputs) and build "
                                                             "nothing: with --json, a CI matrix."),
    merge_manifests: bool = typer.Option(False, "--merge-manifests", help="Join the manifests found in PATHS "
                                                                         "(of builds with --only) into one."),
    check: bool = typer.Option(False, "--check", help="Rebuild into a temporary folder and compare every sha256 "
                                                     "with the manifest's (needs a seed)."),
    json: bool = JsonOpt,
) -> None:
    """Build every disk of a recipe (sources x editions x formats x layouts) that is not up to date.

    Jobs run N at once, each atomic as apply is: a failing job leaves nothing under its name and
    the others go on.  The manifest lists every output with its sha256, source, options and the
    versions that made it."""
    from wim2vhd.build import pipeline
    from wim2vhd.errors import UsageError
    modes = [m for m, on in (("--list-jobs", list_jobs), ("--merge-manifests", merge_manifests),
                             ("--check", check)) if on]
    if len(modes) > 1:
        raise UsageError(f"give one of {' and '.join(modes)}")
    if paths and not merge_manifests:
        raise UsageError(f"unexpected argument {paths[0]!r}: only --merge-manifests takes folders after RECIPE")
    only_ids = tuple(only or ())
    if list_jobs:
        res = api.list_jobs(recipe, only=only_ids)
        if json:
            emit_json(res)
        else:
            for j in res["jobs"]:
                print(f"{j['id']}\t{j['output']}")
        return
    if merge_manifests:
        res = api.merge_manifests(recipe, list(paths or ()), manifest=manifest)
        if json:
            emit_json(res)
        else:
            print(f"merged {len(res['merged'])} manifest(s) into {res['manifest']}: {res['outputs']} output(s)")
        return
    with JobProgress(enabled=is_tty() and not json) as prog:
        if check:
            res = api.check_build(recipe, jobs=jobs, only=only_ids, manifest=manifest, progress=prog)
        else:
            res = api.build(recipe, jobs=jobs, only=only_ids, rebuild=rebuild, fail_fast=fail_fast,
                            manifest=manifest, progress=prog)
    if json:
        emit_json(res)
    else:
        _summary(res, check)
    err = pipeline.check_failure(res) if check else pipeline.failure(res)
    if err is not None:
        raise err


def _summary(res: dict[str, Any], check: bool) -> None:
    for r in res["jobs"]:
        took = f" ({r['seconds']:.1f}s)" if r.get("seconds") else ""
        if r["state"] in ("built", "same"):
            print(f"{r['state']:<9} {r['id']}  {r['output']}{took}")
        elif r["state"] == "skipped":
            print(f"{'skipped':<9} {r['id']}  {r['output']} (up to date)")
        else:
            print(f"{r['state']:<9} {r['id']}  {r.get('error', '')}")
    if check:
        print(f"{res['same']} same, {res['different']} different, {res['failed']} failed; "
              f"against {res['manifest']} in {res['seconds']:.1f}s")
    else:
        other = sum(res[k] for k in ("stopped", "not run"))
        print(f"{res['built']} built, {res['skipped']} up to date, {res['failed']} failed"
              + (f", {other} not finished" if other else "")
              + f" ({res['parallel']} at once, {res['seconds']:.1f}s); manifest {res['manifest']}")


class JobProgress:
    """One line per running job on a terminal (rich), its stage and, for a stage that reports bytes, a
    bar; a line stays when its job ends, with how it ended.  Called as (job id, stage, done, total)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._p = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "JobProgress":
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            self._p = Progress(TextColumn("{task.fields[job]:<28}"), TextColumn("{task.fields[stage]:<9}"),
                               BarColumn(), TimeElapsedColumn(), console=console(), transient=False)
            self._p.__enter__()
        return self

    def __call__(self, job: str, stage: str, done: int, total: int) -> None:
        if not self._p:
            return
        t = self._tasks.get(job)
        if t is None:
            t = self._tasks[job] = self._p.add_task("", total=None, job=job, stage="start")
        if stage in ("done", "failed", "stopped", "not run"):
            self._p.update(t, total=1, completed=1, stage=stage)
            self._p.stop_task(t)
        elif total:
            self._p.update(t, total=total, completed=done, stage=stage)
        else:
            self._p.update(t, total=None, stage=stage)

    def __exit__(self, *exc) -> None:
        if self._p:
            self._p.__exit__(*exc)
