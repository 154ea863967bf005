"""The scripts that read a finished run for docs/EXPERIMENTS.md: scripts/read_completions.py (what the policy wrote,
from completions/*.parquet), scripts/experiment_row.py (the row: paired eval, reward trend, watch, value head) and
scripts/five_seeds.py (the seeds' table),
on a run folder written here with known answers; and (slow tier) every benchmark (scripts/bench/bench_*.py) at
its smallest setting, so that a rename or a move in the package fails here rather than in the next session that
runs one. Every benchmark, experiment (scripts/experiments/) and shell script has a run here, a test that runs
it, or a reason it is not run.

    .venv/bin/python -m pytest tests/test_run_scripts.py
    .venv/bin/python -m pytest -m slow tests/test_run_scripts.py        # the benchmarks (~10 min on 2 cores)
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import chess
import pandas as pd
import pytest
import torch
from tiny_grpo import ROOT
from transformers import GPT2Config, GPT2LMHeadModel

from rookworld_trl.chess.formats import policy_prompt
from rookworld_trl.stages.cli import COMMANDS

START = policy_prompt(chess.STARTING_FEN)
ANSWERS = [  # precision 0.5, B: legal, selection +0.5 / precision 1, B: legal / precision 0.5, B: illegal, -0.5
    " e2e4 d2d4 e2e5 e3e4 E: 1 2 3 4 B: d2d4",
    " e2e4 e2e4 g1f3 E: 1 1 2 B: g1f3",
    " e2e5 d2d4 E: 1 2 B: e2e5",
]


def write_run(run, with_value: bool):
    (run / "completions").mkdir(parents=True)
    for step in (1, 2):
        rows = [{"step": step, "prompt": START, "completion": c} for c in ANSWERS]
        rows.append({"step": step, "prompt": "A: not a P: prompt", "completion": " anything"})
        pd.DataFrame(rows).to_parquet(run / "completions" / f"completions_{step:05d}.parquet")
    metrics = [{"step": s, "reward": 0.3 + 0.01 * s + 0.002 * (s % 3)} for s in range(1, 41)]
    if with_value:
        for row in metrics:
            row.update({"value/explained_variance": 0.1, "value/gae_used": 1.0, "value/grad_norm": 0.5})
    metrics.append({"step": 40, "train_runtime": 300.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    delta = {"value": 0.05, "ci": [0.02, 0.08]}
    suites = {
        "policy": {
            "greedy/legal_best_move": {"model": {"value": 0.65}, "baseline": {"value": 0.6}, "delta": delta},
            "greedy/best_move_accuracy": {"delta": {"value": -0.01, "ci": [-0.03, 0.01]}},
            "greedy/top5_move_accuracy": {"delta": {"value": 0.004, "ci": [-0.01, 0.02]}},
            "greedy/best_move_loss": {"delta": {"value": -0.044, "ci": [-0.064, -0.023]}},
            "greedy/reward": {"delta": {"value": 0.02, "ci": [0.01, 0.03]}},
        },
        "env": {"next_state_accuracy": {"delta": {"value": 0.0, "ci": [-0.02, 0.02]}}},
    }
    (run / "eval_whole").mkdir()
    (run / "eval_whole" / "eval.json").write_text(json.dumps({"suites": suites}))


def script(name, *args):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_read_completions_reads_what_was_written(tmp_path):
    write_run(tmp_path, with_value=False)
    got = dict(line.split(None, 1) for line in script("read_completions.py", str(tmp_path)).splitlines())
    assert got["answers"].strip() == "6"  # P: answers only, both steps
    assert abs(float(got["precision"]) - 2 / 3) < 1e-3  # 0.5, 1, 0.5
    assert abs(float(got["b_legal"]) - 2 / 3) < 1e-3
    assert float(got["selection"]) == 0.0  # +0.5 and -0.5 on the two mixed lists
    assert abs(float(got["distinct"]) - 8 / 3) < 1e-3  # 4, 2 (a repeat counts once), 2


def test_experiment_row_has_the_eval_trend_watch_and_value_head(tmp_path):
    write_run(tmp_path, with_value=True)
    row = script("experiment_row.py", str(tmp_path)).strip().split(" | ")
    assert row[0] == "65.0% vs 60.0%"
    assert row[1] == "legal best move +5.0* [+2.0, +8.0]"
    assert row[2] == "top 1 -1.0 [-3.0, +1.0]"
    assert row[3] == "top 5 +0.4 [-1.0, +2.0]"
    assert row[4] == "B: loss -0.044* [-0.064, -0.023]"  # lower is better
    assert row[5] == "P: reward +0.020* [+0.010, +0.030]"
    assert row[7].startswith("reward trend +0.30")  # 0.01 a step over 30 steps between quarters
    assert row[8].startswith("value head explained variance last 10 steps 0.10 (max 0.10); GAE on 40 of 40")
    assert row[8].endswith("gradient norm max 0.5")
    assert row[9] == "5.0 min training"
    assert row[10].startswith("watch 0.67 / +0.00 / ")


def test_interpolate_writes_the_weights_between(tmp_path):
    """initial + alpha x (trained - initial), tensor by tensor; two shapes give one line, not a traceback."""
    from safetensors.torch import load_file
    from tiny_grpo import make_tiny_model_dir

    initial = make_tiny_model_dir(tmp_path / "initial")
    model = GPT2LMHeadModel.from_pretrained(initial)
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(torch.randn_like(weight))
    model.save_pretrained(tmp_path / "trained")
    script("interpolate.py", initial, str(tmp_path / "trained"), "0.25", str(tmp_path / "mixed"))
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("initial", "trained"))
    mixed = load_file(tmp_path / "mixed" / "model.safetensors")
    for name, tensor in mixed.items():
        assert torch.allclose(tensor, a[name] + 0.25 * (b[name] - a[name]), atol=1e-6), name
    assert not torch.equal(mixed["transformer.h.0.mlp.c_fc.weight"], a["transformer.h.0.mlp.c_fc.weight"])
    assert GPT2LMHeadModel.from_pretrained(tmp_path / "mixed").config.n_layer == 2  # a folder that loads
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "interpolate.py"), initial,
                            str(tmp_path / "trained"), "0.5", str(tmp_path / "mixed")], capture_output=True, text=True)  # fmt: skip
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr
    kept = load_file(tmp_path / "mixed" / "model.safetensors")["transformer.h.0.mlp.c_fc.weight"]
    assert torch.equal(kept, mixed["transformer.h.0.mlp.c_fc.weight"])  # the refused run wrote nothing
    missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "interpolate.py"), str(tmp_path / "none"),
                              str(tmp_path / "trained"), "0.5", str(tmp_path / "m2")], capture_output=True, text=True)  # fmt: skip
    assert (
        missing.returncode != 0
        and "no model.safetensors" in missing.stderr
        and "Traceback" not in missing.stderr
    )
    wider = GPT2Config(vocab_size=8, n_layer=2, n_head=2, n_embd=32, n_positions=16)
    GPT2LMHeadModel(wider).save_pretrained(tmp_path / "other")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "interpolate.py"), initial,
                          str(tmp_path / "other"), "0.5", str(tmp_path / "x")], capture_output=True, text=True)  # fmt: skip
    assert out.returncode != 0 and "not the same shape" in out.stderr and "Traceback" not in out.stderr


def test_compare_env_finds_no_difference_between_a_model_and_itself():
    """The embedded model against itself on 8 test transitions: the same exact rate, nothing lost or won."""
    model = "rookworld_trl/assets/model"
    out = script("compare_env.py", model, model, "--split", "test", "--rows", "8", "--nll_rows", "4")
    rates = re.findall(r"exact (\S+)% of 8, truth NLL (\S+)", out)
    assert len(rates) == 2 and rates[0] == rates[1], out
    assert float(rates[0][0]) > 0 and 0 < float(rates[0][1]) < 1, out  # it writes some states exactly
    assert "test: lost 0, won 0" in out


# ---- every benchmark and shell script runs (slow tier), so that a rename or a move fails a test ----

SMOKE = {  # the script and its smallest setting: seconds to a minute or two each on 2 busy cores
    "scripts/bench/bench_decode.py": ["--against", "HEAD", "--rounds", "2"],
    "scripts/bench/bench_engine.py": ["--n", "6", "--depth", "4", "--repeats", "1"],
    "scripts/bench/bench_gelu.py": ["--batch", "4", "--tokens", "16", "--repeats", "1"],
    "scripts/bench/bench_load.py": ["2000", "--num_proc", "2"],
    "scripts/bench/bench_generate.py": ["--depth", "4", "--games", "1", "--max_plies", "6", "--workers", "1"],
    "scripts/bench/bench_rewards.py": ["--positions", "8", "--depth", "4", "--workers", "1", "--prompts-per-batch", "1"],
    "scripts/bench/bench_step.py": ["--smoke"],
    "scripts/bench/bench_sft.py": ["--steps", "10", "--rounds", "1"],  # two logging intervals: one speed
}  # fmt: skip
ELSEWHERE = {  # run end to end by their own tests
    "scripts/build_default_model.sh": "test_build_default_model.py",
    "scripts/check_floors.sh": "test_floors.py",
    "scripts/gpu_check.sh": "test_gpu_check.py",
    "scripts/rehearse_multinode.sh": "test_multinode.py",
    "scripts/setup.sh": "test_cli.py",
    "scripts/experiments/tactics_sampling.py": "test_experiments.py",
    "scripts/experiments/time_mistakes.py": "test_experiments.py",
    "scripts/experiments/value_study.py": "test_experiments.py",
}
NOT_RUN = {  # what they need; test_unrun_scripts_name_only_what_exists checks the files they name
    "scripts/build_tactics.sh": "~20 min of Stockfish, and it overwrites rookworld_trl/assets/tactics/",
    "scripts/slurm_multinode.sh": "a SLURM cluster with GPUs (sbatch, srun, scontrol)",
    "scripts/experiments/warmup_pilot.sh": "~40 min: an experiment (an SFT warm-up, then two main-job runs and their evals)",
}


def listed_scripts() -> set[str]:
    """The benchmarks, the experiments and the shell scripts, by their path in the repository."""
    scripts = ROOT / "scripts"
    found = {*scripts.glob("bench/bench_*.py"), *scripts.glob("experiments/*"), *scripts.rglob("*.sh")}
    return {p.relative_to(ROOT).as_posix() for p in found}


def test_every_benchmark_experiment_and_shell_script_has_a_run_or_a_reason():
    """A new benchmark, experiment or shell script needs a smallest setting in SMOKE, a test that runs it or a
    reason: else it can rot. scripts/bench/ holds benchmarks (bench_*.py) and measure.py, which they import."""
    assert listed_scripts() == set(SMOKE) | set(ELSEWHERE) | set(NOT_RUN)
    others = {p.name for p in (ROOT / "scripts" / "bench").glob("*.py") if not p.name.startswith("bench_")}
    assert others == {"measure.py"}, others
    for name, test in ELSEWHERE.items():
        assert Path(name).name in (ROOT / "tests" / test).read_text(), f"{test} does not run {name}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMOKE))
def test_script_runs_at_its_smallest_setting(name, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(ROOT / name), *SMOKE[name]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.strip(), "it printed no figures"


@pytest.mark.parametrize("name", sorted(NOT_RUN))
def test_unrun_scripts_name_only_what_exists(name):
    """What a script that no test runs names (recipes, configs, modules, scripts) is there."""
    text = (ROOT / name).read_text()
    paths = set(
        re.findall(
            r"\b((?:recipes|accelerate_configs|scripts|rookworld_trl)/[\w./-]+\.(?:ya?ml|py|sh))", text
        )
    )
    modules = set(re.findall(r"-m (rookworld_trl(?:\.\w+)+)", text))
    assert paths or modules, f"{name} names no file of the repository: is this check still right?"
    for path in paths:
        assert (ROOT / path).exists(), f"{name} names {path}, which is gone"
    for module in modules:
        assert importlib.util.find_spec(module) is not None, f"{name} runs -m {module}, which is gone"
    for command in set(re.findall(r"\$RW (\w+)", text)):
        assert command in COMMANDS, f"{name} runs `rookworld {command}`, which is gone"


def write_seed(run, legal: float, mates: int):
    """An eval.json as the GRPO stage writes it: legal best move's delta and mate in one's count out of 827."""

    def row(model, base, lo, hi):
        return {"model": {"value": model, "n": 827}, "baseline": {"value": base, "n": 827},
                "delta": {"value": model - base, "ci": [lo, hi]}}  # fmt: skip

    suites = {"policy": {"greedy/legal_best_move": row(0.6 + legal, 0.6, legal - 0.02, legal + 0.02)},
              "tactics": {"greedy/mate_in_one": row(mates / 827, 28 / 827, -0.01, 0.03)}}  # fmt: skip
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "eval.json").write_text(json.dumps({"settings": {}, "suites": suites}))


def test_five_seeds_table_has_each_seed_the_mean_and_the_pooled_mates(tmp_path):
    write_seed(tmp_path / "seed0", 0.05, 42)
    write_seed(tmp_path / "seed3", 0.07, 35)
    out = script("five_seeds.py", "--out", str(tmp_path), "--seeds", "0,3", "--table_only").splitlines()
    legal = next(line for line in out if line.startswith("| P: legal best move"))
    assert (
        legal
        == "| P: legal best move | 60.0% | +5.0* [+3.0, +7.0] | +7.0* [+5.0, +9.0] | +6.0 (+5.0 .. +7.0) | 2 / 0 |"
    )
    mates = next(line for line in out if line.startswith("| mate in one"))
    assert "+1.7 [-1.0, +3.0]" in mates  # seed 0: 42 of 827 against 28, interval through 0: no star
    assert out[-1].startswith(
        "mate in one pooled over 2 seeds: 4.66% against the embedded model's 3.39% (1.38x"
    )
