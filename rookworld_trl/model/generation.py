"""Batched text generation: the one path by which the project asks a model for completions, and the sampler's
fallbacks and self-check, which GRPO's rollouts (rookworld_trl/grpo/rollout.py) call too.

    from rookworld_trl.model.generation import generate_completions
    from rookworld_trl.model.loading import load_model_and_tokenizer
    model, tokenizer = load_model_and_tokenizer("jrahn/RookWorld-LM-124M")
    print(generate_completions(model, tokenizer, ["P: " + fen.ljust(90) + "M:"], max_new_tokens=96))

    s = Sampling(temperature=0.4)
    out = sample_with_fallback(model, prompt_ids, Decoding(max_new_tokens=80, sampling=s, eos_token_ids=[0], pad_token_id=0))
    gap = self_check(model, prompt_ids, out, s, pad_token_id=0)   # on the first call and every N: Gap(mean, max, ...)

Prompts are tokenized as they are, with no end-of-text token in front: what TRL's GRPO rollouts do, and how
ROOK's published evaluations prompted the model.

The fallbacks, fastest first: the CUDA-graph decode step ("graph"), the same step run eagerly ("eager"),
transformers' generate() ("transformers", the reference). A model starts on the fastest path its device has
(or $ROOKWORLD_SAMPLER's); a sampler error or a log-prob gap to the scorer past TOLERANCE moves it one path
down for the rest of the process, with one line. The path is kept per model, so evals and self-play of the
policy GRPO trains follow the rollouts' fallback.

Why a self-check: TRL trains on its own scoring forward's log-probs, and with our sampler (unlike vLLM) it
applies no importance-sampling correction; if the sampler drew from another distribution than the one TRL
scores (bf16 rounding, a kernel bug), nothing else would notice.
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from rookworld_trl.model.decoding import (
    Completions,
    Decoding,
    Sampling,
    autocast,
    cut_at_eos,
    decoding_of,
    left_pad,
    sample,
)
from rookworld_trl.model.reference_gpt2 import position_ids

BACKENDS = ("rookworld", "transformers")
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
        """Whether to self-check at `step`: the first time, after a fall, then `every` steps after the last
        (0: never again; not multiples: generation may skip steps)."""
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
    """decoding.sample() on the model's current path; on a sampler error, the next path, for good. A ValueError
    is the request's own problem (a prompt too long, a model the sampler does not run): raised."""
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
        completions[i, : len(c)], logps[i, : len(lp)] = torch.tensor(c), torch.tensor(lp)
        mask[i, : len(c)] = 1
    ids = torch.cat([prompts, completions.to(device)], dim=1)
    return ids, torch.cat([prompt_mask, mask.to(device)], dim=1), logps, mask


@torch.no_grad()
def forward_logps(model, ids, attention_mask, keep: int, temperature: float, autocast_dtype=None):
    """The scorer of evals: log_softmax(logits / T) of the last `keep` tokens of each row, by the model's own
    forward with positions counting real tokens only (what generate() and the sampler use)."""
    with autocast(ids.device, autocast_dtype):
        logits = model(
            input_ids=ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask)
        ).logits
    logits = logits[:, -keep - 1 : -1].float() / temperature
    return logits.log_softmax(-1).gather(-1, ids[:, -keep:, None])[..., 0]


def self_check(model, prompt_ids, out: Completions, sampling: Sampling, pad_token_id: int, *,
               tolerance: float = TOLERANCE, autocast_dtype=None, scorer: Callable | None = None) -> Gap:  # fmt: skip
    """The Gap between the sampler's log-probs of `out` and `scorer(ids, attention_mask, keep)`'s (GRPO: TRL's
    scoring forward; default forward_logps); leaves the path when the mean gap is past the tolerance."""
    device = next(model.parameters()).device
    ids, mask, sampled, completion_mask = batch(prompt_ids, out, pad_token_id, device)
    if scorer is None:
        temperature = sampling.temperature if sampling.do_sample else 1.0
        scored = forward_logps(model, ids, mask, sampled.size(1), temperature, autocast_dtype)
    else:
        scored = scorer(ids, mask, sampled.size(1))
    gap = gap_of(sampled, scored, completion_mask.to(scored.device))
    if not math.isfinite(gap.mean) or gap.mean > tolerance:
        sampler_path_of(model).fall(
            f"log-prob gap to the scorer {gap.mean:.3g} per token (max {gap.max:.3g}) over {gap.tokens} tokens "
            f"exceeds the tolerance {tolerance}"
        )
    return gap


def sample_checked(model, prompt_ids, decoding: Decoding, every: int, step: int | None = None,
                   **check) -> tuple[Completions, Gap | None]:  # fmt: skip
    """(completions, Gap or None): sample_with_fallback, self-checked (`check`: self_check's keywords) when due
    at `step` (None: the count of sampler calls); a check that leaves the path samples again on the next."""
    out = sample_with_fallback(model, prompt_ids, decoding)
    sampler, gap = sampler_path_of(model), None
    step = sampler.calls if step is None else step
    if sampler.due(step, every):
        path, sampler.checked = sampler.path, step
        gap = self_check(model, prompt_ids, out, decoding.sampling, decoding.pad_token_id, **check)
        if sampler.path != path:
            out = sample_with_fallback(model, prompt_ids, decoding)
    return out, gap


# ----------------------------------------------------------------------------- generate_completions


def _generate_batch(model, tokenizer, rows: list[list[int]], decoding: Decoding, backend: str) -> list[str]:
    """Decoded completions of one batch, cut at the first EOS."""
    if backend == "rookworld":
        new_tokens = sample_checked(model, rows, decoding, CHECK_EVERY)[0].completion_ids
    else:  # generate() without generate_sample's logits: an eval batch's (B, T, V) would cost gigabytes
        with torch.inference_mode():
            input_ids, mask = left_pad(rows, decoding.pad_token_id, model.device)
            out = model.generate(input_ids=input_ids, attention_mask=mask, **decoding.generate_kwargs())
            new_tokens = out[:, input_ids.shape[1] :].tolist()
    # Decode with special tokens kept, then cut at the first EOS: what follows it is padding.
    return [
        tokenizer.decode(row, skip_special_tokens=False).split(tokenizer.eos_token, 1)[0]
        for row in new_tokens
    ]


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Seed torch inside the block, the caller's random state restored after; no-op without a seed (forking
    unseeded would replay the same samples on every call)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def generate_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    batch_size: int = 64,
    seed: int | None = None,
    backend: str = "rookworld",
) -> list[str]:
    """One completion per prompt, in order: greedy by default, else sampled; decoded, cut at the first EOS.

    `backend`: "rookworld" (model/decoding.py through sample_checked) or "transformers" (generate()). `seed`
    makes sampling reproducible without touching the caller's random state. The model runs in eval mode and
    goes back to its own mode after (a trainer may call this mid-run).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not prompts:
        return []
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    # both backends read a Decoding; top_k=0 switches top-k off (generate() given None would use its 50)
    sampling = Sampling(True, float(temperature), int(top_k), 1.0) if do_sample else Sampling(do_sample=False)
    eos = tokenizer.eos_token_id
    decoding = Decoding(max_new_tokens, sampling, (eos,), pad_token_id=eos)
    rows = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch
    out: list[str] = [""] * len(rows)
    was_training = model.training
    model.eval()
    try:
        with _seeded(seed, model.device):
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                texts = _generate_batch(model, tokenizer, [rows[i] for i in batch], decoding, backend)
                for i, text in zip(batch, texts, strict=True):
                    out[i] = text
    finally:
        model.train(was_training)
    return out
