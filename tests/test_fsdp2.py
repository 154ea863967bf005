"""FSDP2 pieces that run on CPU: the step guard's snapshots over sharded (DTensor) parameters and optimizer state,
with torch's fully_shard over gloo in two processes (tests/fsdp2_ranks.py). accelerate applies fsdp2.yaml to GPU
processes only, so the whole stage under FSDP2 waits for a GPU (docs/SCALING.md).

    .venv/bin/python -m pytest tests/test_fsdp2.py -m slow
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # two processes importing torch and transformers: 10-60 s depending on the machine's load
def test_snapshots_restore_fsdp2_shards_and_the_optimizer_state():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(ROOT / "tests" / "fsdp2_ranks.py")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert out.count("restored OK") == 2, out[-3000:]
