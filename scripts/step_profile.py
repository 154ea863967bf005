"""Where a GRPO step of ours goes, and how near the training forward+backward runs to this machine's matmul
peak; imported by scripts/bench_step.py (which prints it), not run on its own.

Parts (`StepParts.attach`: each wraps one seam of the trainer and adds its wall time): generation, the
reference's scoring forward (no gradient), the training forward, backward, rewards, our advantages (field
credit grades each answer's parts; any other advantage option), replay forward, guard, the learning-curve eval,
checkpoint saves and logging; "other" is the step's time the parts do not cover (the optimizer, TRL's
bookkeeping). A seam that is gone fails with its name (the bench then cannot rot silently).

FLOPs of the training forward+backward, counted from the shapes each forward computed (GPT-2, n_layer layers
of width d, vocabulary V; N = 12 d^2 n_layer, the blocks' matmul weights):
    forward  = 2 N T  +  2 d V T_head  +  4 d n_layer S
    backward = 2 x forward
T: the token positions the blocks compute (padding included: the machine does that work; with shared-prefix
scoring a group's prompt counts once), T_head: the positions the LM head scores (the compact path: the
completion tokens; replay: every position), S: the query-key pairs attention computes (the 4: QK^T and AV,
a multiply-add each). LayerNorm, GELU, softmax and the embedding are left out (a few % at this width).
The peak: the same matmul shapes (T x d by d x 3d, d x d, d x 4d, 4d x d, d x V), timed alone in fp32 and, where
the CPU has native bf16 (AVX512-BF16 or AMX), in bf16.
"""

from __future__ import annotations

import functools
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch


def timed(owner, name: str, seconds: dict, calls: dict, label: str, split=None) -> None:
    """Wrap owner.name so that its wall time adds up in seconds[label] (or seconds[split(args, kwargs)]) and
    its calls in calls[label]."""
    inner = getattr(owner, name, None)
    if inner is None:
        raise SystemExit(f"bench_step: {type(owner).__name__}.{name} is gone: update scripts/step_profile.py")

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
        clock(trainer.grpo_step, "shape_advantages", "advantages (field credit)")
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
        from rookworld_trl.grpo.replay import Replay, replay_loss

        replay = trainer.option(Replay)
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
                "bench_step: nothing calls grpo.replay.replay_loss: update scripts/step_profile.py"
            )
        for module in callers:
            clock(module, "replay_loss", "replay forward")
        make = replay.batch

        def batch(*args, **kwargs):
            out = make(*args, **kwargs)
            B, L = out["input_ids"].shape
            self.flops += 3 * forward_flops(config, B * L, B * L, B * L * L)
            self.tokens.append(B * L)
            return out

        replay.batch = batch


def block_params(config) -> int:
    return 12 * config.n_embd**2 * config.n_layer


def forward_flops(config, tokens: int, head_tokens: int, pairs: int) -> float:
    d = config.n_embd
    return (
        2 * block_params(config) * tokens
        + 2 * d * config.vocab_size * head_tokens
        + 4 * d * config.n_layer * pairs
    )


def grpo_forward_flops(config, ids, mask, keep: int, shared: bool) -> tuple[float, int]:
    """(the forward FLOPs, the token positions the blocks compute) of TRL's scoring of prompt + completion rows
    (see the module docstring)."""
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
    return forward_flops(config, tokens, head, pairs), tokens


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def matmul_peak(config, tokens: int, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """FLOP/s of the model's matmul shapes at `tokens` rows, each timed alone (the best of repeated runs)."""
    d, V = config.n_embd, config.vocab_size
    shapes = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d), (d, V)]
    mats = [(torch.randn(tokens, k, dtype=dtype), torch.randn(k, n, dtype=dtype)) for k, n in shapes]
    flops = sum(2 * tokens * k * n for k, n in shapes)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    with torch.inference_mode():
        while time.perf_counter() < deadline or best == float("inf"):
            start = time.perf_counter()
            for a, b in mats:
                torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    return flops / best
