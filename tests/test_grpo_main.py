"""The GRPO stage's entry points: recipes parse into the config, `main()` trains from a recipe, and the
wiring that only the stage does (padding-aware positions on policy and reference, reward resolution).

    .venv/bin/pytest tests/test_grpo_main.py            (add -m slow for the `accelerate launch` run)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from tiny_grpo import ROOT, env_lines, file_reward, make_trainer, tiny_recipe_argv
from trl import ModelConfig, TrlParser

from rookworld_trl.common.entry import run_stage
from rookworld_trl.common.errors import UserError
from rookworld_trl.grpo.config import GRPOScriptArguments, RookWorldGRPOConfig
from rookworld_trl.grpo.rewards.functions import resolve_rewards
from rookworld_trl.stages.grpo import main

RECIPES = sorted((ROOT / "recipes").glob("grpo_*.yaml"))
STAGE_DATACLASSES = (GRPOScriptArguments, RookWorldGRPOConfig, ModelConfig)  # as stages/grpo.py parses them


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_into_the_config(recipe):
    parser = TrlParser(STAGE_DATACLASSES)
    # bf16 recipes are for GPUs; on a CPU-only machine TrainingArguments refuses bf16 unless use_cpu is set
    extra = [] if torch.cuda.is_available() else ["--use_cpu", "true"]
    script, args, model_args = parser.parse_args_and_config(["--config", str(recipe), *extra])
    assert model_args.model_name_or_path and script.dataset_name and script.reward_funcs
    assert 0 <= script.selfplay_ratio <= 1 and script.engine_depth
    assert args.reward_weights is None or len(args.reward_weights) == len(script.reward_funcs)
    assert args.per_device_train_batch_size % args.num_generations == 0


def test_recipes_cover_the_documented_setups():
    parser = TrlParser(STAGE_DATACLASSES)
    extra = [] if torch.cuda.is_available() else ["--use_cpu", "true"]

    def parse(name):  # (config, model config); a fresh parser each time: TrlParser keeps a recipe's values
        fresh = TrlParser(STAGE_DATACLASSES)
        return fresh.parse_args_and_config(["--config", str(ROOT / "recipes" / name), *extra])[1:]

    assert parse("grpo_two_gpu_ref_offload.yaml")[0].ref_model_device == "cuda:1"
    assert parse("grpo_lora.yaml")[1].use_peft is True
    vllm = parse("grpo_vllm_colocate.yaml")[0]
    assert vllm.use_vllm and vllm.vllm_mode == "colocate"
    assert parse("grpo_rookworld_124m_gpu.yaml")[0].bf16 is True
    # CLI flags override the recipe
    script, args, _ = parser.parse_args_and_config(
        ["--config", str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"), "--kl_stop", "70", "--max_steps", "3",
         "--eval_samples", "7"]
    )  # fmt: skip
    assert (args.kl_stop, args.max_steps, script.eval_samples) == (70.0, 3, 7)
    recipe = yaml.safe_load((ROOT / "recipes" / "grpo_tiny_cpu.yaml").read_text())
    # recipe keys of the script arguments
    assert (script.eval_every_steps, script.engine_workers) == (
        recipe["eval_every_steps"],
        recipe["engine_workers"],
    )


def test_push_to_hub_offline_is_a_clear_error(monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    argv = ["--config", str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"), "--push_to_hub", "true"]
    assert run_stage("train", main, argv) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--dataset_name", "no/such/dir"], "no/such/dir"),
        (["--model_name_or_path", "/no/such/model"], "/no/such/model"),
        (["--replay_task", "B"], "replay_task must be one of"),
    ],
)
@pytest.mark.integration  # the stage loads the model and data
@pytest.mark.integration  # the stage loads the model and data
def test_bad_input_is_one_line_not_a_traceback(flags, says, tmp_path, capsys):
    from rookworld_trl.common.entry import run_stage

    argv = ["--config", str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"), "--output_dir", str(tmp_path), *flags]
    assert run_stage("train", main, argv) == 2
    err = capsys.readouterr().err
    assert "rookworld train: error: " in err and says in err and "Traceback" not in err


def test_resolve_reward_funcs_mixes_registry_and_references():
    funcs = resolve_rewards(["env_reward", "tiny_grpo:file_reward"])
    assert [f.__name__ for f in funcs] == ["env_reward", "file_reward"] and funcs[1] is file_reward
    with pytest.raises(
        UserError, match="unknown reward"
    ):  # grpo/rewards/functions.py: one line with the known ones
        resolve_rewards(["no_such_reward"])


@pytest.mark.parametrize("hooked", [True, False])
def test_policy_and_reference_score_left_padded_rows_like_unpadded(model_dir, tmp_path, hooked):
    trainer = make_trainer(model_dir, tmp_path, beta=0.01, padding_aware_positions=hooked)
    ids = torch.randint(1, 40, (1, 10))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], dim=1)
    for model in (trainer.model, trainer.ref_model):
        plain, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, torch.ones_like(ids), 5)
        left, _, _ = trainer._get_per_token_logps_and_entropies(model, padded, mask, 5)
        # without the hook GPT-2 counts the padding as positions: the same tokens score differently
        assert torch.allclose(left, plain, atol=1e-5, rtol=1e-5) is hooked


def test_main_trains_from_the_tiny_recipe(model_dir, tmp_path):
    out = tmp_path / "run"
    code = main(
        tiny_recipe_argv(
            model_dir, tmp_path, "--max_steps", "2", "--eval_samples", "4", "--dataset_test_split", "train"
        )
    )
    assert code == 0
    assert (out / "final" / "model.safetensors").is_file()
    # the run's P: FEN width, recorded with the model and used by its eval (docs/FORMATS.md)
    assert json.loads((out / "final" / "config.json").read_text())["rookworld_fen_width"] == 89
    # the before/after eval (final vs. initial model) and the run report
    summary = json.loads((out / "eval" / "eval.json").read_text())
    assert summary["settings"]["baseline"] == model_dir and (out / "eval" / "eval.md").is_file()
    assert set(summary["settings"]["fen_width"].values()) == {89}
    assert (out / "report" / "report.md").is_file() and list((out / "report").glob("*.png"))
    card = (out / "final" / "README.md").read_text()  # the model card a push uploads
    assert "Held-out evaluation" in card and "`reward_funcs`: ['env_reward']" in card
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(
        "rewards/env_reward/mean" in r and "beta" in r for r in steps
    )
    assert any(name.startswith("events.out.tfevents") for _, _, files in os.walk(out) for name in files)


@pytest.mark.slow
def test_accelerate_launch_runs_the_stage(model_dir, tmp_path):
    data = tmp_path / "env.txt"
    data.write_text("\n".join(env_lines()) + "\n")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(ROOT / "accelerate_configs/cpu.yaml"),
           "-m", "rookworld_trl.stages.grpo", "--config", str(ROOT / "recipes/grpo_tiny_cpu.yaml"),
           "--model_name_or_path", model_dir, "--dataset_name", str(data), "--output_dir", str(out),
           "--reward_funcs", "env_reward", "--reward_weights", "1.0", "--mix_env_ratio", "1.0",
           "--field_credit", "false", "--eval_samples", "0",  # field credit grades P: answers; an A:-only run
           "--max_steps", "2", "--max_completion_length", "16"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "final" / "model.safetensors").is_file()
