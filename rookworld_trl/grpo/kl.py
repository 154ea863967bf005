"""KL control: adaptive beta, the KL guard, and the exact KL divergences between the policy and the reference over
the whole vocabulary (kl_estimator forward, reverse, symmetric; grpo/config.py kl_estimator), from the models' last
hidden states, with their per-token term normalised as TRL normalises its own loss (`normalise_like_trl`).

    from rookworld_trl.grpo.kl import adapt_beta, kl_guard
    beta = adapt_beta(beta, kl, args.kl_target, args.kl_horizon, args.beta_min, args.beta_max)   # adaptive KL
    kl_guard(kl, args, step, output_dir, warned)     # the KL guard: None, or why the run must stop

Under an exact `kl_estimator` the trainer adds beta x `per_token_kl` to the loss. TRL's fused LM head returns the
sampled tokens' log-probs only, so the final hidden states are tapped (HiddenTap) and the LM head is applied here
over chunks of tokens, recomputed in backward: memory stays at one chunk of (tokens x vocabulary).
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from rookworld_trl.model.loading import gpt2_backbone

logger = logging.getLogger(__name__)

CHUNK_FLOATS = 2**24  # logits per chunk (64 MiB in float32): tokens per chunk = CHUNK_FLOATS // vocabulary


def divergences(logp: torch.Tensor, logq: torch.Tensor, estimator: str) -> torch.Tensor:
    """(N, V) log-probs of the policy p and the reference q -> (N,) exact KL: reverse, forward or their mean."""
    if estimator not in ("forward", "reverse", "symmetric"):
        raise ValueError(f"kl_estimator {estimator!r} is not exact: expected forward, reverse or symmetric")
    reverse = (logp.exp() * (logp - logq)).sum(-1) if estimator != "forward" else None
    forward = (logq.exp() * (logq - logp)).sum(-1) if estimator != "reverse" else None
    return 0.5 * (reverse + forward) if estimator == "symmetric" else reverse if forward is None else forward


def log_probs(hidden: torch.Tensor, weight, bias, temperature: float) -> torch.Tensor:
    """log softmax(LM head(hidden) / temperature), in float32 (TRL's log-probs are at the sampling temperature)."""
    logits = F.linear(hidden.to(weight.dtype), weight, bias).float() / temperature
    return logits.log_softmax(-1)


def _chunk_kl(hidden, weight, bias, logq, estimator, temperature):
    return divergences(log_probs(hidden, weight, bias, temperature), logq, estimator)


def per_token_kl(hidden, head, ref_hidden, ref_head, mask: torch.Tensor, estimator: str, temperature=1.0):
    """(B, T) exact KL at every completion token where `mask` is set (0 elsewhere), differentiable in the policy,
    from the (B, T, H) hidden states that predict each token; the reference's logits are computed on its device."""
    keep = mask.bool()
    h, hr = hidden[keep], ref_hidden[keep]
    chunk = max(1, CHUNK_FLOATS // head.weight.shape[0])
    pieces = []
    for start in range(0, h.shape[0], chunk):
        with torch.no_grad():
            ref = hr[start : start + chunk].to(ref_head.weight.device)
            logq = log_probs(ref, ref_head.weight, ref_head.bias, temperature).to(h.device)
        chunk_args = (h[start : start + chunk], head.weight, head.bias, logq, estimator, temperature)
        if torch.is_grad_enabled() and chunk_args[0].requires_grad:
            pieces.append(checkpoint(_chunk_kl, *chunk_args, use_reentrant=False))
        else:
            pieces.append(_chunk_kl(*chunk_args))
    flat = torch.cat(pieces) if pieces else h.new_zeros(0, dtype=torch.float32)
    return torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device).masked_scatter(keep, flat)


def lm_head_of(model: torch.nn.Module) -> torch.nn.Module:
    """The output embeddings (through PEFT and DDP wrappers): what TRL's fused head applies to the backbone."""
    inner = getattr(model, "module", model)  # DDP
    if hasattr(inner, "get_base_model"):  # PEFT
        inner = inner.get_base_model()
    return inner.get_output_embeddings()


class HiddenTap:
    """Records the backbone's last_hidden_state of every forward inside `recording()` (gradients kept)."""

    def __init__(self, model: torch.nn.Module):
        self.records: list[torch.Tensor] | None = None
        self.handle = gpt2_backbone(model).register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if self.records is not None:
            self.records.append(output.last_hidden_state)

    @contextlib.contextmanager
    def recording(self):
        self.records = []
        try:
            yield self.records
        finally:
            self.records = None


def completion_hidden(records: list[torch.Tensor], completion_length: int) -> torch.Tensor:
    """The (B, T, H) hidden states that predict the T completion tokens, from recorded (chunks of) full rows."""
    hidden = torch.cat(records, dim=0)
    return hidden[:, -completion_length - 1 : -1]


# ----------------------------------------------------------------------------- KL control


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
    """One step of the adaptive KL rule: a dead band of x1.5 around the target; `horizon` steps of KL outside
    it double (or halve) beta, so that one noisy step moves it little.

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
    """The KL guard: why the run must stop (KL above kl_stop), else None; KL above kl_warn warns unless `warned`.

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
    """Aggregate a (B, T) per-token loss term as GRPOTrainer aggregates its loss for `loss_type`; `accumulation`:
    micro-batches per step (1 outside training); `items_per_update`: TRL's normaliser (cispo, dapo, vespo).


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
