"""Run under the shim (tests/faults/shim.py): wim2vhd.api.apply_image with a progress hook that notes,
at the start of each stage, how many matching calls the shim has counted so far.

    python -m tests.faults.stages MARKS.json IMAGE OUT [apply_image keyword arguments as JSON]

MARKS.json gets {"create": n, "partition": n, ..., "end": n}: the calls a stage made are those from
its mark to the next one's (the writer threads write a little behind, so the bounds are approximate).
"""
import json
import os
import sys


def main() -> None:
    marks_path, image, out = sys.argv[1:4]
    kwargs = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    counter = os.environ["W2V_FAULT_COUNTER"]
    marks: dict[str, int] = {}

    def count() -> int:
        with open(counter, "rb") as f:
            return int.from_bytes(f.read(8), "little")

    def hook(stage: str, done: int, total: int) -> None:
        marks.setdefault(stage, count())

    from wim2vhd import api
    api.apply_image(image, out, progress=hook, **kwargs)
    marks["end"] = count()
    with open(marks_path, "w") as f:
        json.dump(marks, f)


if __name__ == "__main__":
    main()
