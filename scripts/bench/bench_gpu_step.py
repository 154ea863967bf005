"""Benchmark the GRPO step at RookWorld-LM-124M's shape, ours against plain TRL, eager and compiled, side by side in
one run, at one or more batch sizes: a random GPT-2 of 12 x 768 with GPT-2's exact tokenizer (tests/gpt2_shape.py;
`--model embedded` for the 2.9M embedded model), a recipe's batch (default recipes/grpo_rookworld_124m_gpu.yaml:
64 completions per step, 8 per prompt, accumulation 2, <= 96 tokens), bf16 on a GPU (fp32 on a CPU). Variants,
each in a fresh process that inherits this one's environment (PYTHONPATH with the repository put first):

  plain           TRL's GRPOTrainer with a trivial length reward and TRL's generate()
  plain_compiled  the same with torch_compile
  ours            RookWorldGRPOTrainer from the recipe (chess rewards, our sampler, guard, reference model)
  ours_compiled   the same with torch_compile (fixed shapes: grpo/config.py COMPILE_PAD)

`--completions 64,256,1024` sweeps the completions per step (per_device_train_batch_size = completions /
gradient_accumulation_steps; the recipe's group size and length). Per variant and point: the first step's
seconds, the median s/step after it, completions/s, model TFLOP per step, MFU, graphs compiled after step 1
(recompilations: 0 is the goal), peak memory; then ours/plain and the step at which compile pays back.

Model FLOPs of a step: measure.py's `step_flops` (its docstring has the formula), every prompt padded to P = 128
positions (COMPILE_PAD: every prompt fits it) and every completion to L: compiled variants the recipe's
max_completion_length rounded up to 128 (the compiled shapes), eager ones max_completion_length itself (the
budget). Padding counts as work (compiled steps compute it; eager ones compute less: shorter prompts, completions
that end before the budget, so their MFU reads high by that share).
MFU = step FLOPs / s per step / the peak of a plain matmul measured in the same run: bf16 8192^3 on a GPU;
on a CPU fp32 2048^3 (torch's threads), since CPUs without AVX512-BF16/AMX have no fast bf16.

    .venv/bin/python scripts/bench/bench_gpu_step.py [--steps 20] [--model 124m|embedded] [--variants a,b]
        [--completions 64,256,1024] [--recipe recipes/X.yaml] [--markdown F] [--json F]
"""

import argparse
import json
import logging
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the package; tests/gpt2_shape.py
from measure import DATA, StepClock, child_env, matmul_peak, plain_trl, step_flops  # noqa: E402

from rookworld_trl.grpo.config import COMPILE_PAD as PAD  # noqa: E402  (every prompt fits it; the compiled shapes)

RECIPE = str(ROOT / "recipes" / "grpo_rookworld_124m_gpu.yaml")
VARIANTS = ("plain", "plain_compiled", "ours", "ours_compiled")


def device_peak(seconds: float = 2.0) -> tuple[float, str]:
    """(FLOP/s, what was timed): the best of repeated plain matmuls, bf16 8192^3 on CUDA, fp32 2048^3 on CPU."""
    cuda = torch.cuda.is_available()
    n, dtype, device, repeats = (
        (8192, torch.bfloat16, "cuda", 10) if cuda else (2048, torch.float32, "cpu", 1)
    )
    peak = matmul_peak([(n, n, n)], dtype, device, seconds, repeats)
    if cuda:
        torch.cuda.empty_cache()
    return peak, f"{'bf16' if cuda else 'fp32'} matmul {n}^3 on {device}"


class GraphCount(TrainerCallback):
    """torch.compile's count of compiled graphs after each optimizer step."""

    def __init__(self):
        self.graphs: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        from torch._dynamo.utils import counters

        self.graphs.append(int(counters["stats"]["unique_graphs"]))


def recipe_batch(recipe: str) -> dict:
    """The recipe's fields that size a step (TRL's defaults where it sets none)."""
    with open(recipe) as f:
        values = yaml.safe_load(f) or {}
    acc = int(values.get("gradient_accumulation_steps", 1))
    return {"accumulation": acc, "group": int(values.get("num_generations", 8)),
            "completions": int(values.get("per_device_train_batch_size", 8)) * acc,
            "max_new": int(values.get("max_completion_length", 256)), "beta": float(values.get("beta", 0.0))}  # fmt: skip


