"""`rookworld train`'s launcher (rookworld_trl/stages/launch.py): the accelerate config follows the recipe, and a stop
signal (SIGTERM from kill, timeout or a scheduler; SIGHUP) saves the step and leaves nothing of the run running.

    .venv/bin/pytest tests/test_launcher.py            (add -m slow for the resume-to-identical run)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from rookworld_trl.stages import launch
from rookworld_trl.training import checkpoints

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("cuda", [True, False])
def test_the_accelerate_config_follows_the_recipe(cuda, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cpu_recipe = ["--config", str(ROOT / "recipes/grpo_tiny_cpu.yaml")]
    gpu_recipe = ["--config", str(ROOT / "recipes/grpo_rookworld_124m_gpu.yaml")]
    assert Path(launch.default_accelerate_config(cpu_recipe)[0]).name == "cpu.yaml"  # whatever is visible
    gpu = launch.default_accelerate_config(gpu_recipe)
    assert Path(gpu[0]).name == ("single_gpu.yaml" if cuda else "cpu.yaml")
    assert Path(launch.default_accelerate_config([*gpu_recipe, "--use_cpu", "true"])[0]).name == "cpu.yaml"
    assert (
        Path(launch.default_accelerate_config([*cpu_recipe, "--use_cpu", "false"])[0]).name
        == gpu[0].split("/")[-1]
    )


def test_the_first_lines_say_the_device_and_how_to_reach_the_gpu(monkeypatch):
    """On a machine with CUDA the CPU recipe (the main job) says it trains on the CPU and the flags that move it;
    a GPU recipe says cuda. The CUDA queries are stood in for: this machine may have no GPU."""
    cpu_recipe = ["--config", str(ROOT / "recipes/grpo_tiny_cpu.yaml")]
    gpu_recipe = ["--config", str(ROOT / "recipes/grpo_rookworld_124m_gpu.yaml")]
    single_gpu, cpu_yaml = (
        str(ROOT / "accelerate_configs/single_gpu.yaml"),
        str(ROOT / "accelerate_configs/cpu.yaml"),
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert launch.device_line(cpu_yaml, cpu_recipe) == "rookworld: device cpu (no CUDA device visible)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H100 80GB HBM3")
    line = launch.device_line(cpu_yaml, cpu_recipe)
    assert line.startswith("rookworld: device cpu, although CUDA is available (1 x NVIDIA H100 80GB HBM3)")
    assert "--use_cpu false --bf16 true" in line
    assert launch.device_line(single_gpu, gpu_recipe) == "rookworld: device cuda (1 x NVIDIA H100 80GB HBM3)"
    assert launch.device_line(cpu_yaml, gpu_recipe).startswith(
        "rookworld: device cpu, although"
    )  # use_cpu config
    assert launch.device_line(single_gpu, [*cpu_recipe, "--use_cpu", "false"]).startswith(
        "rookworld: device cuda"
    )


def tiny_train(out: Path, *flags: str) -> list[str]:
    """`rookworld train` shrunk: the embedded model on 64 embedded rows, 8 completions a step, both reward
    functions (Stockfish grades the P: answers, 1 engine at depth 4), no evals, no checkpoint but the stop's."""
    return [sys.executable, "-m", "rookworld_trl.stages.cli", "train", "--output_dir", str(out),
            "--dataset_max_samples", "64", "--per_device_train_batch_size", "8", "--num_generations", "4",
            "--max_completion_length", "56", "--engine_depth", "4", "--engine_workers", "1",
            "--eval_samples", "0", "--eval_every_steps", "0", "--report_to", "none", "--disable_tqdm", "true",
            "--save_steps", "1000", *flags]  # fmt: skip


