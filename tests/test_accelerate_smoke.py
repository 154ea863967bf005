"""The accelerate configs: each loads with accelerate's own config classes and says what we expect, and
`accelerate launch` with cpu.yaml runs a tiny stage (the parity check) end to end.

    .venv/bin/python -m pytest tests/test_accelerate_smoke.py
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType, DynamoBackend, PrecisionType
from test_reference_gpt2 import byte_level_tokenizer, random_hf_model

pytestmark = pytest.mark.integration  # accelerate launch of real stages in subprocesses

CONFIGS = Path(__file__).resolve().parent.parent / "accelerate_configs"
ROOT = CONFIGS.parent

# file -> (distributed type, mixed precision, dynamo backend, number of processes)
EXPECTED = {
    "cpu.yaml": (DistributedType.NO, "no", DynamoBackend.NO, 1),
    "single_gpu.yaml": (DistributedType.NO, "bf16", DynamoBackend.NO, 1),
    "single_gpu_compile.yaml": (DistributedType.NO, "bf16", DynamoBackend.INDUCTOR, 1),
    "two_gpu_ref_offload.yaml": (DistributedType.NO, "bf16", DynamoBackend.NO, 1),
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, "bf16", DynamoBackend.NO, 2),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, "bf16", DynamoBackend.NO, 2),
    "multi_cpu.yaml": (DistributedType.MULTI_CPU, "no", DynamoBackend.NO, 2),
    "multi_node.yaml": (DistributedType.MULTI_GPU, "bf16", DynamoBackend.NO, 16),
    "fsdp2.yaml": (DistributedType.FSDP, "bf16", DynamoBackend.NO, 2),
}


def test_every_config_is_checked():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerate(name):
    path = CONFIGS / name
    assert path.read_text().startswith("#"), "each config starts with a comment: when to use it"
    config = load_config_from_file(str(path))  # raises on unknown keys or bad enum values
    assert isinstance(config, ClusterConfig)
    distributed, precision, dynamo, processes = EXPECTED[name]
    assert config.distributed_type == distributed
    assert PrecisionType(config.mixed_precision) == precision
    assert DynamoBackend(config.dynamo_config["dynamo_backend"].upper()) == dynamo
    assert config.num_processes == processes
    assert config.use_cpu == name.endswith("cpu.yaml")
    # accelerate exports gpu_ids as CUDA_VISIBLE_DEVICES: ref offload needs cuda:1 to stay visible
    assert config.gpu_ids in (None, "all")
    if distributed == DistributedType.DEEPSPEED:
        assert config.deepspeed_config["zero_stage"] == 2
    if distributed == DistributedType.FSDP:
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "GPT2Block"
    assert (config.num_machines > 1) == (name == "multi_node.yaml")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_launch_accepts_config(name):
    """What `accelerate launch --config_file NAME script.py` checks and fills in before it starts anything
    (accelerate's own _validate_launch_command: the config's values become the launch arguments)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / name), "train.py"])
    args = _validate_launch_command(args)[0]
    distributed, precision, _, processes = EXPECTED[name]
    assert (args.num_processes, args.mixed_precision) == (processes, precision)
    assert args.multi_gpu == (distributed == DistributedType.MULTI_GPU)
    assert args.use_fsdp == (distributed == DistributedType.FSDP)
    assert args.use_deepspeed == (distributed == DistributedType.DEEPSPEED)
    if name == "multi_node.yaml":  # the launcher starts num_processes / num_machines processes per machine
        assert (args.num_machines, args.machine_rank, args.main_process_port) == (2, 0, 29500)
    if name == "fsdp2.yaml":
        assert args.fsdp_version == 2


