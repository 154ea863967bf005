"""The SFT stage (`rookworld sft`): supervised training of a RookWorld GPT-2 on P:/A: samples with TRL's SFTTrainer.

    rookworld sft                        # a short SFT of the embedded model on the embedded data (~1 min)
    rookworld sft --config recipes/sft_tiny_cpu.yaml [--max_steps 200 ...]
    accelerate launch --config_file accelerate_configs/cpu.yaml -m rookworld_trl.stages.sft --config recipes/sft_tiny_cpu.yaml

Either a new GPT-2 from scratch (n_layer/n_head/n_embd/n_positions and a tokenizer, e.g. from `rookworld
tokenizer train`) or a model to continue (`model_name_or_path`). SFTTrainer appends `<|endoftext|>` to each
completion (the model learns to stop) and puts the loss on the completion tokens only.

Outputs in `output_dir`: checkpoints as GRPO's (`--resume_from_checkpoint auto`), metrics.jsonl, the final model
and tokenizer; then greedy completions of held-out P: prompts give `parsed`, `layout` and `legal_best_move`, as
in `rookworld eval`.
"""

from __future__ import annotations

import os
import sys

import torch
from transformers import AutoTokenizer, EarlyStoppingCallback

from rookworld_trl.chess.environment import legal_best_move, parse_board
from rookworld_trl.chess.formats import FEN_WIDTH, fen_width_of, parse_policy_completion, parse_policy_prompt
from rookworld_trl.common.entry import say
from rookworld_trl.common.locks import scoped
from rookworld_trl.common.paths import resolve_paths
from rookworld_trl.data.layout import column, iter_column
from rookworld_trl.model.generation import generate_completions
from rookworld_trl.model.loading import (
    load_model_and_tokenizer,
    new_gpt2_model,
    set_dropout,
    train_at_fen_width,
)
from rookworld_trl.stages.eval.charts import sft_summary
from rookworld_trl.stages.recipe import check_numbers, stage_parser
from rookworld_trl.training import checkpoints
from rookworld_trl.training.console import use_compact_logs
from rookworld_trl.training.interrupt import said_interrupted
from rookworld_trl.training.metrics_log import JSONLMetricsCallback
from rookworld_trl.training.sft import RookWorldSFTConfig, RookWorldSFTTrainer, SFTScriptArguments


def build_model(s: SFTScriptArguments):
    """(model, tokenizer): a loaded model to continue, or a new GPT-2 sized by the arguments."""
    if s.model_name_or_path is not None:  # it keeps its own dropout unless `dropout` says otherwise
        model, tokenizer = load_model_and_tokenizer(
            s.model_name_or_path, tokenizer_name_or_path=s.tokenizer_name_or_path
        )
    else:
        tokenizer = AutoTokenizer.from_pretrained(s.tokenizer_name_or_path)
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        tokenizer.padding_side = "left"  # as load_model_and_tokenizer: generation continues on the right
        model = new_gpt2_model(
            tokenizer, s.n_layer, s.n_head, s.n_embd, s.n_positions, dropout=s.dropout or 0.0
        )
    if s.dropout is not None:
        set_dropout(model, s.dropout)
    return model, tokenizer


def load_splits(script_args: SFTScriptArguments, seed: int):
    """(train, eval) datasets of prompt and completion (data/load.py), the held-out prompts at the training
    data's FEN width."""
    from rookworld_trl.data.files import Exclusion
    from rookworld_trl.data.load import Spec, load

    s = script_args
    both = dict(mix_env_ratio=s.mix_env_ratio, seed=seed, skip_bad_rows=s.skip_bad_rows)
    train = load(Spec(s.dataset_name, s.dataset_train_split, exclusion=Exclusion.of(s.exclude),
                      fen_width=s.fen_width, max_samples=s.max_train_samples, **both))  # fmt: skip
    width = s.fen_width or train.fen_width or FEN_WIDTH  # held-out prompts as the training data
    evaluation = load(Spec(s.dataset_name, s.dataset_test_split, fen_width=width, max_samples=s.max_eval_samples,
                           **both))  # fmt: skip
    # Keep only prompt/completion: with a `text` column present, SFTTrainer appends EOS to `text` and
    # not to `completion`, then trains on prompt+completion, i.e. without the EOS.
    columns = ["prompt", "completion"]
    return train.rows.select_columns(columns), evaluation.rows.select_columns(columns)


