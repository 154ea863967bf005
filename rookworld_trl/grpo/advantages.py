"""Step 4 of a GRPO step: TRL's scored batch -> the advantages the loss trains on (`shape_advantages`, which the
trainer's hook of the same name calls): the options of ADVANTAGE_STEPS in order, each a function
(trainer, Shaping) that does nothing unless its config section turns it on:

  1. the EMA/adaptive baseline in place of TRL's group mean (`baseline`: baselines.py);
  2. field credit: each listed move and each P: field gets its own verdict's advantage (`field_credit`: credit.py),
     against the same baseline as the sequence; A: rows keep their sequence advantage;
  3. the value head's GAE over the fields' rewards, once it predicts this batch's returns well
     (`value_baseline`: value.py).

A new advantage option is its fields and check in rl_config.py (a section) and its step here, in
ADVANTAGE_STEPS (its maths may live in a leaf module of its own). Rewards are every process's, in TRL's order
(a group may span processes); each process keeps its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate.utils import gather_object

from rookworld_trl.grpo import baselines as base
from rookworld_trl.grpo import credit, value
from rookworld_trl.rewards.functions import policy_components, policy_grader


@dataclass
class Shaping:
    """What the advantage steps pass down: TRL's scored batch (advantages replaced in place), the running
    baseline's advantages (for field credit to share), each P: answer's field terms and token layouts."""

    output: dict
    sequence: base.BaselineAdvantages | None = None
    terms: list | None = None
    layouts: list | None = None
    reshaped: bool = False  # a step replaced TRL's group advantages: log ours per task


def baseline_step(trainer, s: Shaping) -> None:
    if trainer.args.baseline != "group":
        s.sequence, s.reshaped = running_advantages(trainer, s.output), True


def field_credit_step(trainer, s: Shaping) -> None:
    if trainer.args.field_credit:
        s.terms, s.layouts = field_parts(trainer, s.output["completion_ids"])
        s.output["advantages"] = field_advantages(
            trainer, s.output["advantages"], s.terms, s.layouts, s.sequence
        )


def value_step(trainer, s: Shaping) -> None:
    if trainer.args.value_baseline:
        value.value_advantages(trainer, s.output, s.terms, s.layouts)
        s.reshaped = True


ADVANTAGE_STEPS = (baseline_step, field_credit_step, value_step)  # in this order: each reads what came before


def shape_advantages(trainer, output: dict) -> dict:
    """TRL's scored batch (its group advantages in output["advantages"]) -> ours, in place (training only)."""
    shaping = Shaping(output)
    for step in ADVANTAGE_STEPS:
        step(trainer, shaping)
    if shaping.reshaped:
        log_advantages(trainer, output)
    return output


def running_advantages(trainer, output) -> base.BaselineAdvantages:
    """(r - b - c) / s against the EMA/adaptive baseline (baselines.RunningBaseline), every process's rows."""
    rewards = base.row_rewards(trainer.scored_rewards, trainer.reward_weights)
    tasks = [base.group_task(p) for p in gather_object(trainer.scored_prompts)]
    scaled = trainer.scale_rewards != "none"
    out = trainer.running_baseline(trainer.args.baseline, rewards, tasks, trainer.num_generations, scaled)
    output["advantages"] = out.advantages[base.local_rows(trainer.accelerator, len(output["completion_ids"]))]
    for task, state in trainer.running_baseline.state.items():
        trainer.log_metric(f"baseline/{task.rstrip(':')}", state["mean"])
    return out


def field_parts(trainer, completion_ids: torch.Tensor) -> tuple[list, list]:
    """This process's rows: each P: answer's field terms (credit.field_terms; None: A: or unparseable), graded
    again by the policy reward's grader from its memo, and each row's token layout (credit.token_layout)."""
    terms = [
        credit.field_terms(c, trainer.args.reward_shaping) for c in answer_components(trainer, completion_ids)
    ]
    tokenizer = trainer.processing_class
    pieces = tokenizer.batch_decode(completion_ids.reshape(-1, 1).tolist())
    width = completion_ids.shape[1]
    layouts = [credit.token_layout(pieces[i : i + width]) for i in range(0, len(pieces), width)]
    return terms, layouts


def answer_components(trainer, completion_ids: torch.Tensor) -> list[dict | None]:
    """This process's rows: each P: answer's policy-reward components (None: A:), from the grader's memo."""
    tokenizer = trainer.processing_class
    texts = tokenizer.batch_decode(completion_ids.tolist(), skip_special_tokens=False)
    return policy_components(
        policy_grader(trainer.reward_funcs),
        trainer.scored_prompts,
        [t.split(tokenizer.eos_token, 1)[0] for t in texts],
    )


def field_advantages(trainer, sequence, local_terms, layouts, baseline=None) -> torch.Tensor:
    """(B, T) advantages: each listed move and each P: field gets its own verdict's advantage (credit.py),
    against its group, or under an ema/adaptive `baseline` against the same baseline as the sequence."""
    terms = gather_object(local_terms)
    n = trainer.num_generations
    if baseline is None:
        rewards = base.row_rewards(trainer.scored_rewards, trainer.reward_weights)
        tasks = [base.group_task(p) for p in gather_object(trainer.scored_prompts)]
        scale = base.reward_scale(rewards, tasks, n, trainer.scale_rewards)
    else:
        scale = baseline.scale
    scales = scale.tolist()
    rows = credit.row_advantages(terms, scales, n)  # a group may span processes, as in TRL
    if baseline is not None:
        rows = base.recentre_fields(rows, terms, baseline.weights, baseline.scale, n)
    rows = credit.add_choice(rows, terms, scales, trainer.args.choice_credit)
    return credit.spread(rows[base.local_rows(trainer.accelerator, len(local_terms))], layouts, sequence)


def log_advantages(trainer, output) -> None:
    """adv/mean/<task>, adv/std/<task>: the advantages this process trains on, over completion tokens."""
    advantages, mask = output["advantages"], output["completion_mask"].bool()
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1).expand_as(mask)
    tasks = [base.group_task(p) for p in trainer.scored_prompts]
    for task, rows in base.task_masks(tasks, mask.device).items():
        values = advantages[mask & rows.unsqueeze(1)].float()
        if values.numel() > 1:
            trainer.log_metric(f"adv/mean/{task.rstrip(':')}", float(values.mean()))
            trainer.log_metric(f"adv/std/{task.rstrip(':')}", float(values.std()))
