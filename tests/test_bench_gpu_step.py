"""scripts/bench/bench_gpu_step.py: its model-FLOPs count (scripts/bench/measure.py, loaded from its file: no
script is on sys.path) against a hand count, its children's environment, and (slow tier) the completions sweep
on the embedded model on this CPU: one row per point with s/step, completions/s, MFU and peak memory.

    .venv/bin/python -m pytest tests/test_bench_gpu_step.py          (add -m slow for the sweep, ~3 min)
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def load_measure():
    """scripts/bench/measure.py as a module of its own (it imports only installed packages at import)."""
    spec = importlib.util.spec_from_file_location("bench_measure", ROOT / "scripts" / "bench" / "measure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


measure = load_measure()


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


@pytest.mark.slow
def test_the_completions_sweep_runs_on_the_embedded_model(tmp_path):
    """The sweep of the issue (64, 256, 1,024 completions per step) on this CPU: our step, 2 steps a point, the
    124M recipe with 32 new tokens (~5 min on 2 idle cores)."""
    out, recipe = tmp_path / "sweep.json", tmp_path / "recipe.yaml"
    short = {
        **yaml.safe_load((ROOT / "recipes" / "grpo_rookworld_124m_gpu.yaml").read_text()),
        "max_completion_length": 32,
    }
    recipe.write_text(yaml.safe_dump(short))  # small steps: 32 new tokens instead of 96
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "bench_gpu_step.py"), "--model", "embedded",
                           "--variants", "ours", "--steps", "2", "--recipe", str(recipe), "--completions",
                           "64,256,1024", "--json", str(out), "--markdown", str(tmp_path / "sweep.md")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert "fp32 matmul" in figures["peak"] and figures["peak_flops"] > 0
    rows = [figures["results"][f"ours@{c}"] for c in (64, 256, 1024)]
    for row in rows:
        assert row["s_per_step"] > 0 and row["peak_gib"] > 0
        assert row["completions_per_s"] == pytest.approx(row["completions"] / row["s_per_step"])
        assert row["mfu"] == pytest.approx(
            row["tflop_per_step"] * 1e12 / row["s_per_step"] / figures["peak_flops"]
        )
        assert f"| ours | {row['completions']} |" in done.stdout
    assert rows[2]["tflop_per_step"] == pytest.approx(16 * rows[0]["tflop_per_step"])
