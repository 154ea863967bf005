"""scripts/build_default_model.sh at its smallest: every stage but `ship` (which overwrites the shipped model) on a
few games and steps, with real Stockfish, the SFT on the carried text-only lines as on a GPU machine; each stage
resumes or is skipped when re-run, a cooldown finishes the SFT's last checkpoint, and `status` reports.

    .venv/bin/python -m pytest -m slow tests/test_build_default_model.py     # ~3 min on 2 cores
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors import safe_open
from tiny_grpo import ROOT
from transformers import GPT2LMHeadModel

TINY = {
    "DATA": "--selfplay 2 --random 4 --plies_per_game 4 --max_plies 30 --depth 4 --seed 1 "
    "--validation_fraction 0.2 --test_fraction 0.1",
    "SFT_ARGS": "--save_steps 2 --eval_steps 2 --per_device_train_batch_size 8 --max_eval_samples 16 "
    "--format_check_samples 4 --logging_steps 2",
    "EVAL_ARGS": "--policy_samples 12 --env_samples 12 --tactics_samples 12",
    "WORKERS": "1",
    "PYTHON": sys.executable,
}


def build(tmp_path, *stages, sft_steps=4, sft_args="", ok=True, **settings):
    # sft trains on the text-only lines `carry` writes, as a GPU machine does
    env = {
        **os.environ,
        **TINY,
        "BUILD": str(tmp_path),
        "CARRY": str(tmp_path / "carry"),
        "SFT_DATA": str(tmp_path / "carry"),
        **settings,
    }
    env["SFT_ARGS"] += f" --max_steps {sft_steps} {sft_args}"
    cmd = ["bash", str(ROOT / "scripts" / "build_default_model.sh"), *stages]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert (result.returncode == 0) == ok, (result.stdout + result.stderr)[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_the_build_runs_resumes_and_reports(tmp_path):
    out = build(tmp_path, "data", "carry", "sft", sft_steps=2)
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert stats["excluded"]["positions"] > 5000  # the shipped held-out splits are kept out of training
    shipped = [
        pq.read_metadata(ROOT / "rookworld_trl" / "assets" / d / "train.parquet").num_rows
        for d in ("data", "tactics")
    ]
    train = sum(stats["rows"]["train"].values()) + sum(shipped)  # the carry adds the shipped train splits
    assert f"carry: train {train:,} rows" in out and (tmp_path / "carry" / "validation.parquet").is_file()
    assert (tmp_path / "sft" / "checkpoint-2").is_dir() and "build: sft done" in out
    # a longer SFT resumes from the last checkpoint once its marker is gone; the data stage is skipped
    (tmp_path / "sft.done").unlink()
    out = build(tmp_path, "data", "sft", "curve", "pack", "eval", "status", sft_steps=8)
    assert "build: data done (" in out and "resuming from" in out and "(step 2)" in out
    curve = (tmp_path / "sft" / "curve.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in curve[2:]] == [
        "2",
        "4",
        "8",
    ]  # doubling steps and the last
    assert (tmp_path / "sft" / "curve.png").stat().st_size > 0
    # pack stores the weights in bf16 (what ships); they load as fp32, and the eval after it reads the packed model
    packed = safe_open(tmp_path / "packed" / "model.safetensors", "pt")
    dtypes = {packed.get_tensor(k).dtype for k in packed.keys()}  # noqa: SIM118 (a safe_open handle is no dict)
    assert dtypes == {torch.bfloat16}
    assert GPT2LMHeadModel.from_pretrained(tmp_path / "packed").dtype == torch.float32
    eval_json = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert eval_json["settings"]["model"].endswith("packed")
    suites = eval_json["suites"]
    assert {"policy", "env", "tactics"} <= set(suites)
    lines = [line.split("\t") for line in (tmp_path / "timings.tsv").read_text().splitlines()]
    assert [line[0] for line in lines] == ["data", "carry", "sft", "sft", "curve", "pack", "eval"]
    # where each sitting ran: the SFT's precision on a CPU with bf16 dot products (the build turns bf16 on there)
    flags = Path("/proc/cpuinfo").read_text().split()
    # nproc, as the build counts them: it honours OMP_NUM_THREADS (1 in a pytest-xdist worker)
    cores = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip() + " cores"
    sft = f"CPU{' bf16' if {'avx512_bf16', 'amx_bf16'} & set(flags) else ''}, {cores}"
    assert [line[2] for line in lines[1:4]] == [f"CPU, {cores}", sft, sft]
    assert "data: 6 of 6 games labelled" in out and "sft: checkpoint 8" in out and "curve: 3 point(s)" in out

    # the newest checkpoint (8) is in the SFT's own decay: no cooldown; checkpoint 4, at the constant rate, is cooled
    # down to step 5 from there (the rate's schedule: tests/test_sft.py) and joins the curve as a finished point
    out = build(tmp_path, "cooldown", ok=False)
    assert "build: checkpoint 8 is in the SFT's own decay" in out and "COOLDOWN_FROM to a step <= 6" in out
    (tmp_path / "curve.done").unlink()
    out = build(tmp_path, "cooldown", "curve", "status", COOLDOWN_FROM="4")
    assert "resuming from" in out and "sft/checkpoint-4 (step 4)" in out and "build: cooldown-4 done" in out
    curve = (tmp_path / "sft" / "curve.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in curve[2:]] == ["2", "4", "5", "8"]  # by tokens trained
    assert curve[-2].split("|")[3].strip().endswith("(cooldown)")
    assert "cooldown-4: checkpoint 5" in out and "curve: 4 point(s)" in out

    # a sitting with a deadline (SFT_S): SIGTERM saves the step it reached, the stage stays open for the next sitting
    (tmp_path / "sft.done").unlink()
    out = build(tmp_path, "sft", sft_steps=100_000, sft_args="--save_steps 100000", SFT_S="90")
    assert "build: sft stopped at its deadline" in out and not (tmp_path / "sft.done").exists()
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "sft").glob("checkpoint-*"))
    assert steps[-1] > 8, steps  # the stopped step's checkpoint
    assert (tmp_path / "timings.tsv").read_text().splitlines()[-1].split("\t")[-1] == "deadline"

    # COOLDOWN_DECAY: checkpoint 4 decayed over 3 steps (to 7), not the recipe's share (to 5): at step 6 the rate is
    # below half its peak (1-sqrt: 0.18 of it)
    shutil.rmtree(tmp_path / "cooldown-4")
    (tmp_path / "cooldown-4.done").unlink()
    out = build(tmp_path, "cooldown", COOLDOWN_FROM="4", COOLDOWN_DECAY="3")
    assert "sft/checkpoint-4 (step 4)" in out and "build: cooldown-4 done" in out
    state = json.loads((tmp_path / "cooldown-4" / "checkpoint-7" / "trainer_state.json").read_text())
    rates = {e["step"]: e["learning_rate"] for e in state["log_history"] if "learning_rate" in e}
    peak = yaml.safe_load((ROOT / "recipes" / "sft_strong_model.yaml").read_text())["learning_rate"]
    assert state["max_steps"] == 7 and 0 < rates[6] < 0.5 * peak, rates
