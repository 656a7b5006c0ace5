"""Phase marks for start-up measurements: with SLIQ_TRACE=FILE set, `mark(name)` appends one JSON line
{"mark": name, "t": wall-clock seconds, "pid": ...} to FILE (bench/score_startup.py reads them). Unset, a mark costs
one environment lookup."""

from __future__ import annotations

import json
import os
import time


def mark(name: str, **fields) -> None:
    """Append the mark `name` (and any JSON-ready fields) to $SLIQ_TRACE, if set."""
    path = os.environ.get("SLIQ_TRACE")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"mark": name, "t": time.time(), "pid": os.getpid(), **fields}) + "\n")


def read(path) -> dict[str, float]:
    """The marks a trace file holds: name -> the wall-clock time of its first mark (none for a missing file)."""
    from pathlib import Path

    path = Path(path)
    marks: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        mark = json.loads(line)
        marks.setdefault(mark["mark"], mark["t"])
    return marks
