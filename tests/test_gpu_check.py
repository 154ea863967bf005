"""scripts/gpu_check.sh, the one command of a GPU session, runs end to end and names the device: on a CPU machine
every row but the GPU runs PASSes and those SKIP; on a GPU machine they run too and our compiled step at the 80gb
recipe's batch recompiles nothing after step 1. Slow tier (doctor and the GPU-relevant tests: minutes):

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
    device = next(line for line in report.splitlines() if line.startswith("Device: "))
    if not torch.cuda.is_available():
        assert device.startswith("Device: CPU only")
        assert (
            "| bench | SKIP |" in report and "| bench_80gb | SKIP |" in report and "SKIP    no CUDA" in report
        )
        return
    assert torch.cuda.get_device_name(0) in device
    for name in ("main_job_gpu", "bench", "bench_80gb"):
        assert f"| {name} | PASS |" in report, report
    compiled = next(line for line in report.splitlines() if line.startswith("| ours_compiled |"))
    assert re.split(r"\s*\|\s*", compiled)[9] == "0", compiled  # recompilations after step 1
