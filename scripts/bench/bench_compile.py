"""Benchmark torch.compile's shape setting for GRPO on this CPU: accelerate_configs/single_gpu.yaml with
use_cpu and its dynamo_use_dynamic set to true (the file's) or false (also what leaving it out means), and
eager fp32 (cpu.yaml) for scale; the 124M recipe's features (reference model, adaptive KL, A: prompts,
accumulation 2) on the embedded model. Prints, per setting, each step's seconds and its recompilations.

    .venv/bin/python scripts/bench/bench_compile.py [--steps 4] [--settings true,false,eager]

bf16 on a CPU without bf16 matrix units is far slower than fp32: the figures compare settings, not devices.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from rookworld_trl.stages.launch import launcher  # noqa: E402


def accelerate_config(setting: str, tmp: Path) -> str:
    if setting == "eager":
        return str(ROOT / "accelerate_configs" / "cpu.yaml")
    config = yaml.safe_load((ROOT / "accelerate_configs" / "single_gpu.yaml").read_text())
    config["use_cpu"] = True
    config["dynamo_config"]["dynamo_use_dynamic"] = setting == "true"
    path = tmp / f"single_gpu_cpu_{setting}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def run(setting: str, steps: int, tmp: Path) -> str:
    out = tmp / setting
    argv = ["--config", str(ROOT / "recipes" / "grpo_rookworld_124m_gpu.yaml"),
            "--model_name_or_path", str(ROOT / "rookworld_trl" / "assets" / "model"),
            "--dataset_name", str(ROOT / "rookworld_trl" / "assets" / "data"), "--output_dir", str(out),
            "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_steps", str(steps),
            "--save_strategy", "no", "--eval_samples", "0", "--log_completions", "false", "--report_to", "none",
            "--disable_tqdm", "true"] + (["--bf16", "false"] if setting == "eager" else [])  # fmt: skip
    cmd, extra = launcher(accelerate_config(setting, tmp), ["-m", "rookworld_trl.stages.grpo"], argv)
    env = {**os.environ, **extra, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TORCH_LOGS": "recompiles",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    log = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log.returncode:
        sys.exit(f"bench_compile: {setting} failed:\n{log.stdout[-3000:]}")
    recompiles, step = [0] * steps, 0  # a step's log line comes after its recompilations
    for line in log.stdout.splitlines():
        if "'step_time'" in line:
            step += 1
        elif "Recompiling function" in line:
            recompiles[min(step, steps - 1)] += 1
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = [f"{r['step_time']:.1f}" for r in rows if "step_time" in r]
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{setting:>6}: s/step {', '.join(seconds)}; recompilations per step {recompiles}; load {load}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--settings", default="true,false,eager")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings.split(","):
            print(run(setting, args.steps, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
