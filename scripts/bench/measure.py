"""What the benchmarks of the GRPO step share (bench_step.py and bench_decode.py import it; it is not run on its
own): the settings they measure at, the model-FLOPs count, a matmul peak, the step clock, plain TRL's trainer as
the baseline, where a step of ours goes (`StepParts`) and a child process's environment.

FLOPs of a forward of GPT-2 (n_layer layers of width d, vocabulary V; N = 12 d^2 n_layer, the blocks' matmul
weights) over T token positions, T_head of them through the LM head, S query-key pairs:
    F(T, T_head, S) = 2 N T  +  2 d V T_head  +  4 d n_layer S          backward = 2 x forward
T counts padding (the machine does that work; with shared-prefix scoring a group's prompt counts once), T_head
the positions the LM head scores (the compact path: the completion tokens; replay: every position), S the pairs
attention computes (the 4: QK^T and AV, a multiply-add each). LayerNorm, GELU, softmax and the embedding are
left out (a few % at this width). A whole step (`step_flops`): C completions in groups of G (C/G prompts),
prompts padded to P positions and completions to L:
    generation = F(C/G P, C/G, C/G P(P+1)/2)  +  F(C L, C L, C (L P + L(L+1)/2))   prefill once per prompt, L decode steps
    training   = 3 F(C (P+L), C (P+L), C (P+L)(P+L+1)/2)                            forward + backward
    reference  = F(C (P+L), C (P+L), C (P+L)(P+L+1)/2)                              when beta > 0
`StepParts` counts the training forward+backward of each step of ours from the shapes each forward computed.

`StepParts.attach` wraps one seam of the trainer per part and adds its wall time: generation, the reference's
scoring forward (no gradient), the training forward, backward, rewards, our advantages (field credit grades
each answer's parts; any other advantage option), replay forward, guard, the learning-curve eval, checkpoint
saves and logging; "other" is the step's time the parts do not cover (the optimizer, TRL's bookkeeping). A seam
that is gone fails with its name (the bench then cannot rot silently).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[2]
MODEL = str(ROOT / "rookworld_trl" / "assets" / "model")
DATA = str(ROOT / "rookworld_trl" / "assets" / "data")
TEMPERATURE, MAX_NEW, PROMPTS, SAMPLES = 0.25, 80, 8, 8  # bench_step's and bench_decode's 64 rows
# the learning-curve eval's and checkpoint saves' intervals in recipes/grpo_tiny_cpu.yaml: their share of a step
PERIODIC = {"learning-curve eval": 30, "checkpoint saves": 25}


# ---- the model-FLOPs count ----


def forward_flops(n_layer: int, d: int, vocab: int, tokens: float, head: float, pairs: float) -> float:
    """F(T, T_head, S) of the module docstring: the blocks' matmuls, the LM head, attention's QK^T and AV."""
    return 2 * 12 * d * d * n_layer * tokens + 2 * d * vocab * head + 4 * d * n_layer * pairs


def step_flops(n_layer: int, d: int, vocab: int, completions: int, group: int, prompt: int, completion: int,
               reference: bool) -> dict[str, float]:  # fmt: skip
    """Model FLOPs of one GRPO step by part (generation, training, reference) and in all (the module docstring)."""
    C, G, P, L = completions, group, prompt, completion
    F = lambda T, head, S: forward_flops(n_layer, d, vocab, T, head, S)  # noqa: E731
    rows = C * (P + L)
    pairs = C * (P + L) * (P + L + 1) / 2
    parts = {
        "generation": F(C / G * P, C / G, C / G * P * (P + 1) / 2)
        + F(C * L, C * L, C * (L * P + L * (L + 1) / 2)),
        "training": 3 * F(rows, rows, pairs),
        "reference": F(rows, rows, pairs) if reference else 0.0,
    }
    return {**parts, "total": sum(parts.values())}


def grpo_forward_flops(config, ids, mask, keep: int, shared: bool) -> tuple[float, int]:
    """(the forward FLOPs, the token positions the blocks compute) of TRL's scoring of prompt + completion rows."""
    B, L = ids.shape
    P, C = L - keep, keep
    groups = B
    if shared:
        groups = len(torch.unique(torch.cat([ids[:, :P], mask[:, :P]], dim=1), dim=0))
    if shared and groups < B:  # each prompt once; completions attend to their prompt and their past
        tokens, pairs = groups * P + B * C, groups * P * P + B * C * L
    else:
        tokens, pairs = B * L, B * L * L
    head = int(mask[:, -C:].sum())  # the compact path scores the completion tokens only
    return forward_flops(config.n_layer, config.n_embd, config.vocab_size, tokens, head, pairs), tokens


