"""Benchmark the GRPO step and generation, side by side in one run, on the embedded model (fp32):

  generation  64 rows (8 prompts x 8 samples, temperature 0.25, <= 80 new tokens), P: prompts (the main job's)
              and A: prompts: sampled tokens/s of `generate_completions` (rookworld backend) vs
              transformers `generate`;
  step        seconds per optimizer step of plain TRL (GRPOTrainer, a trivial length reward, TRL's generate)
              and of ours (`recipes/grpo_tiny_cpu.yaml` as the main job runs it: chess rewards, step guard,
              replay, its logging; one learning-curve eval and one checkpoint save in the timed steps, reported
              per call and left out of the step), at equal model, prompts, completions per step and length;
  profile     (`--profile`) where our step goes, part by part (scripts/bench/measure.py), with the eval and
              the checkpoint save per call and per step at the recipe's intervals, and the achieved FLOP/s of
              the training forward+backward against the matmul peak of the model's shapes measured in this
              run (measure.py's docstring has the FLOP formula);
  cost table  (`--cost_table`) step time and peak memory of plain TRL and ours against completions per step
              (16, 32, 64, 128 at 80 tokens) and completion length (40, 80, 160 at 64 completions), each
              setting in a fresh process, with the least-squares slope of each: the table of
              docs/PERFORMANCE.md.

    .venv/bin/python scripts/bench/bench_step.py [--steps 8] [--rounds 7] [--profile]
    .venv/bin/python scripts/bench/bench_step.py --what step --steps 5 --json out.json   # the ratio only
    .venv/bin/python scripts/bench/bench_step.py --cost_table [--steps 3] [--threads 1]
    .venv/bin/python scripts/bench/bench_step.py --smoke                                   # seconds: every path

Each step figure is the median over steps after the first (warm-up); each generation ratio the median over
rounds (after a warm-up round) of the two backends' ratio in that round. The load average is printed, since
the figures depend on what else runs. Ratios are what the issue targets compare (docs/PERFORMANCE.md).
"""

import argparse
import json
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
from measure import DATA, MAX_NEW, MODEL, PERIODIC, PROMPTS, ROOT, SAMPLES, TEMPERATURE, StepClock

RECIPE = str(ROOT / "recipes" / "grpo_tiny_cpu.yaml")
COST_COMPLETIONS, COST_LENGTHS = (16, 32, 64, 128), (40, 80, 160)


def plain_trl(steps: int, out: str, completions: int, max_new: int) -> list[float]:
    """Plain TRL GRPOTrainer on the same model, prompts and sampling, with a trivial reward."""
    clock = StepClock()
    trainer = measure.plain_trl(MODEL, out, [clock], mix_env_ratio=0.0, per_device_train_batch_size=completions,
                                num_generations=SAMPLES, max_completion_length=max_new, temperature=TEMPERATURE,
                                learning_rate=1e-4, beta=0.0, max_steps=steps, use_cpu=True, bf16=False,
                                disable_dropout=True)  # fmt: skip
    trainer.train()
    return clock.seconds()


