"""Running `rookworld` as a careless or hostile user would and checking its refusal: one stderr line, exit 2, no
traceback. Shared by tests/test_data_faults.py, test_engine_faults.py, test_settings_faults.py and
test_run_faults.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq

from rookworld_trl import assets

ROOT = Path(__file__).resolve().parent.parent
START = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
CLI = [sys.executable, "-m", "rookworld_trl.stages.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(*argv: str, env: dict | None = None, timeout: int = 300, cwd: Path | None = None):
    return subprocess.run([*CLI, *argv], env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT)  # fmt: skip


def one_line(done, prefix: str, *says: str) -> str:
    """The one stderr line of a refusal: exit 2, no traceback, every `says` in it."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, done.stderr[-2000:]
    for said in says:
        assert said in errors[0], (said, errors[0])
    assert len(errors[0]) < 2500
    return errors[0]


def lines_of(n: int, skip: int = 0) -> list[str]:
    """n P:/A: lines of the embedded data."""
    table = pq.read_table(Path(assets.DATA) / "train.parquet", columns=["text"])
    return table.column("text").to_pylist()[skip : skip + n]


def text_file(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from rookworld_trl.common.locks import hold
    hold(sys.argv[1], "a test holder")
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


def hold_elsewhere(folder: Path, seconds: float = 60) -> subprocess.Popen:
    """Another process holding folder's lock (as a live run or load would) until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(seconds)], env=ENV,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc
