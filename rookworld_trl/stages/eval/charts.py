"""`rookworld report`: a run's curves, one PNG per panel of its JSONL metrics, and report.md, each plotted figure's
first, last, lowest and highest value (`report`); and the end of a run on the console (`run_summary`, `sft_summary`).

    rookworld report runs/grpo                  # reads runs/grpo/metrics.jsonl, writes runs/grpo/report/
    rookworld report runs/grpo/metrics.jsonl --out /tmp/report

    from rookworld_trl.stages.eval.charts import report, run_summary
    report("runs/grpo")                      # runs/grpo/report/*.png and report.md
    print(run_summary("runs/grpo"))

Each panel collects the metrics keys that match its patterns; panels with no such key are skipped, keys no panel
takes are listed.
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import json
import math
import os
import statistics

from rookworld_trl.common.flags import FlagParser
from rookworld_trl.training.headline import HEADLINE, shown_in
from rookworld_trl.training.jsonl import read_jsonl

# panel -> (key patterns (fnmatch), title, y-axis label with its unit), in plotting order
PANELS: dict[str, tuple[tuple[str, ...], str, str]] = {
    # held-out figures of the in-training eval (eval_every_steps): is the run learning?
    "learning_curve": (tuple(f.key for f in shown_in("curve")), "Held-out skill during training (greedy answers)",
                       "fraction of held-out prompts"),
    "reward": (("reward", "rewards/*/mean"), "Training reward (batch mean)", "reward (the recipe's scale)"),
    "reward_spread": (("reward_std", "frac_reward_zero_std"), "Reward spread within a group of completions",
                      "reward std; fraction of groups"),  # zero-std groups carry no gradient
    # the reward-hacking watch (grpo/rewards/policy.py): does the list get more precise and B: choose, or only longer?
    "watch": (("watch/precision", "watch/b_legal", "watch/selection", "watch/b_best_e", "watch/first_share"),
              "Reward-hacking watch: listed moves and B:", "fraction of answers (selection: a difference)"),
    "watch_distinct_moves": (("watch/distinct",), "Distinct moves listed per answer", "moves"),
    "watch_listed_errors": (("watch/err_*",), "Why listed moves are illegal", "fraction of listed moves"),
    # centipawns: apart from the fractions below
    "policy_cp_loss": (("policy/cp_loss",), "Centipawn loss of the B: move (P:)", "centipawns"),
    "reward_components_policy": (("policy/*",), "P: reward components", "fraction of P: answers (mean score)"),
    "reward_components_env": (("env/*",), "A: reward components", "fraction of A: answers (mean score)"),
    "kl": (("kl",), "KL divergence to the reference model", "nats per token"),
    "beta": (("beta",), "KL coefficient beta", "beta (log scale)"),
    "clip_fraction": (("clip_ratio/*",), "Clipped probability ratios (PPO clip)", "fraction of tokens"),
    "entropy": (("entropy",), "Policy entropy", "nats per token"),
    "lengths": (("completions/*length*",), "Completion lengths", "tokens"),
    "truncated": (("completions/clipped_ratio",), "Completions cut at max_completion_length",
                  "fraction of completions"),  # a fraction: apart from the token counts
    "learning_rate": (("learning_rate",), "Learning rate", "learning rate (log scale)"),
    "step_time": (("step_time",), "Time per optimizer step", "seconds"),
    "loss": (("loss", "replay_loss"), "Training loss", "loss per token"),
    "grad_norm": (("grad_norm",), "Gradient norm before clipping", "L2 norm"),
    # value_baseline: can the head predict the returns (> 0), and does GAE stay centred and on scale?
    "value_explained_variance": (("value/explained_variance*", "value/gae_used"),
                                 "Value head: explained variance of the returns", "explained variance (1: all)"),
    "value_loss": (("value/loss", "value/grad_norm", "value/mean"), "Value head: loss, gradient norm, mean value",
                   "loss / norm / value"),
    # ema/adaptive/value baselines: mean ~0, std ~1 per task
    "advantages": (("adv/*",), "Advantages per task", "advantage (group std units)"),
    "eval": (("eval/*",), "Held-out evaluation during training", "figure (fractions; cp_loss in centipawns)"),
}  # fmt: skip

NAMES = {  # metric key -> the legend's name (others: human_name's rule)
    "reward": "total reward", "reward_std": "reward std in a group",
    "frac_reward_zero_std": "groups with one reward (no gradient)", "kl": "KL (logged estimator)",
    "completions/clipped_ratio": "cut at max length", "loss": "policy loss",
    "replay_loss": "replay loss (A: truths)", "watch/b_legal": "B: legal", "watch/b_best_e": "B: = best E:",
    "watch/first_share": "one common first move", "watch/precision": "listed moves legal",
    "watch/selection": "B: legal above chance", "policy/best": "B: move score", "policy/best_legal": "B: legal",
    "policy/best_top1": "B: = engine's top 1", "policy/best_top5": "B: in engine's top 5",
    "policy/b_field": "B: field score", "policy/candidates": "listed moves in top 5",
    "policy/legal_moves": "listed moves legal", "policy/evals": "E: evaluations score",
    "policy/evals_top5": "E: of top-5 moves score", "env/fen_exact": "next FEN exact",
    "env/fen_valid": "next FEN valid", "env/fen_similarity": "next FEN similarity",
    "env/placement": "pieces placed right", "env/side": "side to move right",
    "env/reward_value": "reward value right",
    **{f.key: f.label for f in HEADLINE},
}  # fmt: skip
MAX_SERIES = 6  # per panel: more are split over panel_2.png, ...
STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 1)))  # with tab10's colours: each series apart
SKIP = {"step", "epoch", "time"}
UNSMOOTHED = {"learning_curve", "eval", "learning_rate", "beta"}  # few points, or no noise to smooth


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values (shorter at the start), one per input value.

    >>> moving_average([1.0, 2.0, 3.0, 4.0], 2)
    [1.0, 1.5, 2.5, 3.5]
    """
    sums = [0.0, *itertools.accumulate(values)]
    return [(sums[i + 1] - sums[max(0, i + 1 - window)]) / min(i + 1, window) for i in range(len(values))]


