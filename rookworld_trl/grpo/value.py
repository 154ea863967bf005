"""The value head of `value_baseline` (its fields: grpo/config.py): V(state) on the policy's hidden states, the
per-token rewards and GAE it trains on and feeds back as advantages, its loss, optimizer group, gradient clipping
and checkpoint file. grpo/trainer.py calls `value_advantages` in the advantages step and `value_loss` in the loss.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file, save_file

from rookworld_trl.grpo.groups import EPS, group_task, loss_mask, running_scale, task_masks
from rookworld_trl.model.loading import gpt2_backbone


def check_value(config) -> None:
    if not config.value_baseline:
        return
    if config.baseline != "group":
        raise ValueError(
            "value_baseline replaces the baseline: set baseline: group (or value_baseline: false)"
        )
    if not (0.0 < config.gae_gamma <= 1.0 and 0.0 <= config.gae_lambda <= 1.0):
        raise ValueError(
            f"need 0 < gae_gamma <= 1 and 0 <= gae_lambda <= 1, got {config.gae_gamma}, {config.gae_lambda}"
        )
    if config.value_coef < 0.0 or config.value_learning_rate <= 0.0 or config.value_max_grad_norm <= 0.0:
        raise ValueError("need value_coef >= 0, value_learning_rate > 0 and value_max_grad_norm > 0")


def token_rewards(rewards: torch.Tensor, mask: torch.Tensor, terms: list, layouts: list) -> torch.Tensor:
    """(B, T) reward per completion token for GAE: a row's reward at its last token, except where field credit
    splits a P: answer: each written move's term at the move's last token, each field's at the field's, the rest
    at the last token; a row's token rewards add up to its reward."""
    out = torch.zeros_like(mask, dtype=torch.float32)
    for i in range(len(rewards)):
        length = int(mask[i].sum())
        if length == 0 or bool(rewards[i].isnan()):
            continue
        placed, last = 0.0, length - 1
        if terms[i] is not None:
            layout = layouts[i][:length]
            ends = {}  # (field, slot) -> its last token; (field, None): the field's last token
            for t, (field, slot) in enumerate(layout):
                ends[(field, None)] = t
                if slot >= 0:
                    ends[(field, slot)] = t
            for k, term in enumerate(terms[i]["moves"]):
                out[i, ends.get((0, k), last)] += term
            parts = {0: terms[i]["M"] - sum(terms[i]["moves"]), 1: terms[i]["E"], 2: terms[i]["B"]}
            for field, term in parts.items():
                out[i, ends.get((field, None), last)] += term
            placed = sum(terms[i]["moves"]) + sum(parts.values())
        out[i, last] += float(rewards[i]) - placed
    return out


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over completion tokens: (B, T) rewards r_t (a (B,) sequence reward goes to each row's last token),
    values V_t and mask -> (advantages, returns), with V = 0 after the last token:
    delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1}, return_t = A_t + V_t.
    Masked tokens get 0; unscored rows (NaN reward) get 0 advantages and their values as returns.
    """
    mask = mask.to(values.dtype)
    unscored = torch.zeros(len(values), dtype=torch.bool, device=values.device)
    if rewards.dim() == 1:
        unscored = rewards.isnan()
        length = mask.sum(dim=1).long()
        last = torch.zeros_like(values)
        rows = torch.nonzero(length > 0).squeeze(1)
        last[rows, length[rows] - 1] = 1.0
        rewards = rewards.nan_to_num(0.0).unsqueeze(1) * last
    values = values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        following = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * following - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    advantages = advantages.masked_fill(unscored.unsqueeze(1), 0.0)
    return advantages, advantages + values


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(return - V) / Var(return) over the masked tokens; NaN with fewer than 2 tokens or constant returns."""
    keep = mask.bool()
    r, v = returns[keep].double(), values[keep].double()
    if r.numel() < 2 or float(r.var()) == 0.0:
        return float("nan")
    return float(1.0 - (r - v).var() / r.var())


