"""RookWorld-LM-124M's shape and exact tokenizer on this CPU (tests/gpt2_shape.py): the prompt/completion
split with GPT-2's BPE, the GPU recipes' completion budgets, and (slow tier) parity and short GRPO/SFT runs.

    .venv/bin/python -m pytest tests/test_gpt2_shape.py            # the fast part
    .venv/bin/python -m pytest tests/test_gpt2_shape.py -m slow    # parity and training at 124M shape
"""

from __future__ import annotations

import glob
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import chess
import pytest
import yaml
from gpt2_shape import gpt2_tokenizer, save_rookworld_124m_shape

from rookworld_trl.chess.formats import env_prompt, policy_completion, policy_prompt, split_prompt_completion
from rookworld_trl.data.load import load_rookworld_dataset

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = ROOT / "rookworld_trl" / "assets" / "data"


def ids(text: str) -> list[int]:
    return gpt2_tokenizer()(text, add_special_tokens=False)["input_ids"]


def test_gpt2_tokenizer_is_the_real_one():
    tok = gpt2_tokenizer()
    assert len(tok) == 50257 and tok.eos_token_id == 50256
    assert ids("Hello world") == [15496, 995]  # GPT-2's well-known ids


def positions(n: int, seed: int = 0) -> list[str]:
    """FENs of seeded random games: every length from the start position's to sparse endgames."""
    rng, fens = random.Random(seed), []
    while len(fens) < n:
        board = chess.Board()
        for _ in range(rng.randrange(0, 160)):
            if board.is_game_over():
                break
            board.push(rng.choice(list(board.legal_moves)))
        fens.append(board.fen())
    return fens


@pytest.mark.parametrize("width", [89, 90])
def test_split_keeps_gpt2_tokens_for_fens_of_every_length(width):
    fens = positions(300)
    assert max(map(len, fens)) - min(map(len, fens)) > 20
    for fen in fens:
        board = chess.Board(fen)
        moves = [m.uci() for m in list(board.legal_moves)[:5]] or ["0000"]
        line = policy_prompt(fen, width) + policy_completion(moves, [0.1] * len(moves), moves[0])
        prompt, completion = split_prompt_completion(line)
        assert ids(prompt) + ids(completion) == ids(line), line
        env = env_prompt(fen, moves[0], moves[:1]) + f"{fen}+0.001+0+0"
        prompt, completion = split_prompt_completion(env)
        assert ids(prompt) + ids(completion) == ids(env), env


def test_gpu_recipes_budget_the_real_completion_lengths():
    # measured on the embedded dataset with GPT-2's tokenizer, EOS included
    ds = load_rookworld_dataset(EMBEDDED, split="test")  # 5,000 rows: seconds, not the 80k of train
    lengths = [
        len(x) + 1 for x in gpt2_tokenizer()(list(ds["completion"]), add_special_tokens=False)["input_ids"]
    ]
    longest = {task: max(n for n, t in zip(lengths, ds["task"], strict=True) if t == task) for task in "PA"}
    assert 40 < longest["P"] < 96 and 40 < longest["A"] < 96, longest
    for recipe in sorted(glob.glob(str(ROOT / "recipes" / "grpo_*.yaml"))):
        config = yaml.safe_load(Path(recipe).read_text())
        if "cpu" in os.path.basename(recipe):
            continue  # the tiny recipes run the embedded model with its own compact tokenizer
        assert config["max_completion_length"] >= max(longest.values()), (recipe, longest)


@pytest.mark.slow
def test_parity_at_124m_shape(tmp_path):
    from rookworld_trl.common.entry import run_stage
    from rookworld_trl.stages.eval.parity import main

    model = save_rookworld_124m_shape(tmp_path / "m")
    assert run_stage("parity", main, [model, "--device", "cpu", "--max_new_tokens", "8"]) == 0


GRPO_124M = [
    "--config", str(ROOT / "recipes" / "grpo_rookworld_124m_gpu.yaml"), "--dataset_name", str(EMBEDDED),
    "--use_cpu", "true", "--bf16", "false", "--per_device_train_batch_size", "4", "--num_generations", "4",
    "--save_steps", "1", "--eval_samples", "4", "--log_completions", "false", "--report_to", "none",
    "--disable_tqdm", "true",
]  # fmt: skip


def run_124m_stage(model: str, out, steps: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rookworld_trl.stages.grpo", *GRPO_124M, "--model_name_or_path", model,
           "--output_dir", str(out), "--max_steps", str(steps)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_grpo_with_the_124m_recipe_checkpoints_is_killed_resumes_and_evaluates(tmp_path):
    """The 124M GPU recipe's settings (reference model, adaptive KL, dense reward, field credit, replay off,
    accumulation 2) on this CPU in fp32, a small batch: kill after checkpoint-1, resume to step 3, final
    save and the before/after eval. Prints s/step and peak RSS (docs/PERFORMANCE.md)."""
    from rookworld_trl.training import checkpoints

    model, out = save_rookworld_124m_shape(tmp_path / "m"), tmp_path / "run"
    proc = run_124m_stage(model, out, steps=3)
    deadline = time.time() + 900
    while not checkpoints.is_complete(str(out / "checkpoint-1")):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    proc.kill()
    proc.wait()
    proc = run_124m_stage(model, out, steps=3)
    log, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, log[-3000:]
    assert "resuming from" in log and (out / "final" / "model.safetensors").is_file()
    assert (out / "eval" / "eval.json").is_file()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "step_time" in r]
    assert [r["step"] for r in steps][-2:] == [2, 3]
    print(f"124M shape, CPU fp32: {statistics.median(r['step_time'] for r in steps):.1f} s/step (8 completions "
          f"x 96 tokens, accumulation 2, reference model), peak RSS {max(r['memory/cpu_peak_rss_gib'] for r in steps):.2f} GiB")  # fmt: skip


@pytest.mark.slow
def test_sft_continue_path_of_the_124m_recipe(tmp_path):
    """recipes/sft_rookworld_124m_gpu.yaml on this CPU in fp32, a few steps from a 124M-shape model: the
    continue-training path (a loaded model, GPT-2's tokenizer), eval loss, best-model reload, the format check."""
    from rookworld_trl.common.entry import run_stage
    from rookworld_trl.stages import sft

    model = save_rookworld_124m_shape(tmp_path / "m")
    args = ["--config", str(ROOT / "recipes" / "sft_rookworld_124m_gpu.yaml"), "--model_name_or_path", model,
            "--dataset_name", str(EMBEDDED), "--output_dir", str(tmp_path / "run"), "--use_cpu", "true", "--bf16", "false",
            "--max_steps", "4", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
            "--max_eval_samples", "16", "--eval_steps", "2", "--save_steps", "2", "--logging_steps", "1",
            "--format_check_samples", "4", "--dataloader_num_workers", "0", "--report_to", "none"]  # fmt: skip
    assert run_stage("sft", sft.main, args) == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r and "eval_loss" not in r][:4] == [1, 2, 3, 4]
    assert any("eval_loss" in r for r in rows) and any("layout" in r for r in rows)
    assert (tmp_path / "run" / "model.safetensors").is_file()
