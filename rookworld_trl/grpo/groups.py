"""A generation batch's rows, groups and tokens, as every advantage and loss option reads them, in TRL's order:
rows [g n, (g + 1) n) form group g (n = num_generations); and the mix of positions into its P: prompts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from rookworld_trl.chess.formats import task_of

EPS = 1e-4  # TRL's: advantages are (r - b) / (s + EPS)


@dataclass
class ScoredBatch:
    """One generation batch as TRL scored it: this process's `rows` (the dataloader's) and `prompts` (as TRL
    scored them), every process's (N, F) `rewards` (NaN: a function skipped the row), and `output`, TRL's
    generation batch, what the loss trains on."""

    rows: list[dict]
    prompts: list
    rewards: torch.Tensor
    output: dict


def row_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, F) rewards -> (N,) weighted sums (NaN where every function skipped the row), as TRL sums them."""
    total = (rewards_per_func * weights.to(rewards_per_func.device)).nansum(dim=1)
    return total.masked_fill(rewards_per_func.isnan().all(dim=1), float("nan"))


def local_rows(accelerator, rows: int) -> slice:
    """This process's `rows` among every process's (TRL's order)."""
    start = accelerator.process_index * rows
    return slice(start, start + rows)


def group_task(prompt) -> str:
    """The group a prompt's rewards are baselined in: its task prefix ('P:' or 'A:'), else 'other'."""

    text = prompt if isinstance(prompt, str) else str(prompt)
    return text[:2] if text[:2] in ("P:", "A:") else "other"


def task_masks(tasks: list[str], device) -> dict[str, torch.Tensor]:
    """task -> (N,) bool mask of its rows, tasks in sorted order (one per task prefix, see group_task)."""
    return {task: torch.tensor([t == task for t in tasks], device=device) for task in sorted(set(tasks))}


def running_scale(old_var: float | None, var_now: float, decay: float) -> tuple[float, float]:
    """(V, s): V the running mean of the batch's mean square (old_var None: starts at var_now), and the scale
    s = sqrt(max(V, var_now)): never below this batch's own spread, so no advantage exceeds what its batch gives."""
    var = decay * (var_now if old_var is None else old_var) + (1 - decay) * var_now
    return var, max(var, var_now) ** 0.5


def loss_mask(batch: dict) -> torch.Tensor:
    """The completion tokens TRL's loss trains on: its completion mask without tool-output tokens."""
    return batch["completion_mask"] * batch.get("tool_mask", 1)


def unit_hash(*parts) -> float:
    """A number in [0, 1) from `parts`, the same on every process and run (Python's hash() is salted)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def replace_policy_rows(
    rows: list[dict], ratio: float, key: tuple, tags: tuple[str, str], pick
) -> tuple[list, int, int]:
    """`rows` with each P: row replaced at odds `ratio` by `pick(row, u)`, u uniform in [0, 1); the counts of P:
    rows and of replaced ones. The draws hash the prompt, so a GRPO group's copies get the same replacement."""
    out, policy_rows, replaced = [], 0, 0
    for row in rows:
        if task_of(row["prompt"], row.get("task")) == "P":
            policy_rows += 1
            if unit_hash(*key, row["prompt"], tags[0]) < ratio:
                row = pick(row, unit_hash(*key, row["prompt"], tags[1]))
                replaced += 1
        out.append(row)
    return out, policy_rows, replaced
