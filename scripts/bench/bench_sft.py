"""Benchmark SFT throughput: padded batches against packed rows (`packing: true`, kept row by row), the embedded
model's shape from scratch on the embedded data, in alternating rounds so both meet the same machine load. Prints
each round's tokens/s (training tokens, not padding: the SFT logs' `tokens_per_second`) and the median ratio.

    .venv/bin/python scripts/bench/bench_sft.py [--steps 40] [--rounds 2] [--variants padded,packed] [-- SFT flags]

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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKED = ["--per_device_train_batch_size", "64", "--packing", "true"]
VARIANTS = {
    "padded": ["--per_device_train_batch_size", "128", "--packing", "false"],
    "packed": PACKED,
    "compiled": [*PACKED, "--torch_compile", "true"],
    "bf16": [*PACKED, "--bf16", "true"],
}


def run(variant: str, steps: int, out: str, extra: list[str]) -> float:
    """Median tokens/s of one `rookworld sft` run (its logs after the first, which holds the warm-up)."""
    cmd = [sys.executable, "-m", "rookworld_trl.stages.cli", "sft", "--config", "recipes/sft_strong_model.yaml",
           "--dataset_name", "rookworld_trl/assets/data", "--output_dir", out, "--max_steps", str(steps),
           "--logging_steps", "5", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
           "--format_check_samples", "0", "--max_train_samples", "8000", *VARIANTS[variant], *extra]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        speeds = [row["tokens_per_second"] for row in map(json.loads, f) if "tokens_per_second" in row]
    if not speeds:  # the first logging interval carries no speed (it has no start mark)
        sys.exit(
            f"bench_sft: no tokens_per_second in {steps} steps: give it two logging intervals (--steps >= 10)"
        )
    return statistics.median(speeds)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", default="padded,packed")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = p.parse_args(argv[:cut]), argv[cut + 1 :]
    variants = args.variants.split(",")
    speeds: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for v in variants:
                speeds[v].append(run(v, args.steps, os.path.join(tmp, f"{v}{r}"), extra))
                print(f"round {r + 1} {v}: {speeds[v][-1]:,.0f} tokens/s", flush=True)
    base = variants[0]
    for v in variants[1:]:
        ratios = [b / a for a, b in zip(speeds[base], speeds[v], strict=True)]
        print(
            f"{v} / {base}: {statistics.median(ratios):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
