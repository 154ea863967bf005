"""read_jsonl: the rows of a run's JSONL log (metrics.jsonl), without torch or transformers, so that
`rookworld report` answers a wrong path in a fraction of a second.

    from rookworld_trl.training.jsonl import read_jsonl
    rows = read_jsonl("runs/grpo_tiny_cpu/metrics.jsonl")
"""

from __future__ import annotations

import json
import math

from rookworld_trl.common.entry import say


def read_jsonl(path: str) -> list[dict]:
    """The rows of a JSONL file; a line that is no JSON object with a finite `step` (torn by a crash, say) is
    dropped with a warning, so a damaged log never blocks a resume or a report."""
    rows, bad = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                row = None
            step = row.get("step", 0) if isinstance(row, dict) else None  # a finite number when present
            if isinstance(step, int | float) and not isinstance(step, bool) and math.isfinite(step):
                rows.append(row)
            else:
                bad.append(number)
    if bad:
        lines = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        say(f"{path}: dropped {len(bad)} unreadable line(s) (line {lines}: not a JSON object with a numeric step; "
            "torn by a crash or a full disk, or written by something else)")  # fmt: skip
    return rows
