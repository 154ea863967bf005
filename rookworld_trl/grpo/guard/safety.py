"""StepGuard: the GRPO trainer's judge at each optimizer-step boundary (a TrainerCallback), composing the three
concerns that live in their own modules:

- numerical faults and rollback (grpo/guard/faults.py): non-finite or diverged steps are skipped and rolled back to
  a snapshot, with the LR cut and the batch saved to output_dir/nan_batches/;
- KL control (grpo/kl_control.py): adaptive KL (beta in the trainer's RunState) and the KL guard (warn above
  kl_warn, save and stop above kl_stop);
- snapshots (grpo/guard/snapshots.py): host copies of the last healthy weights + optimizer, the rollback targets.
"""

from __future__ import annotations

import logging
import os

import torch
from transformers import TrainerCallback

from rookworld_trl.grpo.guard.faults import (
    StepFaults,
    first_non_finite_input,
    first_non_finite_policy_term,
    roll_back,
    save_batch,
)
from rookworld_trl.grpo.guard.snapshots import Snapshots
from rookworld_trl.grpo.kl_control import adapt_beta, kl_guard
from rookworld_trl.training.metrics_log import memory_metrics

logger = logging.getLogger(__name__)


class StepGuard(TrainerCallback):
    """Judges each optimizer step of RookWorldGRPOTrainer: on_pre_optimizer_step what the forward and backward
    measured (a bad step's gradients are dropped, so the optimizer step is a no-op), on_step_end the updated
    weights. A bad step rolls back to a snapshot taken before the bad update (weights + optimizer), cuts the LR
    and saves the batch; a healthy one runs the KL guard and the beta update and may take a new snapshot. A KL
    far above kl_stop is the previous update's: it rolls back past it, then the KL guard stops the run.

    What it uses of the trainer (grpo/trainer.py): model, optimizer, lr_scheduler, accelerator, metrics,
    drop_buffered_completions() and `run` (the RunState: beta, nan_recoveries and healthy are written here); the
    trainer hands it the rewards of each batch TRL scored for training (`scored_rewards`, before dynamic sampling
    refills it: the first place a fault is looked for). `halt_reason` says why it stopped the run.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.faults = StepFaults()  # the trainer reports each micro-batch to it
        self.snapshots = Snapshots()
        self.halt_reason: str | None = None
        self._retries = 0  # consecutive rollbacks
        self._warned = False  # KL above kl_warn at the last check: warn once per excursion
        self.scored_rewards = None  # (N, F) of the generation batch the coming steps train on

    def _trainable(self) -> list:
        return [p for p in self.trainer.model.parameters() if p.requires_grad]

    def take_snapshot(self) -> None:
        t = self.trainer
        self.snapshots.take(t.model, t.optimizer, t.state.global_step, beta=t.run.beta)

    def on_train_begin(self, args, state, control, **kwargs):
        t = self.trainer  # after a resume has loaded weights and optimizer
        self.snapshots.start(t.model, t.optimizer, t.state.global_step, beta=t.run.beta)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        faults, model = self.faults, self.trainer.model
        faults.judge_update(self.trainer.optimizer, self._trainable(), args.kl_stop, model.named_parameters())
        if faults.cause is not None:  # non-finite on this rank: name what went first, upstream of the loss
            faults.cause = self.explain() or faults.cause

    def explain(self) -> str | None:
        """The first non-finite quantity upstream of the loss: rewards, advantages, the batch's log-probs and
        ratios, then the policy's log-probs (scored again with the weights that made the loss) and the terms
        the loss builds from them. None: all finite, so the loss or a gradient was the first."""
        t, batches = self.trainer, self.faults.inputs
        found = first_non_finite_input(self.scored_rewards, batches)
        for batch in batches if found is None else ():
            ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
            mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
            found = first_non_finite_policy_term(
                t.scoring_logps(ids, mask, batch["completion_ids"].size(1)), batch
            )
            if found is not None:
                break
        return found

    def on_step_end(self, args, state, control, **kwargs):
        t, faults, run = self.trainer, self.faults, self.trainer.run
        faults.judge_weights(self._trainable())
        kl = faults.mean_kl()
        if faults.bad is not None:
            self._recover(args, state, control)
            if (
                faults.blame_previous
            ):  # KL far past kl_stop: the KL guard still stops, with the weights from before
                self._kl_guard(kl, args, state, control, rolled_back_to=self.snapshots.newest.step)
        else:
            self._retries = 0
            faults.accept()
            run.healthy = kl is None or kl <= args.kl_warn
            if kl is not None:
                self._kl_guard(kl, args, state, control)
                if args.adaptive_kl:
                    run.beta = adapt_beta(
                        run.beta, kl, args.kl_target, args.kl_horizon, args.beta_min, args.beta_max
                    )
            if run.healthy and state.global_step % args.nan_snapshot_steps == 0:
                self.take_snapshot()
        t.metrics.add("beta", run.beta)
        t.metrics.add("nan_recoveries", run.nan_recoveries)
        for name, value in memory_metrics().items():
            t.metrics.add(name, value)
        faults.reset()

    def _kl_guard(self, kl, args, state, control, rolled_back_to=None) -> None:
        halt = kl_guard(kl, args, state.global_step, args.output_dir, self._warned, rolled_back_to)
        self._warned = kl > args.kl_warn
        if halt:
            self.halt_reason = halt
            control.should_save = True  # Trainer saves right after on_step_end, then the loop ends
            control.should_training_stop = True

    def _recover(self, args, state, control) -> None:
        """Roll back to a snapshot taken before the bad update, cut the LR, save the batch."""
        t, step, bad = self.trainer, state.global_step, self.faults.bad
        self._retries += 1
        t.run.nan_recoveries += 1
        t.run.healthy = False
        name = f"step-{step}-rank{t.accelerator.process_index}.pt"
        cause = self.faults.cause
        path = save_batch(
            self.faults.inputs,
            os.path.join(args.output_dir, "nan_batches", name),
            reason=bad,
            cause=cause or "",
            global_step=step,
        )
        snapshot = self.snapshots.rollback_target(past_last_update=self.faults.blame_previous)
        roll_back(snapshot, t.model, t.optimizer, t.lr_scheduler, args.nan_lr_factor)
        t.run.beta = float(snapshot.extra["beta"])
        t.drop_buffered_completions()  # TRL's buffered completions and old log-probs came from the bad weights
        what = bad if bad.startswith("diverged") else f"non-finite {bad} (first non-finite: {cause})"
        if cause is not None:  # one metric per kind: a gradient's parameter is named in the line below
            t.metrics.add(f"guard/non_finite/{cause.split(' of ')[0]}", 1.0)
        logger.warning(
            f"{what} at step {step}: update skipped, weights + optimizer restored from step "
            f"{snapshot.step}, LR x{args.nan_lr_factor}, batch saved to {path}"
        )
        if self._retries > args.nan_max_retries:
            self.halt_reason = (
                f"NaN/Inf recovery gave up: {self._retries} bad steps in a row (last at step {step}: {what}); "
                f"weights are those of step {snapshot.step}. Inspect {os.path.dirname(path)}, lower "
                "learning_rate or max_grad_norm, or raise nan_max_retries."
            )
            logger.error(self.halt_reason)
            control.should_training_stop = True
