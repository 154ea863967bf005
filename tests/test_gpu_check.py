"""scripts/gpu_check.sh, the one command of a GPU session, runs end to end: on a CPU machine every row but the
bench PASSes and the bench SKIPs; on a GPU machine the bench runs too and our compiled step recompiles nothing
after step 1. Slow tier (doctor and the GPU-relevant tests: minutes):

    .venv/bin/python -m pytest -m slow tests/test_gpu_check.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_gpu_check_writes_one_report_with_a_row_per_path(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_STEPS": "5"}
    done = subprocess.run(["bash", "scripts/gpu_check.sh", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3000)  # fmt: skip
    report = (tmp_path / "report.md").read_text()
    assert done.returncode == 0, report
    for name in ("environment", "doctor", "tests"):
        assert f"| {name} | PASS |" in report, report
    assert "## rookworld doctor" in report and "GRPO, 2 steps" in report
    if not torch.cuda.is_available():
        assert "| bench | SKIP |" in report and "SKIP    no CUDA" in report
        return
    assert "| bench | PASS |" in report
    compiled = next(line for line in report.splitlines() if line.startswith("| ours_compiled |"))
    assert re.split(r"\s*\|\s*", compiled)[5] == "0", compiled  # recompilations after step 1
