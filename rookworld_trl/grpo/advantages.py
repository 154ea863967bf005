"""Step 4 of a GRPO step: TRL's scored batch -> the advantages the loss trains on (`shape_advantages`, which the
trainer's hook of the same name calls): each option's `shape` (grpo/options.py) in the trainer's option order,
each passing the next what it found in a `Shaping`:

  1. the EMA/adaptive baseline in place of TRL's group mean (`baseline`: baselines.py's RunningBaseline);
  2. field credit: each listed move and each P: field gets its own verdict's advantage (`field_credit`: credit.py's
     FieldCredit), against the same baseline as the sequence; A: rows keep their sequence advantage;
  3. the value head's GAE over the fields' rewards, once it predicts this batch's returns well
     (`value_baseline`: value.py's ValueBaseline).

Rewards are every process's, in TRL's order (a group may span processes); each process keeps its own rows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from accelerate.utils import gather_object

from rookworld_trl.grpo import baselines as base
from rookworld_trl.grpo import groups
from rookworld_trl.grpo.rewards.functions import policy_components, policy_grader


@dataclass
class Shaping:
    """What the advantage steps pass down: TRL's scored batch (advantages replaced in place), the running
    baseline's advantages (for field credit to share), each P: answer's field terms and token layouts; every
    process's weighted rewards and group tasks, computed once when a step first reads them."""

    trainer: object
    output: dict
    sequence: base.BaselineAdvantages | None = None
    terms: list | None = None
    layouts: list | None = None
    reshaped: bool = False  # a step replaced TRL's group advantages: log ours per task

    @functools.cached_property
    def rewards(self) -> torch.Tensor:
        """(N,) every process's rows: the reward functions' weighted sum (NaN: unscored), TRL's order."""
        return groups.row_rewards(self.trainer.scored_rewards, self.trainer.reward_weights)

    @functools.cached_property
    def tasks(self) -> list[str]:
        """Every process's rows: the group each is baselined in (groups.group_task)."""
        return [groups.group_task(p) for p in gather_object(self.trainer.scored_prompts)]


def shape_advantages(trainer, output: dict) -> dict:
    """TRL's scored batch (its group advantages in output["advantages"]) -> ours, in place (training only)."""
    shaping = Shaping(trainer, output)
    for option in trainer.options:
        option.shape(trainer, shaping)
    if shaping.reshaped:
        log_advantages(trainer, output)
    return output


def answer_components(trainer, completion_ids: torch.Tensor) -> list[dict | None]:
    """This process's rows: each P: answer's policy-reward components (None: A:), from the grader's memo."""
    tokenizer = trainer.processing_class
    texts = tokenizer.batch_decode(completion_ids.tolist(), skip_special_tokens=False)
    return policy_components(
        policy_grader(trainer.reward_funcs),
        trainer.scored_prompts,
        [t.split(tokenizer.eos_token, 1)[0] for t in texts],
    )


def log_advantages(trainer, output) -> None:
    """adv/mean/<task>, adv/std/<task>: the advantages this process trains on, over completion tokens."""
    advantages, mask = output["advantages"], output["completion_mask"].bool()
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1).expand_as(mask)
    tasks = [groups.group_task(p) for p in trainer.scored_prompts]
    for task, rows in groups.task_masks(tasks, mask.device).items():
        values = advantages[mask & rows.unsqueeze(1)].float()
        if values.numel() > 1:
            trainer.log_metric(f"adv/mean/{task.rstrip(':')}", float(values.mean()))
            trainer.log_metric(f"adv/std/{task.rstrip(':')}", float(values.std()))
