"""Tests for rookworld_trl/grpo/rewards/functions.py with the real Stockfish and python-chess (no mocks): the A: and P:
grades (labels, caching, TRL calls and fuzzing: test_rewards_calls.py).

Run: .venv/bin/pytest tests/test_rewards.py   (policy tests are skipped where Stockfish is not installed)
"""

import doctest
import itertools
import random

import chess
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reward_fixtures import (
    E2E4,
    E2E4_TRUE,
    MATE_IN_1,
    ONE_MOVE,
    QUEEN_UP,
    START,
    TWO_MOVES,
    needs_stockfish,
    true_completion,
)

from rookworld_trl.chess.engine import MoveEval
from rookworld_trl.chess.environment import env_sample
from rookworld_trl.chess.formats import (
    env_completion,
    env_prompt,
    parse_policy_completion,
    policy_completion,
    policy_prompt,
)
from rookworld_trl.grpo.rewards import functions as rewards
from rookworld_trl.grpo.rewards.functions import (
    env_reward,
    score_env,
    similarity,
)
from rookworld_trl.grpo.rewards.policy import PENALTY, SHAPINGS, PolicyGrader, score_policy


def test_doctests():
    assert doctest.testmod(rewards).failed == 0


# ----------------------------------------------------------------------------------------- environment


@given(st.text("abc/8 ", max_size=80), st.text("abc/8 ", max_size=80))
def test_similarity_is_one_minus_the_edit_distance_over_the_longer_length(a, b):
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    assert similarity(a, b) == pytest.approx(1 - row[-1] / max(len(a), len(b), 1))


ENV_LEVELS = [  # (completion for 1. e4, graduated reward, why)
    (E2E4_TRUE, 1.0, "all exact"),
    ("rnbqkbnr/pppppppp/8/8/3P4/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0+0", 0.8, "one square wrong"),
    ("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR w Kkq - 0 1+0.001+0+0", 0.6, "side and castling wrong"),
    ("r3k2r/8/8/8/8/8/8/R3K2R b KQkq - 0 1+0.001+0+0", 0.6, "placement far off, the rest right"),
    ("8/8/8/8/8/8/8/K6k b - e3 5 9+-1.0+1+1", 0.4, "only the side to move right"),
    ("8/8/8/8/8/8/8/K6k w - e3 5 9+1.0+1+1", 0.2, "format only"),
    ("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0", PENALTY, "a field missing"),
    ("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq 0 1+0.001+0+0", PENALTY, "5-field FEN"),
    ("I think e4 is good", PENALTY, "prose"),
    ("", PENALTY, "empty"),
]


@pytest.mark.parametrize(("completion", "expected", "why"), ENV_LEVELS, ids=[r[2] for r in ENV_LEVELS])
def test_env_graduated_levels(completion, expected, why):
    assert score_env(E2E4, completion)[0] == expected


ENV_CASES = [  # (fen, move, previous moves)
    (START, "e2e4", []),
    (START, "e2e5", []),  # illegal: the position stays, reward -1.0, truncated
    (
        "rnbqkbnr/ppppp2p/5p2/6p1/4P3/8/PPPP1PPP/RNBQKBNR w KQkq g6 0 3",
        "d1h5",
        ["f7f6", "e2e4", "g7g5"],
    ),  # mate
    ("k7/8/1Q6/8/8/8/8/6K1 w - - 0 1", "g1g2", []),
    ("k7/8/8/1Q6/8/8/8/6K1 w - - 0 1", "b5b6", []),  # stalemate: a draw, 0.5
    ("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 7 30", "e1g1", []),
]


