"""The learning curve of an SFT run: its checkpoints (tokens trained) against the embedded model's targets, on the
shipped test split and the tactics test split, greedy; and the build's progress (`--status`).

    python scripts/learning_curve.py build/default_model/sft                 # eval the curve's checkpoints
    python scripts/learning_curve.py build/default_model/sft build/default_model/cooldown-*   # and the cooldowns
    python scripts/learning_curve.py build/default_model/sft -- --policy_samples 200   # extra eval flags
    python scripts/learning_curve.py build/default_model/sft --status --data build/default_model/data \
        --selfplay 4000 --random 12000                                      # how far the build is

The curve's points are the SFT's checkpoints at doubling steps (500, 1000, 2000, ...) and its last one, and the last
checkpoint of each cooldown run after it (the SFT's checkpoint K decayed: the build's `cooldown` stage): each
evaluated once with `rookworld eval` (its eval.json in RUN/curve/step-N/, so an interrupted curve resumes), then
SFT_DIR/curve.md (the table, with each point's learning rate: a point at the peak rate is not a finished model)
and SFT_DIR/curve.png (each figure against tokens, log scale; stars: the decayed points) are written anew.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "rookworld_trl", "assets")
# (suite, metric, label, target): issue 70's targets for the embedded model
TARGETS = [
    ("policy", "greedy/legal_best_move", "legal best move", 0.85),
    ("policy", "greedy/top5_move_accuracy", "B: in engine's top 5", 0.30),
    ("policy", "greedy/best_move_accuracy", "B: = engine's top 1", 0.08),
    ("tactics", "greedy/mate_in_one", "mate in one", 0.10),
    ("env", "next_state_accuracy", "A: next state exact", 0.75),
]


def checkpoints(sft_dir: str) -> list[tuple[int, str]]:
    """(step, path) of the run's checkpoints, by step."""
    found = [(int(p.rsplit("-", 1)[1]), p) for p in glob.glob(os.path.join(sft_dir, "checkpoint-*"))]
    return sorted(
        (step, path) for step, path in found if os.path.isfile(os.path.join(path, "model.safetensors"))
    )


