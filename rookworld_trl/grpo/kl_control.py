"""KL control as functions: adaptive beta, the KL guard and the exact KL's per-token term.

    from rookworld_trl.grpo.kl_control import adapt_beta, kl_guard
    beta = adapt_beta(beta, kl, args.kl_target, args.kl_horizon, args.beta_min, args.beta_max)   # adaptive KL
    kl_guard(kl, args, step, output_dir, warned)     # the KL guard: None, or why the run must stop

beta itself lives in the trainer's RunState (grpo/trainer.py: the step guard moves it after each healthy step, a
rollback or a resume restores it); under an exact `kl_estimator` the trainer adds beta x `exact_kl` to the loss,
normalised as TRL normalises its own (`normalise_like_trl`, below).
"""

from __future__ import annotations

import logging

import torch

from rookworld_trl.grpo.groups import loss_mask
from rookworld_trl.grpo.kl import lm_head_of, per_token_kl

logger = logging.getLogger(__name__)


KL_ESTIMATORS = ("k3", "forward", "reverse", "symmetric")


def check_kl(config) -> None:
    if config.kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {config.kl_estimator!r}")
    if config.kl_estimator != "k3" and config.beta <= 0.0:
        raise ValueError(
            f"kl_estimator {config.kl_estimator!r} needs beta > 0 (the KL enters the loss as beta x KL)"
        )
    if config.adaptive_kl:
        if config.beta <= 0.0:
            raise ValueError("adaptive_kl needs beta > 0 (with beta = 0 TRL loads no reference model)")
        if not 0.0 < config.beta_min <= config.beta <= config.beta_max:
            raise ValueError(
                f"need 0 < beta_min <= beta <= beta_max, got {config.beta_min}, {config.beta}, {config.beta_max}"
            )
        if config.kl_target <= 0.0 or config.kl_horizon < 1:
            raise ValueError("adaptive_kl needs kl_target > 0 and kl_horizon >= 1")
    if not 0.0 < config.kl_warn < config.kl_stop:
        raise ValueError(
            f"need 0 < kl_warn < kl_stop, got kl_warn={config.kl_warn}, kl_stop={config.kl_stop}"
        )


def adapt_beta(
    beta: float, kl: float, target: float, horizon: int, beta_min: float, beta_max: float
) -> float:
    """One step of the adaptive KL rule: a dead band of x1.5 around the target, outside it a geometric change.

    `horizon` steps of KL persistently outside the band double (or halve) beta: slow enough that one noisy
    step moves it little, fast enough to react within a few dozen steps.

    >>> adapt_beta(0.01, kl=1.0, target=0.1, horizon=1, beta_min=1e-4, beta_max=1.0)
    0.02
    >>> adapt_beta(0.01, kl=0.1, target=0.1, horizon=1, beta_min=1e-4, beta_max=1.0)
    0.01
    >>> adapt_beta(0.01, kl=0.01, target=0.1, horizon=1, beta_min=1e-4, beta_max=1.0)
    0.005
    """
    factor = 2.0 ** (1.0 / horizon)
    if kl > 1.5 * target:
        beta = beta * factor
    elif kl < target / 1.5:
        beta = beta / factor
    return float(min(max(beta, beta_min), beta_max))


def kl_guard(kl: float, args, step: int, output_dir: str, warned: bool, rolled_back_to: int | None = None):
    """The KL guard: why the run must stop (KL above kl_stop; the caller saves a checkpoint and stops), else None;
    KL above kl_warn warns once per excursion (`warned`: it was above at the last check).

    >>> from types import SimpleNamespace as Args
    >>> kl_guard(60.0, Args(kl_warn=10.0, kl_stop=50.0), step=7, output_dir="out", warned=False).split(";")[0]
    'KL guard: KL 60 > kl_stop 50.0 at step 7'
    """
    halt = None
    if kl > args.kl_stop:
        rolled = f" (rolled back to step {rolled_back_to} first)" if rolled_back_to is not None else ""
        halt = (
            f"KL guard: KL {kl:.4g} > kl_stop {args.kl_stop} at step {step}; the policy ran away from the "
            f"reference{rolled}. A checkpoint was saved in {output_dir}. Lower learning_rate, raise beta "
            "(or set adaptive_kl: true), or raise kl_stop; resume with --resume_from_checkpoint stable."
        )
        logger.error(halt)
    elif kl > args.kl_warn and not warned:
        logger.warning(f"KL {kl:.4g} > kl_warn {args.kl_warn} at step {step} (kl_stop {args.kl_stop})")
    return halt


def exact_kl(model, hidden, ref_model, inputs: dict, estimator: str, temperature: float) -> torch.Tensor:
    """(B, T) the exact per-token KL of `estimator` (kl.py) between the policy (its completion `hidden` states)
    and the reference (inputs["ref_hidden"], tapped while TRL scored the batch), over the loss's tokens."""
    mask = loss_mask(inputs)
    ref_head = lm_head_of(ref_model)
    return per_token_kl(
        hidden, lm_head_of(model), inputs["ref_hidden"], ref_head, mask, estimator, temperature
    )


# The loss types whose normalisation normalise_like_trl copies; tests/test_rl_options.py compares each with TRL's
# own loss (its beta x k3 term).
LOSS_TYPES = ("grpo", "sapo", "bnpo", "dr_grpo", "cispo", "dapo", "vespo", "luspo")


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
