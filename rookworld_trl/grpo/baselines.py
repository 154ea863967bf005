"""The baselines of the `baseline` option: the EMA/adaptive running baseline (`running_advantages`), reward scales,
and field credit recentred on the same baseline. Rewards here are the weighted reward per row of every process, in
TRL's order: rows [g n, (g + 1) n) form group g (n = num_generations); NaN (unscored) gets advantage 0, as in TRL.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from rookworld_trl.grpo.groups import EPS, running_scale, task_masks
from rookworld_trl.grpo.trl_fields import refusal

BASELINES = ("group", "ema", "adaptive")


def check_baseline(config) -> None:
    if config.baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {config.baseline!r}")
    if not 0.0 < config.baseline_ema_decay < 1.0:
        raise ValueError(f"baseline_ema_decay must be in (0, 1), got {config.baseline_ema_decay}")
    # field credit, these baselines and GAE recompute the advantages from the summed reward (grpo/trl_fields.py)
    message = refusal(config, "multi_objective_aggregation", sampler=False)
    if message:
        raise ValueError(message)


def _nanstd(x: torch.Tensor, dim=None) -> torch.Tensor:
    """Bessel-corrected std ignoring NaN (NaN with fewer than 2 values), as TRL's nanstd."""
    mean = x.nanmean(dim=dim, keepdim=dim is not None)
    count = (~x.isnan()).sum(dim=dim, keepdim=dim is not None)
    var = ((x - mean) ** 2).nansum(dim=dim, keepdim=dim is not None) / (count - 1).clamp(min=1)
    return var.sqrt().masked_fill(count < 2, float("nan"))


def reward_scale(rewards: torch.Tensor, tasks: list[str], n: int, mode: str) -> torch.Tensor:
    """(N,) divisor s of each row's advantage, per scale_rewards: 'group' the group's std (a zero-std group: its
    task's std in the batch, else 1: r - b may be non-zero there), 'batch' the batch's std, 'none' 1."""
    if mode == "none":
        return torch.ones_like(rewards)
    if mode == "batch":
        return _nanstd(rewards).nan_to_num(0.0).expand_as(rewards).clone()
    scale = _nanstd(rewards.view(-1, n), dim=1).nan_to_num(0.0).repeat_interleave(n)
    for rows in task_masks(tasks, rewards.device).values():
        fallback = float(_nanstd(rewards[rows]).nan_to_num(0.0))
        flat = rows & torch.isclose(scale, torch.zeros_like(scale))
        scale[flat] = fallback if fallback > 0 else 1.0
    return scale


class BaselineAdvantages(NamedTuple):
    """What running_advantages gives each row (N,): its advantage, its group's weight w and its scale s."""

    advantages: torch.Tensor
    weights: torch.Tensor
    scale: torch.Tensor


def running_advantages(
    state: dict, kind: str, rewards: torch.Tensor, tasks: list[str], n: int, decay: float, scaled: bool = True
) -> tuple[BaselineAdvantages, dict]:
    """The 'ema' and 'adaptive' baselines, per task: this batch's BaselineAdvantages and the running `state`
    moved on (a new JSON-ready dict: state[task] = {"mean": e, "spread": t, "var": V}).

    For the rows of one task in the batch (groups g of n rows, group mean m_g), with e the task's running mean:

        b_i = w_g m_g + (1 - w_g) e        ema: w_g = 0;  adaptive: w_g = t / (t + v_g / n)
        d_i = r_i - b_i - c                c = the task's batch mean of (r - b): the baseline's lag, removed
        a_i = d_i / s                      s = max(sqrt(V), sd(d)): V the running mean of the batch's mean d^2

    (v_g: the group's reward variance, t: the running variance of the group means around e). Why: a running mean
    lags the rewards; without c every sample of a batch gets an advantage of the same sign, which at a low
    temperature sharpens the policy onto whatever it sampled. And s is the task's spread of d, not a group's
    std: a group 0.1 from e with std 0.02 is not worth 5 per sample.

    With c the batch's advantages of a task have mean 0, and as s >= sd(d) (the population std over the task's
    N rows), |a_i| <= sqrt(N - 1) (Samuelson's inequality); TRL's group std gives at most (n - 1) / sqrt(n).
    Under c, `ema`'s e cancels (every row has the same b): its advantages are r minus the task's batch mean,
    comparing prompts with each other (an all-equal group still gets a signal); e, t and V run across batches.
    `scaled` False (scale_rewards 'none') sets s = 1. NaN rows (unscored) get 0.
    """
    state = dict(state)
    out = BaselineAdvantages(*(torch.zeros_like(rewards) for _ in range(3)))
    for task, mine in task_masks(tasks[::n], rewards.device).items():
        values = rewards.view(-1, n)[mine]
        if values.isnan().all():
            continue
        weights, d, s, state[task] = _task_baseline(state.get(task, {}), kind, values, decay, scaled)
        out.advantages.view(-1, n)[mine] = (d / (s + EPS)).nan_to_num(0.0).to(rewards.dtype)
        out.weights.view(-1, n)[mine] = weights.unsqueeze(1).expand(-1, n).to(rewards.dtype)
        out.scale.view(-1, n)[mine] = s
    return out, state


