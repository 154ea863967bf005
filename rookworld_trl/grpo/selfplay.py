"""Self-play positions for GRPO: the policy being trained plays itself, and the positions its games reach are
mixed into its P: prompts.

    rookworld train --config recipes/grpo_tiny_cpu.yaml --selfplay_ratio 0.25 --selfplay_every 10 \\
        --selfplay_games 16 --selfplay_max_plies 40 --selfplay_buffer_size 5000
    .venv/bin/pytest tests/test_selfplay.py          (add -m slow for a 3-step run from the recipe)

How:
  - Games: every `selfplay_every` optimizer steps (and at a run's first) `SelfPlayCallback` plays `selfplay_games`
    games from random training P: positions, sampled at the recipe's `temperature` and `top_k` (greedy play would
    replay the same games); the move is the answer's `B:`. An illegal move or `selfplay_max_plies` ends a game.
  - Buffer (`PositionBuffer`): every position a legal move reached that is not game over, FIFO over
    `selfplay_buffer_size`, one per position (clocks ignored); a position reached again becomes young again.
  - Mix (`SelfPlay.mix`): each P: prompt is replaced at odds `selfplay_ratio` by a uniform buffer position, label
    columns emptied (the engine grades it). The draw hashes (seed, step, prompt), so a GRPO group's copies get
    the same position. Once the buffer is full, `selfplay/position_age` is about selfplay_every x (buffer size /
    new positions per round) / 2: a smaller buffer or more games per round give fresher positions.
  - Figures: selfplay/games, /mean_plies, /illegal_rate at each round; selfplay/buffer_size, /mixed_fraction and
    /position_age at each generation.

Several processes: each rank plays its own games and every rank adds all ranks' positions in rank order, so the
buffers agree. The buffer is not checkpointed (a resumed run plays at its first step). Not with ZeRO-3 / FSDP.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence

import chess
from transformers import TrainerCallback

from rookworld_trl.chess.environment import Policy, play_games, playable_position
from rookworld_trl.chess.formats import (
    FEN_WIDTH,
    policy_prompt,
    position_key,
    prompt_fen_width,
    task_of,
)
from rookworld_trl.grpo.groups import replace_policy_rows, unit_hash

# emptied in a substitute row: its label would be another position's
LABEL_COLUMNS = {"moves": [], "evals": [], "best": "", "limit": "", "completion": ""}


def check_selfplay(config) -> None:
    if not 0.0 <= config.selfplay_ratio <= 1.0:
        raise ValueError(f"selfplay_ratio must be in [0, 1], got {config.selfplay_ratio}")
    small = [
        n for n in ("every", "games", "max_plies", "buffer_size") if getattr(config, f"selfplay_{n}") < 1
    ]
    if small:
        raise ValueError(f"selfplay_{small[0]} must be >= 1, got {getattr(config, f'selfplay_{small[0]}')}")


class PositionBuffer:
    """At most `size` positions (FEN + the step that produced it), oldest dropped first, one per position key."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._list: list[tuple[str, int]] | None = None  # indexable view, rebuilt after a change

    def add(self, fens: Sequence[str], step: int) -> None:
        for fen in fens:
            key = position_key(fen)
            self._entries.pop(key, None)  # reached again: young again
            self._entries[key] = (fen, step)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        self._list = None

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> tuple[str, int]:
        """(fen, step) of the i-th position, oldest first."""
        if self._list is None:
            self._list = list(self._entries.values())
        return self._list[i]

    def fens(self) -> list[str]:
        return [fen for fen, _ in self._entries.values()]


