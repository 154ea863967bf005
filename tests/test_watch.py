"""The reward-hacking watch: listed-move precision, B:'s choice among the list, error kinds and the common first
move, from python-chess alone; and its line in the run summary.

    .venv/bin/python -m pytest tests/test_watch.py
"""

import json

import chess
import pytest

from rookworld_trl.chess.formats import parse_policy_completion
from rookworld_trl.grpo.rewards.policy import NAMES, answer_figures, watch
from rookworld_trl.stages.eval.charts import run_summary

START = chess.STARTING_FEN


def test_a_blind_pick_among_a_mixed_list_shows_as_zero_selection():
    """Two legal and two illegal moves listed: B: legal scores +0.5 selection, B: illegal -0.5; their mean 0."""
    legal_b = answer_figures(START, parse_policy_completion(" e2e4 d2d4 e2e5 e3e4 E: 1 2 3 4 B: d2d4"))
    illegal_b = answer_figures(START, parse_policy_completion(" e2e4 d2d4 e2e5 e3e4 E: 1 2 3 4 B: e3e4"))
    assert legal_b["precision"] == illegal_b["precision"] == 0.5
    assert (legal_b["selection"], illegal_b["selection"]) == (0.5, -0.5)
    assert (legal_b["b_best_e"], illegal_b["b_best_e"]) == (0.0, 1.0)  # e3e4 has the highest E:
    assert illegal_b["err_empty_square"] == 0.25 and illegal_b["err_geometry"] == 0.25


def test_selection_is_left_out_where_the_list_is_not_mixed():
    assert answer_figures(START, parse_policy_completion(" e2e4 d2d4 E: 1 2 B: e2e4"))["selection"] is None


def test_batch_figures_skip_what_does_not_parse_and_count_the_common_opening():
    answers = [
        " h2h3 e2e4 E: 0.1 0.3 B: e2e4",
        " h2h3 h2h3 E: 0.1 0.1 B: h2h3",
        " h2h3 d2d4 E: lots B: d2d4",
        " g1f3 E: 1 B: g1f3",
    ]
    got = watch([START] * 4, answers)
    assert got["first_share"] == 1.0  # h2h3 opens answers to the one position, the unparseable one included
    other = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"
    assert watch([START] * 3 + [other], answers)["first_share"] == 0.5  # g1f3 opens the other position
    assert got["distinct"] == pytest.approx((2 + 1 + 1) / 3) and got["precision"] == 1.0
    assert set(got) <= set(NAMES)


def test_the_run_summary_prints_the_watch_from_first_to_last_steps(tmp_path):
    rows = [
        {"step": s, "watch/precision": 0.5 if s <= 10 else 0.7, "watch/distinct": 3.0} for s in range(1, 41)
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    line = next(x for x in run_summary(str(tmp_path)).splitlines() if "watch" in x)
    assert "precision 0.50 -> 0.70" in line and "distinct 3.00 -> 3.00" in line
