"""Benchmark the GRPO step and generation, side by side in one run, on the embedded model (fp32):

  generation  64 rows (8 prompts x 8 samples, temperature 0.25, <= 80 new tokens), P: prompts (the main job's)
              and A: prompts: sampled tokens/s of `generate_completions` (rookworld backend) vs
              transformers `generate`;
  step        seconds per optimizer step of plain TRL (GRPOTrainer, a trivial length reward, TRL's generate)
              and of ours (`recipes/grpo_tiny_cpu.yaml`: chess rewards, step guard, replay), as shipped and
              with TRL's generate() and scoring forward (generation_backend transformers, no shared prompts);
              `--profile` also prints where our step's time goes (generation, scoring forward/backward,
              rewards, replay, the guard).

    .venv/bin/python scripts/bench_step.py [--steps 8] [--rounds 7] [--profile]

Each step figure is the median over steps after the first (warm-up); each generation ratio the median over
rounds (after a warm-up round) of the two backends' ratio in that round. The load average is printed, since
the figures depend on what else runs. Ratios are what the issue targets compare (docs/PERFORMANCE.md).
"""

import argparse
import functools
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
RECIPE = str(ROOT / "recipes" / "grpo_tiny_cpu.yaml")
MODEL = str(ROOT / "rookworld_trl" / "assets" / "model")
DATA = str(ROOT / "rookworld_trl" / "assets" / "data")
TEMPERATURE, MAX_NEW, PROMPTS, SAMPLES = 0.25, 80, 8, 8
VARIANTS = {  # our step as shipped, and with TRL's own generation and scoring forward
    "ours": [],
    "ours with TRL's generate() and scoring": [
        "--generation_backend",
        "transformers",
        "--shared_prefix_scoring",
        "false",
    ],
}


class StepClock(TrainerCallback):
    """Wall time from one step's start to the next's: everything the step costs, logging included.
    `parts` (filled by `timed`) is emptied when the second step begins: the warm-up step is left out."""

    def __init__(self):
        self.starts: list[float] = []
        self.parts: dict[str, float] = defaultdict(float)

    def on_step_begin(self, args, state, control, **kwargs):
        self.starts.append(time.perf_counter())
        if len(self.starts) == 2:
            self.parts.clear()

    def on_train_end(self, args, state, control, **kwargs):
        self.starts.append(time.perf_counter())

    def seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.starts[:-1], self.starts[1:], strict=True)][
            1:
        ]  # without the warm-up step


def length_reward(completions, **kwargs):
    return [float(len(c)) / 100 for c in completions]


def plain_trl(steps: int, out: str) -> list[float]:
    """Plain TRL GRPOTrainer on the same model, prompts and sampling, with a trivial reward."""
    from trl import GRPOConfig, GRPOTrainer

    from rookworld_trl.data.load import load_rookworld_dataset
    from rookworld_trl.model.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(MODEL)
    dataset = load_rookworld_dataset(DATA, split="train", mix_env_ratio=0.0, seed=0)
    args = GRPOConfig(
        output_dir=out,
        per_device_train_batch_size=PROMPTS * SAMPLES,
        num_generations=SAMPLES,
        max_completion_length=MAX_NEW,
        temperature=TEMPERATURE,
        learning_rate=1e-4,
        beta=0.0,
        max_steps=steps,
        use_cpu=True,
        bf16=False,
        seed=0,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        activation_checkpointing=False,
        disable_dropout=True,
        disable_tqdm=True,
    )
    clock = StepClock()
    trainer = GRPOTrainer(
        model,
        [length_reward],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[clock],
    )
    trainer.train()
    return clock.seconds()


def timed(owner, name: str, totals: dict, label: str) -> None:
    """Wrap owner.name so that its wall time adds up in totals[label]."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def ours(steps: int, out: str, overrides: list[str], profile: bool) -> tuple[list[float], dict]:
    """Our trainer from the main job's recipe (no evals, no checkpoints) with these --flag overrides."""
    from rookworld_trl.stages import grpo

    trainer, engine, _, _ = grpo.build(
        [
            "--config",
            RECIPE,
            "--output_dir",
            out,
            "--max_steps",
            str(steps),
            "--eval_every_steps",
            "0",
            "--eval_samples",
            "0",
            "--save_strategy",
            "no",
            "--log_completions",
            "false",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
            "--metrics_jsonl",
            "",
            *overrides,
        ]
    )
    clock = StepClock()
    trainer.add_callback(clock)
    if profile:
        parts = clock.parts
        timed(trainer, "_generate", parts, "generation")
        timed(trainer, "_calculate_rewards", parts, "rewards")
        timed(trainer, "_get_per_token_logps_and_entropies", parts, "scoring forward")
        timed(trainer.accelerator, "backward", parts, "backward (GRPO + replay)")
        timed(grpo, "replay_loss", parts, "replay forward")
        timed(trainer.guard, "on_pre_optimizer_step", parts, "guard")
        timed(trainer.guard, "on_step_end", parts, "guard")
    try:
        trainer.train()
    finally:
        engine.close()
    seconds = clock.seconds()
    return seconds, {k: v / len(seconds) for k, v in clock.parts.items()}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generation(rounds: int, task: str) -> dict[tuple[str, str], list[float]]:
    """{(backend, "wall" tokens per second or "cpu" tokens per CPU-second): one figure per round} on `task`
    ("P" or "A") prompts, the two backends alternating on the same seeds.
    Tokens per CPU-second hold when other processes share the cores; wall tokens/s do not."""
    from rookworld_trl.data.load import load_rookworld_dataset
    from rookworld_trl.model.generation import generate_completions
    from rookworld_trl.model.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(MODEL)
    env = 1.0 if task == "A" else 0.0
    rows = load_rookworld_dataset(DATA, split="train", mix_env_ratio=env, seed=0).select(range(PROMPTS))
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
                max_new_tokens=MAX_NEW,
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    torch.manual_seed(0)
    print(f"load average {os.getloadavg()[0]:.1f}, {torch.get_num_threads()} threads", flush=True)
    for task in ("P", "A"):
        rates = generation(a.rounds, task)
        for kind, unit in (("wall", "tok/s"), ("cpu", "tok per CPU-s")):
            ours_gen, hf_gen = rates["rookworld", kind], rates["transformers", kind]
            # the median of the rounds' ratios: each round's two calls see the same machine, whose speed drifts
            ratios = [o / h for o, h in zip(ours_gen, hf_gen, strict=True)]
            print(
                f"generation  {task}: prompts, rookworld {statistics.median(ours_gen):,.0f} {unit}, transformers "
                f"{statistics.median(hf_gen):,.0f}: {statistics.median(ratios):.2f}x "
                f"(rounds {min(ratios):.2f}-{max(ratios):.2f})",
                flush=True,
            )
    with tempfile.TemporaryDirectory() as tmp:
        plain = statistics.median(plain_trl(a.steps, f"{tmp}/plain"))
        print(f"step        plain TRL {plain:.2f} s", flush=True)
        for i, (name, overrides) in enumerate(VARIANTS.items()):
            seconds, parts = ours(a.steps, f"{tmp}/{i}", overrides, a.profile)
            step = statistics.median(seconds)
            print(f"step        {name}: {step:.2f} s = {step / plain:.2f}x plain TRL", flush=True)
            for part, value in sorted(parts.items(), key=lambda kv: -kv[1]):
                print(f"              {part:<26} {value:.3f} s/step")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
