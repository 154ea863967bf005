"""read_jsonl: the rows of a run's JSONL log (metrics.jsonl), without torch or transformers, so that
`rookworld report` answers a wrong path in a fraction of a second.

    from rookworld_trl.training.jsonl import read_jsonl
    rows = read_jsonl("runs/grpo_tiny_cpu/metrics.jsonl")
"""

from __future__ import annotations

import json

from rookworld_trl.common.entry import say


def read_jsonl(path: str) -> list[dict]:
    """The rows of a JSONL file. A line that does not parse (torn by a crash or a full disk mid-write) is
    dropped with a warning naming the file, so a damaged log never blocks a resume."""
    rows, bad = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                bad.append(number)
    if bad:
        lines = ", ".join(map(str, bad))
        say(f"{path}: dropped {len(bad)} unreadable line(s) (line {lines}; torn by a crash or a full disk)")
    return rows
