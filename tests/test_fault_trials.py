"""scripts/fault_trials.py, slow tier: its fast part (in-process faults on the real stage, ~2 min here) and all of
it (+ kills, Ctrl-C, Stockfish kills, lr 1e3 and a full disk). The default tier covers the same faults one at a
time (tests/test_training_faults.py, tests/test_checkpoints.py).

    .venv/bin/pytest -m slow tests/test_fault_trials.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # scripts/fault_trials.py runs the stage

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fault_trials.py"


def fault_trials(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


@pytest.mark.slow
def test_fault_trials_fast_part(tmp_path):
    done = fault_trials("--fast", "--steps", "4", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "FAIL" not in done.stdout and "identical 2/2" in done.stdout, done.stdout


@pytest.mark.slow
def test_fault_trials_all(tmp_path):
    done = fault_trials("--steps", "4", "--kills", "3", "--engine_kills", "3", "--out", str(tmp_path))
    assert done.returncode == 0 and "FAIL" not in done.stdout, done.stdout + done.stderr[-3000:]
