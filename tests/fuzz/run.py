"""Run one fuzz target under atheris (libFuzzer, coverage-guided over wim2vhd's Python code):

    .venv/bin/python -m tests.fuzz.run TARGET [--seconds N]      # make fuzz runs every target, FUZZ_SECONDS each
    .venv/bin/python -m tests.fuzz.run --list

It starts from the committed corpus (tests/fuzz/corpus/TARGET, known-* left out) and, for the BCD targets,
the reference stores Windows wrote where they exist (shared/reference/bcd).  New inputs it finds interesting
go to a temporary directory and are dropped; an input that breaks the promise (see targets.py) stops the run,
non-zero, and is saved as build/fuzz/TARGET/crash-<sha1> (timeout-, oom- for a hang or a blow-up of memory):
copy it to the corpus as found-<what>, fix the parser, and the regression test (tests/test_fuzz.py) keeps it.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CORPUS = HERE / "corpus"
ARTIFACTS = REPO / "build" / "fuzz"
# Where the reference BCD stores are (as tests/test_bcd_helpers.py finds them).
REF_BCD = Path(os.environ.get("WIM2VHD_SHARED", REPO.parent / "shared")) / "reference" / "bcd"

PER_INPUT_SECONDS = 20     # an input that takes longer is a hang
MEMORY = 6 << 30           # address space: a huge allocation fails as MemoryError, not by the OOM killer
RSS_MB = 3072


def seed_dirs(target: str, into: str) -> list[str]:
    """The seed directories for target: a copy of its corpus without known-* (inputs that break the promise
    in code this project has not fixed yet, see known.py), each also with its checksums repaired after
    mutation where the target can (repair.py), and the reference stores for the BCD targets."""
    from tests.fuzz.targets import REPAIR_BIT, TARGETS
    os.makedirs(into, exist_ok=True)
    for p in sorted((CORPUS / target).iterdir()) if (CORPUS / target).is_dir() else []:
        if p.is_file() and not p.name.startswith("known-"):
            data = p.read_bytes()
            (Path(into) / p.name).write_bytes(data)
            t = TARGETS[target]
            if t.repair is not None and t.sparse and len(data) >= 8:
                word = int.from_bytes(data[:8], "little") | REPAIR_BIT
                (Path(into) / (p.name + "-repair")).write_bytes(word.to_bytes(8, "little") + data[8:])
            elif t.repair is not None and data[:4] == b"regf" and len(data) >= 512:
                (Path(into) / (p.name + "-repair")).write_bytes(data[:508] + bytes(4) + data[512:])
    out = [into]
    if target in ("hive", "bcd") and REF_BCD.is_dir():
        out.append(str(REF_BCD))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz.run")
    ap.add_argument("target", nargs="?")
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--work", help=argparse.SUPPRESS)  # set for the child that runs libFuzzer
    ap.add_argument("--replay", action="store_true",
                    help="run every file of the target's corpus once; one JSON line each (tests/test_fuzz.py)")
    args, extra = ap.parse_known_args(argv)
    from tests.fuzz.targets import TARGETS
    if args.list or not args.target:
        print(" ".join(TARGETS))
        return 0
    if args.target not in TARGETS:
        ap.error(f"unknown target {args.target!r}: one of {', '.join(TARGETS)}")
    if args.replay:
        return _replay(args.target)
    if args.work:
        _fuzz(args.target, args.seconds, args.work, extra)  # does not return
    # libFuzzer ends its process with exit(), past Python's clean-up: run it in a child, clean up here
    work = tempfile.mkdtemp(prefix=f"w2v-fuzz-{args.target}-")
    try:
        cmd = [sys.executable, "-m", "tests.fuzz.run", args.target, "--seconds", str(args.seconds),
               "--work", work, *extra]
        # a report must print whatever the exception holds (surrogates from a decoded name, say)
        env = dict(os.environ, PYTHONIOENCODING="utf-8:backslashreplace")
        return subprocess.run(cmd, cwd=REPO, env=env).returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _limit_memory() -> None:
    """A huge allocation fails as MemoryError.  Under ASan (make sanitize) an address space limit would break
    its shadow memory: its allocator is told the limit instead (ASAN_OPTIONS, set by the Makefile)."""
    if not os.environ.get("W2V_ASAN_PRELOAD"):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def _fuzz(target: str, seconds: int, work: str, extra: list[str]) -> None:
    from tests.fuzz.targets import TARGETS
    _limit_memory()
    import atheris
    # Only the target's own parser is instrumented: instrumenting costs start-up time, and coverage of the
    # rest (CRC loops, the CLI) says nothing about the inputs the target explores.
    import importlib
    with atheris.instrument_imports(include=list(TARGETS[target].modules)):
        for m in TARGETS[target].modules:
            importlib.import_module(m)
    from tests.fuzz.known import classify
    from tests.fuzz.targets import Runner
    if target == "vhdx":
        _fast_crc32c()

    runner = Runner(classify, os.path.join(work, "input"))
    said: set[str] = set()

    def one_input(data: bytes) -> None:
        label = runner.run(target, data)
        if label is not None and label not in said:
            said.add(label)
            print(f"fuzz {target}: hit known finding {label} (see tests/fuzz/known.py); going on",
                  file=sys.stderr, flush=True)

    artifacts = ARTIFACTS / target
    artifacts.mkdir(parents=True, exist_ok=True)
    dirs = [os.path.join(work, "new")] + seed_dirs(target, os.path.join(work, "seeds"))
    os.makedirs(dirs[0], exist_ok=True)
    print(f"fuzz {target}: {seconds} s from {', '.join(dirs[1:])}", file=sys.stderr, flush=True)
    atheris.Setup([sys.argv[0], *dirs, f"-max_total_time={seconds}", f"-timeout={PER_INPUT_SECONDS}",
                   f"-rss_limit_mb={RSS_MB}", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
                   *extra], one_input)
    atheris.Fuzz()  # does not return: libFuzzer exits, 0 when the time is up with the promise kept


def _replay(target: str) -> int:
    """Each corpus file of target through the promise check, under the same memory limit as fuzzing."""
    import json

    from tests.fuzz.known import classify
    from tests.fuzz.targets import BrokenPromise, Runner
    _limit_memory()
    with Runner(classify) as runner:
        for p in sorted((CORPUS / target).iterdir()):
            try:
                label = runner.run(target, p.read_bytes())
                out = {"file": p.name, "kept": label is None, "known": label}
            except BrokenPromise as e:
                out = {"file": p.name, "kept": False, "known": None, "broken": str(e)}
            print(json.dumps(out), flush=True)
    return 0


def _fast_crc32c() -> None:
    """VHDX checks a CRC-32C of every header and region table (72 KiB per open); wim2vhd computes it in
    Python, which makes the vhdx target some ten times slower.  For fuzzing only, the same function from
    the crc32c package (C), checked against wim2vhd's first."""
    import crc32c

    from wim2vhd.disk import geometry

    def fast(data, crc: int = 0) -> int:
        return crc32c.crc32c(bytes(data), crc)

    for sample, start in ((os.urandom(5000), 0), (b"123456789", 0), (b"\1\2", 0x1234)):
        assert fast(sample, start) == geometry.crc32c(sample, start)
    geometry.crc32c = fast


if __name__ == "__main__":
    sys.exit(main())