def plain(model, recipe, out, steps, completions, compiled, cuda, callbacks):
    batch = recipe_batch(recipe)
    trainer = plain_trl(model, out, callbacks, mix_env_ratio=0.2,
                        per_device_train_batch_size=completions // batch["accumulation"],
                        gradient_accumulation_steps=batch["accumulation"], num_generations=batch["group"],
                        max_completion_length=batch["max_new"], learning_rate=1e-5, beta=batch["beta"],
                        max_steps=steps, use_cpu=not cuda, bf16=cuda, torch_compile=compiled)  # fmt: skip
    return trainer, None


def ours(model, recipe, out, steps, completions, compiled, cuda, callbacks):
    from rookworld_trl.stages import grpo

    device = [] if cuda else ["--use_cpu", "true", "--bf16", "false"]
    per_device = str(completions // recipe_batch(recipe)["accumulation"])
    trainer, engine, _, _ = grpo.build(["--config", recipe, "--model_name_or_path", model, "--dataset_name", DATA,
                                        "--output_dir", out, "--max_steps", str(steps), "--save_strategy", "no",
                                        "--eval_samples", "0", "--eval_every_steps", "0", "--log_completions",
                                        "false", "--report_to", "none", "--disable_tqdm", "true", "--metrics_jsonl",
                                        "", "--torch_compile", str(compiled).lower(), "--per_device_train_batch_size",
                                        per_device, *device])  # fmt: skip
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


def run_variant(name: str, model: str, recipe: str, out: str, steps: int, completions: int) -> dict:
    """Train `steps` steps of one variant at `completions` per step in this process; its figures."""
    cuda = torch.cuda.is_available()
    rollbacks = Rollbacks()
    logging.getLogger("rookworld_trl").addHandler(rollbacks)
    clock, graphs = StepClock(), GraphCount()
    build = ours if name.startswith("ours") else plain
    trainer, engine = build(
        model, recipe, out, steps, completions, name.endswith("compiled"), cuda, [clock, graphs]
    )
    start = time.perf_counter()
    try:
        trainer.train()
    finally:
        if engine is not None:
            engine.close()
    first = clock.starts[1] - clock.starts[0]
    later = statistics.median(clock.seconds())
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(0).ru_maxrss / 2**20
    return {"variant": name, "completions": completions, "first_step_s": first, "s_per_step": later,
            "completions_per_s": completions / later, "total_s": time.perf_counter() - start,
            "recompiles_after_step_1": graphs.graphs[-1] - graphs.graphs[0], "graphs": graphs.graphs[-1],
            "peak_gib": peak, "memory": "GPU allocated" if cuda else "CPU RSS",
            "non_finite_steps": rollbacks.lines}  # fmt: skip


def break_even(eager: dict, compiled: dict) -> str:
    """Steps after which compile has paid back its first step, or why it does not."""
    saved = eager["s_per_step"] - compiled["s_per_step"]
    if saved <= 0:
        return "never: compiled steps are not faster"
    return f"{1 + (compiled['first_step_s'] - eager['first_step_s']) / saved:.0f} steps"


def table(results: dict[str, dict], device: str, peak: str) -> str:
    lines = [f"GRPO step on {device}; MFU against {peak}:", "",
             "| variant | completions/step | first step s | s/step after | completions/s | TFLOP/step | MFU | "
             "recompiles after step 1 | peak GiB |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results.values():
        lines.append(f"| {r['variant']} | {r['completions']} | {r['first_step_s']:.1f} | {r['s_per_step']:.3f} | "
                     f"{r['completions_per_s']:.1f} | {r['tflop_per_step']:.2f} | {100 * r['mfu']:.1f}% | "
                     f"{r['recompiles_after_step_1']} | {r['peak_gib']:.2f} ({r['memory']}) |")  # fmt: skip
    lines.append("")
    for r in results.values():
        for line in r["non_finite_steps"]:
            lines.append(f"- {r['variant']} at {r['completions']}: {line}")
    points = sorted({r["completions"] for r in results.values()})
    for c in points:
        for mode in ("", "_compiled"):
            ours_r, plain_r = results.get(f"ours{mode}@{c}"), results.get(f"plain{mode}@{c}")
            if ours_r and plain_r:
                ratio = ours_r["s_per_step"] / plain_r["s_per_step"]
                lines.append(
                    f"- ours/plain TRL{mode.replace('_', ' ')} at {c}: {ratio:.2f} (s/step after step 1)"
                )
        for who in ("ours", "plain"):
            if f"{who}@{c}" in results and f"{who}_compiled@{c}" in results:
                paid = break_even(results[f"{who}@{c}"], results[f"{who}_compiled@{c}"])
                lines.append(f"- compile pays back ({who}, {c}): {paid}")
    return "\n".join(lines)


def model_shape(model: str) -> tuple[int, int, int]:
    config = json.loads((Path(model) / "config.json").read_text())
    return config["n_layer"], config["n_embd"], config["vocab_size"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--model", default="124m", choices=("124m", "embedded"))
    p.add_argument("--recipe", default=RECIPE, help="the GRPO recipe whose batch is measured")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--completions", help="completions per step, comma-separated (default: the recipe's)")
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--json", help="also write every figure to this file")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # a child process: run one variant, print its JSON
    p.add_argument("--model_path", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.variant:
        with tempfile.TemporaryDirectory() as out:
            result = run_variant(a.variant, a.model_path, a.recipe, out, a.steps, int(a.completions))
            print("RESULT " + json.dumps(result), flush=True)
        return
    if a.steps < 2:
        sys.exit("bench_gpu_step: --steps must be >= 2 (the first step is timed apart)")
    batch = recipe_batch(a.recipe)
    points = [int(c) for c in (a.completions or str(batch["completions"])).split(",")]
    step = batch["accumulation"] * batch["group"]
    if any(c % step for c in points):
        sys.exit(f"bench_gpu_step: --completions must be multiples of {step} (gradient_accumulation_steps x "
                 f"num_generations of {a.recipe})")  # fmt: skip
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU, torch threads {torch.get_num_threads()}"
    )
    peak, peak_what = device_peak()
    print(f"bench_gpu_step: peak {peak / 1e12:.3g} TFLOP/s ({peak_what})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if a.model == "embedded":
            model = str(ROOT / "rookworld_trl" / "assets" / "model")
        else:
            from gpt2_shape import save_rookworld_124m_shape

            model = save_rookworld_124m_shape(Path(tmp) / "model")
        n_layer, d, vocab = model_shape(model)
        results = {}
        for c in points:
            for name in a.variants.split(","):
                compiled = name.endswith("compiled")
                completion = PAD * math.ceil(batch["max_new"] / PAD) if compiled else batch["max_new"]
                flops = step_flops(n_layer, d, vocab, c, batch["group"], PAD, completion, batch["beta"] > 0)
                cmd = [sys.executable, __file__, "--variant", name, "--model_path", model, "--recipe", a.recipe,
                       "--steps", str(a.steps), "--completions", str(c)]  # fmt: skip
                done = subprocess.run(
                    cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
                row = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                if done.returncode or not row:
                    sys.exit(f"bench_gpu_step: {name} at {c} completions failed:\n{done.stdout[-3000:]}")
                r = json.loads(row[0][len("RESULT ") :])
                r.update(tflop_per_step=flops["total"] / 1e12, mfu=flops["total"] / r["s_per_step"] / peak,
                         flops=flops)  # fmt: skip
                results[f"{name}@{c}"] = r
                print(f"{name} at {c}: {r}", flush=True)
    again, _ = device_peak()  # the best of two times: a shared CPU may have been busy at the first
    if again > peak:
        peak = again
        for r in results.values():
            r["mfu"] = r["tflop_per_step"] * 1e12 / r["s_per_step"] / peak
    text = table(results, device, f"{peak / 1e12:.3g} TFLOP/s, {peak_what}")
    print(text)
    if a.markdown:
        Path(a.markdown).write_text(text + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps({"device": device, "peak_flops": peak, "peak": peak_what,
                                            "results": results}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
