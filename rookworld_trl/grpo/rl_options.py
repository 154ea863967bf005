"""The RL options' pieces the trainer calls (fields: rookworld_trl/grpo/rl_config.py; the calls: grpo/trainer.py's
shape_advantages and compute_loss). Plain functions of tensors and modules, no trainer state:

- `normalise_like_trl`: a per-token loss term aggregated as GRPOTrainer aggregates its loss for a loss_type
  (the exact KL of kl_estimator forward/reverse/symmetric enters the loss so, as beta x KL);
- `rollout_values`, `value_loss`: the value head of value_baseline (GAE in advantages.py);
- `add_value_head`, `save_value_head`, `load_value_head`, `start_value_head`: its optimizer group, its file in each
  checkpoint, its starting bias.

Baselines, GAE and the value head are in advantages.py, the exact KL in kl.py, dynamic sampling in
dynamic_sampling.py.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file, save_file

from rookworld_trl.grpo import advantages as adv
from rookworld_trl.model.loading import gpt2_backbone

VALUE_HEAD_FILE = "value_head.safetensors"  # inside each checkpoint


def normalise_like_trl(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    accumulation: float,
    max_completion_length: int,
    items_per_update: torch.Tensor | None = None,
) -> torch.Tensor:
    """Aggregate a (B, T) per-token loss term as GRPOTrainer aggregates its loss for `loss_type` (the KL it
    adds per token is aggregated so); tests/test_rl_options.py checks this against TRL's own k3 term.

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


@torch.no_grad()
def rollout_values(model, value_head, output: dict, batch_size: int, autocast) -> torch.Tensor:
    """(B, T) value of the state before each completion token, by the policy as it sampled them (one no-grad
    backbone forward per `batch_size` rows, under `autocast`, the accelerator's)."""
    ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
    mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
    width = output["completion_ids"].shape[1]
    backbone, values = gpt2_backbone(model), []
    for i in range(0, len(ids), batch_size):
        with autocast():
            hidden = backbone(
                input_ids=ids[i : i + batch_size], attention_mask=mask[i : i + batch_size], use_cache=False
            )
        values.append(value_head(hidden.last_hidden_state[:, -width - 1 : -1]))
    return torch.cat(values).float()


def value_loss(value_head, hidden: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """0.5 (V - return)^2 averaged over completion tokens (the head reads detached states: no policy gradient)."""
    values = value_head(hidden)
    return 0.5 * (((values - returns) ** 2) * mask).sum() / mask.sum().clamp(min=1.0)


def add_value_head(optimizer, value_head, learning_rate: float) -> None:
    """The head's own parameter group (its LR, no weight decay), once."""
    if not any(p is value_head.weight for g in optimizer.param_groups for p in g["params"]):
        optimizer.add_param_group(
            {"params": list(value_head.parameters()), "lr": learning_rate, "weight_decay": 0.0}
        )


def save_value_head(value_head, checkpoint: str) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()}
    save_file(state, os.path.join(checkpoint, VALUE_HEAD_FILE))


def load_value_head(value_head, checkpoint: str) -> bool:
    """The checkpoint's head into `value_head`; False when the checkpoint has none."""
    path = os.path.join(checkpoint, VALUE_HEAD_FILE)
    if os.path.isfile(path):
        value_head.load_state_dict(load_file(path, device=str(value_head.weight.device)))
    return os.path.isfile(path)


@torch.no_grad()
def start_value_head(value_head, returns: torch.Tensor, mask: torch.Tensor) -> None:
    """The head's bias set to the mean return over the masked tokens (the weights stay 0): a head that starts
    at 0 climbs towards the returns with every weight moving the same way, and Adam's momentum carries it past
    them (issue 33's first run: V rose to 0.74 against returns of ~0.4, explained variance -6)."""
    value_head.bias.fill_(float((returns * mask).sum() / mask.sum().clamp(min=1)))


# ---- the trainer's value-head steps (grpo/trainer.py calls them with itself) ----


def value_advantages(trainer, output, terms, layouts) -> None:
    """The value head's returns (reward to go) for its loss; GAE advantages once its explained variance
    of this batch's returns, measured before it trains on them, reaches value_warmup_ev."""
    a, ids = trainer.args, output["completion_ids"]
    rewards = adv.row_rewards(trainer.scored_rewards, trainer.reward_weights)[trainer._local(len(ids))]
    mask = output["completion_mask"] * output.get("tool_mask", 1)
    mask = mask * (~rewards.isnan()).unsqueeze(1).to(mask.dtype)  # unscored rows: no target, advantage 0
    no_terms = [None] * len(ids)
    per_token = adv.token_rewards(rewards, mask, terms or no_terms, layouts or no_terms).to(mask.device)
    zero = torch.zeros_like(per_token)
    returns = adv.gae(per_token, zero, mask, a.gae_gamma, 1.0)[1] * mask  # lambda 1: V does not enter
    if not trainer.value_started:  # the head's first batch: its bias starts at the returns' mean, so the
        start_value_head(trainer.value_head, returns, mask)  # weights learn the variance, not the level
        trainer.value_started = True
    batch = trainer.args.per_device_train_batch_size
    values = rollout_values(trainer.model, trainer.value_head, output, batch, trainer.accelerator.autocast)
    output["returns"] = returns
    tasks = [adv.task_of(p) for p in trainer.scored_prompts]
    explained = adv.explained_variance(values, returns, mask)
    trainer.log_metric("value/explained_variance", explained)
    for task, rows in adv.task_masks(tasks, mask.device).items():
        name = f"value/explained_variance/{task.rstrip(':')}"
        trainer.log_metric(name, adv.explained_variance(values, returns, mask * rows.unsqueeze(1)))
    trainer.log_metric("value/mean", float((values * mask).sum() / mask.sum().clamp(min=1)))
    use = explained >= a.value_warmup_ev  # False for NaN
    trainer.log_metric("value/gae_used", float(use))
    if use:
        advantages = adv.gae(per_token, values, mask, a.gae_gamma, a.gae_lambda)[0]
        output["advantages"] = adv.centre_tokens(
            advantages, mask, tasks, trainer.gae_state, a.baseline_ema_decay
        )


def log_advantages(trainer, output) -> None:
    """adv/mean/<task>, adv/std/<task>: the advantages this process trains on, over completion tokens."""
    advantages, mask = output["advantages"], output["completion_mask"].bool()
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1).expand_as(mask)
    tasks = [adv.task_of(p) for p in trainer.scored_prompts]
    for task, rows in adv.task_masks(tasks, mask.device).items():
        values = advantages[mask & rows.unsqueeze(1)].float()
        if values.numel() > 1:
            trainer.log_metric(f"adv/mean/{task.rstrip(':')}", float(values.mean()))
            trainer.log_metric(f"adv/std/{task.rstrip(':')}", float(values.std()))


def clip_value_head(trainer, optimizer, args, kwargs) -> None:
    """Before each optimizer step: the value head's gradients clipped to value_max_grad_norm on their own;
    logs value/grad_norm (before clipping)."""
    norm = torch.nn.utils.clip_grad_norm_(trainer.value_head.parameters(), trainer.args.value_max_grad_norm)
    trainer.log_metric("value/grad_norm", float(norm))