@torch.no_grad()
def policy_checks(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 32) -> dict:
    """Greedy-complete P: prompts; the fractions that parse, are laid out exactly, and name a legal B: move."""
    texts = generate_completions(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    parsed = [parse_policy_completion(text) for text in texts]
    boards = [parse_board(parse_policy_prompt(prompt)) for prompt in prompts]
    legal = [legal_best_move(board, text) is not None for board, text in zip(boards, texts, strict=True)]
    n = max(len(prompts), 1)
    return {
        "parsed": sum(p.ok for p in parsed) / n,
        "layout": sum(p.exact for p in parsed) / n,
        "legal_best_move": sum(legal) / n,
    }


def run_sft(script_args: SFTScriptArguments, config: RookWorldSFTConfig, train_dataset, eval_dataset):
    """Build the model, train, save model + tokenizer in output_dir, check P: formats; return the trainer (its
    `interrupt.step` is the step a stop signal saved and ended the run at, else None)."""
    model, tokenizer = build_model(script_args)
    # recorded in config.json
    train_at_fen_width(model, script_args.fen_width or fen_width_of(iter_column(train_dataset, "prompt")))
    n_positions = model.config.n_positions
    if config.max_length is None or config.max_length > n_positions:
        raise ValueError(
            f"max_length ({config.max_length}) must be set and <= the model's n_positions ({n_positions})"
        )
    callbacks = []
    if config.metrics_jsonl:
        callbacks.append(JSONLMetricsCallback(os.path.join(config.output_dir, config.metrics_jsonl)))
    if config.early_stopping_patience:
        callbacks.append(
            EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_threshold)
        )
    evaluated = eval_dataset if config.eval_strategy != "no" else None
    trainer = RookWorldSFTTrainer(model=model, args=config, train_dataset=train_dataset, eval_dataset=evaluated,
                                  processing_class=tokenizer, callbacks=callbacks)  # fmt: skip
    n_params = sum(p.numel() for p in model.parameters())
    trainer.accelerator.print(f"sft: {n_params / 1e6:.2f}M parameters, {len(train_dataset)} training samples")
    checkpoints.check_output_dir(config.output_dir)
    checkpoints.check_shared_output_dir(trainer.accelerator, config.output_dir)  # machines share it
    with trainer.accelerator.main_process_first():  # the main process moves damaged checkpoints aside first
        resume = checkpoints.resolve_resume(config.resume_from_checkpoint, config.output_dir)
    if resume:
        say(f"resuming from {resume} (step {checkpoints.checkpoint_step(resume)})")
    use_compact_logs(trainer)  # the bar and one line per logging step, as `rookworld train`
    try:
        trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:  # a second signal: mid-update weights are no step's, so nothing more is saved
        trainer.interrupt.step = trainer.state.global_step
    if trainer.interrupt.step is not None:  # the first signal: the step finished and was saved
        return trainer
    trainer.save_model(config.output_dir)  # model + tokenizer (the best one with load_best_model_at_end)
    if trainer.accelerator.is_main_process:
        checks, n = format_check(trainer, tokenizer, eval_dataset, config.format_check_samples)
        start = checkpoints.checkpoint_step(resume) if resume else 0
        print(sft_summary(config.output_dir, start, checks, n), flush=True)
    return trainer


def format_check(trainer, tokenizer, eval_dataset, samples: int) -> tuple[dict | None, int]:
    """(policy_checks of up to `samples` held-out P: prompts, logged to metrics.jsonl; how many) or (None, 0)."""
    policy = eval_dataset.filter(lambda row: row["prompt"].startswith("P:")) if samples else []
    policy = policy.select(range(min(samples, len(policy)))) if len(policy) else []
    if not len(policy):
        return None, 0
    longest = max(len(ids) for ids in tokenizer(column(policy, "completion"))["input_ids"])
    model = trainer.accelerator.unwrap_model(trainer.model)
    checks = policy_checks(model, tokenizer, column(policy, "prompt"), max_new_tokens=longest + 8)
    trainer.log({**checks, "format_check_samples": len(policy)})
    return checks, len(policy)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser((SFTScriptArguments, RookWorldSFTConfig), "sft")  # one-line errors, as train
    script_args, config = parser.parse_args_and_config(args=argv)
    check_numbers(config)
    checkpoints.check_output_dir(config.output_dir)  # before anything writes there
    with scoped():  # the run's lock goes with it, however it ends (a process exiting drops it too)
        checkpoints.lock_run_dir(config.output_dir, "rookworld sft")  # one run per output_dir
        # the bundled model and data, from any working directory
        resolve_paths(script_args, "dataset_name", "model_name_or_path", "tokenizer_name_or_path")
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        train_dataset, eval_dataset = load_splits(script_args, config.seed)
        trainer = run_sft(script_args, config, train_dataset, eval_dataset)
        return said_interrupted(trainer) if trainer.interrupt.step is not None else 0


if __name__ == "__main__":
    from rookworld_trl.common.entry import run_stage

    sys.exit(run_stage("sft", main))
