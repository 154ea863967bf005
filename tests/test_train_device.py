"""Where `rookworld train` trains when the command line does not say (rookworld_trl/stages/launch.py gpu_flags): on the GPU
in bf16 where CUDA is available, on the CPU where not; the user's --use_cpu, or an accelerate config that sets
use_cpu, always wins. The decision with CUDA's availability given (this machine may have no GPU), on the shipped
recipes and accelerate configs.

    .venv/bin/python -m pytest tests/test_train_device.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rookworld_trl.stages import launch
from rookworld_trl.stages.launch import gpu_flags

ROOT = Path(__file__).resolve().parent.parent
MAIN_JOB = ["--config", str(ROOT / "recipes/grpo_tiny_cpu.yaml")]
GPU_RECIPE = ["--config", str(ROOT / "recipes/grpo_rookworld_124m_gpu.yaml")]
TO_GPU = ["--use_cpu", "false", "--bf16", "true"]


@pytest.mark.parametrize(
    "argv, recipe_cpu, config_cpu, cuda, added",
    [
        ([], True, None, True, TO_GPU),  # the main job on a GPU machine
        ([], True, None, False, []),  # no GPU: the recipe's CPU stays
        (["--use_cpu", "true"], True, None, True, []),  # the user said CPU
        (["--use_cpu", "false"], True, None, False, []),  # the user said GPU: theirs to keep, nothing added
        ([], True, True, True, []),  # --accelerate_config cpu.yaml or multi_cpu.yaml
        ([], True, False, True, TO_GPU),  # --accelerate_config single_gpu.yaml with the CPU recipe
        ([], None, None, True, []),  # a GPU recipe: already on the GPU
        (["--bf16", "false"], True, None, True, ["--use_cpu", "false"]),  # the user's precision is kept
        (["--use_cpu=true"], True, None, True, []),
    ],
)
def test_the_decision(argv, recipe_cpu, config_cpu, cuda, added):
    assert gpu_flags(argv, recipe_cpu, config_cpu, cuda) == added


@pytest.mark.parametrize("cuda", [True, False])
def test_the_main_job_moves_to_the_gpu_only_where_cuda_is(cuda, monkeypatch):
    """The launcher's call on the shipped recipe and configs, with CUDA's availability stood in for."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert launch.to_gpu("train", list(MAIN_JOB), None) == (TO_GPU if cuda else [])
    moved = [*MAIN_JOB, *launch.to_gpu("train", list(MAIN_JOB), None)]
    assert Path(launch.default_accelerate_config(moved)[0]).name == (
        "single_gpu.yaml" if cuda else "cpu.yaml"
    )
    for accel in ("cpu.yaml", "multi_cpu.yaml"):
        assert launch.to_gpu("train", list(MAIN_JOB), str(ROOT / "accelerate_configs" / accel)) == []
    assert launch.to_gpu("train", [*MAIN_JOB, "--use_cpu", "true"], None) == []
    assert launch.to_gpu("train", list(GPU_RECIPE), None) == []
    assert launch.to_gpu("sft", ["--config", str(ROOT / "recipes/sft_embedded_cpu.yaml")], None) == []


def test_the_line_says_the_gpu_and_how_to_stay_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
    single_gpu = str(ROOT / "accelerate_configs/single_gpu.yaml")
    line = launch.device_line(single_gpu, [*MAIN_JOB, *TO_GPU], TO_GPU)
    assert line.startswith("rookworld: device cuda (1 x NVIDIA H200)")
    assert "--use_cpu false --bf16 true added" in line and "to stay on the CPU add --use_cpu true" in line