# ---- the matmul peak ----


def matmul_peak(
    shapes, dtype: torch.dtype, device: str = "cpu", seconds: float = 1.0, repeats: int = 1
) -> float:
    """FLOP/s of the matmuls (m, k, n) in `shapes`, run one after the other: the best of timed rounds over
    `seconds`, after a warm-up round (cuBLAS picks its kernel, the CPU's pages are touched). A round times
    `repeats` passes (a GPU's calls return before the work is done; more passes hide the launch)."""
    mats = [(torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device))
            for m, k, n in shapes]  # fmt: skip
    flops = sum(2 * m * k * n for m, k, n in shapes)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best, deadline = float("inf"), time.perf_counter() + seconds
    with torch.inference_mode():
        for a, b in mats:
            torch.mm(a, b)
        sync()
        while time.perf_counter() < deadline or best == float("inf"):
            start = time.perf_counter()
            for _ in range(repeats):
                for a, b in mats:
                    torch.mm(a, b)
            sync()
            best = min(best, (time.perf_counter() - start) / repeats)
    return flops / best


def model_matmuls(config, tokens: int) -> list[tuple[int, int, int]]:
    """The model's matmul shapes at `tokens` rows: attention's QKV and output, the MLP's two, the LM head."""
    d, V = config.n_embd, config.vocab_size
    return [(tokens, k, n) for k, n in [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d), (d, V)]]


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# ---- the step clock and the baseline ----


class StepClock(TrainerCallback):
    """Wall time from one step's start to the next's: everything the step costs, logging included, less the
    learning-curve eval and checkpoint saves in it (`parts`' PERIODIC: reported per call). `parts` is cleared
    when the second step begins: the warm-up step is left out."""

    def __init__(self, parts: StepParts | None = None):
        self.starts: list[float] = []
        self.parts = parts

    def _mark(self) -> None:
        periodic = sum(self.parts.seconds.get(k, 0.0) for k in PERIODIC) if self.parts is not None else 0.0
        self.starts.append(time.perf_counter() - periodic)

    def on_step_begin(self, args, state, control, **kwargs):
        if len(self.starts) == 1 and self.parts is not None:
            self.parts.clear()
        self._mark()

    def on_train_end(self, args, state, control, **kwargs):
        self._mark()

    def seconds(self) -> list[float]:
        steps = [b - a for a, b in zip(self.starts[:-1], self.starts[1:], strict=True)]
        return steps[1:]  # without the warm-up step


def length_reward(completions, **kwargs):
    return [float(len(c)) / 100 for c in completions]


def plain_trl(model: str, out: str, callbacks: list, mix_env_ratio: float, **config):
    """Plain TRL's GRPOTrainer, the baseline: a trivial length reward, TRL's generate(), the embedded train
    split's prompts (`mix_env_ratio` of them A:). `config`: the GRPOConfig fields of the comparison (batch,
    length, sampling, device); the rest is fixed here: seed 0, no saves, no reports, a log row a step."""
    from trl import GRPOConfig, GRPOTrainer

    from rookworld_trl.data.load import load_rookworld_dataset
    from rookworld_trl.model.loading import load_model_and_tokenizer

    policy, tokenizer = load_model_and_tokenizer(model)
    dataset = load_rookworld_dataset(DATA, split="train", mix_env_ratio=mix_env_ratio, seed=0)
    args = GRPOConfig(output_dir=out, seed=0, logging_steps=1, report_to=[], save_strategy="no",
                      activation_checkpointing=False, disable_tqdm=True, **config)  # fmt: skip
    return GRPOTrainer(policy, [length_reward], args=args, train_dataset=dataset, processing_class=tokenizer,
                       callbacks=callbacks)  # fmt: skip


