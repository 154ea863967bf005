"""The "precise" P: reward pays for precision and quality, never for count: the gaming seen under "dense"
(more moves listed, fillers, repeats) scores no higher, illegal moves cost, B: is graded as the move it is
and for agreeing with the answer's own E:. Real Stockfish and python-chess.

    .venv/bin/python -m pytest tests/test_rewards_precise.py
"""

import random

import chess
import pytest

from rookworld_trl.chess.engine import EngineLimit, EnginePool, find_stockfish
from rookworld_trl.chess.formats import policy_completion
from rookworld_trl.grpo.rewards.policy import PENALTY, PolicyGrader

pytestmark = pytest.mark.skipif(find_stockfish() is None, reason="needs Stockfish")
QUEEN_UP = "rnb1kbnr/pppp1ppp/8/4p3/4P2q/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3"


@pytest.fixture(scope="module")
def graded():
    """(grade(lines, shaping) -> rewards, top-5 moves, their evals, legal moves outside the top 5)."""
    with EnginePool(1, EngineLimit(depth=8), multipv=5) as pool:
        analysis = pool.analyse(QUEEN_UP)
        top = [m.move for m in analysis[:5]]
        others = [m.uci() for m in chess.Board(QUEEN_UP).legal_moves if m.uci() not in top]
        graders = {s: PolicyGrader(pool, s) for s in ("dense", "precise")}

        def grade(lines, shaping="precise"):
            return [r for r, _ in graders[shaping].score([QUEEN_UP] * len(lines), lines)]

        yield grade, top, [m.cp / 100 for m in analysis[:5]], others


def test_the_engine_answer_scores_one_and_garbage_the_floor(graded):
    grade, top, evals, _ = graded
    got = grade([policy_completion(top, evals, top[0]), " the queen is hanging", " a1a5 E: 0.1 B: a1a5"])
    assert got[0] == 1.0 and got[1] == PENALTY and PENALTY <= got[2] < 0.25


def test_fillers_earned_under_dense_earn_nothing_under_precise(graded):
    """Three top moves, then two legal fillers: dense paid for them (the gaming), precise does not."""
    grade, top, evals, others = graded
    three = policy_completion(top[:3], evals[:3], top[0])
    padded = policy_completion([*top[:3], *others[:2]], [*evals[:3], 0.0, 0.0], top[0])
    dense, precise = grade([three, padded], "dense"), grade([three, padded])
    assert dense[1] > dense[0]
    assert precise[1] <= precise[0]


def test_illegal_repeated_and_sixth_moves_cost(graded):
    grade, top, evals, others = graded
    base = policy_completion(top[:4], evals[:4], top[0])
    worse = [
        policy_completion([*top[:4], "a1a5"], [*evals[:4], 0.0], top[0]),  # an illegal fifth move
        policy_completion([*top[:4], top[1]], [*evals[:4], evals[1]], top[0]),  # a repeat
        " " + " ".join([*top, others[0]]) + " E: " + " ".join(map(str, [*evals, 0.0])) + " B: " + top[0],
    ]
    got = grade([base, *worse])
    assert all(g < got[0] for g in got[1:]), got


def test_best_move_agreeing_with_its_own_evals_scores_higher(graded):
    """Same moves and B:; the evals name B: as the best listed move in one answer and not in the other."""
    grade, top, evals, _ = graded
    agree = policy_completion(top, evals, top[0])
    disagree = policy_completion(top, [evals[0] - 5.0, *evals[1:]], top[0])
    got = grade([agree, disagree])
    assert got[0] > got[1]


def test_precise_stays_in_its_range_on_random_answers(graded):
    grade, top, evals, others = graded
    rng = random.Random(0)
    squares = [chess.square_name(s) for s in range(64)]
    lines = []
    for _ in range(200):
        moves = [
            rng.choice([*top, *others, rng.choice(squares) + rng.choice(squares)])
            for _ in range(rng.randint(1, 8))
        ]
        values = [round(rng.uniform(-20, 20), 2) for _ in moves]
        lines.append(" " + " ".join(moves) + " E: " + " ".join(map(str, values)) + " B: " + rng.choice(moves))
    got = grade(lines)
    assert all(PENALTY <= g <= 1.0 for g in got) and max(got) < 1.0 and min(got) < 0.2
