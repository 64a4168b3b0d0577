"""Build and run tests/faults/w2v_fault.c, the LD_PRELOAD shim that fails writes on chosen files.

    shim = Shim.build(tmp_dir)
    r = shim.run([W2V, "apply", ...], prefix=str(out_dir) + "/", after=10, errno="EIO")
    r.proc      the CompletedProcess
    r.calls     how many matching calls were made, in every process the command started
    r.failed    whether the fault was reached (calls > after)
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "w2v_fault.c")


@dataclass
class Result:
    proc: subprocess.CompletedProcess
    calls: int
    after: int

    @property
    def failed(self) -> bool:
        return self.after >= 0 and self.calls > self.after

    @property
    def errors(self) -> list[str]:
        """The lines wim2vhd printed on stderr."""
        return [line for line in self.proc.stderr.splitlines() if line.strip()]


class Shim:
    def __init__(self, so: str, workdir: str):
        self.so, self.workdir = so, workdir
        self._n = 0

    @classmethod
    def build(cls, workdir) -> "Shim":
        workdir = os.fspath(workdir)
        so = os.path.join(workdir, "w2v_fault.so")
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", so, SOURCE, "-ldl",
                        "-lpthread"], check=True, capture_output=True, text=True)
        return cls(so, workdir)

    def run(self, args, *, prefix: str, after: int = 0, errno: str = "EIO", ops: str = "write",
            times: int = -1, env: dict | None = None, **kw) -> Result:
        """Run args with writes on files under `prefix` failing after `after` calls (-1: never), with
        `errno`, `times` times (-1: every call after those)."""
        self._n += 1
        counter = os.path.join(self.workdir, f"counter.{os.getpid()}.{self._n}")
        with open(counter, "wb") as f:
            f.write(bytes(8))
        e = {**os.environ, **(env or {}), "LD_PRELOAD": self.so, "W2V_FAULT_PATH": prefix,
             "W2V_FAULT_AFTER": str(after), "W2V_FAULT_ERRNO": errno, "W2V_FAULT_OPS": ops,
             "W2V_FAULT_COUNTER": counter, "W2V_FAULT_TIMES": str(times)}
        p = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=e, **kw)
        with open(counter, "rb") as f:
            calls = int.from_bytes(f.read(8), "little")
        os.unlink(counter)
        return Result(p, calls, after)
