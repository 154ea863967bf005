"""RookWorldGRPOConfig: TRL's GRPOConfig plus what the trainer reads: the reward shaping, NaN recovery, the reference
device, checkpoint tiers, the LR schedule, the sampler, and the RL options' sections (grpo/rl_options.py composes
them; each lives in its option's module: the KL with adaptive beta and the KL guard, the baseline, the value
baseline with GAE, dynamic sampling, the curriculum, field credit, supervised replay). What only the stage reads
(data, engine, evals, self-play, tactics, publishing) is GRPOScriptArguments (stages/grpo_args.py). Every field
works in a YAML recipe and as a `--flag`; invariants are checked in `__post_init__`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import MISSING, dataclass, field, fields

import torch
from trl import GRPOConfig

from rookworld_trl.common.errors import UserError, suggest_fields
from rookworld_trl.grpo.rl_options import RLOptions, check_rl_options
from rookworld_trl.model.generation import BACKENDS

DEVICE_TYPES = ("cpu", "cuda", "xpu", "mps", "npu")
# Under torch.compile every scored batch is padded to a multiple of this many tokens, prompt and completion
# each (TRL's pad_to_multiple_of): one shape, so one compile. Without it each new batch length meets new guards
# (inductor's `batch x length > 4096` recompiled a GPU-shaped run at step 4). 128 holds every RookWorld prompt
# (GPT-2 BPE: P: <= 87 tokens, A: <= 114) and completion (max_completion_length <= 128).
COMPILE_PAD = 128

logger = logging.getLogger(__name__)


def compiling(config) -> bool:
    """Whether the model will run under torch.compile: the torch_compile flag or an accelerate config's
    dynamo_backend (which accelerate passes as ACCELERATE_DYNAMO_BACKEND)."""
    backend = os.environ.get("ACCELERATE_DYNAMO_BACKEND", "NO").upper()
    return bool(config.torch_compile) or backend not in ("NO", "")


@suggest_fields
@dataclass
class RookWorldGRPOConfig(RLOptions, GRPOConfig):
    """GRPOConfig plus the RookWorld fields, by section (the RL options: grpo/rl_options.py RLOptions). The model (and LoRA)
    comes from TRL's ModelConfig; what only the stage reads (data, rewards, evals): stages/grpo_args.py.
    The defaults are TRL's where not said otherwise; the tested settings are a recipe's:
    `RookWorldGRPOConfig.from_recipe("grpo_tiny_cpu", max_steps=5, output_dir="runs/try")`."""

    @classmethod
    def from_recipe(cls, recipe: str = "grpo_tiny_cpu", **overrides) -> RookWorldGRPOConfig:
        """The trainer settings of a recipe (a bundled name such as "grpo_tiny_cpu", or a YAML path), with
        `overrides`; the recipe's model, data and reward names are the stage's and are left out."""
        from rookworld_trl.training.recipes import recipe_config

        return recipe_config(cls, recipe, "train", overrides)

    # ---- rewards and credit ----
    reward_shaping: str = field(
        default="graduated",
        metadata={
            "help": "Shaping of the registry rewards: graduated, linear, continuous, dense, decisive, precise or "
            "binary (grpo/rewards/functions.py). decisive is dense with half of the P: quality on B:, which also follows "
            "B:'s expected-score loss up to 0.5 (a missed mate costs about what it gives up). precise grades each listed move (+1 engine top 5, 0 other legal, -1 illegal, "
            "repeated or past the fifth) and B: for legality, quality and consistency with E:: it pays for "
            "precision, never for count."
        },
    )
    # ---- safety: non-finite steps, rollback and the stable checkpoint ----
    nan_max_retries: int = field(
        default=3,
        metadata={
            "help": "NaN/Inf recovery: consecutive rollbacks allowed before training stops with an error."
        },
    )
    nan_lr_factor: float = field(
        default=0.5,
        metadata={"help": "NaN/Inf recovery: multiply the learning rate by this after each rollback."},
    )
    nan_snapshot_steps: int = field(
        default=10,
        metadata={
            "help": "NaN/Inf recovery: copy the trainable weights + optimizer state to host memory every N "
            "healthy steps (the rollback target). 1 is the most precise; the copy takes ~3x the trainable "
            "weights of RAM."
        },
    )
    save_stable: bool = field(
        default=True,
        metadata={
            "help": "Keep the last checkpoint of a healthy step (finite, KL < kl_warn) in output_dir/stable."
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint path, 'auto' (latest complete checkpoint in output_dir, else a fresh "
            "start) or 'stable'/'recovery' (output_dir/stable). Incomplete checkpoints are never used; "
            "resuming from step N moves checkpoints past N to output_dir/superseded/."
        },
    )
    # ---- sampler and scoring ----
    generation_backend: str = field(
        default="rookworld",
        metadata={
            "help": "Who samples the completions: 'rookworld' (rookworld_trl/model/decoding.py through TRL's rollout_func: "
            "one prefill per prompt shared by its group, a static KV cache, a CUDA graph per token on GPUs) or "
            "'transformers' (TRL's generate()). use_vllm: true uses vLLM either way."
        },
    )
    sampler_check_every: int = field(
        default=50,
        metadata={
            "help": "generation_backend rookworld: compare the sampler's log-probs with TRL's scoring forward on the "
            "same tokens at the first step and every N steps (0: the first step only), logged as "
            "sampling/logprob_gap/* and sampling/importance_sampling_ratio/* (rookworld_trl/model/fallback.py)."
        },
    )
    sampler_logprob_tolerance: float = field(
        default=0.05,
        metadata={
            "help": "Mean |sampler - scorer| log-prob per token past which the sampler leaves its path for the rest "
            "of the run (CUDA graph -> eager -> transformers' generate()); a sampler error does so too."
        },
    )
    sampler_importance_sampling: bool = field(
        default=False,
        metadata={
            "help": "generation_backend rookworld: correct the loss for the sampler's distribution as TRL does for "
            "vLLM (ratio of TRL's scoring forward to the sampler's log-probs, vllm_importance_sampling_mode and "
            "its clip bounds; logged as sampling/sampling_logp_difference/* and "
            "sampling/importance_sampling_ratio/*). Costs one scoring forward per generation batch."
        },
    )
    padding_aware_positions: bool = field(
        default=True,
        metadata={
            "help": "Number GPT-2 positions from the attention mask when TRL scores left-padded rows, as "
            "generate() does when sampling (policy and reference model); see "
            "rookworld_trl.model.loading.use_padding_aware_positions."
        },
    )
    shared_prefix_scoring: bool = field(
        default=True,
        metadata={
            "help": "Score GRPO completions with each distinct prompt computed once for its group "
            "(rookworld_trl/model/shared_prefix.py: the same log-probs and gradients as TRL's forward, about half "
            "its FLOPs at 8 samples per prompt). false: TRL's forward over every row."
        },
    )
    ref_model_device: str | None = field(
        default=None,
        metadata={
            "help": "Put the reference model on this device (e.g. 'cuda:1', 'cpu'): frees policy-GPU memory. "
            "Only with beta > 0 and full fine-tuning (with PEFT the reference is the adapter-disabled "
            "policy)."
        },
    )
    # ---- learning-rate schedule ----
    lr_schedule: str | None = field(
        default=None,
        metadata={
            "help": "'warmup_cosine_linear' replaces lr_scheduler_type: linear warmup (warmup_steps; < 1 is "
            "a ratio), cosine down to lr_cosine_min_ratio, then a linear decay to zero over the last "
            "lr_final_decay_ratio of the steps."
        },
    )
    lr_cosine_min_ratio: float = field(
        default=0.1, metadata={"help": "warmup_cosine_linear: LR (fraction of peak) where the cosine ends."}
    )
    lr_final_decay_ratio: float = field(
        default=0.1,
        metadata={"help": "warmup_cosine_linear: fraction of the steps in the final linear decay."},
    )
    # ---- TRL defaults we change, and the console ----
    # TRL turns activation checkpointing on; it saves memory a 124M model does not need and costs ~20% speed.
    # transformers 5 renamed it `activation_checkpointing` (default off): a None alias leaves that name in
    # charge without a deprecation warning (as in sft.py).
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of `activation_checkpointing` (off unless set)."}
    )
    disable_dropout: bool = field(
        default=True,
        metadata={
            "help": "Dropout off in the policy and the reference (TRL's option; on by default here): with dropout "
            "the same weights give other log-probs at every forward, so the KL and the importance ratio would "
            "measure dropout noise instead of policy change."
        },
    )
    print_completions_every: int | None = field(
        default=None,
        metadata={
            "help": "With log_completions, print a sample table of completions on the console every N steps "
            "(0: never; unset: at every logging step, as TRL does); the completions Parquet is still written at "
            "every logging step."
        },
    )
    metrics_jsonl: str | None = field(
        default="metrics.jsonl",
        metadata={"help": "Append every log entry as one JSON line to this file (relative to output_dir)."},
    )

    def __post_init__(self):
        self._check_ref_model_device()
        if self.nan_max_retries < 0 or not 0.0 < self.nan_lr_factor <= 1.0 or self.nan_snapshot_steps < 1:
            raise ValueError("need nan_max_retries >= 0, 0 < nan_lr_factor <= 1 and nan_snapshot_steps >= 1")
        if self.generation_backend not in BACKENDS:
            raise ValueError(f"generation_backend must be one of {BACKENDS}, got {self.generation_backend!r}")
        if self.lr_schedule not in (None, "warmup_cosine_linear"):
            raise ValueError(f"lr_schedule must be None or 'warmup_cosine_linear', got {self.lr_schedule!r}")
        if not 0.0 <= self.lr_cosine_min_ratio <= 1.0 or not 0.0 <= self.lr_final_decay_ratio < 1.0:
            raise ValueError("need lr_cosine_min_ratio in [0, 1] and lr_final_decay_ratio in [0, 1)")
        check_rl_options(self)
        if self.pad_to_multiple_of == "auto" and compiling(self):  # TRL's "auto" pads on Neuron only
            self.pad_to_multiple_of = COMPILE_PAD
        super().__post_init__()

    def _check_ref_model_device(self) -> None:
        if self.ref_model_device is None:
            return
        try:
            kind = torch.device(self.ref_model_device).type
        except RuntimeError:  # torch's message lists every device type it knows
            kind = None
        if kind not in DEVICE_TYPES:
            raise ValueError(
                f"ref_model_device {self.ref_model_device!r}: expected a device of type {DEVICE_TYPES}, e.g. cuda:1"
            )
        if self.sync_ref_model:
            raise ValueError(
                "ref_model_device cannot be combined with sync_ref_model (TRL mixes weights in place)"
            )


def as_rookworld_config(args) -> RookWorldGRPOConfig:
    """`args` for RookWorldGRPOTrainer: a RookWorldGRPOConfig as is; a plain trl.GRPOConfig converted (the
    fields set away from GRPOConfig's defaults are kept, the others take ours, activation checkpointing off
    among them unless set through gradient_checkpointing); None: the defaults."""
    if isinstance(args, RookWorldGRPOConfig):
        return args
    if args is None:
        return RookWorldGRPOConfig()
    if not isinstance(args, GRPOConfig):
        raise UserError(
            f"args must be a RookWorldGRPOConfig (or a trl.GRPOConfig), got {type(args).__name__}"
        )
    changed = {f.name: getattr(args, f.name) for f in fields(GRPOConfig) if f.init and _changed(args, f)}
    changed.pop("generation_batch_size", None)  # __post_init__ derives it from steps_per_generation
    # TRL's default turns gradient_checkpointing on, which __post_init__ copies into activation_checkpointing:
    # unless the user set it, ours (off) applies
    if "gradient_checkpointing" not in changed:
        changed.pop("activation_checkpointing", None)
    try:
        return RookWorldGRPOConfig(**{"output_dir": args.output_dir, **changed})
    except (ValueError, TypeError) as e:
        raise UserError(
            f"args: this trl.GRPOConfig does not convert to RookWorldGRPOConfig ({e}); build "
            "RookWorldGRPOConfig(...) with the same fields instead"
        ) from None


def _changed(config, f) -> bool:
    """Whether a field of `config` holds another value than its dataclass default (set by the user, or by
    __post_init__ from what the user set)."""
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    return default is MISSING or getattr(config, f.name) != default


def check_completion_length(
    dataset, tokenizer, max_completion_length: int, n: int = 2000, strict=False
) -> None:
    """Warn when reference completions (+ EOS) of the data would not fit in max_completion_length: a cut
    completion scores as a format failure (or is masked), a silent penalty on the task, not the model.
    `strict`: a UserError instead when it cuts more than half of them (nothing left to learn)."""
    names = getattr(dataset, "column_names", None) or []
    if "completion" not in names or not len(dataset):
        return
    sample = list(dataset.select(range(min(n, len(dataset))))["completion"])
    lengths = [len(ids) + 1 for ids in tokenizer(sample, add_special_tokens=False)["input_ids"]]
    over = sum(length > max_completion_length for length in lengths)
    if not over:
        return
    message = (
        f"max_completion_length={max_completion_length} cuts {over} of {len(lengths)} sampled reference "
        f"completions (the longest is {max(lengths)} tokens with EOS): raise it to at least {max(lengths)}"
    )
    if strict and 2 * over > len(lengths):
        raise UserError(message)
    logger.warning(message)
