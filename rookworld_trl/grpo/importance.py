"""Our sampler's importance-sampling correction, when `sampler_importance_sampling` is on (grpo/config.py): TRL's own
vLLM correction (its vllm_importance_sampling_* settings and metric names) applied to what our sampler wrote.

    .venv/bin/pytest tests/test_decoding.py -k importance
"""

from __future__ import annotations

import math

import torch

from rookworld_trl.grpo.groups import loss_mask


def correct_for_sampler(ctx, output: dict) -> None:
    """TRL's vLLM importance-sampling correction for our sampler's log-probs (TRL's vllm_importance_sampling_*
    settings and metric names): the ratio of TRL's scoring forward to the sampler, per token or sequence,
    truncated or masked, multiplied into the advantages. TRL's loss is linear in them (training/trl_compat.py LINEAR_IN_ADVANTAGES),
    so that is TRL's own correction, which it applies under vLLM only; vespo reads the ratio itself. `ctx`: the
    step's StepContext (grpo/options.py)."""
    sampled = output.get("sampling_per_token_logps")
    if sampled is None:  # TRL's own generate(): it scores what it samples
        return
    mask = loss_mask(output)
    old = output.get("old_per_token_logps")
    if old is None:
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        old = ctx.scoring_logps(ids, attention, output["completion_ids"].size(1))
    ratio, diff = importance_ratio(old, sampled, mask, ctx.args)
    output["importance_sampling_ratio"] = ratio  # the step guard checks it; vespo's loss reads it
    if ctx.loss_type != "vespo":
        advantages = output["advantages"]
        output["advantages"] = (advantages.unsqueeze(1) if advantages.dim() == 1 else advantages) * ratio
    delta, kept = diff.abs()[mask.bool()], ratio.flatten() if ratio.size(1) == 1 else ratio[mask.bool()]
    if delta.numel():
        ctx.log("sampling/sampling_logp_difference/mean", delta.mean().item())
        ctx.log("sampling/sampling_logp_difference/max", delta.max().item())
        for name, reduce in (("min", torch.min), ("mean", torch.mean), ("max", torch.max)):
            ctx.log(f"sampling/importance_sampling_ratio/{name}", reduce(kept).item())


def importance_ratio(scored, sampled, mask, args) -> tuple[torch.Tensor, torch.Tensor]:
    """(ratio, per-token log-prob difference) of TRL's vLLM correction with args.vllm_importance_sampling_mode
    (token_/sequence_ truncate or mask) and its clip bounds: exp(scored - sampled) per token (B, T) or summed per
    sequence (B, 1); truncate clamps it, mask zeroes it outside the bounds."""
    diff = torch.nan_to_num((scored - sampled) * mask, nan=0.0)
    mode, low, high = (
        args.vllm_importance_sampling_mode,
        args.vllm_importance_sampling_clip_min,
        args.vllm_importance_sampling_clip_max,
    )
    ratio = torch.exp(diff.sum(dim=-1, keepdim=True) if mode.startswith("sequence") else diff)
    if mode.endswith("truncate"):
        return ratio.clamp(min=low, max=high), diff
    if not mode.endswith("mask"):
        raise ValueError(
            f"vllm_importance_sampling_mode {mode!r}: expected token_/sequence_ truncate or mask"
        )
    low, high = -math.inf if low is None else low, math.inf if high is None else high
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0), diff
