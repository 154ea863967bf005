"""scripts/bench/bench_step.py, the GRPO step benchmark: its model-FLOPs count (scripts/bench/measure.py, loaded
from its file: no script is on sys.path) against a hand count and its children's environment; in the slow tier our
step against plain TRL's in one run (the ratio, never seconds, so the test holds on a fast or a slow machine), the
completions sweep with its MFU, and the 124M shape and a model size of the flags (minutes on 2 cores each).

    .venv/bin/python -m pytest tests/test_bench_step.py            (add -m slow for the runs)
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench" / "bench_step.py"
TARGET = 0.6  # ours / plain TRL, the goal; docs/PERFORMANCE.md has the figures behind both bounds
TODAY = 1.15  # the main job's step also replays 16 tactics rows that plain TRL's step has no counterpart of:
# 1.05x on a quiet machine, 1.01x on a loaded one; without them 0.69x-0.79x on two machines, 0.89x-0.96x on a
# third (docs/PERFORMANCE.md, "The step on a quiet machine"). A bound that one machine's noise crosses would fail
# without a change, so the guard is the replay's share (~15%) above parity


def load_measure():
    """scripts/bench/measure.py as a module of its own (it imports only installed packages at import)."""
    spec = importlib.util.spec_from_file_location("bench_measure", ROOT / "scripts" / "bench" / "measure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


measure = load_measure()


def bench(*flags: str, cwd: Path, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, str(BENCH), *flags], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_step_flops_match_a_hand_count_for_a_tiny_shape():
    """1 layer of width 2, vocabulary 3; 2 completions in one group, 1 prompt position, 1 completion position.
    N = 12 * 2^2 * 1 = 48 matmul weights. F(T, T_head, S) = 2*48*T + 2*2*3*T_head + 4*2*1*S = 96 T + 12 T_head + 8 S."""
    hand_prefill = 96 * 1 + 12 * 1 + 8 * 1  # one prompt of 1 position: 1 query-key pair
    hand_decode = (
        96 * 2 + 12 * 2 + 8 * 4
    )  # 2 rows, 1 step, each new token attends to prompt + itself: 2 pairs a row
    hand_forward = 96 * 4 + 12 * 4 + 8 * 6  # 2 rows of 2 positions, causal: 1 + 2 = 3 pairs a row
    flops = measure.step_flops(1, 2, 3, completions=2, group=2, prompt=1, completion=1, reference=True)
    assert flops["generation"] == hand_prefill + hand_decode == 364
    assert flops["training"] == 3 * hand_forward == 1440
    assert flops["reference"] == hand_forward == 480
    assert flops["total"] == 364 + 1440 + 480
    assert measure.step_flops(1, 2, 3, 2, 2, 1, 1, reference=False)["reference"] == 0


def test_step_flops_grow_linearly_with_the_completions():
    """Every part is per completion (the prefill per prompt): 16x the completions is 16x the FLOPs."""
    small = measure.step_flops(12, 768, 50257, 64, 8, 128, 128, True)["total"]
    large = measure.step_flops(12, 768, 50257, 1024, 8, 128, 128, True)["total"]
    assert large == pytest.approx(16 * small)


def test_children_inherit_the_environment_with_the_repository_first(monkeypatch, tmp_path):
    """A --target folder on PYTHONPATH (how the H200 image got trl) must reach every variant's process."""
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}/opt/site")
    monkeypatch.setenv("BENCH_MARK", "kept")
    env = measure.child_env()
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), str(tmp_path), "/opt/site"]
    assert env["BENCH_MARK"] == "kept"
    code = "import sys, bench_marker; print(bench_marker.__file__)"
    (tmp_path / "bench_marker.py").write_text("")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(tmp_path / "bench_marker.py")


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> tuple[float, str]:
    """ours / plain TRL from one run of the main job's step (shared by both bounds), and its console output."""
    out = tmp_path_factory.mktemp("ratio")
    done = bench("--what", "step", "--steps", "5", "--json", str(out / "ratio.json"), cwd=out)
    return json.loads((out / "ratio.json").read_text())["ratio"], done.stdout


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the step is not yet at 0.6x plain TRL's: when it is, drop this mark")
def test_our_step_takes_at_most_0_6_of_plain_trls(measured):
    ratio, stdout = measured
    assert ratio <= TARGET, f"our step is {ratio:.2f}x plain TRL's (at most {TARGET}):\n{stdout}"


@pytest.mark.slow
def test_our_step_is_no_slower_than_today(measured):
    ratio, stdout = measured
    assert ratio <= TODAY, f"our step is {ratio:.2f}x plain TRL's (today: at most {TODAY}):\n{stdout}"


@pytest.mark.slow
def test_the_completions_sweep_runs_on_the_embedded_model(tmp_path):
    """The sweep of 64, 256 and 1,024 completions per step on this CPU: our step, 2 steps a point, the 124M
    recipe with 32 new tokens on the embedded model (~5 min on 2 idle cores)."""
    recipe = str(ROOT / "recipes" / "grpo_rookworld_124m_gpu.yaml")
    done = bench("--what", "step", "--variants", "ours", "--steps", "2", "--recipe", recipe, "--max_new", "32",
                 "--completions", "64,256,1024", "--json", str(tmp_path / "sweep.json"), "--markdown",
                 str(tmp_path / "sweep.md"), cwd=tmp_path)  # fmt: skip
    figures = json.loads((tmp_path / "sweep.json").read_text())
    assert "fp32 matmul" in figures["peak"] and figures["peak_flops"] > 0
    rows = [figures["results"][f"ours@{c}x32"] for c in (64, 256, 1024)]
    for row in rows:
        assert row["s_per_step"] > 0 and row["peak_gib"] > 0
        assert row["completions_per_s"] == pytest.approx(row["completions"] / row["s_per_step"])
        assert row["mfu"] == pytest.approx(
            row["tflop_per_step"] * 1e12 / row["s_per_step"] / figures["peak_flops"]
        )
        assert f"| ours | {row['completions']} | 32 |" in done.stdout
    assert rows[2]["tflop_per_step"] == pytest.approx(16 * rows[0]["tflop_per_step"])


@pytest.mark.slow
def test_the_124m_shape_and_a_model_size_run_side_by_side(tmp_path):
    """--model 124m (one block: GPT-2's tokenizer, the 124M recipe) and a fresh 2x64 GPT-2 on the shipped
    tokenizer, one step after the first each: each model's parameters and its step against the first's."""
    done = bench("--what", "step", "--model", "124m,2x64", "--layers", "1", "--variants", "ours", "--steps", "2",
                 "--completions", "16", "--max_new", "16", cwd=tmp_path)  # fmt: skip
    assert "| 124m | ours | 16 | 16 |" in done.stdout and "| 2x64 | ours | 16 | 16 |" in done.stdout
    assert "2x64 ours: " in done.stdout and "x 124m" in done.stdout