def curve_points(found: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The checkpoints at doubling steps from the first, and the last."""
    if not found:
        return []
    chosen, want = [], found[0][0]
    for step, path in found:
        if step >= want:
            chosen.append((step, path))
            want = 2 * step
    return chosen if chosen[-1] == found[-1] else [*chosen, found[-1]]


def tokens_seen(path: str) -> int:
    return int(read_json(os.path.join(path, "trainer_state.json")).get("num_input_tokens_seen", 0))


def learning_rate(path: str) -> float | None:
    """The learning rate the run last logged up to this checkpoint."""
    logged = [e["learning_rate"] for e in read_json(os.path.join(path, "trainer_state.json"))["log_history"]
              if "learning_rate" in e]  # fmt: skip
    return logged[-1] if logged else None


def points(runs: list[str]) -> list[tuple[str, int, str]]:
    """(run, step, checkpoint) of the curve: the SFT's doubling steps and last checkpoint; each cooldown's last."""
    chosen = [(runs[0], step, path) for step, path in curve_points(checkpoints(runs[0]))]
    for run in runs[1:]:
        chosen += [(run, step, path) for step, path in checkpoints(run)[-1:]]
    return chosen


def evaluate(path: str, out: str, device: str, workers: int, extra: list[str]) -> dict:
    """`rookworld eval` of one checkpoint on every test and tactics-test position (cached in `out`)."""
    result = os.path.join(out, "eval.json")
    if not os.path.isfile(result):
        cmd = [sys.executable, "-m", "rookworld_trl.stages.cli", "eval", path, "--data", os.path.join(ASSETS, "data"),
               "--split", "test", "--suites", "policy,env,tactics", "--tactics", os.path.join(ASSETS, "tactics"),
               "--policy_samples", "100000", "--env_samples", "500", "--tactics_samples", "100000",
               "--device", device, "--engine_workers", str(workers), "--out", out, *extra]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=ROOT)
    return read_json(result)["suites"]


def value(suites: dict, suite: str, metric: str) -> float | None:
    entry = suites.get(suite, {}).get(metric)
    if isinstance(entry, dict):  # {"model": {"value": ...}, ...} or {"value": ...}
        entry = entry.get("model", entry)
        entry = entry.get("value") if isinstance(entry, dict) else entry
    return entry


def write_curve(sft_dir: str, rows: list[tuple[int, int, float | None, bool, dict]]) -> None:
    """curve.md (a table: step, tokens, learning rate, each target's figure) and curve.png."""
    labels = " | ".join(f"{label} (target {t:.0%})" for _, _, label, t in TARGETS)
    lines = [f"| step | tokens | learning rate | {labels} |", "|" + "---|" * (len(TARGETS) + 3)]
    for step, tokens, lr, decayed, suites in sorted(rows, key=lambda row: row[1]):
        cells = [value(suites, s, m) for s, m, _, _ in TARGETS]
        rate = ("-" if lr is None else f"{lr:.1e}") + (" (cooldown)" if decayed else "")
        lines.append(f"| {step:,} | {tokens / 1e6:.1f}M | {rate} | " + " | ".join(
            "-" if v is None else f"{100 * v:.1f}%" for v in cells) + " |")  # fmt: skip
    with open(os.path.join(sft_dir, "curve.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (suite, metric, label, target), color in zip(TARGETS, plt.cm.tab10.colors, strict=False):
        for decayed, style in ((False, "o-"), (True, "*")):
            xy = sorted((tokens / 1e6, 100 * value(s, suite, metric)) for _, tokens, _, d, s in rows
                        if d == decayed and value(s, suite, metric) is not None)  # fmt: skip
            if xy:
                ax.plot(*zip(*xy, strict=True), style, color=color, markersize=11 if decayed else 5,
                        label=None if decayed else label)  # fmt: skip
        ax.axhline(100 * target, color=color, linestyle=":", linewidth=1)
    ax.set_xscale("log")
    # plain millions at 1, 2, 5, 10, 20, ... (matplotlib's default writes 3x10^0 at every minor tick)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(
        matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}" if f"{x:g}"[0] in "25" else "")
    )
    ax.set_xlabel("tokens trained (millions, log scale)")
    ax.set_ylabel("% of the test positions")
    ax.plot([], [], ":", color="gray", label="target")  # keys for the line styles every figure shares
    ax.plot([], [], "*", color="gray", markersize=11, label="cooldown (finished)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(sft_dir, "curve.png"), dpi=120)


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def status(runs: list[str], data_dir: str, games: int) -> None:
    """One line for the data (chunks and games done), one for the SFT (step, tokens), one for each cooldown."""
    shards = glob.glob(os.path.join(data_dir, "shards", "*.json"))
    done = sum(read_json(p).get("games", 0) for p in shards if not p.endswith("settings.json"))
    assembled = os.path.isfile(os.path.join(data_dir, "stats.json"))
    print(
        f"data: {done:,} of {games:,} games labelled ({len(shards) - 1} chunks){', assembled' if assembled else ''}"
    )
    for run in runs:
        name, found = ("sft" if run == runs[0] else os.path.basename(run)), checkpoints(run)
        if found:
            step, path = found[-1]
            print(f"{name}: checkpoint {step:,}, {tokens_seen(path) / 1e6:.1f}M tokens")
        else:
            print(f"{name}: no checkpoint yet")
    evaluated = [p for run in runs for p in glob.glob(os.path.join(run, "curve", "step-*", "eval.json"))]
    print(f"curve: {len(evaluated)} point(s) evaluated")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "runs", nargs="+", metavar="RUN", help="the SFT's output dir, then any cooldown runs of it"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--status", action="store_true", help="print how far the build is; evaluate nothing")
    p.add_argument("--data", default=None, help="with --status: the build's data dir")
    p.add_argument("--selfplay", type=int, default=0)
    p.add_argument("--random", type=int, default=0)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # after --: extra `rookworld eval` flags
    args, eval_args = p.parse_args(argv[:cut]), argv[cut + 1 :]
    if args.status:
        status(args.runs, args.data, args.selfplay + args.random)
        return 0
    rows = []
    for run, step, path in points(args.runs):
        suites = evaluate(
            path, os.path.join(run, "curve", f"step-{step}"), args.device, args.workers, eval_args
        )
        rows.append((step, tokens_seen(path), learning_rate(path), run != args.runs[0], suites))
    if not rows:
        print(f"learning_curve: no checkpoint in {args.runs[0]}; run the sft stage first", file=sys.stderr)
        return 1
    write_curve(args.runs[0], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
