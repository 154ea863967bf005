"""Tactics: positions where one move decides, told from python-chess and an engine analysis (best first).

Kinds, checked in this order (a position with a single legal move is none):
- mate1: the side to move mates in one; any mating move is right.
- mate2: the engine's best mates in two, confirmed by python-chess (every reply allows a mate in one); any move
  that forces it is right.
- only: the engine's best is ahead of its second by ONLY_MARGIN in expected score; only it is right.

    >>> board = chess.Board("6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1")
    >>> [m.uci() for m in mating_moves(board)], forces_mate(board, chess.Move.from_uci("a1a8"))
    (['a1a8'], True)
"""

from __future__ import annotations

from collections.abc import Sequence

import chess

from rookworld_trl.chess.engine import MATE_SCORE, MoveEval, expected_score
from rookworld_trl.chess.environment import mating_moves

KINDS = ("mate1", "mate2", "only")
# Every other move gives up >= 0.2 expected score: the loss at which the policy reward's engine quality of B:
# reaches 0 (rewards/policy.BEST_ZERO_AT; ~230 cp from equality, more than lichess's blunder, 0.15), so every
# other move earns nothing for its quality and the position is decided by this one move.
ONLY_MARGIN = 0.2


def forces_mate(board: chess.Board, move: chess.Move) -> bool:
    """Whether `move` mates, or leaves the opponent only replies after which a mate in one exists (a forced
    mate in at most two). `board` is left as it was."""
    board.push(move)
    try:
        if board.is_checkmate():
            return True
        replies = list(board.legal_moves)
        if not replies:  # stalemate
            return False
        for reply in replies:
            board.push(reply)
            mated = bool(mating_moves(board))
            board.pop()
            if not mated:
                return False
        return True
    finally:
        board.pop()


def tactic_kind(board: chess.Board, analysis: Sequence[MoveEval]) -> str | None:
    """The position's kind (KINDS) given the engine's best-first analysis of it, or None: no tactic."""
    if board.legal_moves.count() < 2 or not analysis:
        return None
    if mating_moves(board):
        return "mate1"
    best = chess.Move.from_uci(analysis[0].move)
    if analysis[0].cp == MATE_SCORE - 2 and forces_mate(board, best):
        return "mate2"
    if len(analysis) >= 2 and expected_score(analysis[0].cp) - expected_score(analysis[1].cp) >= ONLY_MARGIN:
        return "only"
    return None


def solves(board: chess.Board, kind: str, move: chess.Move | None, engine_best: str) -> bool:
    """Whether `move` (None: no legal move) is right in a position of `kind`: it mates (mate1), forces mate
    in two (mate2) or is the engine's best (only)."""
    if move is None:
        return False
    if kind == "mate1":
        return move in mating_moves(board)
    if kind == "mate2":
        return forces_mate(board, move)
    if kind == "only":
        return move.uci() == engine_best
    raise ValueError(f"unknown tactic kind {kind!r}, expected one of {KINDS}")
