"""Benchmark the main job's GRPO step against the model's shape: which size keeps `rookworld train` within its
10 minutes on 2 cores. Each shape is a fresh GPT-2 with the shipped tokenizer (random weights: every completion runs
to the recipe's max_completion_length, so the shapes compare at equal lengths; a trained model stops earlier), run
for a few steps of recipes/grpo_tiny_cpu.yaml without its evals; shapes alternate over rounds, so all meet the same
load. Prints each shape's parameters, median step seconds and its ratio to the first shape.

    .venv/bin/python scripts/bench/bench_sizes.py [--shapes 6x192,6x256,8x256] [--steps 4] [--rounds 2]

The main job's minutes at a shape ~ its measured minutes x the ratio (docs/PERFORMANCE.md, "The embedded model's size").
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from rookworld_trl.model.loading import new_gpt2_model  # noqa: E402


def make_model(shape: str, out: str) -> int:
    """A fresh GPT-2 of `shape` (LAYERSxWIDTH, 32-wide heads as the shipped model's) saved in `out`; its parameters."""
    layers, width = map(int, shape.split("x"))
    tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "rookworld_trl", "assets", "model"))
    model = new_gpt2_model(tok, layers, width // 32, width, 256)
    model.config.rookworld_fen_width = 90  # as the shipped model's prompts
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def step_seconds(model: str, steps: int, out: str) -> float:
    """Median `step_time` of a short main-job run (after the first step) on `model`."""
    cmd = [sys.executable, "-m", "rookworld_trl.stages.cli", "train", "--model_name_or_path", model,
           "--output_dir", out, "--max_steps", str(steps), "--eval_every_steps", "0", "--eval_samples", "0",
           "--eval_env_samples", "0", "--save_strategy", "no", "--report_to", "none", "--log_completions", "false"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        times = [row["step_time"] for row in map(json.loads, f) if "step_time" in row]
    return statistics.median(times[1:] or times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="6x192,6x256,8x256")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    shapes = args.shapes.split(",")
    seconds: dict[str, list[float]] = {s: [] for s in shapes}
    with tempfile.TemporaryDirectory() as tmp:
        params = {s: make_model(s, os.path.join(tmp, s)) for s in shapes}
        for r in range(args.rounds):
            for s in shapes:
                seconds[s].append(
                    step_seconds(os.path.join(tmp, s), args.steps, os.path.join(tmp, f"run{s}{r}"))
                )
                print(f"round {r + 1} {s}: {seconds[s][-1]:.2f} s/step", flush=True)
    base = statistics.median(seconds[shapes[0]])
    for s in shapes:
        m = statistics.median(seconds[s])
        print(f"{s}: {params[s] / 1e6:.2f}M parameters, {m:.2f} s/step, {m / base:.2f}x {shapes[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
