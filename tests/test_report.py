"""report: PNG curves and a markdown summary from a metrics JSONL in the GRPO stage's format."""

import json
from pathlib import Path

import pytest

from rookworld_trl.stages.eval.charts import (
    main,
    moving_average,
    panel_keys,
    quarter_trend,
    report,
    run_summary,
    series,
)
from rookworld_trl.training.jsonl import read_jsonl

PNG = b"\x89PNG\r\n\x1a\n"


def grpo_row(step: int) -> dict:
    return {
        "step": step,
        "epoch": step / 10,
        "time": 1700000000.0 + step,
        "loss": 0.01 * step,
        "grad_norm": 1.0 / step,
        "learning_rate": 1e-5 * step,
        "reward": 0.1 * step,
        "reward_std": 0.2,
        "rewards/policy_reward/mean": 0.05 * step,
        "rewards/env_reward/mean": 0.9,
        "policy/best_move": 0.1,
        "env/new_fen_exact": 0.95,
        "kl": 0.001 * step if step > 1 else None,  # TRL's JSON writer turns NaN into null
        "beta": 0.04,
        "clip_ratio/low_mean": 0.0,
        "clip_ratio/region_mean": 0.01,
        "entropy": 1.5 - 0.1 * step,
        "completions/mean_length": 40.0,
        "completions/max_length": 64,
        "step_time": 2.5,
        "memory/peak_gb": 1.2,
    }


def write_run(tmp_path: Path, rows: list[dict], torn: bool = False) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    text = "".join(json.dumps(r) + "\n" for r in rows) + ("\n" + '{"step": 9, "rew' if torn else "")
    (run / "metrics.jsonl").write_text(text)
    return run


def test_report_writes_panels_and_summary(tmp_path):
    rows = [grpo_row(s) for s in (1, 2, 3)]
    rows.append(
        {"step": 3, "epoch": 0.3, "eval/policy/greedy/best_move_accuracy": 0.25, "eval/env/invalid": 0.0}
    )
    run = write_run(tmp_path, rows, torn=True)
    assert len(read_jsonl(str(run / "metrics.jsonl"))) == 4  # the torn last line of a killed run is dropped
    written = report(str(run))
    panels = {
        "reward", "reward_components_policy", "reward_components_env", "kl", "beta", "clip_fraction",
        "entropy", "lengths", "learning_rate", "step_time", "loss", "grad_norm", "eval", "learning_curve", "reward_spread",
    }  # fmt: skip
    assert set(written) == panels | {"summary"}
    for name in panels:
        assert Path(written[name]).read_bytes()[:8] == PNG and Path(written[name]).parent == run / "report"
    text = Path(written["summary"]).read_text()
    assert "4 log rows, steps 1 to 3." in text
    assert "| reward | 0.1 | 0.3 | 0.1 | 0.3 |" in text
    assert "| kl | 0.002 | 0.003 | 0.002 | 0.003 |" in text  # the null at step 1 is skipped
    assert "| eval/policy/greedy/best_move_accuracy | 0.25 | 0.25 |" in text
    assert "Not plotted: `memory/peak_gb`." in text and "![kl](kl.png)" in text


def test_long_run_gets_smoothed_curves_and_the_reward_trend(tmp_path):
    rows = [{**grpo_row(s), "reward": 0.3 + 0.001 * s + (0.05 if s % 2 else -0.05)} for s in range(1, 41)]
    rows += [{"step": s, "eval/policy/greedy/legal_best_move": 0.5 + s / 400} for s in (0, 20, 40)]
    written = report(str(write_run(tmp_path, rows)))
    assert "learning_curve" in written and Path(written["learning_curve"]).read_bytes()[:8] == PNG
    text = Path(written["summary"]).read_text()
    first, last, (low, high) = quarter_trend([r["reward"] for r in rows[:40]])
    assert round(last - first, 3) == 0.03 and low < 0.03 < high
    assert f"first quarter {first:.3f}, last quarter {last:.3f}, difference +0.030" in text


