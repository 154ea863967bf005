"""Small P:/A: datasets for the tokenizer and SFT tests, made here so they depend on no data tooling.

Positions come from random legal play (seeded); P: lines from Stockfish at a low depth (MultiPV 5),
A: lines from the python-chess environment, one move in ten illegal.

    python tests/sft_fixtures.py /tmp/sft_lines.txt 500 500
"""

from __future__ import annotations

import random
import shutil
import sys

import chess
import chess.engine
from datasets import Dataset

from rookworld_trl.chess.environment import env_sample
from rookworld_trl.chess.formats import render_env, render_policy, split_prompt_completion, task_of

STOCKFISH = shutil.which("stockfish") or "/usr/games/stockfish"


def random_positions(n: int, rng: random.Random, max_plies: int = 80) -> list[tuple[chess.Board, list[str]]]:
    """`n` (board, moves played so far) pairs from random legal games; game-over positions skipped."""
    out = []
    while len(out) < n:
        board, played = chess.Board(), []
        for _ in range(rng.randrange(max_plies)):
            if board.is_game_over():
                break
            move = rng.choice(list(board.legal_moves))
            played.append(move.uci())
            board.push(move)
        if not board.is_game_over():
            out.append((board, played))
    return out


def policy_lines(n: int, seed: int = 0, depth: int = 4) -> list[str]:
    rng = random.Random(seed)
    lines = []
    with chess.engine.SimpleEngine.popen_uci(STOCKFISH) as engine:
        for board, _ in random_positions(n, rng):
            infos = engine.analyse(board, chess.engine.Limit(depth=depth), multipv=5)
            moves = [info["pv"][0].uci() for info in infos]
            evals = [info["score"].pov(board.turn).score(mate_score=100000) / 100 for info in infos]
            lines.append(render_policy(board.fen(), moves, evals, moves[0], rng=rng))
    return lines


def env_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed + 1)
    lines = []
    for board, played in random_positions(n, rng):
        if rng.random() < 0.1:  # an illegal (or nonsense) move: the environment must say so
            move = rng.choice(chess.SQUARE_NAMES) + rng.choice(chess.SQUARE_NAMES)
        else:
            move = rng.choice(list(board.legal_moves)).uci()
        lines.append(render_env(env_sample(board.fen(), move, played)))
    return lines


def to_dataset(lines: list[str]) -> Dataset:
    """The columns the data loader gives: text, prompt, completion, task."""
    pairs = [split_prompt_completion(line) for line in lines]
    return Dataset.from_dict(
        {
            "text": lines,
            "prompt": [p for p, _ in pairs],
            "completion": [c for _, c in pairs],
            "task": [task_of(line) for line in lines],
        }
    )


def mixed_lines(n_policy: int, n_env: int, seed: int = 0) -> list[str]:
    lines = policy_lines(n_policy, seed) + env_lines(n_env, seed)
    random.Random(seed).shuffle(lines)
    return lines


if __name__ == "__main__":
    path, n_policy, n_env = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open(path, "w") as f:
        f.writelines(line + "\n" for line in mixed_lines(n_policy, n_env))
