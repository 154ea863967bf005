"""Tactics: the kinds (chess/tactics.py) on real positions with python-chess and Stockfish, `rookworld data
generate --tactics` (data/tactics.py: labels, kinds, split by game), the tactics eval suite and the mix into
GRPO prompts (grpo/tactics.py).

    .venv/bin/pytest tests/test_tactics.py
"""

from __future__ import annotations

import random

import chess
import pyarrow.parquet as pq
import pytest

from rookworld_trl.chess.engine import EngineLimit, EnginePool, expected_score
from rookworld_trl.chess.formats import parse_policy_completion, policy_completion, policy_prompt
from rookworld_trl.chess.tactics import ONLY_MARGIN, forces_mate, solves, tactic_kind
from rookworld_trl.data.generate import GenerateConfig, generate
from rookworld_trl.data.samples import GameRecord
from rookworld_trl.data.tactics import game_split, held_out_first
from rookworld_trl.grpo.tactics import TacticsMix
from rookworld_trl.stages.eval.suites import tactics_suite

MATE1 = "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1"  # Ra8#
MATE2 = "2r3r1/p5B1/1p3p2/3k4/Q5p1/3nK2P/1N6/2RB3R w - - 1 57"  # Qd7+ and mate next (from a random game)
ONLY = "8/8/3P1p2/p5p1/2pk4/P1N4R/2b2K2/1r6 w - - 1 56"  # Nb1: the rook on b1 takes, else lost (random game)
QUIET = chess.STARTING_FEN

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pool():
    with EnginePool(1, EngineLimit(depth=8), multipv=5) as p:
        yield p


def test_kinds_on_real_positions(pool):
    kinds = [tactic_kind(chess.Board(f), pool.analyse(f)) for f in (MATE1, MATE2, ONLY, QUIET)]
    assert kinds == ["mate1", "mate2", "only", None]
    only = pool.analyse(ONLY)
    assert expected_score(only[0].cp) - expected_score(only[1].cp) >= ONLY_MARGIN


def test_mate_in_two_is_forced_by_its_first_move_only(pool):
    board = chess.Board(MATE2)
    best = chess.Move.from_uci(pool.analyse(MATE2)[0].move)
    assert forces_mate(board, best) and board.fen() == MATE2  # the board is left as it was
    quiet = next(m for m in board.legal_moves if not board.gives_check(m))
    assert not forces_mate(board, quiet)


def test_solves_each_kind(pool):
    assert solves(chess.Board(MATE1), "mate1", chess.Move.from_uci("a1a8"), "a1a8")
    assert not solves(chess.Board(MATE1), "mate1", chess.Move.from_uci("h2h3"), "a1a8")
    best = pool.analyse(ONLY)[0].move
    assert solves(chess.Board(ONLY), "only", chess.Move.from_uci(best), best)
    assert not solves(chess.Board(ONLY), "only", None, best)
    with pytest.raises(ValueError, match="unknown tactic kind"):
        solves(chess.Board(MATE1), "mate3", chess.Move.from_uci("a1a8"), "a1a8")


def test_generate_tactics_labels_kinds_and_game_split(tmp_path):
    out = tmp_path / "tactics"
    stats = generate(GenerateConfig(
        out=str(out), random_games=6, tactics=True, plies_per_game=2, max_plies=120, test_fraction=0.5,
        validation_fraction=0.0, games_per_chunk=3, seed=3, progress=False,
    ))  # fmt: skip
    rows = [r for s in ("train", "test") for r in pq.read_table(out / f"{s}.parquet").to_pylist()]
    assert rows and stats["kinds"] and set(stats["kinds"]) <= {"mate1", "mate2", "only"}
    with EnginePool(1, EngineLimit(depth=8), multipv=5) as pool:
        for row in rows:  # labelled like every P: line: the engine's MultiPV, best first, B: the best
            analysis = pool.analyse(row["fen"])
            assert row["task"] == "P" and row["moves"] == [e.move for e in analysis]
            assert parse_policy_completion(row["completion"]).best == row["best"] == analysis[0].move
            assert tactic_kind(chess.Board(row["fen"]), analysis) == row["kind"]
    assert stats["rows"]["validation"] == {}


