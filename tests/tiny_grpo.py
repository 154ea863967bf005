"""The tiny GRPO setup the tests share: a random 2-layer GPT-2 with a character tokenizer, a four-prompt dataset,
a dense stand-in reward, and a RookWorldGRPOTrainer built on them (CPU, seconds a step). tests/conftest.py
makes the model directory a session fixture (`model_dir`).

    from tiny_grpo import make_trainer, tiny_config, train_logs
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import chess
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from rookworld_trl.grpo.config import GRPOScriptArguments, RookWorldGRPOConfig
from rookworld_trl.grpo.selfplay import selfplay_for
from rookworld_trl.grpo.trainer import RookWorldGRPOTrainer

ROOT = Path(__file__).resolve().parent.parent
SCRIPT_FIELDS = {f.name for f in dataclasses.fields(GRPOScriptArguments)}
os.environ.setdefault("HF_HUB_OFFLINE", "1")
CHARS = "PA: abcdefgh12345678rnbqkpRNBQKP/-+wM0.EB"


def make_tiny_model_dir(path: Path) -> str:
    """A random 2-layer GPT-2 + a character tokenizer, saved like a hub model (the reference reloads it)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate(sorted(set(CHARS)))}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", padding_side="left"
    )
    config = GPT2Config(
        vocab_size=len(vocab), n_layer=2, n_head=2, n_embd=64, n_positions=256, bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def load_tiny(model_dir: str):
    return GPT2LMHeadModel.from_pretrained(model_dir), PreTrainedTokenizerFast.from_pretrained(model_dir)


def tiny_dataset(n: int = 32) -> Dataset:
    prompts = ["P: e2e4 M:", "A: e7e5+", "P: d2d4 M:", "A: g1f3+"]
    return Dataset.from_dict(
        {"prompt": [prompts[i % 4] for i in range(n)], "task": [["P", "A"][i % 2] for i in range(n)]}
    )


def file_reward(prompts, completions, **kwargs):
    """Fraction of file letters (a-h): dense enough that a group of 4 short samples almost never scores alike."""
    return [sum(ch in "abcdefgh" for ch in c) / max(len(c), 1) for c in completions]


def tiny_config(output_dir, **overrides) -> RookWorldGRPOConfig:
    kwargs = dict(
        output_dir=str(output_dir), max_steps=2, per_device_train_batch_size=4, num_generations=4,
        max_completion_length=8, use_cpu=True, bf16=False, report_to=[], logging_steps=1, save_strategy="no",
        seed=0, learning_rate=1e-3, nan_snapshot_steps=1,
        disable_tqdm=True,
        lr_scheduler_type="constant",
    )  # fmt: skip
    kwargs.update(overrides)
    return RookWorldGRPOConfig(**kwargs)


def make_trainer(
    model_dir: str,
    output_dir,
    callbacks=None,
    trainer_cls=RookWorldGRPOTrainer,
    peft_config=None,
    **overrides,
):
    """A trainer of the tiny model on the tiny dataset; `overrides` may name RookWorldGRPOConfig fields and the
    GRPOScriptArguments fields the trainer takes (push_checkpoints, selfplay_*)."""
    model, tokenizer = load_tiny(model_dir)
    script = GRPOScriptArguments(**{k: overrides.pop(k) for k in list(overrides) if k in SCRIPT_FIELDS})
    args, dataset = tiny_config(output_dir, **overrides), tiny_dataset()
    return trainer_cls(
        model=model,
        reward_funcs=[file_reward],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_config,
        selfplay=selfplay_for(script, args.seed, dataset),
        push_checkpoints=script.push_checkpoints,
    )


def train_logs(trainer) -> list[dict]:
    """The per-step log entries (not the end-of-training summary)."""
    return [row for row in trainer.state.log_history if "loss" in row]


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def env_lines(n_moves: int = 16) -> list[str]:
    """A: lines of a short game, rendered by our formats module (the environment task needs no engine)."""
    from rookworld_trl.chess.environment import env_sample
    from rookworld_trl.chess.formats import render_env

    board, history, lines = chess.Board(), [], []
    for _ in range(n_moves):
        move = sorted(m.uci() for m in board.legal_moves)[len(history) % board.legal_moves.count()]
        lines.append(render_env(env_sample(board.fen(), move, history[-9:])))
        board.push_uci(move)
        history.append(move)
    return lines


def tiny_recipe_argv(model_path: str, tmp_path, *flags: str) -> list[str]:
    """`grpo.main` arguments: the tiny CPU recipe on the tiny model and a file of A: lines, env_reward only,
    16-token completions, output in tmp_path/run; `flags` override the rest."""
    data = tmp_path / "env.txt"
    data.write_text("\n".join(env_lines()) + "\n")
    return [
        "--config", str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"), "--model_name_or_path", model_path,
        "--dataset_name", str(data), "--output_dir", str(tmp_path / "run"), "--reward_funcs", "env_reward",
        "--reward_weights", "1.0", "--field_credit", "false", "--mix_env_ratio", "1.0",
        "--max_completion_length", "16", "--disable_tqdm", "true", "--fen_width", "89", *flags,
    ]  # fmt: skip


def generation_rows(trainer, groups: int) -> list[dict]:
    """A generation batch as TRL's sampler gives it: each prompt repeated num_generations times."""
    n = trainer.num_generations
    return [trainer.train_dataset[g] for g in range(groups) for _ in range(n)]


def completion_texts(trainer, output) -> list[str]:
    ids = output["completion_ids"] * output["completion_mask"]  # pad is EOS (0): skipped when decoding
    return trainer.processing_class.batch_decode(ids, skip_special_tokens=True)


def constant(prompts, completions, **kwargs):
    """1.0 for every completion: every group flat."""
    return [1.0 for _ in completions]