def ours(steps: int, out: str, completions: int, max_new: int, every: int, eval_rows: list[str] = ()):
    """(step seconds, StepParts) of our trainer from the main job's recipe at these settings; the learning-curve
    eval and a checkpoint save every `every` steps (0: neither); `eval_rows`: --flags for that eval."""
    from rookworld_trl.stages import grpo

    trainer, engine, _, _ = grpo.build(
        [
            *("--config", RECIPE, "--output_dir", out, "--max_steps", str(steps)),
            *("--per_device_train_batch_size", str(completions), "--max_completion_length", str(max_new)),
            *("--eval_every_steps", str(every), "--eval_samples", "0", "--disable_tqdm", "true"),
            *(
                ("--save_strategy", "steps", "--save_steps", str(every))
                if every
                else ("--save_strategy", "no")
            ),
            *eval_rows,
        ]
    )
    parts = measure.StepParts()
    parts.attach(trainer)
    clock = StepClock(parts)
    trainer.add_callback(clock)
    try:
        trainer.train()
    finally:
        engine.close()
    return clock.seconds(), parts


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generation(rounds: int, task: str, completions: int, max_new: int) -> dict[tuple[str, str], list[float]]:
    """{(backend, "wall" tokens per second or "cpu" tokens per CPU-second): one figure per round} on `task`
    ("P" or "A") prompts, the two backends alternating on the same seeds.
    Tokens per CPU-second hold when other processes share the cores; wall tokens/s do not."""
    from rookworld_trl.data.load import load_rookworld_dataset
    from rookworld_trl.model.generation import generate_completions
    from rookworld_trl.model.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(MODEL)
    env = 1.0 if task == "A" else 0.0
    rows = load_rookworld_dataset(DATA, split="train", mix_env_ratio=env, seed=0)
    rows = rows.select(range(completions // SAMPLES))
    assert all(p.startswith(f"{task}: ") for p in rows["prompt"])
    prompts = [p for p in rows["prompt"] for _ in range(SAMPLES)]
    rates = defaultdict(list)
    for i in range(rounds + 1):
        for backend in ("rookworld", "transformers"):
            start, cpu = time.perf_counter(), cpu_seconds()
            texts = generate_completions(
                model,
                tokenizer,
                prompts,
                max_new_tokens=max_new,
                do_sample=True,
                temperature=TEMPERATURE,
                seed=i,
                backend=backend,
            )
            seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
            tokens = sum(len(tokenizer(t)["input_ids"]) + 1 for t in texts)  # + EOS
            if i:  # the first round warms up both
                rates[backend, "wall"].append(tokens / seconds)
                rates[backend, "cpu"].append(tokens / cpu)
    return rates


def print_generation(rounds: int, completions: int, max_new: int, report: dict) -> None:
    for task in ("P", "A"):
        rates = generation(rounds, task, completions, max_new)
        for kind, unit in (("wall", "tok/s"), ("cpu", "tok per CPU-s")):
            ours_gen, hf_gen = rates["rookworld", kind], rates["transformers", kind]
            # the median of the rounds' ratios: each round's two calls see the same machine, whose speed drifts
            ratios = [o / h for o, h in zip(ours_gen, hf_gen, strict=True)]
            report[f"generation_{task}_{kind}"] = statistics.median(ratios)
            print(
                f"generation  {task}: prompts, rookworld {statistics.median(ours_gen):,.0f} {unit}, transformers "
                f"{statistics.median(hf_gen):,.0f}: {statistics.median(ratios):.2f}x "
                f"(rounds {min(ratios):.2f}-{max(ratios):.2f})",
                flush=True,
            )


def print_profile(seconds: list[float], parts: measure.StepParts) -> None:
    """Each part per step (the eval and the save per call and at the recipe's intervals), what is left, and
    the training forward+backward's FLOP/s against the matmul peak of the model's shapes."""
    steps = len(seconds)
    per_step = {k: v / steps for k, v in parts.seconds.items() if k not in PERIODIC}
    for part, value in sorted(per_step.items(), key=lambda kv: -kv[1]):
        print(f"              {part:<28} {value:.3f} s/step")
    other = sum(seconds) / steps - sum(per_step.values())
    print(f"              {'other (optimizer, TRL)':<28} {other:.3f} s/step (the mean step less every part)")
    amortised = statistics.median(seconds)
    for part, interval in PERIODIC.items():
        calls = parts.calls.get(part, 0)
        if calls:
            each = parts.seconds[part] / calls
            amortised += each / interval
            print(
                f"              {part:<28} {each:.3f} s a call: {each / interval:.3f} s/step every {interval} steps (the recipe's)"
            )
    print(
        f"main job    {amortised:.2f} s/step: the median step + the eval and the save at the recipe's intervals"
    )
    train = (
        parts.seconds["training forward"]
        + parts.seconds["replay forward"]
        + parts.seconds["backward (GRPO + replay)"]
    )
    achieved = parts.flops / train if train else 0.0
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(MODEL)
    tokens = int(statistics.median(parts.tokens)) if parts.tokens else 1024
    shapes = measure.model_matmuls(config, tokens)
    peaks = {"fp32": measure.matmul_peak(shapes, torch.float32)}
    if measure.cpu_has_native_bf16():
        peaks["bf16"] = measure.matmul_peak(shapes, torch.bfloat16)
    peak_text = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s ({achieved / v:.0%})" for k, v in peaks.items())
    if "bf16" not in peaks:
        peak_text += "; bf16: no native bf16 on this CPU (no AVX512-BF16 or AMX), not measured"
    print(
        f"flops       training forward+backward {parts.flops / steps / 1e9:.1f} GFLOP/step in {train / steps:.3f} s: "
        f"{achieved / 1e9:.0f} GFLOP/s; matmul peak of the model's shapes at {tokens} rows: {peak_text}",
        flush=True,
    )


def one_setting(which: str, steps: int, completions: int, max_new: int) -> dict:
    """One trainer in this process: {"step": median seconds, "peak_mib": this process's peak RSS}."""
    with tempfile.TemporaryDirectory() as tmp:
        if which == "plain":
            seconds = plain_trl(steps, tmp, completions, max_new)
        else:
            seconds, _ = ours(steps, tmp, completions, max_new, every=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": statistics.median(seconds), "peak_mib": peak}


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def cost_table(steps: int, threads: int) -> None:
    """Markdown: each setting in a fresh process (its own peak memory), plain TRL and ours side by side."""
    settings = [(n, 80) for n in COST_COMPLETIONS] + [(64, n) for n in COST_LENGTHS if n != 80]
    got = {}
    for completions, max_new in settings:
        for which in ("plain", "ours"):
            cmd = [
                sys.executable,
                __file__,
                "--only",
                which,
                "--steps",
                str(steps),
                "--threads",
                str(threads),
            ]
            cmd += ["--completions", str(completions), "--max_new", str(max_new)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            got[which, completions, max_new] = json.loads(out.strip().splitlines()[-1])
            print(
                f"  {which} {completions} x {max_new}: {got[which, completions, max_new]}",
                file=sys.stderr,
                flush=True,
            )
    print(
        "| completions per step x max length | plain TRL s/step | ours s/step | ours/plain | plain peak MiB | ours peak MiB |"
    )
    print("|---|---|---|---|---|---|")
    for completions, max_new in sorted(settings, key=lambda s: (s[1] != 80, s)):
        p, o = got["plain", completions, max_new], got["ours", completions, max_new]
        print(
            f"| {completions} x {max_new} | {p['step']:.2f} | {o['step']:.2f} | {o['step'] / p['step']:.2f} "
            f"| {p['peak_mib']:.0f} | {o['peak_mib']:.0f} |"
        )
    for axis, values, key in (
        ("completion", COST_COMPLETIONS, lambda v: (v, 80)),
        ("token of max length", COST_LENGTHS, lambda v: (64, v)),
    ):
        for which in ("plain", "ours"):
            rows = [got[(which, *key(v))] for v in values]
            print(
                f"slope per {axis}, {which}: {slope(values, [r['step'] for r in rows]) * 1e3:.1f} ms/step, "
                f"{slope(values, [r['peak_mib'] for r in rows]):.2f} MiB"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument(
        "--completions", type=int, default=PROMPTS * SAMPLES, help=f"per step ({SAMPLES} a prompt)"
    )
    p.add_argument("--max_new", type=int, default=MAX_NEW, help="max completion length")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--what", choices=("all", "step", "generation"), default="all")
    p.add_argument("--cost_table", action="store_true")
    p.add_argument("--smoke", action="store_true", help="every path at its smallest: seconds, no figures")
    p.add_argument(
        "--threads", type=int, help="torch threads (default: torch's); 1 steadies a crowded machine"
    )
    p.add_argument("--json", help="also write the ratios to this file")
    p.add_argument("--only", choices=("plain", "ours"), help=argparse.SUPPRESS)  # one cost-table setting
    a = p.parse_args()
    if a.smoke:
        a.steps, a.rounds, a.completions, a.max_new, a.profile = 2, 1, 16, 40, True
    torch.manual_seed(0)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.only:
        print(json.dumps(one_setting(a.only, a.steps, a.completions, a.max_new)))
        return
    print(f"load average {os.getloadavg()[0]:.1f}, {torch.get_num_threads()} threads", flush=True)
    if a.cost_table:
        cost_table(2 if a.smoke else a.steps, torch.get_num_threads())
        return
    report = {}
    if a.what in ("all", "generation"):
        print_generation(a.rounds, a.completions, a.max_new, report)
    if a.what in ("all", "step"):
        print_steps(a, report)
    if a.json:
        Path(a.json).write_text(json.dumps(report))
    print(f"load average {os.getloadavg()[0]:.1f}")


def print_steps(a, report: dict) -> None:
    every = max(1, a.steps - 1)  # one eval and one save in the timed steps
    with tempfile.TemporaryDirectory() as tmp:
        plain = statistics.median(plain_trl(a.steps, f"{tmp}/plain", a.completions, a.max_new))
        print(f"step        plain TRL {plain:.2f} s", flush=True)
        small_eval = ["--eval_every_samples", "4"] if a.smoke else []
        seconds, parts = ours(a.steps, f"{tmp}/ours", a.completions, a.max_new, every, small_eval)
    step = statistics.median(seconds)
    report |= {"plain": plain, "ours": step, "ratio": step / plain}
    print(
        f"step        ours {step:.2f} s = {step / plain:.2f}x plain TRL (median; the eval and the save left out)",
        flush=True,
    )
    if a.profile:
        print_profile(seconds, parts)


if __name__ == "__main__":
    sys.exit(main())
