"""The main job on several seeds and the table of its held-out figures: each seed's paired delta and 95% interval,
the mean and range over the seeds, and mate in one pooled over them against the embedded model.

    python scripts/five_seeds.py                                   # rookworld train --seed 0..4, 2 at a time
    python scripts/five_seeds.py --out build/armX --seeds 0,1 -- --tactics_replay_coef 0.5   # a pilot arm
    python scripts/five_seeds.py --out build/five --table_only    # the table of runs already made

Each seed is `rookworld train --seed N --output_dir OUT/seedN [ARGS after --]`; a seed whose OUT/seedN/eval/eval.json
exists is not run again (an interrupted run resumes as `rookworld train` does). With --jobs J > 1 the runs go J at a
time, each with OMP_NUM_THREADS = cores / J. The table reads each run's own before/after eval (OUT/seedN/eval/eval.json:
the whole test split, the tactics test split). `*`: the paired 95% interval excludes 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from experiment_row import interval  # noqa: E402  (one way to write a delta and its interval)

from rookworld_trl.training.headline import shown_in  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_seeds(seeds: list[int], out: str, extra: list[str], jobs: int) -> None:
    """`rookworld train` per seed, `jobs` at a time; each run's console goes to OUT/seedN.log."""
    todo = [s for s in seeds if not os.path.exists(os.path.join(out, f"seed{s}", "eval", "eval.json"))]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if jobs > 1 else dict(os.environ)
    rookworld = os.path.join(os.path.dirname(sys.executable), "rookworld")
    running: list[tuple[int, subprocess.Popen, float]] = []
    os.makedirs(out, exist_ok=True)
    while todo or running:
        while todo and len(running) < jobs:
            seed = todo.pop(0)
            cmd = [
                rookworld,
                "train",
                "--seed",
                str(seed),
                "--output_dir",
                os.path.join(out, f"seed{seed}"),
                *extra,
            ]
            print(f"seed {seed}: {' '.join(cmd[1:])}", flush=True)
            log = open(os.path.join(out, f"seed{seed}.log"), "a")  # noqa: SIM115 (the child writes it until it ends)
            running.append(
                (seed, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time())
            )
        time.sleep(5)
        for item in [r for r in running if r[1].poll() is not None]:
            seed, proc, start = item
            running.remove(item)
            print(
                f"seed {seed}: exit {proc.returncode} after {(time.time() - start) / 60:.1f} min", flush=True
            )


def table(out: str, seeds: list[int]) -> str:
    """Markdown: a row per figure, the embedded model, each seed's delta, mean and range; pooled mate in one."""
    runs = {}
    for s in seeds:
        path = os.path.join(out, f"seed{s}", "eval", "eval.json")
        if os.path.exists(path):
            with open(path) as f:
                runs[s] = json.load(f)["suites"]
    if not runs:
        return f"no finished seed under {out} (OUT/seedN/eval/eval.json)"
    head = ["figure", "embedded model", *[f"seed {s}" for s in runs], "mean (range)", "seeds up* / down*"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in shown_in("seeds"):
        rows = [r[f.suite][f.figure] for r in runs.values() if f.figure in r.get(f.suite, {})]
        if len(rows) < len(runs):
            continue
        scale, digits = (100, 1) if f.percent else (1, 3)
        bases = sorted(
            {round(r["baseline"]["value"] * scale, digits) for r in rows}
        )  # A: items differ by seed
        base = f"{bases[0]:.{digits}f}" + (f"-{bases[-1]:.{digits}f}" if len(bases) > 1 else "")
        deltas = [r["delta"]["value"] * scale for r in rows]
        unit = "%" if f.percent else ""
        lines.append(
            f"| {f.label} | {base}{unit} | "
            + " | ".join(interval(r["delta"]["value"], *r["delta"]["ci"], f.percent) for r in rows)
            + f" | {sum(deltas) / len(deltas):+.{digits}f} ({min(deltas):+.{digits}f} .. {max(deltas):+.{digits}f})"
            + f" | {sum(r['delta']['ci'][0] > 0 for r in rows)} / {sum(r['delta']['ci'][1] < 0 for r in rows)} |"
        )
    mates = [
        r["tactics"]["greedy/mate_in_one"]
        for r in runs.values()
        if "greedy/mate_in_one" in r.get("tactics", {})
    ]
    if mates:
        n = mates[0]["model"]["n"]
        pooled = sum(round(m["model"]["value"] * n) for m in mates) / (n * len(mates))
        base = mates[0]["baseline"]["value"]
        lines.append(
            f"\nmate in one pooled over {len(mates)} seeds: {pooled:.2%} against the embedded model's {base:.2%} "
            f"({pooled / base:.2f}x; n = {n} positions per seed)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "build", "five_seeds"), help="one folder per seed"
    )
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--table_only", action="store_true", help="print the table of the runs already made")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    seeds = [int(s) for s in args.seeds.split(",")]
    if not args.table_only:
        run_seeds(seeds, args.out, extra, args.jobs)
    print(table(args.out, seeds))


if __name__ == "__main__":
    main()
