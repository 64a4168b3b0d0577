"""One build job in a process of its own: `python -m wim2vhd.build.worker`, started by build/runner.py.

It reads the job (runner.Work as JSON) on stdin, applies it, hashes the output, and writes JSON lines
on its stdout: {"progress": [stage, done, total]} while it runs, then {"done": apply's summary} or
{"failed": [message, exit code]}.  Anything a library or tool prints goes to stderr, not into them.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

PROGRESS_EVERY = 0.2  # seconds between progress lines within a stage


def _identity(path: str):
    """What tells this run's disk from an older one under the same name, or None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _hold_signals() -> None:
    """From here the disk is whole: a Ctrl-C (or the runner's SIGTERM) no longer stops the job, which
    goes on to hash and report it, so that every complete disk of this run reaches the manifest.  The
    signals are blocked first (a handler cannot run between two statements then), then ignored."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main() -> None:
    # The protocol gets its own copy of stdout; fd 1 itself goes to stderr, so that nothing else a
    # library writes there (wimlib, libntfs-3g) can break a line.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj) -> None:
        out.write(json.dumps(obj, default=str) + "\n")

    last = [None, 0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != last[0] or now - last[1] >= PROGRESS_EVERY:
            last[0], last[1] = stage, now
            send({"progress": [stage, done, total]})

    from wim2vhd.atomic import install_signal_handlers
    from wim2vhd.errors import Wim2VhdError
    install_signal_handlers()
    try:
        work = json.loads(sys.stdin.read())
        for k, v in work["environ"].items():  # SOURCE_DATE_EPOCH, which a reproducible apply reads
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from wim2vhd import api
        from wim2vhd.pipeline import customize
        from wim2vhd.build.manifest import sha256_file
        from wim2vhd.options import ApplyOptions
        custom = customize.from_options(**work["custom"]) if work["custom"] else None
        opts = ApplyOptions.from_keywords(**work["keywords"], customize=custom)
        before = _identity(work["out"])
        try:
            res = api.apply_image(work["source"], work["out"], opts, progress=progress)
            _hold_signals()
        except BaseException:  # Ctrl-C, or the runner's SIGTERM (atomic.Interrupted)
            _hold_signals()
            # Stopped after apply renamed its disk into place (only a complete disk is) but before it
            # returned, or in the instant after: the disk under the final name is this run's (not the
            # old one), so it is reported.
            if _identity(work["out"]) in (None, before):
                raise
            res = {"output": work["out"], "interrupted": True}
        progress("hash", 0, 0)
        res["sha256"] = sha256_file(work["out"])
        send({"done": res})
    except Wim2VhdError as e:
        send({"failed": [str(e), e.exit_code]})
    except KeyboardInterrupt:
        send({"failed": ["interrupted", 130]})
    except Exception as e:  # a bug of ours: say so, in one line
        send({"failed": [f"internal error: {type(e).__name__}: {e}", 6]})
    finally:
        out.close()


if __name__ == "__main__":
    main()
