"""The outputs of `rookworld eval`: figures with intervals as JSON, a markdown table and a bar chart.

summary = summarize(results, baseline, seed)          # {suite: {figure: {model, baseline, delta, ...}}}
write_outputs(summary, settings, "eval/run1")         # eval.json, eval.md, eval.png
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from rookworld_trl.common.paths import out_folder_problem
from rookworld_trl.stages.eval.stats import Metric, delta_interval


def figure(metric: Metric, seed: int) -> dict:
    ci = metric.interval(seed)
    return {"value": metric.value, "ci": list(ci) if ci else None, "n": metric.n}


def summarize(results: dict, baseline: dict | None, seed: int) -> dict:
    """JSON-able {suite: {figure: {model, baseline, delta, reference, percent}}}."""
    out = {}
    for suite, metrics in results.items():
        out[suite] = {}
        for name, metric in metrics.items():
            row = {"percent": metric.percent, "reference": metric.reference, "model": figure(metric, seed)}
            if metric.lower_is_better:
                row["lower_is_better"] = True
            other = (baseline or {}).get(suite, {}).get(name)
            if other is not None:
                row["baseline"] = figure(other, seed)
                both = metric.value is not None and other.value is not None
                ci = delta_interval(metric, other, seed)
                row["delta"] = {
                    "value": metric.value - other.value if both else None,
                    "ci": list(ci) if ci else None,
                }
            out[suite][name] = row
    return out


def fmt(x: float | None, percent: bool) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.2f}%" if percent else f"{x:.4g}"


def fmt_ci(ci: list | None, percent: bool) -> str:
    return f"[{fmt(ci[0], percent)}, {fmt(ci[1], percent)}]" if ci else "-"


PUBLISHED_NOTE = (
    "`published (124M)`: RookWorld-LM-124M's published figures (docs/FORMATS.md), a reference for that "
    "124M-parameter model only; a smaller model such as the embedded 2.9M one is not expected to reach them."
)


def markdown(summary: dict, settings: dict) -> str:
    """One table per suite; by-kind environment figures in their own table. `*`: the 95% CI excludes 0."""
    has_base = settings.get("baseline") is not None
    lines = [f"# RookWorld evaluation: `{settings['model']}`", ""]
    if has_base:
        lines += [
            f"Baseline: `{settings['baseline']}`. Δ = model - baseline; `*`: its 95% CI excludes 0.",
            "",
        ]
    lines += [PUBLISHED_NOTE, ""]
    if found := settings.get("in_training_data"):
        parts = ", ".join(f"{name} {c['in']} of {c['of']}" for name, c in found["items"].items())
        lines += [f"Items in the training data (`{found['source']}`, by position): {parts or 'none'}.", ""]
    head = (
        ["figure", "model", "95% CI", "n"]
        + (["baseline", "Δ", "Δ 95% CI"] if has_base else [])
        + ["published (124M)"]
    )
    for suite, rows in summary.items():
        for title, part in ((suite, False), (f"{suite} by transition kind", True)):
            selected = {k: r for k, r in rows.items() if k.startswith("kind=") == part}
            if not selected:
                continue
            lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for name, r in selected.items():
                p, m = r["percent"], r["model"]
                label = name + (" (lower is better)" if r.get("lower_is_better") else "")
                cells = [label, fmt(m["value"], p), fmt_ci(m["ci"], p), str(m["n"])]
                if has_base:
                    b, d = r.get("baseline", {}), r.get("delta", {})
                    star = "*" if d.get("ci") and (d["ci"][0] > 0 or d["ci"][1] < 0) else ""
                    cells += [fmt(b.get("value"), p), fmt(d.get("value"), p) + star, fmt_ci(d.get("ci"), p)]
                lines.append("| " + " | ".join(cells + [fmt(r["reference"], p)]) + " |")
            lines.append("")
    lines += ["## settings", "", "```json", json.dumps(settings, indent=1), "```", ""]
    return "\n".join(lines)


def bars(rows: dict, side: str) -> tuple[list[float], list[list[float]]]:
    """Values in % of one side ("model"/"baseline") and their CI as matplotlib xerr (below, above)."""
    vals, low, high = [], [], []
    for r in rows.values():
        entry = r.get(side) or {}
        v = 100 * (entry.get("value") or 0.0)
        lo, hi = (100 * x for x in entry["ci"]) if entry.get("ci") else (v, v)
        vals.append(v)
        low.append(max(v - lo, 0.0))  # a percentile bootstrap interval need not contain the mean
        high.append(max(hi - v, 0.0))
    return vals, [low, high]


def chart(summary: dict, settings: dict, path: str) -> None:
    """Bars of the rate figures (not by kind), a panel per suite, 95% CI whiskers, 124M's published figures as x."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    panels = {}
    for suite, rows in summary.items():
        # the breakdowns (by transition kind, by why a move is illegal) stay in the tables
        if rates := {k: r for k, r in rows.items() if r["percent"] and not ("kind=" in k or "illegal/" in k)}:
            panels[suite] = rates
    sides = ["model"] + (["baseline"] if settings.get("baseline") else [])
    n_rows = sum(len(rows) for rows in panels.values())
    fig, axes = plt.subplots(
        max(len(panels), 1), 1, figsize=(9, 1 + 0.4 * n_rows + 0.8 * len(panels)), squeeze=False
    )
    height = 0.8 / len(sides)
    for ax, (suite, rows) in zip(axes[:, 0], panels.items(), strict=False):
        for j, side in enumerate(sides):
            vals, err = bars(rows, side)
            ys = [i + (j - (len(sides) - 1) / 2) * height for i in range(len(rows))]
            ax.barh(ys, vals, height=height, xerr=err, capsize=2, label=f"{side}: {settings[side]}")
        refs = [(i, 100 * r["reference"]) for i, r in enumerate(rows.values()) if r["reference"] is not None]
        if refs:
            ys, xs = zip(*refs, strict=True)
            ax.scatter(xs, ys, marker="x", color="black", zorder=3, label="published (RookWorld-LM 124M)")
        ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
        ax.set_xlim(0, 100)
        ax.invert_yaxis()
        ax.set_title(suite, fontsize=10)
    handles = {
        label: h for ax in axes[:, 0] for h, label in zip(*ax.get_legend_handles_labels(), strict=True)
    }
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=3, fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("%")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the legend on top
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(summary: dict, settings: dict, out_dir: str) -> dict[str, str]:
    """eval.json, eval.md and eval.png in out_dir, written in a staging folder beside them and moved in by one
    rename each, eval.json (the figures) last: a stopped eval leaves the previous files whole, never a torn one."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"eval.{ext}") for ext in ("json", "md", "png")}
    stage = tempfile.mkdtemp(prefix=".incoming-", dir=out_dir)
    try:
        staged = {ext: os.path.join(stage, os.path.basename(path)) for ext, path in paths.items()}
        with open(staged["json"], "w") as f:
            json.dump({"settings": settings, "suites": summary}, f, indent=1)
        with open(staged["md"], "w") as f:
            f.write(markdown(summary, settings))
        chart(summary, settings, staged["png"])
        for ext in ("png", "md", "json"):
            os.replace(staged[ext], paths[ext])
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return paths


def check_out_dir(out_dir: str) -> None:
    """ValueError, before an eval starts, when out_dir cannot take its files (common/paths.py)."""
    if problem := out_folder_problem(out_dir, "for eval.json/md/png, e.g. --out eval/run1"):
        raise ValueError(problem)
