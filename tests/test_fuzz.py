"""The fuzz targets (tests/fuzz/): every committed input keeps the promise, and each target fuzzes briefly.

The promise (tests/fuzz/targets.py): a parser of untrusted input succeeds or raises InputError with one
printable line; no other exception, no crash or hang, no change to its input file.  The corpus holds seeds
(seed-*, made by tests/fuzz/seeds.py, many by other people's writers), inputs the fuzzers found (found-*,
fixed since: regression cases) and inputs that still break the promise in code this branch leaves alone
(known-*, listed in tests/fuzz/known.py).  `make fuzz` runs the targets for longer."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.fuzz import known
from tests.fuzz.targets import TARGETS, BrokenPromise, Runner, decode_sparse, encode_sparse

CORPUS = Path(__file__).resolve().parent / "fuzz" / "corpus"
REPO = Path(__file__).resolve().parents[1]
SECONDS = int(os.environ.get("FUZZ_TEST_SECONDS", "3"))


def _inputs(prefixes):
    return [pytest.param(t, p, id=f"{t}/{p.name}") for t in TARGETS for p in sorted((CORPUS / t).iterdir())
            if p.name.startswith(prefixes)]


@pytest.fixture(scope="module")
def runner():
    with Runner(known.classify) as r:
        yield r


_replayed: dict[str, dict[str, dict]] = {}


def replay(target: str, name: str) -> dict:
    """What the promise check said of a corpus file, run with the others of its target in a child under
    the fuzzer's memory limit (a known-* input may ask for gigabytes)."""
    if target not in _replayed:
        p = subprocess.run([sys.executable, "-m", "tests.fuzz.run", target, "--replay"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        _replayed[target] = {r["file"]: r for r in map(json.loads, p.stdout.splitlines())}
    return _replayed[target][name]


def test_every_target_has_seeds():
    for t in TARGETS:
        seeds = [p for p in (CORPUS / t).iterdir() if p.name.startswith("seed-")]
        assert seeds, t
        assert all(p.stat().st_size <= 128 << 10 for p in (CORPUS / t).iterdir()), t  # small files only


@pytest.mark.parametrize("target,path", _inputs(("seed-", "found-")))
def test_corpus_keeps_the_promise(target, path):
    r = replay(target, path.name)
    assert r["kept"], r


@pytest.mark.parametrize("target,path", _inputs(("known-",)))
def test_known_findings_still_break_it(target, path):
    """A known-* input breaks the promise in the way known.py says; once it does not (the code was fixed
    elsewhere), say so: rename it found-* and drop its entry."""
    r = replay(target, path.name)
    if r["kept"]:
        warnings.warn(f"{path.name} keeps the promise now: rename it found-* and drop its entry in known.py")
        return
    label = r["known"]
    assert label is not None and path.name.startswith(f"known-{label}"), r
    pytest.xfail(f"known finding {label}: {next(k.what for k in known.KNOWN if k.label == label)}")


def test_every_known_finding_has_an_input():
    names = [p.name for t in TARGETS for p in (CORPUS / t).iterdir()]
    for k in known.KNOWN:
        assert any(n.startswith(f"known-{k.label}") for n in names), k.label


def test_the_promise_is_checked(runner, monkeypatch):
    """The runner catches each way of breaking the promise (so that the tests above can fail)."""
    import wim2vhd.registry.regedit as rf
    from wim2vhd.errors import InputError, UsageError

    def raises(exc):
        def parse(*a, **k):
            raise exc
        return parse

    data = (CORPUS / "regfile" / "seed-forms.reg").read_bytes()
    for exc in (ValueError("boom"), UsageError("a usage error"), InputError("two\nlines"),
                InputError("an \x1b[31mescape")):
        monkeypatch.setattr(rf, "parse", raises(exc))
        with pytest.raises(BrokenPromise):
            runner.run("regfile", data)

    def writes(path):
        with open(path, "ab") as f:
            f.write(b"x")
    monkeypatch.setattr(rf, "load", writes)
    with pytest.raises(BrokenPromise, match="changed its input"):
        runner.run("regfile", data)


def test_sparse_encoding_round_trips():
    image = bytes(1000) + b"abc" + bytes(70000) + b"\x01" * 70000 + bytes(10)
    size, chunks = decode_sparse(encode_sparse(image))
    back = bytearray(size)
    for off, piece in chunks:
        back[off:off + len(piece)] = piece
    assert size == len(image) and bytes(back) == image


@pytest.mark.parametrize("target", list(TARGETS))
def test_fuzz_briefly(target):
    """Each target under atheris for a few seconds (make fuzz: FUZZ_SECONDS, 60 by default).  With a fixed
    libFuzzer seed the inputs are the same every run, a prefix of them on a slower machine: what passes here
    passes there (docs/fuzzing.md)."""
    p = subprocess.run([sys.executable, "-m", "tests.fuzz.run", target, "--seconds", str(SECONDS), "-seed=1"],
                       cwd=REPO, capture_output=True, text=True, timeout=SECONDS + 120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Done " in p.stderr, p.stderr[-3000:]  # libFuzzer's closing line: it ran inputs, then stopped
