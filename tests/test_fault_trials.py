"""scripts/fault_trials.py, slow tier: its fast part (in-process faults on the real stage, ~2 min here) and all of
it (+ kills, Ctrl-C, Stockfish kills, lr 1e3 and a full disk). The default tier covers the same faults one at a
time (tests/test_faults.py, tests/test_grpo_resume.py).

    .venv/bin/pytest -m slow tests/test_fault_trials.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # scripts/fault_trials.py runs the stage

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fault_trials.py"


def load_script():
    spec = importlib.util.spec_from_file_location("fault_trials", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_fault_trials_fast_part(tmp_path, capsys):
    assert load_script().main(["--fast", "--steps", "4", "--out", str(tmp_path)]) == 0, (
        capsys.readouterr().out
    )
    out = capsys.readouterr().out
    assert "FAIL" not in out and "identical 2/2" in out, out


@pytest.mark.slow
def test_fault_trials_all(tmp_path, capsys):
    code = load_script().main(["--steps", "4", "--kills", "3", "--engine_kills", "3", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "FAIL" not in out, out
