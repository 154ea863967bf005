"""The sampler with its fallbacks and its self-check: what generation.generate_completions (evals, learning-curve
evals, self-play) and GRPO's rollouts (rookworld_trl/grpo/rollout.py) call.

    from rookworld_trl.model.fallback import sample_with_fallback, self_check
    s = Sampling(temperature=0.4)
    out = sample_with_fallback(model, prompt_ids, Decoding(max_new_tokens=80, sampling=s, eos_token_ids=[0], pad_token_id=0))
    gap = self_check(model, prompt_ids, out, s, pad_token_id=0)   # on the first call and every N: Gap(mean, max, ...)

Three paths, fastest first: the CUDA-graph decode step ("graph", CUDA only), the same step run eagerly
("eager"), transformers' generate() ("transformers", the reference the sampler is tested against). A model
starts on the fastest path its device has (or the one $ROOKWORLD_SAMPLER names); an error of the sampler (a CUDA graph's capture or replay
included) or a log-prob gap to the scorer past the tolerance moves it one path down for the rest of the
process, with one line naming the cause. The path is kept per model, so an eval or a self-play game of the
policy that GRPO trains follows the rollouts' fallback.

Why a self-check: TRL trains on its own scoring forward's log-probs, and with our sampler (unlike vLLM) it
applies no importance-sampling correction; if the sampler drew from another distribution than the one TRL
scores (bf16 rounding, a kernel bug), nothing else would notice.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass, field

import torch

from rookworld_trl.model.decoding import Completions, autocast, cut_at_eos, sample
from rookworld_trl.model.kv_cache import left_pad
from rookworld_trl.model.sampling import Decoding, Sampling, decoding_of

PATHS = ("graph", "eager", "transformers")
CHECK_EVERY = 50  # calls of generate_completions between self-checks (GRPO: sampler_check_every steps)
START_ENV = "ROOKWORLD_SAMPLER"  # graph, eager or transformers: the path to start on (e.g. to switch one off)
TOLERANCE = 0.05  # mean |sampler - scorer| log-prob per token past which the path is left (bf16: ~0.003)


@dataclass
class SamplerPath:
    """Which path samples for one model, why it left the faster ones, and when it checked last."""

    path: str
    causes: list[str] = field(default_factory=list)
    calls: int = 0
    checked: int | None = None  # the step (or call) of the last self-check; None: check at the next one

    def fall(self, cause: str) -> None:
        """Move one path down for the rest of the process, saying why in one line; re-check the new path."""
        if self.path == PATHS[-1]:
            return
        old, self.path = self.path, PATHS[PATHS.index(self.path) + 1]
        self.causes.append(f"{old}: {cause}")
        self.checked = None
        print(
            f"rookworld sampler: {old} path left for {self.path} for the rest of the run: {cause}", flush=True
        )

    def due(self, step: int, every: int) -> bool:
        """Whether to self-check at `step`: the first time, after a fall, then once `every` steps have passed
        since the last check (0: never again; steps, not multiples: generation may skip steps)."""
        if self.path == PATHS[-1]:
            return False
        return self.checked is None or (every > 0 and step - self.checked >= every)


_SAMPLER_PATHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sampler_path_of(model) -> SamplerPath:
    """The model's SamplerPath (one per GPT-2 inside any wrappers), made on first use at its device's fastest path."""
    from transformers import GPT2LMHeadModel

    key = next((m for m in model.modules() if isinstance(m, GPT2LMHeadModel)), model)
    if key not in _SAMPLER_PATHS:
        on_cuda = next(model.parameters()).device.type == "cuda"
        fastest = "graph" if on_cuda else "eager"
        start = os.environ.get(START_ENV) or fastest
        if start not in PATHS:
            raise ValueError(
                f"{START_ENV}={start!r}: expected one of {PATHS} (unset: the fastest the device has)"
            )
        _SAMPLER_PATHS[key] = SamplerPath(PATHS[max(PATHS.index(start), PATHS.index(fastest))])
    return _SAMPLER_PATHS[key]


def sample_with_fallback(
    model, prompt_ids: list[list[int]], decoding: Decoding | None = None, **fields
) -> Completions:
    """decoding.sample() on the model's current path; on an error of the sampler, the next path, for good.
    `decoding` (model/sampling.py), or its fields as keywords. A ValueError is the request's own problem (a
    prompt too long, a model the sampler does not run) and is raised: generate() would not do better."""
    d = decoding_of(decoding, fields)
    sampler = sampler_path_of(model)
    sampler.calls += 1
    while True:
        try:
            if sampler.path == "transformers":
                return generate_sample(model, prompt_ids, d)
            return sample(model, prompt_ids, d, cuda_graph=sampler.path == "graph")
        except ValueError:
            raise
        except Exception as e:  # CUDA graph capture/replay, a kernel, out of memory in the captured pool
            if sampler.path == PATHS[-1]:
                raise
            sampler.fall(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")


@torch.inference_mode()
def generate_sample(
    model, prompt_ids: list[list[int]], decoding: Decoding | None = None, **fields
) -> Completions:
    """What sample() returns, by transformers' generate(): tokens up to and with EOS, log_softmax(logits / T)."""
    d = decoding_of(decoding, fields)
    device = next(model.parameters()).device
    ids, mask = left_pad(prompt_ids, d.pad_token_id, device)
    with autocast(device, d.autocast_dtype):
        out = model.generate(input_ids=ids, attention_mask=mask, output_logits=True, return_dict_in_generate=True,
                             **d.generate_kwargs())  # fmt: skip
    tokens = out.sequences[:, ids.size(1) :]
    logits = torch.stack(out.logits, dim=1).float()  # (B, T, V): before the warpers
    if d.sampling.do_sample:
        logits = logits / d.sampling.temperature
    logps = logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
    return cut_at_eos(tokens.tolist(), logps.tolist(), set(d.eos_token_ids))


