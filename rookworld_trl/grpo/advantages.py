"""Baselines and per-token advantages for the `baseline` and `value_baseline` options (rl_config.py defines them;
rl_options.py applies them to TRL's scored batch).

Rewards here are the weighted sum of the reward functions per row (TRL's sum_then_normalize), of every
process, in TRL's order: rows [g n, (g + 1) n) form group g (n = num_generations). NaN marks a row no reward
function scored: its advantage is 0, as in TRL.
"""

from __future__ import annotations

import torch

EPS = 1e-4  # TRL's: advantages are (r - b) / (s + EPS)


def row_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, F) rewards -> (N,) weighted sums (NaN where every function skipped the row), as TRL sums them."""
    total = (rewards_per_func * weights.to(rewards_per_func.device)).nansum(dim=1)
    return total.masked_fill(rewards_per_func.isnan().all(dim=1), float("nan"))


def task_of(prompt) -> str:
    """The task prefix of a prompt ('P:' or 'A:'); anything else is its own task 'other'."""
    text = prompt if isinstance(prompt, str) else str(prompt)
    return text[:2] if text[:2] in ("P:", "A:") else "other"


def _nanstd(x: torch.Tensor, dim=None) -> torch.Tensor:
    """Bessel-corrected std ignoring NaN (NaN with fewer than 2 values), as TRL's nanstd."""
    mean = x.nanmean(dim=dim, keepdim=dim is not None)
    count = (~x.isnan()).sum(dim=dim, keepdim=dim is not None)
    var = ((x - mean) ** 2).nansum(dim=dim, keepdim=dim is not None) / (count - 1).clamp(min=1)
    return var.sqrt().masked_fill(count < 2, float("nan"))


def reward_scale(rewards: torch.Tensor, tasks: list[str], n: int, mode: str) -> torch.Tensor:
    """(N,) divisor s of each row's advantage, per scale_rewards: 'group' the group's std (a zero-std group: the
    std of its task's rewards in the batch, else 1: r - b may be non-zero there), 'batch' the batch's std,
    'none' 1."""
    if mode == "none":
        return torch.ones_like(rewards)
    if mode == "batch":
        return _nanstd(rewards).nan_to_num(0.0).expand_as(rewards).clone()
    scale = _nanstd(rewards.view(-1, n), dim=1).nan_to_num(0.0).repeat_interleave(n)
    for task in set(tasks):
        rows = torch.tensor([t == task for t in tasks], device=rewards.device)
        fallback = float(_nanstd(rewards[rows]).nan_to_num(0.0))
        flat = rows & torch.isclose(scale, torch.zeros_like(scale))
        scale[flat] = fallback if fallback > 0 else 1.0
    return scale


class RunningBaseline:
    """Per-task running means of the reward (the 'ema' and 'adaptive' baselines); `state` is JSON-ready.

    state[task] = {"mean": e, "spread": t}: e the running mean reward, t the running mean of (g - e)^2 over
    the task's group means g (the adaptive weight's between-group variance).
    """

    def __init__(self, decay: float, state: dict | None = None):
        self.decay = decay
        self.state: dict[str, dict[str, float]] = dict(state or {})

    def __call__(self, kind: str, rewards: torch.Tensor, tasks: list[str], n: int) -> torch.Tensor:
        """(N,) baseline of each row for this batch ('ema' or 'adaptive'), then the running values move on."""
        baseline = torch.full_like(rewards, float("nan"))
        groups = rewards.view(-1, n)
        group_tasks = tasks[::n]
        for task in sorted(set(group_tasks)):
            mine = torch.tensor([t == task for t in group_tasks], device=rewards.device)
            values = groups[mine]
            if values.isnan().all():
                continue
            batch_mean = float(values.nanmean())
            means = values.nanmean(dim=1)
            old = self.state.get(task)
            mean = batch_mean if old is None else old["mean"]
            spread_now = float(((means - mean) ** 2).nanmean().nan_to_num(0.0))
            spread = spread_now if old is None else old["spread"]
            if kind == "ema":
                rows = torch.full_like(means, mean)
            else:
                noise = (_nanstd(values, dim=1).squeeze(1).nan_to_num(0.0) ** 2) / (~values.isnan()).sum(
                    dim=1
                ).clamp(min=1)
                total = spread + noise
                weight = torch.where(total > 0, spread / total.clamp(min=1e-12), torch.ones_like(total))
                rows = weight * means + (1 - weight) * mean
            baseline.view(-1, n)[mine] = rows.unsqueeze(1).expand(-1, n).to(baseline.dtype)
            d = self.decay
            self.state[task] = {
                "mean": d * mean + (1 - d) * batch_mean,
                "spread": d * spread + (1 - d) * spread_now,
            }
        return baseline


def baseline_advantages(rewards: torch.Tensor, baseline: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(r - b) / (s + EPS), 0 for unscored rows."""
    return ((rewards - baseline) / (scale + EPS)).nan_to_num(0.0)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over completion tokens: (B,) sequence rewards, (B, T) values V_t, (B, T) mask -> (advantages, returns).

    The reward comes at each row's last token (r_t = R there, else 0) and the episode ends after it (V = 0
    beyond): delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1}, return_t = A_t + V_t.
    Masked tokens get 0. Unscored rows (NaN reward) get 0 advantages and their values as returns.
    """
    mask = mask.to(values.dtype)
    length = mask.sum(dim=1).long()
    last = torch.zeros_like(values)
    rows = torch.nonzero(length > 0).squeeze(1)
    last[rows, length[rows] - 1] = 1.0
    reward = rewards.nan_to_num(0.0).unsqueeze(1) * last
    values = values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        following = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = reward[:, t] + gamma * following - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    advantages = advantages.masked_fill(rewards.isnan().unsqueeze(1), 0.0)
    return advantages, advantages + values


class ValueHead(torch.nn.Linear):
    """V(state) = w . h + b on the policy's (detached) last hidden state; starts at 0 (weights zeroed)."""

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size, 1)
        torch.nn.init.zeros_(self.weight)
        torch.nn.init.zeros_(self.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden.detach().to(self.weight.dtype)).squeeze(-1)
