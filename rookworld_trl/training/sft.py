"""RookWorldSFTConfig and RookWorldSFTTrainer: TRL's SFTConfig and SFTTrainer with verified checkpoints, early
stopping, a metrics file, tokens/s in the logs, packed rows kept row by row (`packing: true`) and a checkpoint on a
stop signal (Ctrl-C, SIGTERM, SIGHUP); SFTScriptArguments, the rest of an SFT recipe (the data and the model to
start from). The stage that builds and runs them: rookworld_trl/stages/sft.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from trl import SFTConfig, SFTTrainer

from rookworld_trl.common.errors import suggest_fields
from rookworld_trl.common.flags import helped
from rookworld_trl.data.args import DataArguments, stage_defaults
from rookworld_trl.training.interrupt import SaveOnInterrupt
from rookworld_trl.training.trl_compat import DataCollatorForLanguageModeling, VerifiedCheckpoints


@suggest_fields
@dataclass
class RookWorldSFTConfig(SFTConfig):
    """SFTConfig with defaults for small chess models, plus early stopping, metrics file and a format check.
    A recipe's settings: `RookWorldSFTConfig.from_recipe("sft_embedded_cpu", max_steps=20)`."""

    @classmethod
    def from_recipe(cls, recipe: str = "sft_embedded_cpu", **overrides) -> RookWorldSFTConfig:
        """The trainer settings of a recipe (a bundled name or a YAML path), with `overrides`."""
        from rookworld_trl.training.recipes import recipe_config

        return recipe_config(cls, recipe, (SFTScriptArguments,), overrides)

    # Overridden default: count tokens, for tokens/s. Typed `str`, not transformers' `str | bool`, which its
    # argument parser reads as a bool only (then "non_padding" cannot be given in a recipe).
    # fmt: off
    include_num_input_tokens_seen: str = helped("non_padding", "Count input tokens, for tokens/s.",
                                                choices=["all", "non_padding", "no"])
    # Overridden default: TRL turns activation checkpointing on; it saves memory a small model does not need and
    # costs ~20% speed. transformers 5 renamed it `activation_checkpointing`: a None alias leaves that name in
    # charge (default off) without a deprecation warning.
    gradient_checkpointing: bool | None = helped(None, "Deprecated alias of `activation_checkpointing` (off unless set).")
    early_stopping_patience: int = helped(
        0, "Stop after this many evaluations without improvement of `metric_for_best_model` (0: off).")
    early_stopping_threshold: float = helped(0.0, "Smallest change of the metric that counts as an improvement.")
    metrics_jsonl: str | None = helped(
        "metrics.jsonl", "Append every log entry as one JSON line to this file (relative to output_dir).")
    format_check_samples: int = helped(
        100, "After training, greedy-complete this many held-out P: prompts and log their checks.")
    torch_threads: int | None = helped(None, "CPU threads for torch (unset: torch's default, the physical cores).")
    # fmt: on

    def __post_init__(self):
        if self.early_stopping_patience < 0:
            raise ValueError(
                f"early_stopping_patience must be >= 0 (0: off), got {self.early_stopping_patience}"
            )
        if self.early_stopping_patience:
            if self.eval_strategy == "no":  # a str here, or a str-valued enum when built from another config
                raise ValueError(
                    "early stopping needs evaluations: set eval_strategy (e.g. 'steps') and eval_steps"
                )
            self.metric_for_best_model = self.metric_for_best_model or "eval_loss"
        if self.format_check_samples < 0:
            raise ValueError(f"format_check_samples must be >= 0, got {self.format_check_samples}")
        super().__post_init__()
        # warmup_stable_decay's `num_decay_steps` below 1 is a fraction of max_steps, as `warmup_steps` below 1 is:
        # a run extended with another `--max_steps` then decays over the same share (transformers takes a count)
        kwargs = self.lr_scheduler_kwargs or {}
        share = kwargs.get("num_decay_steps")
        if self.lr_scheduler_type != "warmup_stable_decay" or share is None or share >= 1:
            return
        if self.max_steps <= 0:
            raise ValueError(
                f"lr_scheduler_kwargs num_decay_steps {share} is a fraction of max_steps: set max_steps, "
                "or give num_decay_steps as a number of steps"
            )
        self.lr_scheduler_kwargs = {**kwargs, "num_decay_steps": decay_steps(self.max_steps, share)}


