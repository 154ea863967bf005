"""Benchmark the GRPO step at RookWorld-LM-124M's shape, ours against plain TRL, eager and compiled, side by side in
one run: a random GPT-2 of 12 x 768 with GPT-2's exact tokenizer (tests/gpt2_shape.py; `--model embedded` for the
2.9M embedded model), recipes/grpo_rookworld_124m_gpu.yaml's batch (32 completions per micro-batch, 8 per prompt,
accumulation 2, <= 96 tokens), bf16 on a GPU (fp32 on a CPU). Variants, each in a fresh process:

  plain           TRL's GRPOTrainer with a trivial length reward and TRL's generate()
  plain_compiled  the same with torch_compile
  ours            RookWorldGRPOTrainer from the 124M recipe (chess rewards, our sampler, guard, reference model)
  ours_compiled   the same with torch_compile (fixed shapes: grpo/config.py COMPILE_PAD)

Per variant: the first step's seconds, the median s/step after it, completions/s, graphs compiled after step 1
(recompilations: 0 is the goal), peak memory; then ours/plain and the step at which compile pays back.

    .venv/bin/python scripts/bench_gpu_step.py [--steps 20] [--model 124m|embedded] [--variants a,b] [--markdown F]
"""

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]
from bench_step import StepClock, length_reward  # noqa: E402

RECIPE = str(ROOT / "recipes" / "grpo_rookworld_124m_gpu.yaml")
DATA = str(ROOT / "rookworld_trl" / "assets" / "data")
VARIANTS = ("plain", "plain_compiled", "ours", "ours_compiled")


class GraphCount(TrainerCallback):
    """torch.compile's count of compiled graphs after each optimizer step."""

    def __init__(self):
        self.graphs: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        from torch._dynamo.utils import counters

        self.graphs.append(int(counters["stats"]["unique_graphs"]))


def plain(model: str, out: str, steps: int, compiled: bool, cuda: bool, callbacks: list):
    from trl import GRPOConfig, GRPOTrainer

    from rookworld_trl.data.load import load_rookworld_dataset
    from rookworld_trl.model.loading import load_model_and_tokenizer

    policy, tokenizer = load_model_and_tokenizer(model)
    dataset = load_rookworld_dataset(DATA, split="train", mix_env_ratio=0.2, seed=0)
    args = GRPOConfig(output_dir=out, per_device_train_batch_size=32, gradient_accumulation_steps=2,
                      num_generations=8, max_completion_length=96, learning_rate=1e-5, beta=0.01, max_steps=steps,
                      use_cpu=not cuda, bf16=cuda, torch_compile=compiled, seed=0, logging_steps=1, report_to=[],
                      save_strategy="no", activation_checkpointing=False, disable_tqdm=True)  # fmt: skip
    return GRPOTrainer(policy, [length_reward], args=args, train_dataset=dataset, processing_class=tokenizer,
                       callbacks=callbacks), None  # fmt: skip


def ours(model: str, out: str, steps: int, compiled: bool, cuda: bool, callbacks: list):
    from rookworld_trl.stages import grpo

    device = [] if cuda else ["--use_cpu", "true", "--bf16", "false"]
    trainer, engine, _, _ = grpo.build(["--config", RECIPE, "--model_name_or_path", model, "--dataset_name", DATA,
                                        "--output_dir", out, "--max_steps", str(steps), "--save_strategy", "no",
                                        "--eval_samples", "0", "--eval_every_steps", "0", "--log_completions",
                                        "false", "--report_to", "none", "--disable_tqdm", "true", "--metrics_jsonl",
                                        "", "--torch_compile", str(compiled).lower(), *device])  # fmt: skip
    for callback in callbacks:
        trainer.add_callback(callback)
    return trainer, engine