@pytest.mark.parametrize("shaping", SHAPINGS)
@pytest.mark.parametrize(("fen", "move", "previous"), ENV_CASES)
def test_env_true_completion_scores_one_and_a_wrong_square_less(fen, move, previous, shaping):
    sample = env_sample(fen, move, previous)
    prompt = env_prompt(sample.fen, sample.move, sample.history)
    true = env_completion(sample.new_fen, sample.reward, sample.terminated, sample.truncated)
    reward, parts = score_env(prompt, true, shaping)
    assert reward == 1.0 and parts["fen_exact"] == 1.0 and parts["fen_similarity"] == 1.0
    placement = sample.new_fen.split()[0]
    swapped = placement.replace("k", "q", 1) if "k" in placement else placement.replace("K", "Q", 1)
    wrong = env_completion(sample.new_fen.replace(placement, swapped), sample.reward, False, sample.truncated)
    wrong_reward, wrong_parts = score_env(prompt, wrong, shaping)
    assert (
        wrong_reward < reward and wrong_parts["fen_exact"] == 0.0 and 0.9 < wrong_parts["fen_similarity"] < 1
    )


def test_env_continuous_prefers_the_closer_fen():
    near = "rnbqkbnr/pppppppp/8/8/3P4/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0+0"
    far = "8/8/8/8/8/8/8/K6k b KQkq - 0 1+0.001+0+0"
    scores = [score_env(E2E4, c, "continuous")[0] for c in (E2E4_TRUE, near, far)]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 3


def test_env_reward_ignores_policy_samples_and_a_wrong_label():
    prompts = [E2E4, policy_prompt(START), E2E4]
    completions = [E2E4_TRUE, " e2e4 E: 0.3 B: e2e4", E2E4_TRUE]
    # A wrong label column must not matter: the truth comes from the prompt.
    out = env_reward(prompts, completions, task=["A", "P", "A"], new_fen=["8/8/8/8/8/8/8/K6k w - - 0 1"] * 3)
    assert out == [1.0, None, 1.0]


def test_env_prefix_less_prompt_from_the_published_data():
    assert env_reward([E2E4.removeprefix("A: ")], [E2E4_TRUE], task=["A"]) == [1.0]


# -------------------------------------------------------------------------------------------- policy


@needs_stockfish
@pytest.mark.parametrize("shaping", SHAPINGS)
@pytest.mark.parametrize("fen", [START, QUEEN_UP, MATE_IN_1, ONE_MOVE, TWO_MOVES])
def test_policy_true_completion_scores_one_in_any_order(pool, fen, shaping):
    analysis = pool.analyse(fen)
    rng = random.Random(0)
    for _ in range(4):
        reward, parts = score_policy(fen, true_completion(analysis, rng), analysis, shaping=shaping)
        assert reward == 1.0, parts
        assert parts["best"] == parts["candidates"] == parts["evals"] == parts["well_formed"] == 1.0


@needs_stockfish
def test_policy_padding_is_part_of_the_format(pool):
    analysis = pool.analyse(QUEEN_UP)
    true = true_completion(analysis)
    slipped = true.replace(" E:", "  E:", 1)  # one space too many after the moves: still readable
    assert score_policy(QUEEN_UP, true, analysis)[0] == 1.0
    reward, parts = score_policy(QUEEN_UP, slipped, analysis)
    assert parts["parsed"] == parts["well_formed"] == 1.0 and parts["layout"] == 0.0 and reward == 0.8
    assert score_policy(QUEEN_UP, slipped, analysis, shaping="binary")[0] == 0.0


def policy_table(pool):
    """(completion, graduated reward, why) on QUEEN_UP, built from the engine's own analysis."""
    analysis = pool.analyse(QUEEN_UP)
    top = [m.move for m in analysis]
    assert analysis[0].cp > analysis[1].cp, "the table needs a unique best move"
    cps = {m.move: m.cp / 100 for m in analysis}
    board = chess.Board(QUEEN_UP)
    outside = next(m.uci() for m in board.legal_moves if m.uci() not in top)
    grader = PolicyGrader(pool)
    parsed = parse_policy_completion(f" {outside} E: 0.0 B: {outside}")
    cps[outside] = grader.move_cps([QUEEN_UP], [analysis], [parsed])[0][outside] / 100
    line = lambda moves, best: policy_completion(moves, [cps.get(m, 0.0) for m in moves], best)  # noqa: E731
    swapped = [*top[1:5], outside]
    return analysis, [
        (line(top, top[0]), 1.0, "engine answer"),
        (line(top, top[1]), 0.8, "second-best move as best"),
        (policy_completion(top, [-cps[m] for m in top], top[0]), 0.8, "evals negated"),
        (line([*top[:4], outside], top[0]), 0.8, "a candidate outside the top 5"),
        (line(swapped, top[1]), 0.6, "second-best and a candidate outside the top 5"),
        (line(top, outside), 0.4, "best move legal, outside the top 5"),
        (line(top, "e1e3"), 0.4, "best move illegal"),
        (line(["a1a5", "h1h5", "e1e5", "a2a5", "b1b4"], "a1a5"), 0.2, "format only: no legal move"),
        (" " + " ".join(top) + " E: 1 2 3 4 5", PENALTY, "no B: field"),
        (" the queen is hanging", PENALTY, "prose"),
    ]