@pytest.mark.slow  # slow: test_launcher's default test launches `rookworld train` through accelerate
def test_accelerate_launch_cpu_config_runs_parity(tmp_path):
    tokenizer = byte_level_tokenizer()
    random_hf_model(vocab_size=len(tokenizer), n_positions=128).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu.yaml")]
    cmd += ["-m", "rookworld_trl.stages.eval.parity", str(tmp_path), "--max_new_tokens", "4"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("PASS")


MULTI_CPU_ARGS = [
    "--config", str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"), "--per_device_train_batch_size", "4",
    "--num_generations", "4", "--save_steps", "1", "--eval_every_steps", "0", "--log_completions", "false",
    "--report_to", "none", "--resume_from_checkpoint", "auto",
]  # fmt: skip


def launch_two_processes(
    out, steps: int, eval_samples: int = 0, env: dict | None = None
) -> subprocess.CompletedProcess:
    from rookworld_trl.stages.launch import (
        launcher,  # as `rookworld train --accelerate_config multi_cpu.yaml` starts it
    )

    argv = [
        *MULTI_CPU_ARGS,
        "--output_dir",
        str(out),
        "--max_steps",
        str(steps),
        "--eval_samples",
        str(eval_samples),
    ]
    cmd, extra = launcher(
        str(CONFIGS / "multi_cpu.yaml"), [str(ROOT / "tests" / "multi_rank_stage.py")], argv
    )
    env = {**os.environ, **extra, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def rank_records(out) -> list[dict]:
    """What each rank wrote at the end of training (tests/multi_rank_stage.py)."""
    import json

    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow  # slow: test_two_cpu_processes_checkpoint_resume_and_evaluate_once runs 2 processes further
def test_two_cpu_processes_train_one_step_to_the_same_weights(tmp_path):
    result = launch_two_processes(tmp_path, steps=1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = rank_records(tmp_path)
    assert len({r["sha256"] for r in ranks}) == 1  # DDP: both ranks end with the same model
    # the global batch of 2 prompts x 4 is split: each rank grades its own 4 completions, of its own prompt
    # each rank grades its own 4 of the 8 P: rows: for the reward, then again (from the memo) for field credit
    assert [r["scored"] for r in ranks] == [[4, 4], [4, 4]]
    assert not set(ranks[0]["positions"]) & set(ranks[1]["positions"])
    assert (tmp_path / "checkpoint-1" / "rookworld_complete.json").is_file()
    assert (tmp_path / "final" / "model.safetensors").is_file()


@pytest.mark.slow  # 6 steps on 2 processes: ~2 min of CPU
def test_a_loss_spike_on_one_rank_rolls_back_every_rank(tmp_path):
    # the spike check needs 5 healthy steps of history: rank 1 alone sees its loss x1e6 at step 6
    result = launch_two_processes(tmp_path, steps=6, env={"ROOKWORLD_TEST_SPIKE": "1:6:1e6"})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    ranks = rank_records(tmp_path)
    assert [r["nan_recoveries"] for r in ranks] == [1, 1]  # both ranks rolled back ...
    assert log.count("at step 6: update skipped") == 2, log[-3000:]  # ... at the same step
    assert len({r["sha256"] for r in ranks}) == 1  # and their weights did not part


@pytest.mark.slow
def test_two_cpu_processes_checkpoint_resume_and_evaluate_once(tmp_path):
    first = launch_two_processes(tmp_path, steps=2)
    assert first.returncode == 0, first.stderr[-3000:]
    again = launch_two_processes(tmp_path, steps=4, eval_samples=10)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-3000:]
    assert (
        log.count("resuming from") == 2 and f"{tmp_path / 'checkpoint-2'} (step 2)" in log
    )  # each rank resumes
    assert log.count("rookworld eval: wrote") == 1  # the final eval runs once
    assert len({r["sha256"] for r in rank_records(tmp_path)}) == 1
    import json

    steps = [
        json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"loss"' in x
    ]
    assert steps == [1, 2, 3, 4]  # one metrics row per step, written once, continued after the resume


@pytest.mark.slow
def test_two_cpu_processes_run_sft(tmp_path):
    from rookworld_trl.stages.launch import launcher

    argv = ["--config", str(ROOT / "recipes" / "sft_default_model_continue.yaml"), "--dataset_name",
            str(ROOT / "rookworld_trl" / "assets" / "data"), "--model_name_or_path", str(ROOT / "rookworld_trl" / "assets" / "model"),
            "--max_steps", "2", "--output_dir", str(tmp_path), "--eval_steps", "1", "--save_steps", "1",
            "--max_eval_samples", "32", "--format_check_samples", "8", "--report_to", "none", "--max_train_samples", "256"]  # fmt: skip
    cmd, extra = launcher(str(CONFIGS / "multi_cpu.yaml"), ["-m", "rookworld_trl.stages.sft"], argv)
    env = {**os.environ, **extra, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert log.count("sft summary:") == 1  # the main process reports, once
    assert (tmp_path / "checkpoint-2" / "rookworld_complete.json").is_file()
