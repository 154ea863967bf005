"""DAPO's dynamic sampling (`dynamic_sampling: true`, grpo/config.py): groups whose rewards all agree carry no
signal under the group baseline; they are swapped for informative groups of fresh prompts.

`refill` re-scores through the step's own scoring: each round scores a whole fresh generation batch of training
prompts, and each process fills its own zero-std group slots with its informative fresh groups (rows never move
between processes), until no process has a slot left or after dynamic_sampling_max_rounds. The batch is then
reassembled group by group and re-padded (`merged_batch`).
"""

from __future__ import annotations

import torch
from accelerate.utils import gather_object

from rookworld_trl.grpo.groups import ScoredBatch, loss_mask, row_rewards

LEFT_PADDED = ("prompt_ids", "prompt_mask")  # TRL pads prompts on the left, everything per token on the right


def check_dynamic_sampling(config) -> None:
    if config.dynamic_sampling_max_rounds < 1:
        raise ValueError(
            f"dynamic_sampling_max_rounds must be >= 1, got {config.dynamic_sampling_max_rounds}"
        )


def check_trainer(trainer) -> None:
    local = trainer.args.per_device_train_batch_size * trainer.args.steps_per_generation
    if local % trainer.num_generations:
        raise ValueError(
            f"dynamic_sampling needs per_device_train_batch_size x steps_per_generation ({local}) divisible by "
            f"num_generations ({trainer.num_generations}): each process must hold whole groups"
        )
    if not hasattr(trainer.train_dataset, "__getitem__") or not hasattr(trainer.train_dataset, "__len__"):
        raise ValueError(
            "dynamic_sampling draws fresh prompts by index: use a map-style (not streaming) dataset"
        )


def informative(rewards: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) rewards -> (N / n,) True where the group's rewards differ (TRL's zero-std test, NaN rows ignored)."""
    groups = rewards.view(-1, n)
    low = groups.nan_to_num(float("inf")).min(dim=1).values
    high = groups.nan_to_num(float("-inf")).max(dim=1).values
    return (high > low) & ~torch.isclose(high, low)


def fresh_prompts(dataset, count: int, n: int, accelerator, seed: int) -> list[dict]:
    """`count` rows for this process: whole groups of random training prompts, drawn alike on every process."""
    procs = accelerator.num_processes
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(dataset), (count * procs // n,), generator=generator).tolist()
    rows = [dataset[i] for i in picks for _ in range(n)]
    start = accelerator.process_index * count
    return rows[start : start + count]


def refill(batch: ScoredBatch, score, draw, n: int, weights, accelerator, max_rounds: int, pad_id: int):
    """(the scored batch with its zero-std groups replaced by informative fresh ones, as far as rounds allow; the
    figures). `score(rows)`: the step's scoring; `draw(count, round)`: fresh rows of this process for that round."""
    acc = accelerator
    groups = len(batch.rows) // n
    local = slice(acc.process_index * groups, (acc.process_index + 1) * groups)
    flags = informative(row_rewards(batch.rewards, weights), n)
    start_missing = int((~flags).sum())
    batches, picks = [batch], [(0, g) for g in range(groups)]
    missing = [g for g, ok in enumerate(flags[local].tolist()) if not ok]
    redrawn = 0
    for round_ in range(max_rounds):
        if int(acc.gather(torch.tensor([len(missing)], device=acc.device)).sum()) == 0:
            break
        batches.append(score(draw(len(batch.rows), round_)))
        fresh = informative(row_rewards(batches[-1].rewards, weights), n)
        redrawn += len(fresh)
        candidates = [g for g, ok in enumerate(fresh[local].tolist()) if ok]
        for slot, g in zip(missing, candidates, strict=False):
            picks[slot] = (len(batches) - 1, g)
        missing = missing[len(candidates) :]
    left = int(acc.gather(torch.tensor([len(missing)], device=acc.device)).sum())
    figures = {"dynamic_sampling/dropped": start_missing - left, "dynamic_sampling/redrawn": redrawn,
               "dynamic_sampling/left": left}  # fmt: skip
    if len(batches) == 1:
        return batch, figures
    return merged_batch(batches, picks, n, acc, pad_id), figures


def merged_batch(batches: list[ScoredBatch], picks: list[tuple[int, int]], n: int, accelerator, pad_id: int):
    """One ScoredBatch from group `g` of `batches[b]` for each (b, g) in this process's `picks`."""

    merged = merge([b.output for b in batches], picks, n, pad_id)
    mask = loss_mask(merged)
    merged["num_items_in_batch"] = accelerator.gather(mask.sum()).sum()  # as TRL counts it
    groups = len(picks)
    rewards = torch.cat([batches[b].rewards[(rank * groups + g) * n : (rank * groups + g + 1) * n]
                         for rank, mine in enumerate(gather_object([picks])) for b, g in mine])  # fmt: skip
    rows = [row for b, g in picks for row in batches[b].rows[g * n : (g + 1) * n]]
    prompts = [p for b, g in picks for p in batches[b].prompts[g * n : (g + 1) * n]]
    return ScoredBatch(rows, prompts, rewards, merged)


def _pad(pieces: list[torch.Tensor], value, left: bool) -> torch.Tensor:
    width = max(p.shape[1] for p in pieces)
    out = []
    for p in pieces:
        filler = p.new_full((p.shape[0], width - p.shape[1], *p.shape[2:]), value)
        out.append(torch.cat([filler, p] if left else [p, filler], dim=1))
    return torch.cat(out)


def merge(outputs: list[dict], picks: list[tuple[int, int]], n: int, pad_id: int) -> dict:
    """One scored batch from group `g` of `outputs[o]` for each (o, g) in `picks`, re-padded like TRL's."""
    merged = {}
    for key, first in outputs[0].items():
        if not torch.is_tensor(first) or first.dim() == 0:
            if isinstance(first, list):
                merged[key] = [x for o, g in picks for x in outputs[o][key][g * n : (g + 1) * n]]
            else:
                merged[key] = first
            continue
        pieces = [outputs[o][key][g * n : (g + 1) * n] for o, g in picks]
        if first.dim() == 1:
            merged[key] = torch.cat(pieces)
        else:
            value = pad_id if key.endswith("_ids") else 1 if key == "tool_mask" else 0
            merged[key] = _pad(pieces, value, left=key in LEFT_PADDED)
    return merged