@needs_stockfish
def test_policy_graduated_levels(pool):
    analysis, table = policy_table(pool)
    grader = PolicyGrader(pool)
    scored = grader.score([QUEEN_UP] * len(table), [completion for completion, _, _ in table])
    got = {why: reward for (_, _, why), (reward, _) in zip(table, scored, strict=True)}
    assert got == {why: expected for _, expected, why in table}


@needs_stockfish
@pytest.mark.parametrize("shaping", SHAPINGS)
def test_policy_levels_are_ordered_in_every_shaping(pool, shaping):
    """The engine's answer alone scores 1.0 and format-only is the lowest parseable answer in every shaping;
    the check-counting shapings also keep the graduated order (continuous, dense and precise weigh instead)."""
    _, table = policy_table(pool)
    scored = PolicyGrader(pool, shaping).score([QUEEN_UP] * len(table), [c for c, _, _ in table])
    levels, got = [e for _, e, _ in table], [r for r, _ in scored]
    assert got.count(1.0) == 1 and got[levels.index(1.0)] == 1.0
    parseable = [r for r, level in zip(got, levels, strict=True) if level > PENALTY]
    assert min(parseable) == got[levels.index(0.2)] and got.count(PENALTY) == levels.count(PENALTY)
    if shaping not in ("continuous", "dense", "precise"):
        for (level_a, reward_a), (level_b, reward_b) in itertools.combinations(
            zip(levels, got, strict=True), 2
        ):
            assert (level_a - level_b) * (reward_a - reward_b) >= 0, (shaping, levels, got)


@needs_stockfish
def test_dense_counts_every_listed_illegal_move(pool):
    """dense grades each listed move: one illegal candidate costs less than two, which costs less than an
    illegal B:, all else equal; graduated sees none of the candidates' legality."""
    analysis = pool.analyse(QUEEN_UP)
    top, cps = [m.move for m in analysis[:5]], {m.move: m.cp / 100 for m in analysis}
    illegal = ["a1a5", "h1h5"]  # rooks blocked by their own pawns
    assert not any(chess.Move.from_uci(m) in chess.Board(QUEEN_UP).legal_moves for m in illegal)
    line = lambda moves, best: policy_completion(moves, [cps.get(m, 0.0) for m in moves], best)  # noqa: E731
    lines = [line(top, top[0]), line([*top[:4], illegal[0]], top[0]), line([*top[:3], *illegal], top[0])]
    lines.append(line(top, "e1e3"))
    dense = [r for r, _ in PolicyGrader(pool, "dense").score([QUEEN_UP] * 4, lines)]
    parts = [p for _, p in PolicyGrader(pool, "graduated").score([QUEEN_UP] * 4, lines)]
    assert [p["legal_moves"] for p in parts] == [1.0, 0.8, 0.6, 1.0]
    assert dense[0] == 1.0 > dense[1] > dense[2] and dense[1] > dense[3]
    assert dense[0] - dense[1] == pytest.approx(0.8 * 0.3 * 0.2 + 0.8 * 0.1 * 0.2 + 0.8 * 0.1 * 0.2, abs=0.02)