def child_env() -> dict:
    """The caller's environment for a child process, the repository first on PYTHONPATH and the caller's
    entries after it (packages that come through PYTHONPATH: a container, a cluster module, a --target folder)."""
    paths = [
        str(ROOT),
        *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)),
    ]
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(paths),
    }


# ---- where a step of ours goes ----


def timed(owner, name: str, seconds: dict, calls: dict, label: str, split=None) -> None:
    """Wrap owner.name so that its wall time adds up in seconds[label] (or seconds[split(args, kwargs)]) and
    its calls in calls[label]."""
    inner = getattr(owner, name, None)
    if inner is None:
        raise SystemExit(
            f"bench_step: {type(owner).__name__}.{name} is gone: update scripts/bench/measure.py"
        )

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        key = split(args, kwargs) if split else label
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - start
            calls[key] += 1

    setattr(owner, name, wrapper)


class StepParts:
    """Seconds and calls per part over the timed steps, and the training forward+backward's FLOPs (`flops`)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.flops = 0.0
        self.tokens: list[int] = []  # the token positions of each training forward (GRPO and replay)

    def clear(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.flops = 0.0
        self.tokens.clear()

    def attach(self, trainer) -> None:
        config = trainer.model.config

        def clock(owner, name, label, split=None):
            timed(owner, name, self.seconds, self.calls, label, split)

        clock(trainer, "_generate", "generation")
        clock(trainer, "_calculate_rewards", "rewards")
        clock(trainer, "advantages", "advantages (field credit)")
        clock(trainer, "_get_per_token_logps_and_entropies", "", split=self._scoring(trainer, config))
        clock(trainer.accelerator, "backward", "backward (GRPO + replay)")
        self._time_replay(trainer, config, clock)
        clock(trainer.guard, "on_pre_optimizer_step", "guard")
        clock(trainer.guard, "on_step_end", "guard")
        clock(trainer, "log", "logging")
        clock(trainer, "_save_checkpoint", "checkpoint saves")
        for callback in trainer.callback_handler.callbacks:
            if type(callback).__name__ == "EvalCallback":
                clock(callback, "evaluate", "learning-curve eval")

    def _scoring(self, trainer, config):
        """The label of a scoring call (training forward or the reference's), counting the training FLOPs."""

        def split(args, kwargs):
            if not torch.is_grad_enabled():
                return "scoring forward (reference)"
            _, ids, mask, keep = args[:4] if len(args) >= 4 else (*args[:3], kwargs["logits_to_keep"])
            shared = trainer.args.shared_prefix_scoring
            flops, tokens = grpo_forward_flops(config, ids, mask, keep, shared)
            self.flops += 3 * flops
            self.tokens.append(tokens)
            return "training forward"

        return split

    def _time_replay(self, trainer, config, clock) -> None:
        """The replay forward: wherever the package calls replay_loss by name; its FLOPs from each batch."""
        from rookworld_trl.grpo.replay import replay_loss

        replay = trainer.replay
        if replay is None:
            return
        callers = [
            m
            for m in list(sys.modules.values())
            if getattr(m, "__name__", "").startswith("rookworld_trl")
            and getattr(m, "replay_loss", None) is replay_loss
        ]
        if not callers:
            raise SystemExit(
                "bench_step: nothing calls grpo.replay.replay_loss: update scripts/bench/measure.py"
            )
        for module in callers:
            clock(module, "replay_loss", "replay forward")
        make = replay.batch
        shape = (config.n_layer, config.n_embd, config.vocab_size)

        def batch(*args, **kwargs):
            out = make(*args, **kwargs)
            B, L = out["input_ids"].shape
            self.flops += 3 * forward_flops(*shape, B * L, B * L, B * L * L)
            self.tokens.append(B * L)
            return out

        replay.batch = batch
