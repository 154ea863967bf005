"""Picking the next token as transformers' generate() does: its sampling warpers (temperature, top-k, top-p,
min-p) in its order, one inverse-CDF draw per row, and the log-probs TRL's scoring computes. Used by the
sampler (rookworld_trl/model/decoding.py). `Decoding`: the settings of one decode call, which the sampler, its
fallbacks (model/fallback.py) and transformers' generate() (`generate_kwargs`) all read.

    from rookworld_trl.model.sampling import Decoding, Sampling, next_tokens
    tokens, logps = next_tokens(last_logits, Sampling(temperature=0.4))
    d = Decoding(max_new_tokens=80, sampling=Sampling(temperature=0.4), eos_token_ids=(0,), pad_token_id=0)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked: greedy (do_sample False) or sampled after transformers' warpers."""

    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    min_p: float | None = None


@dataclass(frozen=True)
class Decoding:
    """One decode call's settings besides the model and the prompts: how many tokens at most, how each is
    picked, which tokens end a completion, the padding, and the autocast dtype of the model's matmuls (None:
    the weights' own; sampling and log-probs stay fp32)."""

    max_new_tokens: int
    sampling: Sampling
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    autocast_dtype: torch.dtype | None = None

    def __post_init__(self):
        object.__setattr__(self, "eos_token_ids", tuple(self.eos_token_ids))  # a list may be given

    def generate_kwargs(self) -> dict:
        """The same decode as transformers' generate() keywords, every sampling setting explicit (unset ones
        would be filled from the model's generation config, e.g. top_k 50).

        >>> Decoding(8, Sampling(do_sample=False), [0], 0).generate_kwargs()
        {'max_new_tokens': 8, 'eos_token_id': [0], 'pad_token_id': 0, 'do_sample': False}
        """
        s = self.sampling
        picking = {"do_sample": False}
        if s.do_sample:
            picking = dict(
                do_sample=True, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p
            )
        return dict(max_new_tokens=self.max_new_tokens, eos_token_id=list(self.eos_token_ids),
                    pad_token_id=self.pad_token_id, **picking)  # fmt: skip


def decoding_of(decoding: Decoding | None, fields: dict) -> Decoding:
    """`decoding`, or a Decoding of its fields given as keywords: the sampler's calls may name either."""
    if decoding is None:
        return Decoding(**fields)
    if fields:
        raise TypeError(f"a Decoding and its fields {sorted(fields)} given together: give one")
    return decoding


def warp(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """transformers' sampling warpers, in its order: temperature, top-k, top-p, min-p."""
    scores = logits / s.temperature if s.temperature != 1.0 else logits
    if s.top_k:
        kth = torch.topk(scores, min(s.top_k, scores.size(-1)), dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if s.top_p < 1.0:
        ascending, order = torch.sort(scores, descending=False)
        drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= (1 - s.top_p)
        drop[..., -1:] = False  # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(-1, order, drop), -float("inf"))
    if s.min_p is not None:
        probs = scores.softmax(dim=-1)
        scores = scores.masked_fill(probs < s.min_p * probs.amax(dim=-1, keepdim=True), -float("inf"))
    return scores


def draw(probs: torch.Tensor, row_of: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row of probs (B, V), or with `row_of` one per row b of probs[row_of[b]], by inverse CDF:
    the first token whose cumulative probability exceeds a uniform draw (a token of probability 0 never is)."""
    cdf = probs.cumsum(dim=-1)
    cdf = cdf if row_of is None else cdf.index_select(0, row_of)  # 4x faster than cdf[row_of] on CPU
    u = torch.rand(cdf.size(0), 1, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True)[:, 0].clamp_(max=cdf.size(-1) - 1)


def next_tokens(
    logits: torch.Tensor, s: Sampling, row_of: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B,), their log-probs (B,)) from last-position logits (B, V); with `row_of` (B,), row b draws
    its own token from logits[row_of[b]] (rows that share a distribution, each with its own draw)."""
    logits = logits if logits.dtype == torch.float64 else logits.float()

    def picked(values, tokens):
        return values.gather(-1, tokens[:, None])[:, 0] if row_of is None else values[row_of, tokens]

    if not s.do_sample:
        tokens = logits.argmax(dim=-1)
        tokens = tokens if row_of is None else tokens[row_of]
        return tokens, picked(logits.log_softmax(dim=-1), tokens)
    scaled = logits / s.temperature
    if not s.top_k and s.top_p >= 1.0 and s.min_p is None:
        # softmax, then the log of the drawn ones: exp() of a log_softmax is 6x slower on CPU (its many
        # large negative inputs leave the vectorised path)
        probs = scaled.softmax(dim=-1)
        tokens = draw(probs, row_of)
        return tokens, picked(probs, tokens).log()
    tokens = draw(warp(logits, s).softmax(dim=-1), row_of)
    return tokens, picked(scaled.log_softmax(dim=-1), tokens)
