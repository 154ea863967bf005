"""A curriculum of the positions the policy gets wrong (`curriculum_ratio` > 0): training P: prompts whose group
wrote a legal B: in fewer than `curriculum_threshold` of its samples are kept in a buffer, and later P: prompts are
replaced by them at odds `curriculum_ratio`, until a group gets it right.

    rookworld train --curriculum_ratio 0.25 --output_dir build/curriculum_s0
    .venv/bin/pytest tests/test_curriculum.py

How: after each scored training batch the trainer hands `observe` every process's rows (so every rank holds the
same buffer) and each sample's policy-reward components (from the grader's memo); `mix` mixes rows, whole, into
the next prompts, drawn as self-play's are. The buffer is FIFO over `curriculum_buffer_size` prompts and is not
checkpointed: a resumed run starts it empty.
Figures: curriculum/wrong (share of this batch's P: groups below the threshold), curriculum/buffer_size,
curriculum/mixed_fraction (of the batch's P: prompts).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from rookworld_trl.chess.formats import task_of
from rookworld_trl.grpo.groups import replace_policy_rows
from rookworld_trl.grpo.rewards.functions import policy_grader


def check_curriculum(config) -> None:
    if not (0.0 <= config.curriculum_ratio <= 1.0 and 0.0 < config.curriculum_threshold <= 1.0):
        raise ValueError(
            f"need curriculum_ratio in [0, 1] and curriculum_threshold in (0, 1], got {config.curriculum_ratio}, "
            f"{config.curriculum_threshold}"
        )
    if config.curriculum_buffer_size < 1:
        raise ValueError(f"curriculum_buffer_size must be >= 1, got {config.curriculum_buffer_size}")


class Curriculum:
    """The buffer of wrongly answered P: rows, what to keep (`observe`) and the mix into prompts (`mix`)."""

    def __init__(self, ratio: float, size: int, threshold: float, seed: int):
        self.ratio, self.size, self.threshold, self.seed = ratio, size, threshold, seed
        self.buffer: OrderedDict[str, dict] = OrderedDict()  # prompt -> row, oldest first

    def observe(self, rows: Sequence[dict], components: Sequence[dict | None], n: int) -> dict[str, float]:
        """Keep each P: group (n rows) whose share of legal B: is below the threshold, drop one that is not."""
        wrong = groups = 0
        for g in range(0, len(rows), n):
            parts = [c for c in components[g : g + n] if c is not None]
            if task_of(rows[g]["prompt"], rows[g].get("task")) != "P" or not parts:
                continue
            groups += 1
            prompt = rows[g]["prompt"]
            self.buffer.pop(prompt, None)
            if sum(c["best_legal"] for c in parts) / len(parts) < self.threshold:
                wrong += 1
                self.buffer[prompt] = rows[g]
                if len(self.buffer) > self.size:
                    self.buffer.popitem(last=False)
        figures = {"curriculum/buffer_size": float(len(self.buffer))}
        if groups:
            figures["curriculum/wrong"] = wrong / groups
        return figures

    def mix(self, rows: list[dict], step: int) -> tuple[list[dict], dict[str, float]]:
        """`rows` with P: prompts replaced at odds `ratio` by buffered rows; and the share replaced."""
        if not self.buffer:
            return rows, {}
        kept = list(self.buffer.values())

        def pick(row: dict, u: float) -> dict:
            # the same columns as every other row: TRL reads the keys of the first
            return {**row, **kept[int(u * len(kept))]}

        key, tags = (self.seed, step), ("curriculum", "curriculum pick")
        out, policy_rows, replaced = replace_policy_rows(rows, self.ratio, key, tags, pick)
        return out, {"curriculum/mixed_fraction": replaced / policy_rows} if policy_rows else {}


def curriculum_for(args, reward_funcs=None) -> Curriculum | None:
    """The run's Curriculum when `curriculum_ratio` > 0, else None; `reward_funcs` must grade P: answers."""

    if args.curriculum_ratio <= 0:
        return None
    if reward_funcs is not None and policy_grader(reward_funcs) is None:
        raise ValueError("curriculum_ratio > 0 grades P: answers with the policy reward: add policy_reward")
    return Curriculum(
        args.curriculum_ratio, args.curriculum_buffer_size, args.curriculum_threshold, args.seed
    )