class SelfPlay:
    """The buffer, when to play, what to play from, and the mix of buffer positions into prompts."""

    def __init__(self, script_args, seed: int, dataset=None):
        s = script_args
        self.ratio, self.every, self.games = s.selfplay_ratio, s.selfplay_every, s.selfplay_games
        self.max_plies, self.seed = s.selfplay_max_plies, seed
        self.fen_width = s.fen_width
        self.buffer = PositionBuffer(s.selfplay_buffer_size)
        self.dataset = dataset
        self.last_play: int | None = None  # None: not yet in this process (a fresh run or a resume)

    def due(self, step: int) -> bool:
        return self.last_play is None or step - self.last_play >= self.every

    def starts(self, step: int, rank: int = 0) -> list[str]:
        """`games` start FENs: P: positions of the dataset at random (per step and rank), else the standard start."""
        rng = random.Random(f"selfplay-starts-{self.seed}-{step}-{rank}")
        found: list[str] = []
        n = len(self.dataset) if self.dataset is not None else 0
        for _ in range(20 * self.games if n else 0):  # bounded: a dataset of A: rows only has no start
            if len(found) == self.games:
                break
            row = self.dataset[rng.randrange(n)]
            if task_of(row["prompt"], row.get("task")) == "P":  # a valid position with a move to play
                fen = playable_position(row["prompt"], row.get("fen"))
                found += [fen] if fen is not None else []
        return found + [chess.STARTING_FEN] * (self.games - len(found))

    def play(self, policy: Policy, step: int, rank: int = 0, gather=lambda x: x) -> dict[str, float]:
        """Play a round, add every rank's positions (`gather`: accelerate's gather_object), return the figures."""
        games = play_games(policy, self.starts(step, rank), self.max_plies, self.fen_width or FEN_WIDTH)
        rows = gather([(len(g.moves), g.ended_illegal, g.positions) for g in games])
        for _, _, positions in rows:
            self.buffer.add(positions, step)
        self.last_play = step
        return {
            "selfplay/games": float(len(rows)),
            "selfplay/mean_plies": sum(r[0] for r in rows) / len(rows),
            "selfplay/illegal_rate": sum(r[1] for r in rows) / len(rows),
            "selfplay/buffer_size": float(len(self.buffer)),
        }

    def mix(self, rows: list[dict], step: int) -> tuple[list[dict], dict[str, float]]:
        """`rows` with P: prompts replaced at odds `ratio` by buffer positions; and the figures of the mix."""
        figures = {"selfplay/buffer_size": float(len(self.buffer))}
        if not len(self.buffer):
            return rows, figures
        ages = []

        def pick(row: dict, u: float) -> dict:
            fen, produced = self.buffer[int(u * len(self.buffer))]
            ages.append(step - produced)
            return self.substitute(row, fen)

        out, policy_rows, replaced = replace_policy_rows(
            rows, self.ratio, (self.seed, step), ("mix", "pick"), pick
        )
        if policy_rows:
            figures["selfplay/mixed_fraction"] = replaced / policy_rows
        if ages:
            figures["selfplay/position_age"] = sum(ages) / len(ages)
        return out, figures

    def substitute(self, row: dict, fen: str) -> dict:
        """A copy of `row` asking for `fen` at the row's FEN width, its label columns emptied (the engine grades)."""
        width = prompt_fen_width(row["prompt"]) or self.fen_width or FEN_WIDTH
        prompt = policy_prompt(fen, width)
        new = {**row, "prompt": prompt}
        for name, empty in {**LABEL_COLUMNS, "fen": fen, "text": prompt}.items():
            if name in new:  # the same columns as every other row: TRL reads the keys of the first
                new[name] = empty
        return new


def selfplay_for(script_args, seed: int, dataset) -> SelfPlay | None:
    """The run's SelfPlay when `selfplay_ratio` > 0, else None (self-play is off)."""
    return SelfPlay(script_args, seed, dataset) if script_args.selfplay_ratio > 0 else None


class SelfPlayCallback(TrainerCallback):
    """Plays a round at the start of each due optimizer step with the trainer's model and logs its figures."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_begin(self, args, state, control, **kwargs):
        trainer, selfplay = self.trainer, self.trainer.selfplay
        if not selfplay.due(state.global_step):
            return
        from accelerate.utils import gather_object

        from rookworld_trl.model.generation import generate_completions

        model = trainer.accelerator.unwrap_model(trainer.model)
        rank = trainer.accelerator.process_index

        def policy(prompts: list[str]) -> list[str]:
            # a seed per step, rank and ply: reproducible without touching the trainer's random state
            policy.calls += 1
            return generate_completions(
                model, trainer.processing_class, prompts, max_new_tokens=args.max_completion_length,
                do_sample=True, temperature=args.temperature, top_k=args.top_k or 0,
                seed=int(unit_hash(args.seed, state.global_step, rank, policy.calls) * 2**31),
            )  # fmt: skip

        policy.calls = 0
        gather = gather_object if trainer.accelerator.num_processes > 1 else (lambda x: x)
        for name, value in selfplay.play(policy, state.global_step, rank, gather).items():
            trainer.metrics.add(name, value)
