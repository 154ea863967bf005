"""B:'s quality in the eval: best_move_loss (its expected-score loss against the engine's best, as the policy
reward grades B:) and top5_move_accuracy, per item, with paired before/after intervals.

Real Stockfish and python-chess; a scripted `generate` stands in for the model only.
"""

import json

import chess
import pytest
from reward_fixtures import QUEEN_UP, START, needs_stockfish

from rookworld_trl.chess.formats import policy_completion, policy_prompt
from rookworld_trl.grpo.rewards.policy import BEST_ZERO_AT, PolicyGrader, expected_score_loss
from rookworld_trl.stages.eval.charts import panel_keys, run_summary
from rookworld_trl.stages.eval.evaluate import fmt, summarize, write_outputs
from rookworld_trl.stages.eval.suites import delta_interval, policy_suite

pytestmark = needs_stockfish


def answer(analysis, best: str) -> str:
    """The engine's own list and evals, with `best` written as B:."""
    return policy_completion([e.move for e in analysis], [e.pawns for e in analysis], best)


def outside(fen: str, analysis) -> list[str]:
    """Legal moves the analysis does not list."""
    listed = {e.move for e in analysis}
    return [m.uci() for m in chess.Board(fen).legal_moves if m.uci() not in listed]


def quality(pool, fen, analysis, completion, engine=True) -> tuple[float, float]:
    """(best_move_loss, top5_move_accuracy) of one greedy answer."""
    figures = policy_suite(
        lambda prompts, **_: [completion] * len(prompts), [fen], [analysis], engine=pool if engine else None
    )
    return figures["greedy/best_move_loss"].value, figures["greedy/top5_move_accuracy"].value


def test_the_engines_best_move_loses_nothing_and_is_in_the_top_5(pool):
    analysis = pool.analyse(QUEEN_UP)
    assert analysis[0].move == "f3h4"  # Nxh4 wins the queen
    assert quality(pool, QUEEN_UP, analysis, answer(analysis, "f3h4")) == (0.0, 1.0)
    loss, top5 = quality(pool, QUEEN_UP, analysis, answer(analysis, analysis[4].move))  # the 5th line
    assert loss == pytest.approx(expected_score_loss(analysis[0].cp, analysis[4].cp)) and loss > 0.2
    assert top5 == 1.0


def test_a_losing_move_outside_the_analysis_is_searched_as_the_reward_searches_it(pool):
    analysis = pool.analyse(QUEEN_UP)
    assert "e1e2" in outside(QUEEN_UP, analysis)  # Ke2 walks into a mate instead of taking the queen
    loss, top5 = quality(pool, QUEEN_UP, analysis, answer(analysis, "e1e2"))
    bound, _ = quality(pool, QUEEN_UP, analysis, answer(analysis, "e1e2"), engine=False)
    assert top5 == 0.0
    assert loss == pytest.approx(expected_score_loss(analysis[0].cp, -99999))  # mated: the searched eval
    assert bound == pytest.approx(expected_score_loss(analysis[0].cp, analysis[-1].cp)) and bound < loss


def test_the_loss_is_what_the_training_reward_grades_b_by(pool):
    """In quiet positions the loss is small enough that the reward's B: score (zero at BEST_ZERO_AT) shows it."""
    analysis = pool.analyse(START)
    for move in outside(START, analysis)[:4]:
        completion = answer(analysis, move)
        loss, _ = quality(pool, START, analysis, completion)
        _, components = PolicyGrader(pool).score([START], [completion])[0]
        assert loss > 0 and components["best"] == pytest.approx(max(0.0, 1 - loss / BEST_ZERO_AT))


@pytest.mark.parametrize(
    "b_field", [" B: a1a8", " B: e1e3", ""], ids=["blocked", "not-a-king-move", "missing"]
)
def test_an_illegal_or_missing_best_move_is_the_worst_loss(pool, b_field):
    analysis = pool.analyse(QUEEN_UP)
    moves = " ".join(e.move for e in analysis)
    evals = " ".join(str(e.pawns) for e in analysis)
    assert quality(pool, QUEEN_UP, analysis, f" {moves} E: {evals}{b_field}") == (1.0, 0.0)
    assert quality(pool, QUEEN_UP, analysis, "garbage") == (1.0, 0.0)