def start(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def tiny_sft(out: Path, *flags: str) -> list[str]:
    """`rookworld sft` shrunk: a 1-layer model from scratch on 256 embedded rows, a log line every step, no evals,
    no checkpoint but the stop's."""
    return [sys.executable, "-m", "rookworld_trl.stages.cli", "sft", "--config", "recipes/sft_strong_model.yaml",
            "--dataset_name", "rookworld_trl/assets/data", "--output_dir", str(out), "--n_layer", "1",
            "--n_embd", "32", "--n_head", "2", "--max_train_samples", "256", "--per_device_train_batch_size", "4",
            "--logging_steps", "1", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
            "--format_check_samples", "0", "--disable_tqdm", "true", *flags]  # fmt: skip


def wait_for_training(
    proc: subprocess.Popen, out: Path, timeout: float = 400, engines: bool = True
) -> set[int]:
    """Once a step is logged: the pids of everything the run started so far (Stockfish among them if `engines`)."""
    deadline, seen = time.time() + timeout, set()
    while True:
        if proc.poll() is not None or time.time() > deadline:
            for p in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
                p.kill()
            proc.kill()
            raise AssertionError(f"no training step within {timeout} s:\n{proc.communicate()[0][-3000:]}")
        with contextlib.suppress(psutil.Error):
            seen |= {(p.pid, p.name()) for p in psutil.Process(proc.pid).children(recursive=True)}
        logged = (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().strip()
        if logged:
            assert not engines or any("stockfish" in name for _, name in seen), seen
            return {pid for pid, _ in seen}
        time.sleep(0.2)


def alive(pids: set[int]) -> list[str]:
    left = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(p.cmdline()[:3]))
        except psutil.NoSuchProcess:
            pass
    return left


def saved_step(log: str, out: Path) -> int:
    """The step a stopped run says it saved (one "interrupted at step N" line), its checkpoint complete."""
    said = [line for line in log.splitlines() if "interrupted at step" in line]
    assert len(said) == 1, log
    step = int(said[0].split("interrupted at step ")[1].split()[0])
    assert checkpoints.checkpoint_problem(str(out / f"checkpoint-{step}")) is None, log
    return step


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_sigterm_saves_the_step_exits_143_and_leaves_nothing_running(tmp_path, sig):
    out = tmp_path / "run"
    proc = start(tiny_train(out, "--max_steps", "100"))
    run = wait_for_training(proc, out)
    proc.send_signal(sig)  # as `timeout`, `kill` or a scheduler's preemption does
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, log
    assert "Traceback" not in log, log
    assert alive(run) == [], log  # accelerate, the stage and both Stockfish engines are gone
    assert 1 <= saved_step(log, out) < 100


def test_sft_saves_its_step_on_sigterm_and_resumes_from_it(tmp_path):
    """A long SFT (the embedded model's build: hours) is stopped between sittings: the step it was on is kept."""
    out = tmp_path / "sft"
    proc = start(tiny_sft(out, "--max_steps", "1000"))
    run = wait_for_training(proc, out, engines=False)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in log and alive(run) == [], log
    step = saved_step(log, out)
    assert 1 <= step < 1000
    assert not (out / "model.safetensors").exists()  # a stopped run is not a finished one
    resumed = start(tiny_sft(out, "--max_steps", str(step + 2), "--resume_from_checkpoint", "auto"))
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and f"resuming from {out / f'checkpoint-{step}'}" in log, log
    steps = [json.loads(line).get("step") for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert step + 2 in steps and (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_sigterm_then_resume_finishes_like_an_uninterrupted_run(tmp_path):
    """Bitwise. On 2 threads two uninterrupted runs already differ in the last bits after one step (some of
    PyTorch's CPU kernels are not deterministic: with torch.use_deterministic_algorithms they match, with
    uninitialised memory left unfilled too); `full_determinism` (the Trainer's switch to deterministic kernels)
    or OMP_NUM_THREADS=1 makes a run repeat exactly, and then resuming must too."""
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    proc = start(tiny_train(stopped, "--max_steps", "6", "--full_determinism", "true"))
    run = wait_for_training(proc, stopped)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143 and alive(run) == [], log
    resumed = start(
        tiny_train(
            stopped, "--max_steps", "6", "--full_determinism", "true", "--resume_from_checkpoint", "auto"
        )
    )
    log, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "resuming from" in log, log
    straight = start(tiny_train(whole, "--max_steps", "6", "--full_determinism", "true"))
    log, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, log

    def losses(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    assert losses(stopped) == losses(whole)
