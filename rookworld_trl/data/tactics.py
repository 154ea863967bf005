"""Tactics as data: the positions of generated or PGN games where one move decides (chess/tactics.py: mate1,
mate2, only), as P: rows labelled like every other (the engine's MultiPV at the run's limit, data/samples.py),
their kind in the `kind` column, split by game.

    rookworld data generate --out data/tactics --tactics --selfplay 40 --random 3000 --pgn games.pgn \\
        --plies_per_game 4 --tactics_per_game 2 --test_fraction 0.25 --depth 8 --workers 2

A game offers every ply of self-play (the engine analysed each one to play it), else its sampled plies plus up to
--tactics_per_game plies where python-chess finds a mate in one (too rare to sample) and the ply two before each
(where a mate in two most often is). A game gives at most --tactics_per_game positions of each kind, so no few long
games fill the set with near-copies. A game's split is a hash of its start and moves; a position reached in games
of two splits is kept in the held-out one only.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import chess

from rookworld_trl.chess.environment import mating_moves
from rookworld_trl.chess.formats import position_key
from rookworld_trl.chess.tactics import KINDS, tactic_kind
from rookworld_trl.data.layout import hashed_split
from rookworld_trl.data.samples import GameRecord, SampleSettings, policy_row_for

SPLIT_ORDER = ("test", "validation", "train")  # a position in two splits stays in the first


def game_split(game: GameRecord, validation_fraction: float, test_fraction: float) -> str:
    """The split of a whole game, from an unsalted hash of its start and moves."""
    return hashed_split(game.start + " " + " ".join(game.moves), validation_fraction, test_fraction)


def positions(game: GameRecord) -> list[str]:
    """The FEN before each ply of the game."""
    board, out = chess.Board(game.start), []
    for move in game.moves:
        out.append(board.fen())
        board.push_uci(move)
    return out


def candidate_plies(game: GameRecord, every_ply: bool, per_game: int, rng: random.Random) -> list[int]:
    """The plies to classify: every ply (`every_ply`), else the game's sampled plies, up to `per_game` plies with a
    mate in one, and the ply two before each (see the module docstring)."""
    if every_ply:
        return list(range(len(game.moves)))
    board, mates = chess.Board(game.start), []
    for ply, move in enumerate(game.moves):
        if board.legal_moves.count() > 1 and mating_moves(board):
            mates.append(ply)
        board.push_uci(move)
    chosen = rng.sample(mates, min(per_game, len(mates)))
    return sorted(set(game.plies) | set(chosen) | {p - 2 for p in chosen if p >= 2})


def tactic_rows(
    game: GameRecord, fens: list[str], plies: list[int], analyses: dict, rng: random.Random, per_game: int,
    config: SampleSettings,
) -> list[dict]:  # fmt: skip
    """P: rows of the tactics among `plies` of `game` (`fens`: its positions), at most `per_game` of each kind,
    each with its kind in `kind`."""
    found: dict[str, list[str]] = defaultdict(list)
    for ply in plies:
        fen = fens[ply]
        kind = tactic_kind(chess.Board(fen), analyses.get(fen) or [])
        if kind is not None and fen not in found[kind]:
            found[kind].append(fen)
    rows = []
    for kind in KINDS:
        for fen in rng.sample(found[kind], min(per_game, len(found[kind]))):
            rows.append({**policy_row_for(fen, analyses[fen], config), "kind": kind})
    return rows


def held_out_first(shard_rows: list[tuple[list[dict], list[str]]]) -> list[tuple[dict, str]]:
    """(row, split) of every shard's rows, a position found in games of several splits kept in the first of
    SPLIT_ORDER only (the test split's copy wins), in shard order otherwise."""
    best: dict[str, int] = {}
    for rows, splits in shard_rows:
        for row, split in zip(rows, splits, strict=True):
            key, rank = position_key(row["fen"]), SPLIT_ORDER.index(split)
            best[key] = min(rank, best.get(key, rank))
    return [
        (row, split)
        for rows, splits in shard_rows
        for row, split in zip(rows, splits, strict=True)
        if SPLIT_ORDER.index(split) == best[position_key(row["fen"])]
    ]


def kind_counts(rows: list[dict], splits: list[str]) -> dict[str, int]:
    """{"<split>/<kind>": rows}: what a chunk found, for its stats."""
    return dict(Counter(f"tactics_{split}_{row['kind']}" for row, split in zip(rows, splits, strict=True)))
