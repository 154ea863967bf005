"""KL control: beta (the KL coefficient of the loss), the exact KL's loss term and the KL guard.

    from rookworld_trl.grpo.kl_control import KLControl, adapt_beta
    control = KLControl(args); control.update(kl)            # adaptive KL (args.adaptive_kl)
    control.check(kl, step, output_dir)                      # the KL guard: None, or why the run must stop

`KLControl.beta` is the one place beta is written: the trainer's `beta` (what TRL's loss reads) returns it. As an
option (grpo/options.py) it keeps beta in the checkpoint and, under an exact `kl_estimator` (kl.py), adds beta x
that KL to the loss, normalised as TRL normalises its own (loss.py).
"""

from __future__ import annotations

import logging

import torch

from rookworld_trl.grpo.groups import loss_mask
from rookworld_trl.grpo.kl import lm_head_of, per_token_kl
from rookworld_trl.grpo.loss import trl_normalised
from rookworld_trl.grpo.options import Option

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


class KLControl(Option):
    """beta and the KL guard of a run (fields of RookWorldGRPOConfig: beta, adaptive_kl, kl_target, kl_horizon,
    beta_min, beta_max, kl_warn, kl_stop).

    >>> from types import SimpleNamespace as Args
    >>> control = KLControl(Args(beta=0.01, adaptive_kl=True, kl_target=0.1, kl_horizon=1, beta_min=1e-4,
    ...                          beta_max=1.0, kl_warn=10.0, kl_stop=50.0))
    >>> control.update(1.0); control.beta
    0.02
    >>> control.check(60.0, step=7, output_dir="out").split(";")[0]
    'KL guard: KL 60 > kl_stop 50.0 at step 7'
    """

    def __init__(self, args):
        self.args = args
        self.beta = float(args.beta)
        self._warned = False  # KL above kl_warn at the last check: warn once per excursion

    def update(self, kl: float) -> None:
        """Adaptive KL: beta follows the step's measured KL (when args.adaptive_kl)."""
        a = self.args
        if a.adaptive_kl:
            self.beta = adapt_beta(self.beta, kl, a.kl_target, a.kl_horizon, a.beta_min, a.beta_max)

    def check(self, kl: float, step: int, output_dir: str, rolled_back_to: int | None = None) -> str | None:
        """The KL guard: why the run must stop (KL above kl_stop; the caller saves a checkpoint and stops), else
        None; KL above kl_warn warns once per excursion."""
        a = self.args
        halt = None
        if kl > a.kl_stop:
            rolled = f" (rolled back to step {rolled_back_to} first)" if rolled_back_to is not None else ""
            halt = (
                f"KL guard: KL {kl:.4g} > kl_stop {a.kl_stop} at step {step}; the policy ran away from the "
                f"reference{rolled}. A checkpoint was saved in {output_dir}. Lower learning_rate, raise beta "
                "(or set adaptive_kl: true), or raise kl_stop; resume with --resume_from_checkpoint stable."
            )
            logger.error(halt)
        elif kl > a.kl_warn and not self._warned:
            logger.warning(f"KL {kl:.4g} > kl_warn {a.kl_warn} at step {step} (kl_stop {a.kl_stop})")
        self._warned = kl > a.kl_warn
        return halt

    def restore(self, beta: float) -> None:
        """beta as a snapshot or a checkpoint recorded it."""
        self.beta = float(beta)

    def saved_state(self) -> dict:
        return {"beta": self.beta}

    def restore_state(self, state: dict) -> None:
        self.restore(state["beta"])

    def loss_term(self, ctx, model, inputs, hidden):
        if not ctx.exact_kl or hidden is None:
            return None  # k3: TRL's loss adds it
        return exact_kl_term(ctx, self.beta, model, hidden, inputs, loss_mask(inputs))


def exact_kl_term(ctx, beta: float, model, hidden, inputs, mask) -> torch.Tensor:
    """beta x the exact KL (kl.py), normalised like TRL's loss; logs `kl` (what the guard and adaptive KL
    read) and `kl/<estimator>`. `ctx`: the options' StepContext (grpo/options.py)."""
    est = ctx.args.kl_estimator
    ref_head = lm_head_of(ctx.ref_model)
    kl = per_token_kl(hidden, lm_head_of(model), inputs["ref_hidden"], ref_head, mask, est, ctx.temperature)
    if ctx.training:
        totals = ctx.accelerator.reduce(torch.stack([(kl * mask).sum(), mask.sum().float()]).detach(), "sum")
        kl_value = float(totals[0] / totals[1].clamp(min=1.0))
        ctx.log("kl", kl_value)
        ctx.log(f"kl/{est}", kl_value)
    return beta * trl_normalised(ctx, kl, mask, inputs)