class Rollbacks(logging.Handler):
    """The step guard's rollback lines (grpo/guard/safety.py): each names the first non-finite quantity."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        if "update skipped" in record.getMessage():
            self.lines.append(record.getMessage().split(": update skipped")[0])


def run_variant(name: str, model: str, out: str, steps: int) -> dict:
    """Train `steps` steps of one variant in this process; its figures."""
    cuda = torch.cuda.is_available()
    rollbacks = Rollbacks()
    logging.getLogger("rookworld_trl").addHandler(rollbacks)
    clock, graphs = StepClock(), GraphCount()
    build = ours if name.startswith("ours") else plain
    trainer, engine = build(model, out, steps, name.endswith("compiled"), cuda, [clock, graphs])
    start = time.perf_counter()
    try:
        trainer.train()
    finally:
        if engine is not None:
            engine.close()
    first = clock.starts[1] - clock.starts[0]
    later = clock.seconds()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(0).ru_maxrss / 2**20
    return {"variant": name, "first_step_s": first, "s_per_step": statistics.median(later),
            "completions_per_s": 64 / statistics.median(later), "total_s": time.perf_counter() - start,
            "recompiles_after_step_1": graphs.graphs[-1] - graphs.graphs[0], "graphs": graphs.graphs[-1],
            "peak_gib": peak, "memory": "GPU allocated" if cuda else "CPU RSS",
            "non_finite_steps": rollbacks.lines}  # fmt: skip


def break_even(eager: dict, compiled: dict) -> str:
    """Steps after which compile has paid back its first step, or why it does not."""
    saved = eager["s_per_step"] - compiled["s_per_step"]
    if saved <= 0:
        return "never: compiled steps are not faster"
    return f"{1 + (compiled['first_step_s'] - eager['first_step_s']) / saved:.0f} steps"


def table(results: dict[str, dict], device: str) -> str:
    lines = [f"GRPO step at the 124M recipe's batch on {device} (64 completions per step):", "",
             "| variant | first step s | s/step after | completions/s | recompiles after step 1 | peak GiB |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results.values():
        lines.append(f"| {r['variant']} | {r['first_step_s']:.1f} | {r['s_per_step']:.3f} | "
                     f"{r['completions_per_s']:.1f} | {r['recompiles_after_step_1']} | {r['peak_gib']:.2f} "
                     f"({r['memory']}) |")  # fmt: skip
    lines.append("")
    for r in results.values():
        for line in r["non_finite_steps"]:
            lines.append(f"- {r['variant']}: {line}")
    for mode in ("", "_compiled"):
        if f"ours{mode}" in results and f"plain{mode}" in results:
            ratio = results[f"ours{mode}"]["s_per_step"] / results[f"plain{mode}"]["s_per_step"]
            lines.append(f"- ours/plain TRL{mode.replace('_', ' ')}: {ratio:.2f} (s/step after step 1)")
    for who in ("ours", "plain"):
        if who in results and f"{who}_compiled" in results:
            lines.append(
                f"- compile pays back ({who}): {break_even(results[who], results[who + '_compiled'])}"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--model", default="124m", choices=("124m", "embedded"))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # a child process: run one variant, print its JSON
    p.add_argument("--model_path", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.variant:
        with tempfile.TemporaryDirectory() as out:
            print("RESULT " + json.dumps(run_variant(a.variant, a.model_path, out, a.steps)), flush=True)
        return
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        if a.model == "embedded":
            model = str(ROOT / "rookworld_trl" / "assets" / "model")
        else:
            from gpt2_shape import save_rookworld_124m_shape

            model = save_rookworld_124m_shape(Path(tmp) / "model")
        results = {}
        for name in a.variants.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--variant",
                name,
                "--model_path",
                model,
                "--steps",
                str(a.steps),
            ]
            done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            row = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not row:
                sys.exit(f"bench_gpu_step: {name} failed:\n{done.stdout[-3000:]}")
            results[name] = json.loads(row[0][len("RESULT ") :])
            print(f"{name}: {results[name]}", flush=True)
    text = table(results, device)
    print(text)
    if a.markdown:
        Path(a.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
