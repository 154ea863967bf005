"""Shared by the reward tests: positions, the engine limit, the Stockfish skip mark and the engine's own answer."""

import chess
import pytest

from rookworld_trl.chess.engine import EngineLimit, StockfishNotFound, find_stockfish
from rookworld_trl.chess.formats import env_prompt, policy_completion

try:
    find_stockfish()
    HAVE_STOCKFISH = True
except StockfishNotFound:
    HAVE_STOCKFISH = False
needs_stockfish = pytest.mark.skipif(not HAVE_STOCKFISH, reason="Stockfish not installed")

LIMIT = EngineLimit(depth=4)  # low depth for speed; the rewards do not depend on how deep the engine looks
START = chess.STARTING_FEN
QUEEN_UP = "rnb1kbnr/pppp1ppp/8/4p3/4P2q/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3"  # Nxh4 wins the queen
MATE_IN_1 = "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1"  # Ra8#
ONE_MOVE = "7k/8/8/8/8/8/1q6/K7 w - - 0 1"  # only Kxb2
TWO_MOVES = "4k3/8/8/8/8/8/3q4/4K3 w - - 0 1"  # Kxd2 or Kf1
E2E4 = env_prompt(START, "e2e4", ["e2e4"])
E2E4_TRUE = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0+0"


def true_completion(analysis, rng=None):
    """The engine's own answer as a P: completion, moves shuffled (docs/FORMATS.md) when `rng` is given."""
    lines = list(analysis[:5])
    if rng is not None:
        rng.shuffle(lines)
    return policy_completion([m.move for m in lines], [m.cp / 100 for m in lines], analysis[0].move)
