"""Run folders: one run per folder (a second is refused naming the PID), and a run dies with its front process
(SIGKILL of `rookworld`, SIGTERM while the engine hangs) leaving its last checkpoint resumable.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_run_faults.py              # default tier
    PYTHONPATH=$PWD .venv/bin/python -m pytest -q -m slow tests/test_run_faults.py      # + two runs, kills
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fault_cli import CLI, ENV, ROOT, hold_elsewhere, one_line, run

from rookworld_trl.chess import engine as engine_mod
from rookworld_trl.common import locks


def test_train_on_a_folder_in_use_is_refused_naming_the_pid(tmp_path):
    holder = hold_elsewhere(tmp_path / "run")
    try:
        done = run("train", "--output_dir", str(tmp_path / "run"), cwd=tmp_path)
        one_line(done, "rookworld train: error:", f"in use by PID {holder.pid}", f"kill {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


SMALL = ["--max_steps", "40", "--save_steps", "1", "--eval_samples", "0", "--eval_every_steps", "0",
         "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "64",
         "--replay_batch_size", "4", "--report_to", "none", "--log_completions", "false"]  # fmt: skip


def start_train(out: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "train", *SMALL, "--output_dir", str(out)], env={**ENV, **(env or {})},
                            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def stage_pids(out: Path) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"rookworld_trl.stages.grpo .*{out}"], capture_output=True, text=True
    )
    return [int(p) for p in found.stdout.split()]


@pytest.mark.slow
def test_two_runs_on_one_folder_and_a_front_killed_with_sigkill(tmp_path):
    """The second `rookworld train` is refused naming the live stage; kill -9 of the first front process stops
    its stage (it saves its step, then exits): nothing is left with parent PID 1, and the run resumes."""
    out = tmp_path / "run"
    front = start_train(out, tmp_path / "first.log")
    try:
        assert wait_for(lambda: (out / "checkpoint-1").is_dir(), 600), (tmp_path / "first.log").read_text()[
            -3000:
        ]
        stage = locks.holder(out)["pid"]
        done = run("train", *SMALL, "--output_dir", str(out))
        one_line(done, "rookworld train: error:", f"in use by PID {stage}")
        front.send_signal(signal.SIGKILL)
        front.wait()
        assert wait_for(lambda: not stage_pids(out), 240), "the stage outlived its front process"
    finally:
        front.kill()
        for pid in stage_pids(out):
            os.kill(pid, signal.SIGKILL)
    assert locks.holder(out) is None
    text = (tmp_path / "first.log").read_text()
    assert "SIGTERM: finishing this step" in text and "Traceback" not in text


@pytest.mark.slow
def test_sigterm_is_honoured_within_seconds_while_the_engine_hangs(tmp_path):
    """Stockfish answers the preflight's search and two more, then never again; SIGTERM to `rookworld train`
    ends the run within STOP_GRACE and a few seconds (exit 143), without a traceback."""
    proxy = tmp_path / "proxy.py"
    proxy.write_text(
        textwrap.dedent(f"""
        import subprocess, sys, threading
        sf = subprocess.Popen([{engine_mod.find_stockfish()!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, bufsize=1)
        def pump():
            for line in sf.stdout:
                sys.stdout.write(line); sys.stdout.flush()
        threading.Thread(target=pump, daemon=True).start()
        searches = 0
        for line in sys.stdin:
            if line.startswith("go"):
                searches += 1
                if searches > 3:
                    continue
            sf.stdin.write(line); sf.stdin.flush()
    """)
    )
    wrapper = tmp_path / "stockfish.sh"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{proxy}"\n')
    wrapper.chmod(0o755)
    log = tmp_path / "train.log"
    front = start_train(
        tmp_path / "run", log, {"STOCKFISH_PATH": str(wrapper), "ROOKWORLD_ENGINE_TIMEOUT": "600"}
    )
    try:
        assert wait_for(lambda: "starting from scratch" in log.read_text(), 600), log.read_text()[-3000:]
        time.sleep(15)  # the step's rewards are waiting on the silent engine
        front.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = front.wait(timeout=120)
        took = time.monotonic() - started
    finally:
        front.kill()
    assert code == 143 and took < engine_mod.STOP_GRACE + 20, (code, took, log.read_text()[-2000:])
    assert "Traceback" not in log.read_text()
