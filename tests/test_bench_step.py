"""Our GRPO step against plain TRL's, side by side in one run (scripts/bench/bench_step.py at equal model, prompts,
completions per step and length): the ratio, never seconds, so the test holds on a fast or a slow machine.
Slow tier (two trainers, a few steps each: minutes on 2 cores):

    .venv/bin/python -m pytest -m slow tests/test_bench_step.py
"""

import json
import subprocess
import sys

import pytest
from tiny_grpo import ROOT

pytestmark = pytest.mark.slow
TARGET = 0.6  # ours / plain TRL, the goal; docs/PERFORMANCE.md has the figures behind both bounds
TODAY = 1.15  # the main job's step, which since 2026-11-26 also replays 16 tactics rows (issue 62) that plain TRL's
# step has no counterpart of: 1.05x on a quiet machine, 1.01x on a loaded one; without them 0.69x-0.79x on two
# machines, 0.89x-0.96x on a third (docs/PERFORMANCE.md, "The step on a quiet machine"). A bound that one machine's
# noise crosses would fail without a change, so the guard is the replay's share (~15%) above parity


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> tuple[float, str]:
    """ours / plain TRL from one run of bench_step.py (shared by both bounds), and its console output."""
    out = tmp_path_factory.mktemp("ratio") / "ratio.json"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "bench" / "bench_step.py"),
        "--what",
        "step",
        "--steps",
        "5",
        "--json",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())["ratio"], done.stdout


@pytest.mark.xfail(strict=True, reason="the step is not yet at 0.6x plain TRL's: when it is, drop this mark")
def test_our_step_takes_at_most_0_6_of_plain_trls(measured):
    ratio, stdout = measured
    assert ratio <= TARGET, f"our step is {ratio:.2f}x plain TRL's (at most {TARGET}):\n{stdout}"


def test_our_step_is_no_slower_than_today(measured):
    ratio, stdout = measured
    assert ratio <= TODAY, f"our step is {ratio:.2f}x plain TRL's (today: at most {TODAY}):\n{stdout}"
