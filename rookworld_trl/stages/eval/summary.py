"""The end of a run on the console: what it trained (steps, time), how the training reward moved, the reward-hacking
watch, how often the value head gave the advantages, and the before/after eval's headline figures (`run_summary`);
SFT's `sft_summary`. The stages print them; the curves are stages/eval/charts.py.

    from rookworld_trl.stages.eval.summary import run_summary
    print(run_summary("runs/grpo"))
"""

from __future__ import annotations

import json
import math
import os
import statistics

from rookworld_trl.stages.eval.charts import quarter_trend, series
from rookworld_trl.training.headline import shown_in
from rookworld_trl.training.jsonl import read_jsonl

WATCH_LINE = {"precision": "precision", "selection": "selection", "distinct": "distinct", "b_legal": "B: legal",
              "b_best_e": "B: = best E:", "first_share": "top first move"}  # fmt: skip


def watch_line(rows: list[dict], first: int = 10, last: int = 30) -> str | None:
    """The watch's figures over the first `first` logged steps -> the last `last`: gaming shows here first."""
    figures = series(rows)
    parts = []
    for name, label in WATCH_LINE.items():
        values = figures.get(f"watch/{name}", ([], []))[1]
        if len(values) >= first + last:
            a, b = statistics.fmean(values[:first]), statistics.fmean(values[-last:])
            parts.append(f"{label} {a:.2f} -> {b:.2f}")
    return f"  watch (first {first} -> last {last} steps) " + ", ".join(parts) if parts else None


def value_line(rows: list[dict], last: int = 10) -> str | None:
    """With value_baseline: the head's explained variance of the returns (last `last` steps, max) and on how many
    steps GAE gave the advantages (the others kept the group baseline's: the head had not reached
    value_warmup_ev) and the head's largest gradient norm before clipping."""
    figures = series(rows)
    ev = [v for v in figures.get("value/explained_variance", ([], []))[1] if not math.isnan(v)]
    used = figures.get("value/gae_used", ([], []))[1]
    norms = figures.get("value/grad_norm", ([], []))[1]
    if not ev or not used:
        return None
    line = (
        f"  value head       explained variance last {min(last, len(ev))} steps {statistics.fmean(ev[-last:]):.2f} "
        f"(max {max(ev):.2f}); GAE on {sum(used):.0f} of {len(used)} steps, the group baseline on the rest"
    )
    return line + (f"; gradient norm max {max(norms):.3g}" if norms else "")


def steps_line(rows: list[dict], start_step: int = 0) -> str | None:
    """How many steps the run has and, after a resume from `start_step`, how many of them this session ran
    (the time is this session's: the Trainer's train_runtime).

    >>> steps_line([{"step": 150, "train_runtime": 120.0}], start_step=131)
    '  steps trained    150 in all, 19 this session in 2.0 min'
    """
    if not rows:
        return None
    total = max(row.get("step", 0) for row in rows)
    runtime = [row["train_runtime"] for row in rows if "train_runtime" in row]
    time = f" in {runtime[-1] / 60:.1f} min" if runtime else ""
    if start_step:
        return f"  steps trained    {total} in all, {total - start_step} this session{time}"
    return f"  steps trained    {total}{time}"


def run_summary(run: str, metrics: str = "metrics.jsonl", start_step: int = 0) -> str:
    """A few lines for the end of a run: its steps (this session's apart after a resume from `start_step`),
    the training reward's trend and the before/after headline figures (from `run/eval/eval.json`, if the run
    has one) with paired 95% intervals."""
    lines = [f"run summary: {run}"]
    path = os.path.join(run, metrics)
    rows = read_jsonl(path) if os.path.isfile(path) else []
    if steps := steps_line(rows, start_step):
        lines.append(steps)
    rewards = series(rows).get("reward", ([], []))[1]
    if trend := quarter_trend(rewards):
        first, last, (low, high) = trend
        lines.append(
            f"  training reward  first quarter {first:.3f} -> last quarter {last:.3f}  "
            f"{last - first:+.3f} [{low:+.3f}, {high:+.3f}]"
        )
    if watch := watch_line(rows):
        lines.append(watch)
    if value := value_line(rows):
        lines.append(value)
    eval_json = os.path.join(run, "eval", "eval.json")
    if os.path.isfile(eval_json):
        with open(eval_json) as f:
            suites = json.load(f)["suites"]
        for figure in shown_in("summary"):
            row = suites.get(figure.suite, {}).get(figure.figure)
            if not row or "delta" not in row or None in (row["baseline"]["value"], row["model"]["value"]):
                continue  # no figure on either side (e.g. precision where no answer listed a move)
            d = row["delta"]
            scale, digits, unit = (100, 1, "%") if row["percent"] else (1, 3, "")
            before, after = (f"{row[k]['value'] * scale:.{digits}f}{unit}" for k in ("baseline", "model"))
            delta, low, high = (f"{x * scale:+.{digits}f}" for x in (d["value"], *d["ci"]))
            sig = "*" if d["ci"][0] > 0 or d["ci"][1] < 0 else ""  # the interval excludes 0
            lines.append(
                f"  {figure.label:<41}{before:>7} -> {after:>7}  {delta} [{low}, {high}]{sig} (n={row['model']['n']})"
            )
    outputs = [
        os.path.join(run, p)
        for p in (
            "final",
            os.path.join("eval", "eval.md"),
            os.path.join("report", "report.md"),
            "completions",
        )
    ]
    lines.append(f"  outputs: {', '.join(p for p in outputs if os.path.exists(p))}")
    return "\n".join(lines)


def sft_summary(run: str, start_step: int = 0, checks: dict | None = None, n_checked: int = 0) -> str:
    """The end of `rookworld sft`: steps (this session's apart after a resume), training and held-out loss,
    the format check of held-out P: prompts (`checks`, on `n_checked` prompts) and where the outputs are."""
    path = os.path.join(run, "metrics.jsonl")
    rows = read_jsonl(path) if os.path.isfile(path) else []
    figures = series(rows)
    lines = [f"sft summary: {run}"] + [line for line in [steps_line(rows, start_step)] if line]
    for key, label in (("loss", "training loss"), ("eval_loss", "held-out loss")):
        steps, values = figures.get(key, ([], []))
        if values:
            best = min(range(len(values)), key=values.__getitem__)
            lines.append(
                f"  {label:<17}first {values[0]:.3f} -> last {values[-1]:.3f} (lowest {values[best]:.3f} "
                f"at step {steps[best]:.0f})"
            )
    if checks:
        said = ", ".join(f"{k.replace('_', ' ')} {v:.1%}" for k, v in checks.items())
        lines.append(f"  format check     {said} on {n_checked} held-out P: prompts (greedy)")
    lines.append(f"  outputs: {run} (model and tokenizer)" + (f", {path}" if rows else ""))
    return "\n".join(lines)
