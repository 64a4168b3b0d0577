"""Run jobs N at once, each in a process of its own (wim2vhd.build.worker).

Processes, not threads: apply releases the GIL in native code, but a run changes process-wide state
that two jobs at once would share: libntfs-3g's clock is pinned for a reproducible volume
(ntfs.fixed_clock, through the native layer's GOT patch, for the whole process), wimlib and libntfs-3g
keep global error and logging state, and a crash in a library takes only its own job down.  Each job
is a fresh interpreter (`python -m wim2vhd.build.worker`), not a fork of this one (which has opened
WIMs and may hold threads) nor multiprocessing's spawn (which imports the caller's __main__ again in
every job: a script without a __name__ guard would run once per job).  It costs an interpreter start
per job, next to an apply's seconds.

A job's process sends its progress and its result as JSON lines; one that dies without a result (a
signal) is reported as failed, and its temporary output removed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

# What one job costs at most in memory, for the default number at once: about 125 MiB measured on a
# large image (docs/performance.md), the disk layer's cache and the read-ahead buffers, with room.
JOB_MEMORY = 512 << 20


@dataclass
class Work:
    """What a job's process needs (sent to it as JSON)."""
    id: str
    source: str
    out: str
    keywords: dict[str, Any]
    custom: dict[str, Any]
    environ: dict[str, str | None] = field(default_factory=dict)   # variables to set (None: unset)


@dataclass
class Outcome:
    id: str
    ok: bool
    result: dict[str, Any] | None = None   # apply's summary, with "sha256"
    error: str | None = None
    exit_code: int = 0
    seconds: float = 0.0
    state: str = "done"                     # done, failed, stopped (by --fail-fast), not run


Event = Callable[[str, str, int, int], None]   # (job id, stage, done, total); stage "queued"/"done"/"failed"


def default_jobs(n_jobs: int) -> int:
    """As many jobs at once as the cores and the available memory allow (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    mem = _available_memory()
    by_mem = max(1, mem // JOB_MEMORY) if mem else cores
    return max(1, min(cores, by_mem, n_jobs))


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def threads_per_job(parallel: int) -> int:
    """Read-ahead helper threads for each of `parallel` jobs: the cores beyond one per job, shared."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    from wim2vhd.options import MAX_THREADS
    return max(0, min(4, MAX_THREADS, cores // max(1, parallel) - 1))


@dataclass
class _Running:
    work: Work
    proc: subprocess.Popen
    stderr: Any                              # a temporary file: what the job's process printed there
    t0: float = field(default_factory=time.monotonic)
    outcome: Outcome | None = None
    reader: threading.Thread | None = None


def _start(work: Work, messages: queue.Queue, env: dict[str, str] | None) -> _Running:
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, "-m", "wim2vhd.build.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    r = _Running(work, proc, err)

    def read() -> None:
        for line in proc.stdout:
            try:
                messages.put((work.id, json.loads(line)))
            except ValueError:
                continue
        messages.put((work.id, None))  # its stdout closed: it has ended

    r.reader = threading.Thread(target=read, name=f"wim2vhd-build-{work.id}", daemon=True)
    r.reader.start()
    try:
        proc.stdin.write(json.dumps(dataclasses.asdict(work)))
        proc.stdin.close()
    except OSError:  # it died at once: its exit says why
        pass
    return r


def _ended(r: _Running) -> Outcome:
    """The outcome of a job whose process ended without sending one."""
    code = r.proc.wait()
    why = (f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"its process exited with code {code}")
    r.stderr.seek(0)
    last = [x for x in r.stderr.read().strip().splitlines() if x.strip()][-1:]
    _remove_temps(r.work.out)
    return Outcome(r.work.id, False, error=why + (f": {last[0].strip()}" if last else ""), exit_code=6,
                   state="failed")


def _remove_temps(out: str) -> None:
    """The temporary files of OUT a killed job left (atomic.AtomicOutput names them .OUT.*.w2v-tmp)."""
    d, base = os.path.split(os.path.abspath(out))
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        if n.startswith(f".{base}.") and ".w2v-tmp" in n:
            try:
                os.unlink(os.path.join(d, n))
            except OSError:
                pass


def run(works: list[Work], parallel: int, *, fail_fast: bool = False, event: Event | None = None,
        finished: Callable[[Outcome], None] | None = None, env: dict[str, str] | None = None) -> list[Outcome]:
    """Run every work item, `parallel` at once; the outcomes in the order of works.  finished: called
    with each outcome as it comes (the jobs not run at the end).  env: the jobs' environment."""
    pending = list(works)
    running: dict[str, _Running] = {}
    outcomes: dict[str, Outcome] = {}
    messages: queue.Queue = queue.Queue()
    stopping = False
    event = event or (lambda *a: None)
    try:
        while pending or running:
            while pending and not stopping and len(running) < parallel:
                w = pending.pop(0)
                running[w.id] = _start(w, messages, env)
                event(w.id, "start", 0, 0)
            if not running:
                break
            try:
                job_id, msg = messages.get(timeout=1.0)
            except queue.Empty:
                continue
            r = running.get(job_id)
            if r is None:
                continue
            if msg is not None and "progress" in msg:
                event(job_id, *msg["progress"])
                continue
            if msg is not None and "done" in msg:
                r.outcome = Outcome(job_id, True, result=msg["done"])
            elif msg is not None and "failed" in msg:
                r.outcome = Outcome(job_id, False, error=msg["failed"][0], exit_code=msg["failed"][1], state="failed")
            elif r.outcome is None:
                r.outcome = _ended(r)
            if msg is not None:
                continue  # the end of its output comes next
            r.proc.wait()
            r.stderr.close()
            o = r.outcome
            if stopping and not o.ok and o.exit_code == 130:
                o.state, o.error = "stopped", "stopped (--fail-fast)"
            o.seconds = round(time.monotonic() - r.t0, 3)
            outcomes[job_id] = o
            del running[job_id]
            if finished:
                finished(o)
            event(job_id, o.state, 0, 0)
            if not o.ok and fail_fast and not stopping:
                stopping = True
                for other in running.values():
                    other.proc.terminate()  # SIGTERM: atomic's handler removes its temporary file
    except BaseException:
        for r in running.values():
            r.proc.terminate()
        for r in running.values():
            try:
                r.proc.wait(30)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
            _remove_temps(r.work.out)
        # Interrupted: a job that finished (its disk whole and hashed) before or while it was stopped
        # is still reported, even if its message was not read yet; its output has ended, so it is all here.
        for r in running.values():
            if r.reader is not None:
                r.reader.join(5)
        for r in running.values():  # its "done" read, the end of its output not yet
            if r.outcome is not None and r.outcome.ok and r.work.id not in outcomes:
                outcomes[r.work.id] = r.outcome
                if finished:
                    finished(r.outcome)
        while True:
            try:
                job_id, msg = messages.get_nowait()
            except queue.Empty:
                break
            r = running.get(job_id)
            if r is None or msg is None or "done" not in msg or job_id in outcomes:
                continue
            o = outcomes[job_id] = Outcome(job_id, True, result=msg["done"],
                                           seconds=round(time.monotonic() - r.t0, 3))
            if finished:
                finished(o)
        raise
    for w in works:
        if w.id not in outcomes:
            outcomes[w.id] = Outcome(w.id, False, error="not run (--fail-fast)", state="not run")
            if finished:
                finished(outcomes[w.id])
    return [outcomes[w.id] for w in works]
