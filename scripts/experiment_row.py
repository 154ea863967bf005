"""One row of docs/EXPERIMENTS.md for a GRPO run: the paired eval's deltas, the reward trend, the watch on the
sampled answers and, with value_baseline, the value head's figures.

    python scripts/experiment_row.py build/ARM_sS                       # eval in build/ARM_sS/eval_whole
    python scripts/experiment_row.py build/ARM_sS --eval eval_vs_default

Reads RUN/<eval>/eval.json (`rookworld eval RUN/final --baseline ... --out RUN/<eval>`), RUN/metrics.jsonl and
RUN/completions/*.parquet (scripts/read_completions.py, last 30 steps). `*`: the paired 95% interval excludes 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from read_completions import figures, read  # noqa: E402

from rookworld_trl.stages.eval.charts import (  # noqa: E402
    quarter_trend,
    series,
    value_line,  # noqa: E402
)
from rookworld_trl.training.headline import shown_in  # noqa: E402
from rookworld_trl.training.jsonl import read_jsonl  # noqa: E402


def interval(value: float, lo: float, hi: float, points: bool) -> str:
    scale, digits = (100, 1) if points else (1, 3)
    star = "*" if lo > 0 or hi < 0 else ""
    return f"{value * scale:+.{digits}f}{star} [{lo * scale:+.{digits}f}, {hi * scale:+.{digits}f}]"


def eval_cells(path: str) -> list[str]:
    with open(path) as f:
        suites = json.load(f)["suites"]
    figures = shown_in("row")
    lead = suites[figures[0].suite][figures[0].figure]  # the headline's first: P: legal best move
    cells = [f"{lead['model']['value']:.1%} vs {lead['baseline']['value']:.1%}"]
    for f in figures:
        if f.figure not in suites.get(f.suite, {}):  # the tactics suite runs with tactics_dataset only
            continue
        row = suites[f.suite][f.figure]
        before = (
            f"{row['baseline']['value']:.1%} -> {row['model']['value']:.1%} " if f.suite == "tactics" else ""
        )
        cells.append(f"{f.short} {before}{interval(row['delta']['value'], *row['delta']['ci'], f.percent)}")
    return cells


def metrics_cells(rows: list[dict]) -> list[str]:
    data = series(rows)
    first, last, (lo, hi) = quarter_trend(data["reward"][1])
    cells = [f"reward trend {interval(last - first, lo, hi, False)}"]
    if value := value_line(data):
        cells.append(" ".join(value.split()))
    runtime = [r["train_runtime"] for r in rows if "train_runtime" in r]
    if runtime:
        cells.append(f"{runtime[-1] / 60:.1f} min training")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a GRPO output_dir")
    parser.add_argument("--eval", default="eval_whole", help="the eval's folder inside the run")
    args = parser.parse_args()
    cells = []
    path = os.path.join(args.run, args.eval, "eval.json")
    if os.path.exists(path):
        cells += eval_cells(path)
    cells += metrics_cells(read_jsonl(os.path.join(args.run, "metrics.jsonl")))
    watch = figures(read(args.run, None, None, 30))
    cells.append(f"watch {watch['precision']:.2f} / {watch['selection']:+.2f} / {watch['distinct']:.1f}")
    print(" | ".join(cells))


if __name__ == "__main__":
    main()
