"""Shared fixtures and the test tiers.

Tiers (markers registered in pyproject.toml): `unit` (no Trainer, no subprocess: ~2 min for the tier on 2 cores), `integration` (a
Trainer, a training stage or a subprocess), `slow` (minutes; excluded by default, `-m slow`). A test is
`integration` when it uses a fixture that builds trainers (`model_dir`) or runs a stage (`generated`), or its
module or itself says so; every other test not marked slow is `unit`:

    pytest -m unit            # the quick check while editing
    pytest                    # unit + integration (the default tier)
    pytest -m slow            # the long ones
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here: before datasets / huggingface_hub read it
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # under pytest-xdist each worker's torch would take every core (16 workers x 16 threads on a GPU box
    # timed tests out): share the cores out, before torch is imported; subprocesses inherit it
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )

import pytest  # noqa: E402
from tiny_grpo import make_tiny_model_dir  # noqa: E402

INTEGRATION_FIXTURES = {
    "model_dir",
    "generated",
}  # a tiny GPT-2 trained or scored with TRL; a generated dataset


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A random 2-layer GPT-2 + a character tokenizer, saved like a hub model (tiny_grpo.make_tiny_model_dir)."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_model"))


def pytest_collection_modifyitems(config, items):
    import torch

    for item in items:
        gpu = item.get_closest_marker("gpu")
        needed = gpu.args[0] if gpu is not None and gpu.args else 1
        if gpu is not None and torch.cuda.device_count() < needed:
            item.add_marker(pytest.mark.skip(reason=f"needs {needed} CUDA device(s)"))
        if item.get_closest_marker("slow") or item.get_closest_marker("integration"):
            continue
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        else:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """A small dataset made by `rookworld data generate` with Stockfish (tests/data_fixtures.py)."""
    from data_fixtures import generate

    from rookworld_trl.chess.engine import find_stockfish

    try:
        find_stockfish()
    except RuntimeError:
        pytest.skip("Stockfish is not installed")
    return generate(tmp_path_factory.mktemp("gen") / "out")


@pytest.fixture(scope="module")
def pool():
    """One Stockfish at the reward tests' depth (reward_fixtures.LIMIT), shared by a module's tests."""
    from reward_fixtures import LIMIT

    from rookworld_trl.chess.engine import EnginePool

    with EnginePool(workers=1, limit=LIMIT) as engines:
        yield engines
