"""The samples of one game (used by rookworld_trl/data/generate.py): P: rows of the analysed positions, A: rows of
the moves played, illegal moves in their place, moves mined from the same position (game-ending, en passant,
a promotion) and a half-move-clock position; see generate.py's docstring for the proportions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

import chess

from rookworld_trl.chess.engine import EngineLimit, MoveEval
from rookworld_trl.chess.environment import env_sample, legal_move, transition_kind
from rookworld_trl.chess.formats import render_env, render_policy
from rookworld_trl.data.rows import env_row, policy_row


class SampleSettings(Protocol):
    """What making a game's samples reads of the generate run's settings (data/generate.GenerateConfig)."""

    seed: int
    limit: EngineLimit
    illegal_fraction: float


@dataclass
class GameRecord:
    """A finished game to label: where it started, its moves, how it ended and which plies become samples
    (chess/environment.py's Game is a game the model plays)."""

    start: str  # FEN
    moves: list[str]  # UCI
    end: str  # python-chess termination ("checkmate", "fivefold_repetition", ...), "max_plies" or "pgn"
    plies: list[int]  # the plies that become samples


def illegal_move(board: chess.Board, rng: random.Random) -> str:
    """Half the time a pseudo-legal move that is illegal (king left in check), else random from-to squares."""
    if rng.random() < 0.5:
        pseudo = [m for m in board.pseudo_legal_moves if not board.is_legal(m)]
        if pseudo:
            return board.uci(rng.choice(pseudo))
    own = list(chess.SquareSet(board.occupied_co[board.turn]))
    while True:
        start = rng.choice(own) if rng.random() < 0.5 else rng.randrange(64)
        end = rng.randrange(64)
        uci = chess.square_name(start) + chess.square_name(end)
        if start != end and legal_move(board, uci) is None:
            return uci


def mined_moves(fen: str, played: str, rng: random.Random) -> list[str]:
    """Rare transitions available in this position: moves that end the game, en passant, a promotion."""
    board = chess.Board(fen)  # no move stack: endings judged on the FEN alone, like the A: truth
    found, promotions = [], []
    for move in board.legal_moves:
        uci = move.uci()
        if uci == played:
            continue
        if move.promotion:
            promotions.append(uci)
        elif board.is_en_passant(move):
            found.append(uci)
        else:
            board.push(move)
            if board.is_game_over():
                found.append(uci)
            board.pop()
    return found + ([rng.choice(promotions)] if promotions else [])


def clock_move(board: chess.Board, rng: random.Random) -> tuple[str, str]:
    """(fen, move) at the edge of the 75-move rule: clock 149, then a quiet piece move (ends it) or any move."""
    edge = chess.Board(board.fen())
    edge.halfmove_clock, edge.ep_square = 149, None  # a double step resets the clock: no en-passant square
    edge.fullmove_number = max(edge.fullmove_number, 75)
    legal = list(edge.legal_moves)
    quiet = [m for m in legal if not edge.is_capture(m) and edge.piece_type_at(m.from_square) != chess.PAWN]
    choices = quiet if quiet and rng.random() < 0.5 else legal
    return edge.fen(), rng.choice(choices).uci()


def env_row_for(fen: str, move: str, previous: list[str]) -> dict:
    sample = env_sample(fen, move, previous[-9:])
    return env_row(render_env(sample), sample, transition_kind(fen, move))


def policy_row_for(fen: str, analysis: list[MoveEval], config: SampleSettings) -> dict:
    moves, evals = [e.move for e in analysis], [e.pawns for e in analysis]
    # The written order is shuffled by a generator seeded per position: the same text whatever the chunking.
    text = render_policy(fen, moves, evals, moves[0], rng=random.Random(f"{config.seed}:{fen}"))
    return policy_row(text, fen, moves, evals, moves[0], config.limit.key())


def game_rows(game: GameRecord, analyses: dict, rng: random.Random, config: SampleSettings) -> list[dict]:
    rows = []
    board = chess.Board(game.start)
    wanted = set(game.plies)
    clock_ply = rng.choice(game.plies) if game.plies else -1
    for ply, move in enumerate(game.moves):
        if ply in wanted:
            fen, previous = board.fen(), game.moves[max(0, ply - 9) : ply]
            if analyses[fen]:
                rows.append(policy_row_for(fen, analyses[fen], config))
            played = illegal_move(board, rng) if rng.random() < config.illegal_fraction else move
            rows += [env_row_for(fen, m, previous) for m in [played, *mined_moves(fen, played, rng)]]
            if ply == clock_ply:
                rows.append(env_row_for(*clock_move(board, rng), previous))
        board.push(chess.Move.from_uci(move))
    return rows
