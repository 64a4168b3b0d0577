"""One build job in a process of its own: `python -m wim2vhd.build.worker`, started by build/runner.py.

It reads the job (runner.Work as JSON) on stdin, applies it, hashes the output, and writes JSON lines
on its stdout: {"progress": [stage, done, total]} while it runs, then {"done": apply's summary} or
{"failed": [message, exit code]}.  Anything a library or tool prints goes to stderr, not into them.
"""
from __future__ import annotations

import json
import os
import sys
import time

PROGRESS_EVERY = 0.2  # seconds between progress lines within a stage


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
        res = api.apply_image(work["source"], work["out"], opts, progress=progress)
        try:
            progress("hash", 0, 0)
            res["sha256"] = sha256_file(work["out"])
        except BaseException:
            # Stopped before its hash is known, the output would be one the manifest does not list
            # (and the next build would refuse to replace it): the job leaves nothing.
            try:
                os.unlink(work["out"])
            except OSError:
                pass
            raise
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
