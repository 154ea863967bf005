"""The experiments of scripts/experiments/ still run on what they read: value_study.py (docs/EXPERIMENTS.md, the
value head's ceiling) and tactics_sampling.py ("Tactics", the exploration pilot) on small inputs in the slow tier,
time_mistakes.py on one mistake. warmup_pilot.sh (~40 min) is checked by name only (tests/test_run_scripts.py).

    .venv/bin/python -m pytest tests/test_experiments.py              (add -m slow for the two studies, ~20 s)
"""

import re
import subprocess
import sys

import chess
import pandas as pd
import pytest
from tiny_grpo import ROOT

from rookworld_trl.chess.formats import policy_prompt

pytestmark = pytest.mark.integration  # each runs a script in a subprocess

START = policy_prompt(chess.STARTING_FEN)


def experiment(name, *args):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "experiments" / name), *args],
                         capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow  # a script's study (~10 s quiet)
def test_value_study_knows_a_position_from_its_siblings(tmp_path):
    """Two positions, each answered twice the same way: the siblings' mean return is each sample's own (EV 1);
    the heads' figures are finite, measured on batches they had not trained on."""
    after_e4 = policy_prompt("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1")
    (tmp_path / "completions").mkdir()
    for step in (1, 2, 3):
        rows = [
            {"prompt": p, "completion": c, "policy_reward": r}
            for p, c, r in [(START, " e2e4 e2e4 g1f3 E: 1 1 2 B: g1f3", 0.9), (after_e4, " e7e5 a1a8 E: 1 2 B: a1a8", 0.3)]
            for _ in range(2)
        ]  # fmt: skip
        pd.DataFrame(rows).to_parquet(tmp_path / "completions" / f"completions_{step:05d}.parquet")
    lines = experiment("value_study.py", str(tmp_path), "--last", "2").splitlines()
    figures = {line.split()[0]: float(line.split()[-1]) for line in lines[-5:]}
    assert figures["sibling"] == 1.0
    assert all(abs(figures[k]) < 1e3 for k in ("token", "linear", "mlp", "model"))


@pytest.mark.slow  # generation on a few positions (~10 s quiet)
def test_tactics_sampling_counts_solutions_per_temperature():
    """The exploration pilot of docs/EXPERIMENTS.md ("Tactics"): one line per temperature, shares in [0, 1],
    and no more solved answers than legal ones."""
    out = experiment("tactics_sampling.py", "rookworld_trl/assets/model", "--positions", "3", "--samples", "2",
                     "--temperatures", "0.25,1.0")  # fmt: skip
    rows = [re.findall(r"([\d.]+)%", line) for line in out.splitlines() if line.startswith("T=")]
    assert len(rows) == 2
    for legal, solved, groups in (map(float, r) for r in rows):
        assert 0 <= solved <= legal <= 100 and 0 <= groups <= 100


def test_time_mistakes_times_a_mistyped_command():
    """One row per mistake: seconds, exit code, stderr lines, traceback or not, the line printed (~1 s)."""
    out = experiment("time_mistakes.py", "--only", "rookworld trian").splitlines()
    assert out[0].split()[:5] == ["mistake", "s", "exit", "lines", "tb"]
    assert len(out) == 2, out
    row = out[1].split()
    assert row[:3] == ["8", "rookworld", "trian"]
    assert float(row[3]) > 0 and row[4:7] == ["2", "1", "no"]
    assert "did you mean train?" in out[1]
