"""The loss's terms normalised as TRL normalises its own. Step 5 of a GRPO step (grpo/step.py `add_terms`): TRL's
clipped GRPO loss (with its k3 KL term unless an exact kl_estimator replaces it), computed by the trainer's
compute_loss, plus each option's `loss_term` (grpo/options.py), in the options' order:

  + beta x the exact KL to the reference (`kl_estimator` forward/reverse/symmetric: kl_control.py), normalised as
    TRL normalises its loss (`normalise_like_trl`, here);
  + value_coef x the value head's loss (`value_baseline`: value.py);
  + replay_coef x the supervised loss of replayed A: truths (`replay_coef`: replay.py);
  + tactics_replay_coef x the supervised loss of replayed tactics labels (`tactics_replay_coef`: replay.py).

Each is scaled for gradient accumulation like TRL's own loss, so a coefficient weighs the same whatever
gradient_accumulation_steps is.
"""

from __future__ import annotations

import torch

# The loss types whose normalisation normalise_like_trl copies; tests/test_rl_options.py compares each with TRL's
# own loss (its beta x k3 term).
LOSS_TYPES = ("grpo", "sapo", "bnpo", "dr_grpo", "cispo", "dapo", "vespo", "luspo")


def trl_normalised(ctx, per_token, mask, inputs) -> torch.Tensor:
    """A (B, T) per-token term aggregated as the run's TRL loss is now (normalise_like_trl's arguments); `ctx`:
    the options' StepContext (grpo/options.py)."""
    training = ctx.training
    accumulation = ctx.accumulation if training else 1.0
    items = None
    if ctx.loss_type in ("cispo", "dapo", "vespo"):  # TRL's normaliser: the batch's completion tokens
        items = inputs["num_items_in_batch"].clamp(min=1.0) / ctx.accelerator.num_processes
        if training:
            items = items * accumulation / ctx.args.steps_per_generation
    return normalise_like_trl(per_token, mask, ctx.loss_type, accumulation, ctx.max_completion_length, items)


def normalise_like_trl(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    accumulation: float,
    max_completion_length: int,
    items_per_update: torch.Tensor | None = None,
) -> torch.Tensor:
    """Aggregate a (B, T) per-token loss term as GRPOTrainer aggregates its loss for `loss_type` (the KL it
    adds per token is aggregated so); tests/test_rl_options.py checks this against TRL's own k3 term for every
    one of LOSS_TYPES.

    `accumulation`: micro-batches per optimizer step (1 outside training); `items_per_update` (cispo, dapo,
    vespo): TRL's normaliser, the completion tokens one process trains on per micro-batch.

    >>> per_token, mask = torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    >>> float(normalise_like_trl(per_token, mask, "grpo", 1, 2)), float(normalise_like_trl(per_token, mask, "bnpo", 1, 2))
    (2.0, 2.0)
    >>> float(normalise_like_trl(per_token, mask, "dr_grpo", 1, 4))
    0.75
    """
    masked = per_token * mask
    if loss_type in ("grpo", "sapo"):
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0) / accumulation
    if loss_type == "dr_grpo":
        return masked.sum() / (per_token.size(0) * max_completion_length) / accumulation
    if loss_type in ("cispo", "dapo", "vespo"):
        return masked.sum() / items_per_update
    if loss_type == "luspo":
        return masked.sum(-1).mean() / accumulation
    raise ValueError(f"an exact kl_estimator does not know loss_type {loss_type!r}")