@dataclass
class Gap:
    """|sampler - scorer| log-prob per sampled token, and the importance ratio exp(scorer - sampler)."""

    mean: float
    max: float
    ratio_min: float
    ratio_mean: float
    ratio_max: float
    tokens: int

    def metrics(self) -> dict[str, float]:
        """The figures under the names a GRPO log line carries (TRL's vLLM ones are sampling/...)."""
        return {
            "sampling/logprob_gap/mean": self.mean,
            "sampling/logprob_gap/max": self.max,
            "sampling/importance_sampling_ratio/min": self.ratio_min,
            "sampling/importance_sampling_ratio/mean": self.ratio_mean,
            "sampling/importance_sampling_ratio/max": self.ratio_max,
        }


def gap_of(sampled: torch.Tensor, scored: torch.Tensor, mask: torch.Tensor) -> Gap:
    """The Gap of per-token log-probs (B, T) under mask (B, T; 1 where a token was sampled)."""
    mask = mask.bool()
    diff = (scored.float() - sampled.float().to(scored.device))[mask]
    if not diff.numel():
        return Gap(0.0, 0.0, 1.0, 1.0, 1.0, 0)
    ratio = diff.exp()
    return Gap(diff.abs().mean().item(), diff.abs().max().item(), ratio.min().item(), ratio.mean().item(),
               ratio.max().item(), diff.numel())  # fmt: skip


def batch(prompt_ids: list[list[int]], out: Completions, pad_token_id: int, device):
    """TRL's layout of a generation batch: (input_ids, attention_mask, sampled log-probs (B, T), completion
    mask (B, T)), prompts left padded and completions right padded, T the longest completion."""
    prompts, prompt_mask = left_pad(prompt_ids, pad_token_id, device)
    width = max(1, max(len(c) for c in out.completion_ids))
    completions = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    logps, mask = torch.zeros(len(prompt_ids), width), torch.zeros(len(prompt_ids), width, dtype=torch.long)
    for i, (c, lp) in enumerate(zip(out.completion_ids, out.logprobs, strict=True)):
        completions[i, : len(c)], logps[i, : len(lp)], mask[i, : len(c)] = (
            torch.tensor(c),
            torch.tensor(lp),
            1,
        )
    ids = torch.cat([prompts, completions.to(device)], dim=1)
    return ids, torch.cat([prompt_mask, mask.to(device)], dim=1), logps, mask


@torch.no_grad()
def forward_logps(model, ids, attention_mask, keep: int, temperature: float, autocast_dtype=None):
    """The scorer of evals: log_softmax(logits / T) of the last `keep` tokens of each row, by the model's own
    forward with positions counting real tokens only (what generate() and the sampler use)."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with autocast(ids.device, autocast_dtype):
        logits = model(input_ids=ids, attention_mask=attention_mask, position_ids=positions).logits
    logits = logits[:, -keep - 1 : -1].float() / temperature
    return logits.log_softmax(-1).gather(-1, ids[:, -keep:, None])[..., 0]


def check_against_scorer(sampler: SamplerPath, gap: Gap, tolerance: float) -> None:
    """Leave the path when its mean gap is past the tolerance (or not finite)."""
    if not math.isfinite(gap.mean) or gap.mean > tolerance:
        sampler.fall(
            f"log-prob gap to the scorer {gap.mean:.3g} per token (max {gap.max:.3g}) over {gap.tokens} tokens "
            f"exceeds the tolerance {tolerance}"
        )


def self_check(model, prompt_ids, out: Completions, sampling: Sampling, pad_token_id: int, *,
               tolerance: float = TOLERANCE, autocast_dtype=None) -> Gap:  # fmt: skip
    """The sampler's log-probs of `out` against the model's forward (forward_logps); leaves the path past the
    tolerance. Returns the Gap."""
    device = next(model.parameters()).device
    ids, mask, sampled, completion_mask = batch(prompt_ids, out, pad_token_id, device)
    temperature = sampling.temperature if sampling.do_sample else 1.0
    scored = forward_logps(model, ids, mask, sampled.size(1), temperature, autocast_dtype)
    gap = gap_of(sampled, scored, completion_mask.to(device))
    check_against_scorer(sampler_path_of(model), gap, tolerance)
    return gap
