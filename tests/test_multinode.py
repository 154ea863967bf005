"""Two machines rehearsed on one box with accelerate's multi-node launcher (accelerate_configs/multi_node.yaml,
machine_rank 0 and 1 on localhost, one gloo CPU process each): scripts/rehearse_multinode.sh (train, lose a
machine after checkpoint-2, resume both to step 4, equal weights, one metrics row per step), and the start-up
check that every machine sees output_dir.

    .venv/bin/python -m pytest tests/test_multinode.py -m slow
"""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rookworld_trl.grpo.config import GRPOScriptArguments
from rookworld_trl.stages.grpo import engine_cache_path
from rookworld_trl.training.checkpoints import machine_of_process

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, (0, 1)),  # no launcher
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}, (0, 1)),  # one machine, 4 processes
        ({"RANK": "5", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}, (0, 2)),
        ({"RANK": "9", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}, (1, 2)),
        ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"}, (1, 2)),  # the rehearsal's machine 1
    ],
)
def test_machine_of_process_from_torchruns_variables(monkeypatch, env, expected):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert machine_of_process() == expected
    path = engine_cache_path(GRPOScriptArguments(), "out")
    machine, _ = expected
    assert path == (
        "out/engine_cache.sqlite" if machine == 0 else f"out/engine_cache.machine{machine}.sqlite"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two launchers, 6 steps in all: ~2-4 min of CPU
def test_two_machines_lose_one_resume_and_agree(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PORT": str(free_port())}
    script = ROOT / "scripts" / "rehearse_multinode.sh"
    result = subprocess.run(["bash", str(script), str(tmp_path / "run")], env=env, capture_output=True,
                            text=True, timeout=1500)  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    # run 1: machine 1 was killed (137) and machine 0 failed on its next collective, before the end
    codes = re.search(r"run 1 exit codes: machine 0 (\d+), machine 1 (\d+)", out)
    assert codes and codes[1] != "0" and codes[2] == "137", out[-4000:]
    assert out.count(f"resuming from {tmp_path / 'run' / 'checkpoint-2'} (step 2)") == 2  # both machines
    hashes = re.findall(r"rank (\d) weights sha256 ([0-9a-f]{64})", out)
    assert [r for r, _ in hashes] == ["0", "1"] and hashes[0][1] == hashes[1][1], out[-4000:]
    assert "equal weights on every rank: yes" in out
    assert "metrics rows per step [1, 2, 3, 4]; final/ marked: True; rehearsal: PASS" in out
    assert (tmp_path / "run" / "engine_cache.machine1.sqlite").is_file()  # each machine its own sqlite file


def launch_machine(rank: int, port: int, output_dir: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "accelerate_configs" / "multi_node.yaml"), "--num_machines", "2", "--num_processes", "2",
           "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
           "--mixed_precision", "no", "-m", "rookworld_trl.stages.grpo", "--config",
           str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"), "--use_cpu", "true", "--output_dir", str(output_dir),
           "--max_steps", "1", "--report_to", "none"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # two launchers that build the stage up to the check
def test_machines_that_do_not_share_output_dir_stop_with_one_line(tmp_path):
    # machine 1 is given another directory: what it sees when output_dir is on a disk of its own
    port = free_port()
    machines = [launch_machine(rank, port, tmp_path / f"machine{rank}") for rank in (0, 1)]
    logs = [m.communicate(timeout=600)[0] for m in machines]
    for machine, log in zip(machines, logs, strict=True):
        assert machine.returncode != 0, log[-3000:]
        errors = [line for line in log.splitlines() if "rookworld train: error:" in line]
        assert len(errors) == 1, log[-3000:]  # one line per machine
        assert "is not shared between the machines: rank 1 on" in errors[0]
        assert "cannot see .rookworld_shared_check" in errors[0] and "docs/SCALING.md" in errors[0]
        assert "Traceback" not in log.split("rookworld train: error:")[0][-2000:]
    assert not list((tmp_path / "machine0").glob("checkpoint-*"))  # stopped before training