def centre_tokens(advantages: torch.Tensor, mask: torch.Tensor, tasks: list[str], state: dict, decay: float):
    """GAE advantages (B, T) -> (A - c) / s per task over its masked tokens, as running_advantages does for
    sequences (c: what a lagging V adds to every token; the running scale in state["<task>/gae"])."""
    out = torch.zeros_like(advantages)
    for task, rows in task_masks(tasks, advantages.device).items():
        keep = mask.bool() & rows.unsqueeze(1)
        if not keep.any():
            continue
        c = advantages[keep].mean()
        key = f"{task}/gae"
        var, s = running_scale(
            state.get(key, {}).get("var"), float(((advantages[keep] - c) ** 2).mean()), decay
        )
        state[key] = {"var": var}
        out[keep] = (advantages[keep] - c) / (s + EPS)
    return out


class ValueHead(torch.nn.Linear):
    """V(state) = w . h + b on the policy's (detached) last hidden state; starts at 0 (weights zeroed)."""

    def __init__(self, hidden_size: int):
        # Linear's random init, zeroed below, must not move the sampler's stream (a gated run is the group run)
        with torch.random.fork_rng(devices=[]):
            super().__init__(hidden_size, 1)
        torch.nn.init.zeros_(self.weight)
        torch.nn.init.zeros_(self.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden.detach().to(self.weight.dtype)).squeeze(-1)


VALUE_HEAD_FILE = "value_head.safetensors"  # inside each checkpoint


@torch.no_grad()
def rollout_values(model, value_head, output: dict, batch_size: int, autocast) -> torch.Tensor:
    """(B, T) value of the state before each completion token (no-grad backbone forwards of `batch_size` rows)."""
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


# ---- the value head in a step ----


def value_advantages(
    value_head, gae_state: dict, output: dict, rewards: torch.Tensor, prompts: list, terms, layouts, model, args,
    autocast, start: bool = False,
) -> dict[str, float]:  # fmt: skip
    """The returns into output["returns"] for the value loss; GAE advantages into output["advantages"] once the
    head explains value_warmup_ev of this batch's returns (before it trains on them). Returns the figures."""
    a, ids = args, output["completion_ids"]
    mask = loss_mask(output)
    mask = mask * (~rewards.isnan()).unsqueeze(1).to(mask.dtype)  # unscored rows: no target, advantage 0
    per_token = token_rewards(rewards, mask, terms or [None] * len(ids), layouts).to(mask.device)
    zero = torch.zeros_like(per_token)
    returns = gae(per_token, zero, mask, a.gae_gamma, 1.0)[1] * mask  # lambda 1: V does not enter
    if start:  # the bias starts at the returns' mean (the weights stay 0), so the weights learn the variance:
        # from 0 every weight climbs the same way and Adam's momentum overshoots
        with torch.no_grad():
            value_head.bias.fill_(float((returns * mask).sum() / mask.sum().clamp(min=1)))
    values = rollout_values(model, value_head, output, a.per_device_train_batch_size, autocast)
    output["returns"] = returns
    tasks = [group_task(p) for p in prompts]
    explained = explained_variance(values, returns, mask)
    figures = {"value/explained_variance": explained}
    for task, rows in task_masks(tasks, mask.device).items():
        name = f"value/explained_variance/{task.rstrip(':')}"
        figures[name] = explained_variance(values, returns, mask * rows.unsqueeze(1))
    figures["value/mean"] = float((values * mask).sum() / mask.sum().clamp(min=1))
    use = explained >= a.value_warmup_ev  # False for NaN
    figures["value/gae_used"] = float(use)
    if use:
        advantages = gae(per_token, values, mask, a.gae_gamma, a.gae_lambda)[0]
        output["advantages"] = centre_tokens(advantages, mask, tasks, gae_state, a.baseline_ema_decay)
    return figures


def clip_value_head(trainer, optimizer, args, kwargs) -> None:
    """Optimizer pre-step hook: clip the value head's gradients to value_max_grad_norm; log their norm."""

    norm = torch.nn.utils.clip_grad_norm_(trainer.value_head.parameters(), trainer.args.value_max_grad_norm)
    trainer.metrics.add("value/grad_norm", float(norm))
