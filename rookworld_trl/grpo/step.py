"""One GRPO step, top to bottom: prompts -> rollout and rewards -> what the options learn from them -> advantages ->
the loss's terms. TRL drives the step (training_step, then one generation batch for the micro-batches that train
on it, then compute_loss per micro-batch); grpo/trainer.py's hooks call each part here once, in this order:

  1. prompts      `mix_prompts`: each option's positions (self-play, curriculum, tactics) into P: prompts;
  2. rollout      `score`: TRL samples K completions per prompt (our sampler: rollout.py) and
     and rewards  calls the reward functions (grpo/rewards/), handing back its generation batch and the rewards
                  as values (training/trl_compat.py `trl_scored`): a `ScoredBatch` (grpo/options.py);
  3. advantages   `shape_advantages` (inside `score`): each option's `shape` replaces TRL's group advantages
                  (baselines.py, credit.py, value.py); then our sampler's importance-sampling correction;
  4. scoring      `generate_batch`: each option's `after_scoring` learns from the batch (the guard, the
                  curriculum) or puts another in its place (dynamic sampling, which re-scores through `score`);
  5. loss         `add_terms`: TRL's clipped loss (the trainer's compute_loss) + each option's `loss_term`.

`Step` holds what the parts need (the options, their StepContext, TRL's sampling and scoring as a callable, the
reference's hidden-state tap) and no trainer: the batch travels as a value from one part to the next, options read
the run through the StepContext, and nothing here is called back by what it calls.
"""

from __future__ import annotations

import contextlib

import torch

from rookworld_trl.grpo import groups
from rookworld_trl.grpo.importance import correct_for_sampler
from rookworld_trl.grpo.kl import completion_hidden
from rookworld_trl.grpo.options import ScoredBatch, Shaping, StepContext


class Step:
    """The parts of a step over the run's `options` (grpo/options.py, in step order) and their `ctx`.
    `sample(rows)`: TRL samples and scores rows -> (its generation batch, every process's (N, F) rewards, this
    process's prompts) (training/trl_compat.py `trl_scored`); `ref_tap`: the reference's hidden states for an
    exact KL (kl.py HiddenTap; None: not needed); `correct_sampler`: our sampler's importance-sampling correction
    is on (importance.py)."""

    def __init__(self, options: list, ctx: StepContext, sample, ref_tap=None, correct_sampler: bool = False):
        self.options, self.ctx, self.sample = options, ctx, sample
        self.ref_tap, self.correct_sampler = ref_tap, correct_sampler

    # ---- 1. prompts ----

    def mix_prompts(self, rows: list[dict], step: int) -> tuple[list[dict], dict[str, float]]:
        """Each option's positions (self-play, the curriculum's, tactics) into this generation batch's P: prompts;
        the figures of the mix."""
        figures = {}
        for option in self.options:
            rows, more = option.mix(rows, step)
            figures |= more
        return rows, figures

    # ---- 2. rollout and rewards, 3. advantages ----

    def score(self, rows: list[dict]) -> ScoredBatch:
        """Sample and score completions of `rows` (TRL), then our advantages (training only) and the sampler's
        importance-sampling correction. An exact KL needs the reference's hidden states, tapped while TRL scores
        the batch with it."""
        tap = self.ref_tap
        with tap.recording() if tap is not None else contextlib.nullcontext():
            output, rewards, prompts = self.sample(rows)
            if tap is not None and tap.records:
                hidden = completion_hidden(tap.records, output["completion_ids"].shape[1])
                output["ref_hidden"] = hidden.detach().to(output["completion_ids"].device)
            batch = ScoredBatch(rows, list(prompts), rewards, output)
            if self.ctx.training:
                self.shape_advantages(batch)
        if self.correct_sampler:
            correct_for_sampler(self.ctx, output)
        return batch

    def shape_advantages(self, batch: ScoredBatch) -> None:
        """TRL's group advantages in batch.output -> ours, in place: each option's `shape` in the options' order
        (the EMA/adaptive baseline, field credit, the value head's GAE), each passing the next what it found."""
        shaping = Shaping(batch, self.ctx.reward_weights)
        for option in self.options:
            option.shape(self.ctx, shaping)
        if shaping.reshaped:
            log_advantages(self.ctx, batch)

    # ---- 4. what the options learn from the scored batch ----

    def generate_batch(self, rows: list[dict]) -> dict:
        """The generation batch the next micro-batches train on: `rows` scored, then (training only) each option's
        `after_scoring`, which may put another batch in its place (re-scoring through `score`); TRL's dict of it."""
        batch = self.score(rows)
        if self.ctx.training:
            for option in self.options:
                batch = option.after_scoring(self.ctx, batch, self.score) or batch
        return batch.output

    # ---- 5. the loss ----

    def add_terms(self, model, inputs: dict, loss: torch.Tensor, hidden) -> torch.Tensor:
        """TRL's `loss` of this micro-batch + every option's term (exact KL, value loss, replays), in the options'
        order; `hidden`: the policy's completion hidden states (None when no option reads them)."""
        for option in self.options:
            term = option.loss_term(self.ctx, model, inputs, hidden)
            if term is not None:
                loss = loss + term
        return loss


def log_advantages(ctx: StepContext, batch: ScoredBatch) -> None:
    """adv/mean/<task>, adv/std/<task>: the advantages this process trains on, over completion tokens."""
    advantages, mask = batch.output["advantages"], batch.output["completion_mask"].bool()
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1).expand_as(mask)
    tasks = [groups.group_task(p) for p in batch.prompts]
    for task, rows in groups.task_masks(tasks, mask.device).items():
        values = advantages[mask & rows.unsqueeze(1)].float()
        if values.numel() > 1:
            ctx.log(f"adv/mean/{task.rstrip(':')}", float(values.mean()))
            ctx.log(f"adv/std/{task.rstrip(':')}", float(values.std()))
