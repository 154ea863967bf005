"""Checkpoint tiers, completion markers and resume modes of rookworld_trl.grpo (tiny GPT-2 on CPU).

    .venv/bin/pytest tests/test_checkpoints.py

The kill test runs the stage in a real subprocess and SIGKILLs it after its first checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_grpo import make_trainer, train_logs, trainable

from rookworld_trl.grpo.trainer import STATE_FILE
from rookworld_trl.stages.grpo import train
from rookworld_trl.training import checkpoints

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


def fake_checkpoint(path: Path, step: int | None) -> str:
    """A checkpoint dir with a completion marker for `step`, or (step None) without one: a save cut short."""
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"half-written")
    if step is not None:
        checkpoints.mark_complete(str(path), step)
    return str(path)


def test_resolve_resume_modes(tmp_path):
    assert checkpoints.resolve_resume(None, str(tmp_path)) is None
    assert checkpoints.resolve_resume("auto", str(tmp_path)) is None  # nothing yet: a fresh start
    two = fake_checkpoint(tmp_path / "checkpoint-2", 2)
    fake_checkpoint(tmp_path / "checkpoint-10", 10)
    fake_checkpoint(tmp_path / "checkpoint-12", None)
    with pytest.raises(ValueError, match="completion marker"):
        checkpoints.resolve_resume(str(tmp_path / "checkpoint-12"), str(tmp_path))
    assert checkpoints.resolve_resume("auto", str(tmp_path)) == str(
        tmp_path / "checkpoint-10"
    )  # 10 > 2 numerically
    assert not (tmp_path / "checkpoint-12").exists() and len(os.listdir(tmp_path / "incomplete")) == 1
    with pytest.raises(FileNotFoundError, match="no stable checkpoint"):
        checkpoints.resolve_resume("stable", str(tmp_path))
    stable = checkpoints.promote_to_stable(two, str(tmp_path))
    copy, original = Path(stable) / "model.safetensors", Path(two) / "model.safetensors"
    assert not os.path.samefile(copy, original) and copy.read_bytes() == original.read_bytes()  # a real copy
    assert checkpoints.resolve_resume("recovery", str(tmp_path)) == stable
    # going back to step 2 abandons checkpoint-10: a later 'auto' must not jump back onto it
    assert [p for _, p in checkpoints.list_checkpoints(str(tmp_path))] == [two]
    assert os.listdir(tmp_path / "superseded")[0].startswith("checkpoint-10-")
    assert checkpoints.resolve_resume(two, str(tmp_path)) == two


def test_tiers_and_auto_resume_continue_bit_exactly(model_dir, tmp_path):
    kw = dict(save_strategy="steps", save_steps=2, beta=0.01)
    straight = make_trainer(model_dir, tmp_path / "straight", max_steps=6, **kw)
    straight.train()

    out = tmp_path / "run"
    first = make_trainer(model_dir, out, max_steps=6, **kw)
    first.args.max_steps = 4  # stop early but keep the 6-step schedule: as if the process had died at step 4
    first.train()
    assert checkpoints.is_complete(str(out / "checkpoint-4")) and checkpoints.is_complete(
        str(out / "checkpoint-2")
    )
    assert json.loads((out / "checkpoint-4" / STATE_FILE).read_text())["healthy"] is True
    stable = (out / "stable" / "model.safetensors").read_bytes()
    assert stable == (out / "checkpoint-4" / "model.safetensors").read_bytes()

    resumed = make_trainer(model_dir, out, max_steps=6, resume_from_checkpoint="auto", **kw)
    assert train(resumed) == 0
    assert [row["step"] for row in train_logs(resumed)] == [1, 2, 3, 4, 5, 6]
    a, b = trainable(straight.model), trainable(resumed.model)
    assert all(torch.equal(a[n], b[n]) for n in a), "resume must reproduce the uninterrupted run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "tokenizer.json").is_file()


def test_stable_checkpoint_is_kept_apart_from_rotation(model_dir, tmp_path):
    kw = dict(save_strategy="steps", save_steps=1, save_total_limit=1, beta=0.01, learning_rate=5e-2)
    # KL is 0 at step 1 (healthy), then grows past kl_warn: later checkpoints are not stable
    trainer = make_trainer(model_dir, tmp_path, max_steps=3, kl_warn=1e-9, kl_stop=1e3, **kw)
    trainer.train()
    assert [p for _, p in checkpoints.list_checkpoints(str(tmp_path))] == [str(tmp_path / "checkpoint-3")]
    state = json.loads((tmp_path / "stable" / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and checkpoints.is_complete(str(tmp_path / "stable"))
    resumed = make_trainer(model_dir, tmp_path, max_steps=3, kl_warn=1e-9, kl_stop=1e3, **kw)
    resumed.args.resume_from_checkpoint = "stable"
    assert train(resumed) == 0 and resumed.state.global_step == 3


SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from transformers import TrainerCallback
from tiny_grpo import make_trainer
from rookworld_trl.stages.grpo import train

class Pace(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        print("BEGIN", state.global_step, flush=True)
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep({sleep})

trainer = make_trainer({model!r}, {out!r}, [Pace()], max_steps=8, save_strategy="steps", save_steps=2,
                       resume_from_checkpoint="auto", beta=0.01)
sys.exit(train(trainer))
"""