def _task_baseline(old: dict, kind: str, values: torch.Tensor, decay: float, scaled: bool):
    """(G,) weights, (G, n) centred deviations d, the scale s of one task's groups, and its new running state."""
    means, batch_mean = values.nanmean(dim=1), float(values.nanmean())
    e = old.get("mean", batch_mean)
    spread_now = float(((means - e) ** 2).nanmean().nan_to_num(0.0))
    t = old.get("spread", spread_now)
    if kind == "ema":
        weights = torch.zeros_like(means)
    else:
        counts = (~values.isnan()).sum(dim=1).clamp(min=1)
        total = t + _nanstd(values, dim=1).squeeze(1).nan_to_num(0.0) ** 2 / counts
        weights = torch.where(total > 0, t / total.clamp(min=1e-12), torch.ones_like(total))
    means = means.nan_to_num(e)
    d = values - (weights * means + (1 - weights) * e).unsqueeze(1)
    d = d - d.nanmean()
    var, s = running_scale(old.get("var"), float((d**2).nanmean()), decay)
    s = s if scaled else 1.0
    k = decay
    new = {"mean": k * e + (1 - k) * batch_mean, "spread": k * t + (1 - k) * spread_now, "var": var}
    return weights, d, s, new


def recentre_fields(rows: list, terms: list, weights: torch.Tensor, scale: torch.Tensor, n: int) -> list:
    """Field credit's `rows` (every process's) under an ema/adaptive baseline: each field term t of a row (and each
    written move's) gets the sequence's (t - b - c) / s, b = w_g m_g + (1 - w_g) M with m_g the term's group mean,
    M its batch mean (a running mean per field would mostly cancel under c), w and s the row's. B:'s advantage
    joins the move it copies."""

    ours = [i for i, row in enumerate(rows) if row is not None]
    if not ours:
        return rows
    w = [float(weights[i]) for i in range(len(rows))]

    def centred(items):  # items: (row, value) pairs -> their (t - b - c) / s
        groups: dict[int, list[float]] = {}
        for i, value in items:
            groups.setdefault(i // n, []).append(value)
        batch = sum(v for _, v in items) / len(items)
        means = {g: sum(values) / len(values) for g, values in groups.items()}
        raw = [v - w[i] * means[i // n] - (1 - w[i]) * batch for i, v in items]
        c = sum(raw) / len(raw)
        return [(r - c) / (float(scale[i]) + EPS) for (i, _), r in zip(items, raw, strict=True)]

    for part in ("M", "E", "B", "rest") if "rest" in terms[ours[0]] else ("M", "E", "B"):
        for i, a in zip(ours, centred([(i, terms[i][part]) for i in ours]), strict=True):
            rows[i][part] = a
    written = [(i, m) for i in ours for m in terms[i]["moves"]]
    moves = iter(centred(written)) if written else iter(())
    for i in ours:
        rows[i]["moves"] = [next(moves) for _ in terms[i]["moves"]]
        if 0 <= terms[i]["best_slot"] < len(rows[i]["moves"]):
            rows[i]["moves"][terms[i]["best_slot"]] += rows[i]["B"]
    return rows