def test_split_is_by_game_and_held_out_positions_win():
    game = GameRecord(chess.STARTING_FEN, ["e2e4", "e7e5"], "max_plies", [0, 1])
    assert game_split(game, 0.0, 1.0) == "test" and game_split(game, 0.0, 0.0) == "train"
    splits = {
        game_split(GameRecord(chess.STARTING_FEN, [m], "x", [0]), 0.1, 0.3) for m in ("e2e4", "d2d4", "g1f3")
    }
    assert splits <= {"train", "validation", "test"}
    a, b = {"fen": MATE1, "kind": "mate1"}, {"fen": MATE1.replace(" 0 1", " 5 9"), "kind": "mate1"}
    kept = held_out_first([([a], ["train"]), ([b, {"fen": ONLY}], ["test", "train"])])
    assert kept == [(b, "test"), ({"fen": ONLY}, "train")]  # the same position (any clocks): test's copy only


def test_tactics_suite_counts_each_kind(pool):
    best_only = pool.analyse(ONLY)[0].move
    answers = {MATE1: "a1a8", MATE2: pool.analyse(MATE2)[0].move, ONLY: "h3h1"}

    def generate(prompts, **kwargs):
        out = []
        for p in prompts:
            fen = next(f for f in answers if policy_prompt(f) == p)
            out.append(policy_completion([answers[fen]], [0.0], answers[fen]))
        return out

    fens = [MATE1, MATE2, ONLY]
    figures = tactics_suite(generate, fens, ["mate1", "mate2", "only"], ["a1a8", answers[MATE2], best_only])
    assert figures["greedy/mate_in_one"].value == 1.0 and figures["greedy/mate_in_one"].n == 1
    assert figures["greedy/mate_in_two_first_move"].value == 1.0
    assert figures["greedy/only_move"].value == float(best_only == "h3h1")
    assert figures["greedy/legal_move"].value == 1.0


def test_mix_replaces_policy_prompts_whole_and_groups_alike():
    tactic = {"prompt": policy_prompt(MATE1), "task": "P", "kind": "mate1", "best": "a1a8", "fen": MATE1}
    batch = [{"prompt": f"P: {i}", "task": "P", "kind": "", "best": "", "fen": ""} for i in range(200)]
    batch = [row for row in batch for _ in range(2)] + [{"prompt": "A: x", "task": "A", "kind": "capture",
                                                         "best": "", "fen": ""}]  # fmt: skip
    out, figures = TacticsMix([tactic], 0.25, seed=0).mix(batch, step=3)
    replaced = [r for r in out if r["kind"] == "mate1"]
    assert 0.15 < figures["tactics/mixed_fraction"] < 0.35 and replaced[0] == tactic
    assert all(out[i]["prompt"] == out[i + 1]["prompt"] for i in range(0, 400, 2))  # a group's copies agree
    assert out[-1]["task"] == "A" and all(set(r) == set(batch[0]) for r in out)
    assert TacticsMix([tactic], 0.0, 0).mix(batch, 3) == (batch, {})
    with pytest.raises(ValueError, match="no training rows"):
        TacticsMix([], 0.5, 0)


def test_random_games_split_by_game_not_position():
    rng = random.Random(0)
    games = []
    for _ in range(40):
        board = chess.Board()
        for _ in range(20):
            board.push(rng.choice(list(board.legal_moves)))
        games.append(GameRecord(chess.STARTING_FEN, [m.uci() for m in board.move_stack], "max_plies", []))
    splits = [game_split(g, 0.0, 0.5) for g in games]
    assert 5 < splits.count("test") < 35  # a hash of the whole game spreads games over both splits


def test_tactics_flags_need_their_data():
    from rookworld_trl.grpo.config import GRPOScriptArguments

    with pytest.raises(ValueError, match="need tactics_dataset"):
        GRPOScriptArguments(dataset_name="d", tactics_ratio=0.25)
    with pytest.raises(ValueError, match="tactics_ratio must be in"):
        GRPOScriptArguments(dataset_name="d", tactics_dataset="t", tactics_ratio=1.5)
    assert (
        GRPOScriptArguments(dataset_name="d", tactics_dataset="t", tactics_replay_coef=1.0).tactics_ratio == 0
    )
