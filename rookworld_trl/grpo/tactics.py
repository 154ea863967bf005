"""Tactics in GRPO (`tactics_dataset`): positions where one move decides (mate in one or two, an only move: `rookworld
data generate --tactics`) mixed into the run's P: prompts, and their labels replayed as supervised rows.

    rookworld train --tactics_dataset rookworld_trl/assets/tactics --tactics_ratio 0.25 \\
        --tactics_replay_coef 1.0 --output_dir runs/tactics
    .venv/bin/pytest tests/test_tactics.py

How:
  - Mix (`TacticsMix.mix`): each P: prompt is replaced at odds `tactics_ratio` by a whole tactics train row, drawn
    as self-play's are; its `kind` column reaches the reward, which logs `tactics/<kind>_solved`.
  - Replay (`tactics_replay_coef` > 0): each micro-batch adds that coefficient x the mean NLL of
    `tactics_replay_batch_size` tactics labels (grpo/replay.py), so the deciding move is imitated where sampling
    rarely finds it.
  - Eval: the before/after eval adds the `tactics` suite on the tactics test split.
Figures: tactics/mixed_fraction (of the batch's P: prompts), tactics_replay_loss.
"""

from __future__ import annotations

from rookworld_trl.grpo.groups import replace_policy_rows
from rookworld_trl.grpo.replay import Replay


def check_tactics(config) -> None:
    if not 0.0 <= config.tactics_ratio <= 1.0:
        raise ValueError(f"tactics_ratio must be in [0, 1], got {config.tactics_ratio}")
    if config.tactics_replay_coef < 0 or config.tactics_replay_batch_size < 1:
        raise ValueError("tactics_replay_coef must be >= 0 and tactics_replay_batch_size >= 1")
    if (config.tactics_ratio or config.tactics_replay_coef) and not config.tactics_dataset:
        raise ValueError(
            "tactics_ratio and tactics_replay_coef need tactics_dataset (rookworld data generate --tactics)"
        )


class TacticsMix:
    """The tactics train rows and their mix into P: prompts."""

    def __init__(self, rows, ratio: float, seed: int, replay_coef: float = 0.0, replay_batch_size: int = 16,
                 replay_target: str = "completion"):  # fmt: skip
        """`rows`: a datasets.Dataset of tactics P: rows; `ratio`: the odds a P: prompt is replaced by one."""
        self.dataset, self.rows = rows, [dict(r) for r in rows]
        self.ratio, self.seed = ratio, seed
        self.replay_coef, self.replay_batch_size = replay_coef, replay_batch_size
        self.replay_target = replay_target
        if ratio > 0 and not self.rows:
            raise ValueError("tactics_ratio > 0 but the tactics data has no training rows")

    def mix(self, rows: list[dict], step: int) -> tuple[list[dict], dict[str, float]]:
        """`rows` with P: prompts replaced at odds `ratio` by tactics rows; and the share replaced."""
        if self.ratio <= 0:
            return rows, {}

        def pick(row: dict, u: float) -> dict:
            tactic = self.rows[int(u * len(self.rows))]
            # the same columns as every other row: TRL reads the keys of the first
            return {name: tactic.get(name, value) for name, value in row.items()}

        out, policy_rows, replaced = replace_policy_rows(
            rows, self.ratio, (self.seed, step), ("tactics", "tactics pick"), pick
        )
        return out, {"tactics/mixed_fraction": replaced / policy_rows} if policy_rows else {}


def tactics_for(script_args, seed: int, rows) -> TacticsMix | None:
    """The run's TacticsMix over its tactics train P: rows when it mixes or replays, else None."""

    s = script_args
    if not s.tactics_dataset or (s.tactics_ratio <= 0 and s.tactics_replay_coef <= 0):
        return None
    return TacticsMix(rows, s.tactics_ratio, seed, s.tactics_replay_coef, s.tactics_replay_batch_size,
                      s.tactics_replay_target)  # fmt: skip


def tactics_replay_for(trainer, tactics: TacticsMix | None) -> Replay | None:
    """The supervised replay of the tactics rows when `tactics_replay_coef` > 0, else None."""
    if tactics is None or tactics.replay_coef <= 0:
        return None
    a = trainer.args
    return Replay(tactics.dataset, "P", trainer.processing_class, tactics.replay_batch_size, a.seed,
                  a.process_index, a.pad_to_multiple_of, tactics.replay_target, tactics.replay_coef,
                  "tactics_replay_loss")  # fmt: skip
