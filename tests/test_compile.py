"""bf16 autocast + torch.compile (inductor) on this CPU: what accelerate_configs/single_gpu_compile.yaml turns on
for the users' long GPU runs. The position hook and the step guard work compiled, and the single-GPU config itself
(with use_cpu) runs the 124M recipe's features with compilation that settles after the first step.
Slow tier (each test compiles for a minute or more on 2 cores):

    .venv/bin/python -m pytest -m slow tests/test_compile.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tiny_grpo import make_trainer, trainable
from transformers import GPT2Config, GPT2LMHeadModel

from rookworld_trl.model.loading import use_padding_aware_positions

ROOT = Path(__file__).resolve().parent.parent
# the console's line per logging step (training/console.py)
STEP_LINE = re.compile(r"step \d+/\d+ .* s/step$")
pytestmark = pytest.mark.slow


def test_padding_aware_positions_under_compile_and_bf16():
    """TRL's fused log-prob forward on a left-padded row, compiled with dynamic shapes (the hook must
    hold for any length) and under bf16 autocast: the hook still numbers positions from the mask."""
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # tokens and positions matter far beyond bf16's rounding
        model.transformer.wte.weight.normal_(0.0, 0.5)
        model.transformer.wpe.weight.normal_(0.0, 1.0)
    add_fused_lm_head(model)
    row = torch.randint(1, 50, (1, 6))
    ids = torch.cat([torch.zeros(1, 4, dtype=torch.long), row], dim=1)  # 4 pads on the left
    mask = (torch.arange(10) >= 4).long()[None]

    def logps(model, ids, mask, bf16=True):
        labels = ids.masked_fill(mask == 0, -100)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        return out.log_probs[0, -5:].float()

    alone = logps(model, row, torch.ones_like(row), bf16=False)
    assert (
        logps(model, ids, mask) - alone
    ).abs().max() > 1.0  # without the hook the padding shifts positions
    use_padding_aware_positions(model)
    compiled = torch.compile(model, backend="inductor", dynamic=True)
    assert (logps(compiled, ids, mask) - alone).abs().max() < 0.05  # bf16 rounding only
    assert (logps(compiled, row, torch.ones_like(row)) - alone).abs().max() < 0.05


def test_step_guard_rolls_back_under_bf16_and_compile(model_dir, tmp_path):
    """A learning rate of 1e30 blows every update up; compiled and in bf16 the guard still sees it, restores
    the weights and goes on (as test_training_faults checks in eager fp32)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    trainer = make_trainer(model_dir, tmp_path, max_steps=3, learning_rate=1e30, nan_max_retries=5,
                           bf16=True, torch_compile=True, save_strategy="no")  # fmt: skip
    start = trainable(trainer.model)
    trainer.train()
    assert counters["stats"]["unique_graphs"] > 0, "nothing was compiled"
    assert trainer.run.nan_recoveries >= 2 and trainer.halt_reason is None
    now = trainable(trainer.model)
    assert all(torch.equal(start[n], now[n]) for n in start), "every update was rolled back"


def test_compile_config_runs_the_124m_recipe_with_a_gpu_runs_shapes_and_compiles_only_in_step_1(tmp_path):
    """`rookworld train --accelerate_config single_gpu_compile.yaml --config recipes/grpo_rookworld_124m_gpu.yaml`,
    the users' command, with use_cpu and the embedded model, at the recipe's own batch (32 completions per
    micro-batch, 8 per prompt, accumulation 2: the shapes and the bf16 dtype path a GPU run sees) for 6 steps:
    a reference model, adaptive KL, A: prompts. Everything compiles in step 1; later steps compile nothing
    (TORCH_LOGS=recompiles prints no line after the first step, the graph count stays). With the compact scoring
    and unpadded batches of before, this run recompiled at step 4 (inductor's `batch x length > 4096` guard)
    and at every new count of completion tokens."""
    from rookworld_trl.stages.launch import launcher

    config = yaml.safe_load((ROOT / "accelerate_configs" / "single_gpu_compile.yaml").read_text())
    assert config["dynamo_config"]["dynamo_backend"] == "INDUCTOR" and config["mixed_precision"] == "bf16"
    (tmp_path / "single_gpu_cpu.yaml").write_text(yaml.safe_dump({**config, "use_cpu": True}))
    out = tmp_path / "run"
    argv = ["--config", str(ROOT / "recipes" / "grpo_rookworld_124m_gpu.yaml"),
            "--model_name_or_path", str(ROOT / "rookworld_trl" / "assets" / "model"),
            "--dataset_name", str(ROOT / "rookworld_trl" / "assets" / "data"), "--output_dir", str(out),
            "--max_steps", "6", "--save_steps", "5", "--eval_samples", "0", "--log_completions", "false",
            "--report_to", "none", "--disable_tqdm", "true"]  # fmt: skip
    cmd, extra = launcher(
        str(tmp_path / "single_gpu_cpu.yaml"), [str(ROOT / "tests" / "multi_rank_stage.py")], argv
    )
    env = {
        **os.environ,
        **extra,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        "TORCH_LOGS": "recompiles",
        "PYTHONUNBUFFERED": "1",
    }  # fmt: skip  (log lines in the order they happened)
    result = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=1500)  # fmt: skip
    log = result.stdout
    assert result.returncode == 0, log[-3000:]
    lines = log.splitlines()
    steps = [i for i, line in enumerate(lines) if STEP_LINE.search(line)]
    assert len(steps) == 6
    assert not [line for line in lines[steps[0] :] if "Recompiling function" in line], (
        "a later step recompiled"
    )
    graphs = json.loads((out / "rank0.json").read_text())["graphs"]
    assert graphs[0] > 0 and len(set(graphs)) == 1, graphs
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["nan_recoveries"] == 0 for r in rows if "nan_recoveries" in r)
    assert any(r.get("kl", 0) > 0 for r in rows) and (out / "checkpoint-5").is_dir()
    assert (out / "final" / "model.safetensors").is_file()
    print("single_gpu_compile.yaml on CPU, s/step:", [r["step_time"] for r in rows if "step_time" in r])


def test_torch_compile_flag_compiles_once(tmp_path):
    """`--bf16 true --torch_compile true` without an accelerate config (the tiny recipe: replay, no reference
    model): the trainer pads to fixed shapes as under single_gpu_compile.yaml, so no step after the first compiles."""
    cmd = [sys.executable, str(ROOT / "tests" / "multi_rank_stage.py"), "--config", str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"),
           "--max_steps", "3", "--bf16", "true", "--torch_compile", "true", "--eval_every_steps", "0",
           "--eval_samples", "0", "--output_dir", str(tmp_path), "--report_to", "none", "--disable_tqdm", "true",
           "--per_device_train_batch_size", "16", "--num_generations", "8", "--log_completions", "false"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TORCH_LOGS": "recompiles",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    result = subprocess.run(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1500
    )
    assert result.returncode == 0, result.stdout[-3000:]
    lines = result.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if STEP_LINE.search(line))
    assert not [line for line in lines[first:] if "Recompiling function" in line], "a later step recompiled"
    graphs = json.loads((tmp_path / "rank0.json").read_text())["graphs"]
    assert graphs[0] > 0 and len(set(graphs)) == 1, graphs
