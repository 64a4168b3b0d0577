"""What each verify check found (shared by the steps in this package)."""
from __future__ import annotations

from dataclasses import dataclass

from wim2vhd import partition

OK, PROBLEM, WARNING, SKIPPED = "ok", "problem", "warning", "skipped"


@dataclass
class Check:
    name: str
    result: str          # ok | problem | warning | skipped
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "result": self.result, "detail": self.detail}


def pname(p: partition.Partition) -> str:
    return f"partition {p.number}"