def decay_steps(max_steps: int, share: float) -> int:
    """How many of max_steps a warmup_stable_decay share (`num_decay_steps` below 1) decays over."""
    return max(1, round(share * max_steps))


def cooldown_max_steps(step: int, share: float) -> int:
    """The max_steps whose decay starts at `step`: a checkpoint of the constant phase resumed with it is finished
    (the build's cooldown). Each added step moves the decay's start by 0 or 1, so one count starts exactly there.

        python -c "from rookworld_trl.training.sft import cooldown_max_steps as c; print(c(4000, 0.2))"  # 5000
    """
    total = round(step / (1 - share))
    while total - decay_steps(total, share) < step:
        total += 1
    while total - decay_steps(total, share) > step:
        total -= 1
    return total


class PackedRows:
    """The collator of packed data (`packing: true`) that keeps each packed row a row of the batch, its samples told
    apart by position ids that restart at each one (transformers then masks attention sample by sample). TRL's
    padding-free collator flattens the batch into one row, whose attention costs (rows x length)^2 without a varlen
    (flash) kernel. Padding is ~40% of a padded P:/A: batch; packed rows are ~95% full."""

    def __init__(self, pad_token_id: int):
        self.collate = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, return_position_ids=True)

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.collate(examples)
        # with a mask transformers would not look for the samples in the position ids
        batch.pop("attention_mask")
        return batch


class RookWorldSFTTrainer(VerifiedCheckpoints, SFTTrainer):
    """SFTTrainer that logs `tokens_per_second` over the last logging interval (evaluations left out), collates
    packed data row by row (`PackedRows`) and saves a checkpoint on a stop signal (`interrupt`)."""

    _speed_mark: tuple[float, int] | None = None  # (time, tokens seen) at the last training log
    _eval_seconds: float = 0.0  # evaluation time since then

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.packing and self.args.packing_strategy in ("bfd", "bfd_split"):
            self.data_collator = PackedRows(self.processing_class.pad_token_id)
        self.interrupt = SaveOnInterrupt()
        self.add_callback(self.interrupt)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "eval_runtime" in logs:
            self._eval_seconds += logs["eval_runtime"]
        elif "loss" in logs and self.args.include_num_input_tokens_seen != "no":
            now, tokens = time.time(), self.state.num_input_tokens_seen
            if self._speed_mark is not None:  # the first interval has no start mark (and holds the warm-up)
                seconds = max(now - self._speed_mark[0] - self._eval_seconds, 1e-9)
                logs["tokens_per_second"] = round((tokens - self._speed_mark[1]) / seconds, 1)
            self._speed_mark, self._eval_seconds = (now, tokens), 0.0
        super().log(logs, start_time)


@dataclass
@stage_defaults(dataset_name="rookworld_trl/assets/data", dataset_test_split="validation", mix_env_ratio=None)
class SFTScriptArguments(DataArguments):
    """What to train on (DataArguments, shared with GRPO; the embedded data by default) and from which model."""

    # fmt: off
    max_train_samples: int | None = helped(None, "Use at most this many training samples.")
    max_eval_samples: int | None = helped(512, "Use at most this many held-out samples.")
    model_name_or_path: str | None = helped(
        None, "Continue this model (local dir or hub id). Unset: a new GPT-2 from scratch.")
    tokenizer_name_or_path: str | None = helped(
        None, "Tokenizer of a new model (a `rookworld tokenizer train` dir or a hub id); with `model_name_or_path`, "
        "only needed when the model dir has no tokenizer.")
    n_layer: int = helped(4, "New model: transformer blocks.")
    n_head: int = helped(4, "New model: attention heads (must divide n_embd).")
    n_embd: int = helped(128, "New model: embedding width.")
    n_positions: int = helped(256, "New model: context length (>= max_length).")
    dropout: float | None = helped(
        None, "Dropout during SFT. Unset: 0.0 for a new model, the loaded model's own for a continued one.")
    # fmt: on

    def __post_init__(self):
        if self.model_name_or_path is None and self.tokenizer_name_or_path is None:
            raise ValueError(
                "a new model needs `tokenizer_name_or_path` (or set `model_name_or_path` to continue one)"
            )
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