def test_before_and_after_get_paired_intervals(pool, tmp_path):
    fens = [
        START,
        QUEEN_UP,
        "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1",
        "r1bqkb1r/pppp1ppp/2n2n2/4p2Q/2B1P3/8/PPPP1PPP/RNB1K1NR w KQkq - 4 4",
        "8/8/8/8/8/2k5/8/4K2Q w - - 0 1",
        "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1",
    ]
    analyses = pool.analyse_many(fens)
    # after: the engine's best everywhere; before: an illegal B: (a4 is empty) on three, the second line on three
    after = [answer(a, a[0].move) for a in analyses]
    before = [answer(a, "a4a5" if i < 3 else a[1].move) for i, a in enumerate(analyses)]
    results = []
    for said in (after, before):
        script = dict(zip(map(policy_prompt, fens), said, strict=True))
        results.append(
            {"policy": policy_suite(lambda p, s=script, **_: [s[x] for x in p], fens, analyses, engine=pool)}
        )
    summary = summarize(*results, seed=0)["policy"]
    loss, top5 = summary["greedy/best_move_loss"], summary["greedy/top5_move_accuracy"]
    losses = [1.0] * 3 + [expected_score_loss(a[0].cp, a[1].cp) for a in analyses[3:]]
    assert loss["model"]["value"] == 0.0 and loss["baseline"]["value"] == pytest.approx(sum(losses) / 6)
    assert loss["delta"]["value"] == pytest.approx(-sum(losses) / 6)
    assert loss["delta"]["ci"] == list(
        delta_interval(*(r["policy"]["greedy/best_move_loss"] for r in results))
    )
    low, high = loss["delta"]["ci"]
    assert -1.0 <= low < loss["delta"]["value"] < high < 0  # the paired interval, below 0
    assert top5["delta"]["value"] == pytest.approx(0.5) and top5["delta"]["ci"][0] > 0
    assert loss["lower_is_better"] and "lower_is_better" not in top5

    paths = write_outputs({"policy": summary}, {"model": "after", "baseline": "before"}, str(tmp_path))
    with open(paths["md"]) as f:
        row = next(x for x in f if "best_move_loss" in x)
    assert row.startswith("| greedy/best_move_loss (lower is better) | 0 | ")
    assert f"| {fmt(loss['delta']['value'], False)}* |" in row  # `*`: the interval excludes 0
    with open(paths["json"]) as f:
        saved = json.load(f)["suites"]["policy"]["greedy/best_move_loss"]
    assert saved["delta"] == loss["delta"]


def test_the_run_summary_and_the_learning_curve_show_both(tmp_path):
    loss = {
        "percent": False,
        "lower_is_better": True,
        "model": {"value": 0.31, "ci": [0.29, 0.33], "n": 200},
        "baseline": {"value": 0.4, "ci": [0.37, 0.43], "n": 200},
        "delta": {"value": -0.09, "ci": [-0.12, -0.06]},
    }
    top5 = {**loss, "percent": True, "model": {"value": 0.2, "ci": [0.15, 0.25], "n": 200}}
    (tmp_path / "eval").mkdir()
    suites = {"policy": {"greedy/best_move_loss": loss, "greedy/top5_move_accuracy": top5}}
    (tmp_path / "eval" / "eval.json").write_text(json.dumps({"suites": suites}))
    lines = run_summary(str(tmp_path)).splitlines()
    assert any(
        x.startswith("  B: expected-score loss (lower is better)")
        and "0.400 ->   0.310  -0.090 [-0.120, -0.060]*" in x
        for x in lines
    )
    assert any(x.startswith("  P: best move in engine's top 5") and "40.0% ->   20.0%" in x for x in lines)
    curve = panel_keys(["eval/policy/greedy/best_move_loss", "eval/policy/greedy/top5_move_accuracy"])
    assert curve == {
        "learning_curve": ["eval/policy/greedy/best_move_loss", "eval/policy/greedy/top5_move_accuracy"]
    }