def test_moving_average_and_trend_need_enough_points():
    assert moving_average([2.0, 4.0, 6.0], 5) == [2.0, 3.0, 4.0]
    assert quarter_trend([1.0] * 7) is None
    assert quarter_trend([0.0] * 4 + [1.0] * 4) == (0.0, 1.0, (1.0, 1.0))


def test_only_existing_keys_are_plotted(tmp_path):
    rows = [{"step": s, "reward": 0.5, "learning_rate": 1e-5, "completions/mean_length": 10} for s in (1, 2)]
    run = write_run(tmp_path, rows)
    out = tmp_path / "elsewhere"
    assert main([str(run / "metrics.jsonl"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "learning_rate.png",
        "lengths.png",
        "report.md",
        "reward.png",
    ]


def test_series_and_panels():
    data = series(
        [{"step": 1, "kl": 0.1, "flag": True, "note": "x"}, {"step": 2, "kl": float("nan")}, {"kl": 3.0}]
    )
    assert data == {"kl": ([1], [0.1])}
    assert panel_keys(["rewards/a/mean", "rewards/a/std", "reward", "eval/x"]) == {
        "reward": ["reward", "rewards/a/mean"],
        "eval": ["eval/x"],
    }
    value_run = ["value/explained_variance/P", "value/gae_used", "value/loss", "adv/mean/P", "adv/std/A"]
    assert panel_keys(value_run) == {
        "value_explained_variance": ["value/explained_variance/P", "value/gae_used"],
        "value_loss": ["value/loss"],
        "advantages": ["adv/mean/P", "adv/std/A"],
    }


def test_missing_metrics_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        report(str(tmp_path))


def test_run_summary_has_the_trend_and_the_headline_figures(tmp_path):
    rows = [{**grpo_row(s), "reward": 0.3 + 0.01 * s} for s in range(1, 21)] + [
        {"step": 20, "train_runtime": 90}
    ]
    run = write_run(tmp_path, rows)
    (run / "eval").mkdir()
    legal = {
        "percent": True,
        "model": {"value": 0.7, "ci": [0.66, 0.74], "n": 500},
        "baseline": {"value": 0.62, "ci": [0.58, 0.66], "n": 500},
        "delta": {"value": 0.08, "ci": [0.05, 0.11]},
    }
    nothing_listed = {  # a model that lists no move has no listed-move precision
        "percent": True,
        "model": {"value": None, "ci": [None, None], "n": 0},
        "baseline": {"value": 0.59, "ci": [0.57, 0.61], "n": 500},
        "delta": {"value": None, "ci": [None, None]},
    }
    suites = {"greedy/legal_best_move": legal, "greedy/watch/precision": nothing_listed}
    (run / "eval" / "eval.json").write_text(json.dumps({"suites": {"policy": suites}}))
    text = run_summary(str(run))
    assert "precision" not in text
    assert "first quarter 0.330 -> last quarter 0.480  +0.150" in text
    assert "P: legal best move" in text and "62.0% ->   70.0%  +8.0 [+5.0, +11.0]* (n=500)" in text
    assert "steps trained    20 in 1.5 min" in text
    (run / "eval" / "eval.md").write_text("table")
    assert (
        run_summary(str(run)).splitlines()[-1] == f"  outputs: {run / 'eval' / 'eval.md'}"
    )  # only what exists


def test_run_summary_says_how_often_the_value_head_gave_the_advantages(tmp_path):
    ev = [float("nan")] + [0.01 * s for s in range(1, 20)]  # the first batch: no figure yet
    rows = [
        {**grpo_row(s), "value/explained_variance": e, "value/gae_used": float(e >= 0.15)}
        for s, e in enumerate(ev, start=1)
    ]
    line = next(x for x in run_summary(str(write_run(tmp_path, rows))).splitlines() if "value head" in x)
    assert "last 10 steps 0.14 (max 0.19); GAE on 5 of 20 steps" in line
    (tmp_path / "b").mkdir()
    assert "value head" not in run_summary(str(write_run(tmp_path / "b", [grpo_row(1)])))