def run_stage(model: str, out: Path, sleep: float) -> subprocess.Popen:
    code = SCRIPT.format(tests=str(TESTS_DIR), model=model, out=str(out), sleep=sleep)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        # a shell's background jobs ignore SIGINT and children inherit that: give the stage a terminal's Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def started_until_checkpoint_2(model: str, out) -> subprocess.Popen:
    """A slow stage, returned once its checkpoint-2 is complete (it is still training)."""
    proc = run_stage(model, out, sleep=1.0)
    deadline = time.time() + 120
    while not checkpoints.is_complete(str(out / "checkpoint-2")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.1)
    return proc


@pytest.mark.slow  # slow: test_fault_trials_all kills runs 3 times and resumes them
def test_sigkill_then_auto_resume(model_dir, tmp_path):
    out = tmp_path / "run"
    proc = started_until_checkpoint_2(model_dir, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = checkpoints.latest_complete_checkpoint(str(out))
    assert done is not None and not checkpoints.is_complete(str(out / "checkpoint-8"))
    fake_checkpoint(out / "checkpoint-7", None)  # what a kill during a save leaves behind

    proc = run_stage(model_dir, out, sleep=0.0)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert f"BEGIN {int(done.rsplit('-', 1)[1])}" in log, log  # resumed from the last complete checkpoint
    assert not (out / "checkpoint-7").exists() and os.listdir(out / "incomplete")[0].startswith(
        "checkpoint-7-"
    )
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert [row["step"] for row in state["log_history"] if "loss" in row] == list(range(1, 9))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 9)), "logs continue without duplicates"
    assert (out / "final" / "model.safetensors").is_file()


@pytest.mark.slow  # slow: test_launcher's default SIGTERM test takes the same path
def test_ctrl_c_says_the_step_and_how_to_resume(model_dir, tmp_path):
    out = tmp_path / "run"
    proc = started_until_checkpoint_2(model_dir, out)
    proc.send_signal(signal.SIGINT)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, log
    assert "Traceback" not in log, log
    said = [line for line in log.splitlines() if "interrupted at step" in line]
    assert len(said) == 1 and "resume with the same command and --resume_from_checkpoint auto" in said[0]
    # the step under way finished and was saved: nothing trained since the last save is lost
    step = int(said[0].split("interrupted at step ")[1].split()[0])
    assert step > 2 and checkpoints.checkpoint_problem(str(out / f"checkpoint-{step}")) is None
    assert f"(last checkpoint: {out / f'checkpoint-{step}'})" in said[0]


@pytest.mark.slow
def test_ctrl_c_on_rookworld_train_waits_for_the_checkpoint(tmp_path):
    # as a terminal's Ctrl-C reaches `rookworld train`: the launcher and the stage are left to the CLI
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rookworld_trl.stages.cli", "train", "--output_dir", str(out), "--max_steps", "50",
           "--save_steps", "20", "--eval_every_steps", "0", "--eval_samples", "0", "--report_to", "none"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.time() + 300
    while not list(out.glob("completions/*.parquet")):  # training has begun
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in log, log
    step = int(log.split("interrupted at step ")[1].split()[0])
    assert checkpoints.checkpoint_problem(str(out / f"checkpoint-{step}")) is None, log
