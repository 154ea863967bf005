"""Our GRPO step against plain TRL's, side by side in one run (scripts/bench_step.py at equal model, prompts,
completions per step and length): the ratio, never seconds, so the test holds on a fast or a slow machine.
Slow tier (two trainers, a few steps each: minutes on 2 cores):

    .venv/bin/python -m pytest -m slow tests/test_step_ratio.py
"""

import json
import subprocess
import sys

import pytest
from tiny_grpo import ROOT

pytestmark = pytest.mark.slow
MOST = 0.6  # ours / plain TRL; docs/PERFORMANCE.md has the figures behind it


def test_our_step_takes_at_most_0_6_of_plain_trls(tmp_path):
    out = tmp_path / "ratio.json"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "bench_step.py"),
        "--what",
        "step",
        "--steps",
        "5",
        "--json",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    ratio = json.loads(out.read_text())["ratio"]
    assert ratio <= MOST, f"our step is {ratio:.2f}x plain TRL's (at most {MOST}):\n{done.stdout}"