def quarter_trend(values: list[float]) -> tuple[float, float, tuple[float, float]] | None:
    """(first-quarter mean, last-quarter mean, Welch 95% interval of their difference); None below 8 values."""
    if len(values) < 8:
        return None
    q = len(values) // 4
    first, last = values[:q], values[-q:]
    m1, m2 = statistics.fmean(first), statistics.fmean(last)
    half = statistics.NormalDist().inv_cdf(0.975) * math.sqrt(
        statistics.variance(first) / q + statistics.variance(last) / q
    )
    return m1, m2, (m2 - m1 - half, m2 - m1 + half)


PLOTTABLE = 1e100


def series(rows: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """key -> (steps, values) over the rows that have a finite number for it, below PLOTTABLE in size (a
    diverged run's 1e308 would overflow the axes' arithmetic)."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        step = row.get("step")
        for key, value in row.items():
            if key in SKIP or step is None or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value) and abs(value) < PLOTTABLE:
                steps, values = out.setdefault(key, ([], []))
                steps.append(step)
                values.append(float(value))
    return out


def panel_keys(keys) -> dict[str, list[str]]:
    """panel -> the keys it plots (each key in its first matching panel)."""
    taken, out = set(), {}
    for panel, (patterns, _, _) in PANELS.items():
        chosen = [k for k in sorted(keys) if k not in taken and any(fnmatch.fnmatch(k, p) for p in patterns)]
        if chosen:
            out[panel] = chosen
            taken.update(chosen)
    return out


def human_name(key: str) -> str:
    """The legend's name of a metric key: NAMES, else its last meaningful parts in words.

    >>> human_name("rewards/policy_reward/mean"), human_name("policy/well_formed"), human_name("adv/std/A")
    ('policy reward', 'well formed', 'std A')
    """
    if key in NAMES:
        return NAMES[key]
    parts = [p for p in key.split("/") if p not in ("rewards", "greedy", "eval", "watch", "value")]
    if len(parts) > 1 and parts[-1] in ("mean", "std"):  # rewards/<func>/mean: the function's name
        parts = parts[-2:-1] if parts[-1] == "mean" else [parts[-2], "std"]
    elif len(parts) > 1 and parts[0] in ("policy", "env", "completions", "clip_ratio", "kl", "adv"):
        parts = parts[1:]  # the panel's title says P:, A:, lengths, ...
    return " ".join(parts).replace("_", " ")


def figures(panels: dict[str, list[str]]) -> list[tuple[str, str, str, list[str]]]:
    """(file name, title, y label, keys) per chart; a panel of more than MAX_SERIES keys is split."""
    out = []
    for panel, keys in panels.items():
        _, title, ylabel = PANELS[panel]
        size = math.ceil(len(keys) / math.ceil(len(keys) / MAX_SERIES))  # 13 keys: 5, 5, 3, not 6, 6, 1
        chunks = [keys[i : i + size] for i in range(0, len(keys), size)]
        for i, chunk in enumerate(chunks):
            name = panel if i == 0 else f"{panel}_{i + 1}"
            part = f" ({i + 1} of {len(chunks)})" if len(chunks) > 1 else ""
            out.append((name, title + part, ylabel, chunk))
    return out


def plot(
    panel: str, keys: list[str], data: dict, path: str, title: str = "", ylabel: str = "", steps_range=None
):
    """One chart: a line per key (raw faint, its moving average bold when noisy), on the run's step axis."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    smoothed = ""
    for i, key in enumerate(keys):
        steps, values = data[key]
        style = {"color": plt.get_cmap("tab10")(i), "linestyle": STYLES[i % len(STYLES)]}
        if panel in UNSMOOTHED or len(steps) < 10:
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=human_name(key), **style)
            continue
        window = max(5, len(steps) // 10)
        smoothed = f"\nbold: mean of the last {window} logged steps; faint: each step"
        ax.plot(steps, values, alpha=0.2, linewidth=0.8, color=style["color"])  # the raw line, faint
        ax.plot(steps, moving_average(values, window), label=human_name(key), **style)
    if panel == "learning_rate" or (panel == "beta" and all(v > 0 for k in keys for v in data[k][1])):
        ax.set_yscale("log")  # schedules and adaptive beta move by factors
    ax.set_title((title or panel) + smoothed, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # steps are whole
    if steps_range and steps_range[0] < steps_range[1]:
        ax.set_xlim(*steps_range)  # every chart of a run on one step axis: they line up when compared
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the plot, never over a line
    # one plot box in every chart: they align
    fig.subplots_adjust(left=0.09, right=0.7, top=0.86, bottom=0.14)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(run: str, rows: list[dict], data: dict, panels: dict[str, list[str]], images: list[str]) -> str:
    steps = [r["step"] for r in rows if "step" in r]
    lines = [f"# Training report: `{run}`", ""]
    lines += [f"{len(rows)} log rows, steps {min(steps, default='-')} to {max(steps, default='-')}.", ""]
    if trend := quarter_trend(data.get("reward", ([], []))[1]):
        first, last, (low, high) = trend
        lines += [f"Training reward: first quarter {first:.3f}, last quarter {last:.3f}, "
                  f"difference {last - first:+.3f} [{low:+.3f}, {high:+.3f}] (95%).", ""]  # fmt: skip
    lines += ["| key | first | last | min | max |", "|---|---|---|---|---|"]
    for keys in panels.values():
        for key in keys:
            v = data[key][1]
            lines.append(f"| {key} | {v[0]:.4g} | {v[-1]:.4g} | {min(v):.4g} | {max(v):.4g} |")
    unplotted = sorted(set(data) - {k for keys in panels.values() for k in keys})
    if unplotted:
        lines += ["", "Not plotted: " + ", ".join(f"`{k}`" for k in unplotted) + "."]
    lines += [""] + [f"![{os.path.splitext(name)[0]}]({name})" for name in images] + [""]
    return "\n".join(lines)


def report(run: str, out_dir: str | None = None, metrics: str = "metrics.jsonl") -> dict[str, str]:
    """Write one PNG per panel and report.md; returns {name: path}."""
    path = run if os.path.isfile(run) else os.path.join(run, metrics)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no metrics file at {path} (the GRPO stage writes output_dir/{metrics})")
    out_dir = out_dir or os.path.join(os.path.dirname(os.path.abspath(path)), "report")
    os.makedirs(out_dir, exist_ok=True)
    rows = read_jsonl(path)
    data = series(rows)
    panels = panel_keys(data)
    all_steps = [step for steps, _ in data.values() for step in steps]
    steps_range = (min(all_steps), max(all_steps)) if all_steps else None
    written = {}
    for name, title, ylabel, keys in figures(panels):
        written[name] = os.path.join(out_dir, f"{name}.png")
        panel = name if name in panels else name.rsplit("_", 1)[0]
        plot(panel, keys, data, written[name], title, ylabel, steps_range)
    images = [f"{name}.png" for name in written]
    written["summary"] = os.path.join(out_dir, "report.md")
    with open(written["summary"], "w") as f:
        f.write(summary(run, rows, data, panels, images))
    return written


# ------------------------------------------------------------------------------------- the end of a run

WATCH_LINE = {"precision": "precision", "selection": "selection", "distinct": "distinct", "b_legal": "B: legal",
              "b_best_e": "B: = best E:", "first_share": "top first move"}  # fmt: skip


def watch_line(figures: dict) -> str | None:
    """The watch's figures (of `series`) over the first 10 logged steps -> the last 30: gaming shows here first."""
    parts = []
    for name, label in WATCH_LINE.items():
        values = figures.get(f"watch/{name}", ([], []))[1]
        if len(values) >= 40:
            parts.append(
                f"{label} {statistics.fmean(values[:10]):.2f} -> {statistics.fmean(values[-30:]):.2f}"
            )
    return "  watch (first 10 -> last 30 steps) " + ", ".join(parts) if parts else None


def value_line(figures: dict) -> str | None:
    """With value_baseline: the head's explained variance, on how many steps GAE gave the advantages, and its
    largest gradient norm."""
    ev = [v for v in figures.get("value/explained_variance", ([], []))[1] if not math.isnan(v)]
    used = figures.get("value/gae_used", ([], []))[1]
    norms = figures.get("value/grad_norm", ([], []))[1]
    if not ev or not used:
        return None
    line = (
        f"  value head       explained variance last {min(10, len(ev))} steps {statistics.fmean(ev[-10:]):.2f} "
        f"(max {max(ev):.2f}); GAE on {sum(used):.0f} of {len(used)} steps, the group baseline on the rest"
    )
    return line + (f"; gradient norm max {max(norms):.3g}" if norms else "")


def steps_line(rows: list[dict], start_step: int = 0) -> str | None:
    """How many steps the run has and, after a resume from `start_step`, how many this session ran.

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
    """A few lines for the end of a run: its steps, the training reward's trend and the before/after headline
    figures (run/eval/eval.json) with paired 95% intervals."""
    lines = [f"run summary: {run}"]
    path = os.path.join(run, metrics)
    rows = read_jsonl(path) if os.path.isfile(path) else []
    figures = series(rows)
    if steps := steps_line(rows, start_step):
        lines.append(steps)
    if trend := quarter_trend(figures.get("reward", ([], []))[1]):
        first, last, (low, high) = trend
        lines.append(
            f"  training reward  first quarter {first:.3f} -> last quarter {last:.3f}  "
            f"{last - first:+.3f} [{low:+.3f}, {high:+.3f}]"
        )
    lines += filter(None, (watch_line(figures), value_line(figures)))
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
        os.path.join(run, *p)
        for p in (["final"], ["eval", "eval.md"], ["report", "report.md"], ["completions"])
    ]
    lines.append(f"  outputs: {', '.join(p for p in outputs if os.path.exists(p))}")
    return "\n".join(lines)


def sft_summary(run: str, start_step: int = 0, checks: dict | None = None, n_checked: int = 0) -> str:
    """The end of `rookworld sft`: steps, training and held-out loss, the format check and the outputs."""
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


# ---------------------------------------------------------------------------------------------- command


def written_line(written: dict[str, str]) -> str:
    """What `report` wrote, in one line."""
    return f"rookworld report: {len(written) - 1} charts and {written['summary']}"


def main(argv: list[str] | None = None) -> int:
    parser = FlagParser(
        prog="rookworld report",
        description="PNG training curves and a short markdown summary from a run's JSONL metrics.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: rookworld report runs/grpo_tiny_cpu",
    )
    parser.add_argument("run", help="a training output_dir, or its metrics JSONL file")
    parser.add_argument("--out", help="directory for the PNGs and report.md (None: <run>/report)")
    parser.add_argument("--metrics", default="metrics.jsonl", help="metrics file name inside the output_dir")
    args = parser.parse_args(argv)
    print(written_line(report(args.run, args.out, args.metrics)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