def test_a_move_tied_with_the_top_move_is_a_top_move():
    analysis = [
        MoveEval(m, cp) for m, cp in [("d2d4", 36), ("g1f3", 36), ("a2a4", 28), ("g2g3", 16), ("b2b3", 13)]
    ]
    for best, expected in (("d2d4", 1.0), ("g1f3", 1.0), ("a2a4", 0.8)):
        completion = policy_completion([m.move for m in analysis], [m.cp / 100 for m in analysis], best)
        assert score_policy(START, completion, analysis)[0] == expected


@needs_stockfish
def test_illegal_best_move_scores_low(pool):
    analysis = pool.analyse(QUEEN_UP)
    moves = [m.move for m in analysis]
    completion = policy_completion(moves, [m.cp / 100 for m in analysis], "h4h8")  # no piece there
    reward, parts = score_policy(QUEEN_UP, completion, analysis)
    assert reward <= 0.4 and parts["best"] == 0.0 and parts["best_legal"] == 0.0 and parts["cp_loss"] is None


@needs_stockfish
def test_best_move_score_falls_with_the_centipawn_loss(pool):
    analysis = pool.analyse(QUEEN_UP)
    fen_moves = [m.move for m in analysis]
    bests = [
        score_policy(QUEEN_UP, policy_completion(fen_moves, [0.0] * 5, m), analysis)[1] for m in fen_moves
    ]
    assert bests[0]["best"] == 1.0 and bests[0]["cp_loss"] == 0.0
    losses, scores = [b["cp_loss"] for b in bests], [b["best"] for b in bests]
    assert losses == sorted(losses) and scores == sorted(scores, reverse=True) and scores[-1] < 1.0


@needs_stockfish
def test_mate_is_bounded(pool):
    """Missing a mate costs the best-move score but the numbers stay finite; a mate eval written as a
    small number loses that eval's credit only."""
    analysis = pool.analyse(MATE_IN_1)
    assert analysis[0].move == "a1a8" and analysis[0].cp == 99999
    moves = [m.move for m in analysis]
    _, miss = score_policy(
        MATE_IN_1, policy_completion(moves, [m.cp / 100 for m in analysis], moves[1]), analysis
    )
    assert 0 < miss["best"] < 1 and miss["cp_loss"] == 1000.0
    wrong_mate = [0.5] + [m.cp / 100 for m in analysis[1:]]
    _, parts = score_policy(MATE_IN_1, policy_completion(moves, wrong_mate, moves[0]), analysis)
    assert parts["evals"] == pytest.approx(0.8) and parts["best"] == 1.0


@needs_stockfish
def test_fewer_legal_moves_than_five(pool):
    analysis = pool.analyse(TWO_MOVES)
    assert len(analysis) == 2
    padded = policy_completion(["e1d2", "e1f1", "e1e2", "d1d2", "f1f2"], [0.03, -4.85, 0, 0, 0], "e1d2")
    reward, parts = score_policy(TWO_MOVES, padded, analysis)
    assert reward < 1.0 and parts["well_formed"] < 1 and parts["candidates"] == pytest.approx(2 / 5)


@needs_stockfish
def test_move_outside_the_top5_is_graded_by_its_own_search(pool):
    analysis = pool.analyse(START)
    board = chess.Board(START)
    outside = [m for m in board.legal_moves if m.uci() not in {a.move for a in analysis}][:3]
    parsed = parse_policy_completion(" " + " ".join(m.uci() for m in outside) + f" E: 0 0 0 B: {outside[0]}")
    cps = PolicyGrader(pool).move_cps([START], [analysis], [parsed])[0]
    assert set(cps) == {m.uci() for m in outside}
    for move in outside:
        board.push(move)
        assert (
            cps[move.uci()] == -pool.analyse_many([board.fen()], multipv=1)[0][0].cp
        )  # child's best, negated
        board.pop()
    # Graded no better than the last line the root search listed.
    comps = [score_policy(START, f" {m.uci()} E: 0.0 B: {m.uci()}", analysis, cps)[1] for m in outside]
    assert all(c["cp_loss"] >= analysis[0].cp - analysis[-1].cp for c in comps)
