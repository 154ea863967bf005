"""Running `rookworld` as a new user does (a scratch folder, the installed console script in a subprocess) and
checking its refusal: one stderr line with the file or field, the problem and the fix, a nonzero exit, no
traceback. Shared by tests/test_cli_checks.py and tests/test_cli_mistakes.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "grpo_tiny_cpu.yaml"
FEN = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq e3 0 1"
GOOD = f"P: {FEN:<90}M: e7e5 E: 0.1 B: e7e5"
LAUNCHED = "accelerate.commands.launch"  # in the line `rookworld train` prints as it starts the launcher


def command() -> list[str]:
    """The installed console script beside this Python, else the module it runs."""
    script = Path(sys.executable).parent / "rookworld"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rookworld_trl.stages.cli"]


def user_env(**extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **extra}
    return {k: v for k, v in env.items() if v is not None}


def rookworld(
    *argv: str, cwd: Path, env: dict | None = None, timeout: int = 180
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*command(), *argv], cwd=cwd, env=env or user_env(), capture_output=True, text=True, timeout=timeout
    )


def one_line(done: subprocess.CompletedProcess, prefix: str, *says: str) -> str:
    """The single stderr line of a refused command: nonzero exit, no traceback, every `says` in it."""
    assert done.returncode not in (0, None), (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), lines
    for said in says:
        assert said in lines[0], (said, lines[0])
    return lines[0]


def before_launch(done: subprocess.CompletedProcess) -> None:
    assert LAUNCHED not in done.stdout, done.stdout  # accelerate never started


def train_refuses(tmp_path: Path, *argv: str, says: tuple[str, ...]) -> str:
    """`rookworld train ARGV` in the scratch folder: refused before accelerate starts, nothing written."""
    out = tmp_path / "run"
    done = rookworld("train", "--output_dir", str(out), *argv, cwd=tmp_path)
    line = one_line(done, "rookworld train: error: ", *says)
    before_launch(done)
    assert done.returncode == 2 and not out.exists()
    return line
