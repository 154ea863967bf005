"""Every field of a GRPO run, in two dataclasses that TrlParser reads with TRL's ModelConfig (stages/grpo.py):
RookWorldGRPOConfig (TRL's GRPOConfig plus what the trainer reads: the RL options, each option's maths and check
in its own module, the reward shaping, NaN recovery, the LR schedule, the sampler) and GRPOScriptArguments (what
the stage reads: data, rewards, engine, evals, self-play, tactics, publishing). Every field works in a YAML recipe
and as a `--flag`; invariants are checked in `__post_init__`, a number's bound (BOUNDS) by stages/recipe.py.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from trl import GRPOConfig, ModelConfig

from rookworld_trl.common.errors import UserError, suggest_fields
from rookworld_trl.common.flags import helped
from rookworld_trl.data.args import DataArguments
from rookworld_trl.data.puzzles import PuzzleFilter
from rookworld_trl.grpo.baselines import check_baseline
from rookworld_trl.grpo.curriculum import check_curriculum
from rookworld_trl.grpo.dynamic_sampling import check_dynamic_sampling
from rookworld_trl.grpo.kl import check_kl
from rookworld_trl.grpo.replay import check_replay
from rookworld_trl.grpo.selfplay import check_selfplay
from rookworld_trl.grpo.tactics import check_tactics
from rookworld_trl.grpo.trl_fields import trl_default
from rookworld_trl.grpo.value import check_value
from rookworld_trl.model.generation import BACKENDS

DEVICE_TYPES = ("cpu", "cuda", "xpu", "mps", "npu")
# Under torch.compile every scored batch is padded to a multiple of this many tokens, prompt and completion
# each (TRL's pad_to_multiple_of): one shape, so one compile. Without it each new batch length meets new guards
# (inductor's `batch x length > 4096` recompiled a GPU-shaped run at step 4). 128 holds every RookWorld prompt
# (GPT-2 BPE: P: <= 87 tokens, A: <= 114) and completion (max_completion_length <= 128).
COMPILE_PAD = 128

logger = logging.getLogger(__name__)


def compiling(config) -> bool:
    """Whether the model will run under torch.compile: torch_compile or an accelerate dynamo_backend."""
    backend = os.environ.get("ACCELERATE_DYNAMO_BACKEND", "NO").upper()
    return bool(config.torch_compile) or backend not in ("NO", "")


@suggest_fields
@dataclass
class RookWorldGRPOConfig(GRPOConfig):
    """GRPOConfig plus the RookWorld fields, by section; TRL's defaults where not said otherwise. The tested
    settings are a recipe's: `RookWorldGRPOConfig.from_recipe("grpo_tiny_cpu", max_steps=5, output_dir="runs/try")`."""

    @classmethod
    def from_recipe(cls, recipe: str = "grpo_tiny_cpu", **overrides) -> RookWorldGRPOConfig:
        """The trainer settings of a recipe (a bundled name or a YAML path), with `overrides`."""
        from rookworld_trl.training.recipes import recipe_config

        return recipe_config(cls, recipe, (GRPOScriptArguments, ModelConfig), overrides)

    # the bounded fields' bounds (stages/recipe.py: the preflight and the stage check them)
    BOUNDS: ClassVar[dict[str, str]] = {"replay_coef": "finite"}
    # ---- KL control: the KL to the reference, adaptive beta and the KL guard (kl.py) ----
    kl_estimator: str = helped(
        "k3",
        "The KL to the reference that enters the loss as beta x KL, and that adaptive_kl and the KL "
        "guard read. With p the policy and q the reference distribution (both at the sampling temperature) "
        "over the whole vocabulary at each completion token: 'k3' is TRL's one-sample estimator "
        "exp(log q - log p) - (log q - log p) - 1 of KL(p || q) at the sampled token (cheap, unbiased, "
        "noisy); 'reverse' is KL(p || q) = sum_v p (log p - log q), exact; 'forward' is KL(q || p) = "
        "sum_v q (log q - log p), exact (mass-covering: penalises the policy for dropping what the "
        "reference does); 'symmetric' is their mean (KL(p||q) + KL(q||p)) / 2. The exact ones cost a "
        "vocabulary-wide softmax of both models per completion token (chunked over tokens, recomputed in "
        "backward) and need beta > 0 and a separate reference model (no PEFT); TRL's use_bias_correction_kl "
        "(a sampled-token ratio) applies to k3 only. Logged as kl/<estimator>.",
    )
    adaptive_kl: bool = helped(
        False,
        "Adapt beta after each optimizer step from the measured KL (the kl_estimator's: TRL's k3 "
        "estimate of KL(policy || ref) by default). Needs beta > 0.",
    )
    kl_target: float = helped(
        0.05, "Adaptive KL: beta rises when KL > 1.5 x kl_target, falls when < kl_target/1.5."
    )
    kl_horizon: int = helped(
        10, "Adaptive KL: optimizer steps of out-of-band KL that double (or halve) beta."
    )
    beta_min: float = helped(1e-4, "Adaptive KL: lower bound of beta.")
    beta_max: float = helped(1.0, "Adaptive KL: upper bound of beta.")
    kl_warn: float = helped(
        10.0, "KL guard: warn above this KL; a step above it is not 'healthy' (no stable checkpoint)."
    )
    kl_stop: float = helped(
        50.0, "KL guard: above this KL, save a checkpoint and stop. Only active when beta > 0."
    )
    # ---- the baseline each reward is compared with (baselines.py) ----
    baseline: str = helped(
        "group",
        "What each reward is compared with: 'group' (TRL's: the mean of its group of num_generations "
        "completions, over the group's std per scale_rewards); 'ema' (the task's mean reward, per task prefix "
        "P:/A:: prompts are compared with each other, so an all-equal group still gets a signal, e.g. all "
        "right while the task's mean is lower); 'adaptive' (per group, b = w g + (1 - w) e with g the group "
        "mean, e the task's running mean, w = t / (t + v / n): v the group's reward variance, n its size, t "
        "the running variance of group means around e; a noisy small group leans on e, a consistent one on "
        "its own mean). Both: a = (r - b - c) / s, c the task's batch mean of r - b (a running mean lags the "
        "rewards: without c every sample gets the same sign), s = max(sqrt(V), sd of r - b - c over the task's "
        "rows), V the running mean square of r - b - c, never a group's std (grpo/baselines.py "
        "running_advantages); scale_rewards none: s = 1. With field_credit each P: field's term gets the same "
        "formula. Needs multi_objective_aggregation sum_then_normalize. On the main job neither beats group "
        "(docs/EXPERIMENTS.md, baselines).",
    )
    baseline_ema_decay: float = helped(
        0.9,
        "ema/adaptive baselines and value_baseline's scale: each running value x <- decay x + "
        "(1 - decay) x (this batch's), after the batch's advantages are taken (a task's first batch starts "
        "x at its own).",
    )
    # ---- a learned value head as the baseline, with GAE (value.py) ----
    value_baseline: bool = helped(
        False,
        "A value head (linear, on the policy's detached last hidden states) predicts the return to go at "
        "each completion token; once it predicts well, advantages come from GAE over the completion tokens "
        "(gae_gamma, gae_lambda), centred and scaled per task as for `baseline`. Rewards per token: the "
        "sequence reward at the last token; with field_credit each P: field's term at the field's last token. "
        "Warm-up: below value_warmup_ev explained variance of a batch's returns (measured before the head "
        "trains on it) the batch keeps the group baseline's advantages and only the head trains. The head has "
        "its own optimizer group (value_learning_rate, no weight decay), gradient clipping (value_max_grad_norm) "
        "and loss weight value_coef, and is saved as value_head.safetensors in each checkpoint. Logs value/loss, "
        "value/explained_variance (and per task), value/gae_used, value/grad_norm, value/mean. Costs one "
        "no-grad policy forward per generation batch. Replaces the baseline (leave baseline: group). On the "
        "main job the gate stays shut (docs/EXPERIMENTS.md, baselines).",
    )
    value_coef: float = helped(
        0.1, "value_baseline: weight of the value loss 0.5 (V - return)^2 (it trains the head only)."
    )
    value_learning_rate: float = helped(
        1e-4,
        "value_baseline: learning rate of the value head's optimizer group (Adam moves each of its "
        "hidden_size weights by about this much per step: at 1e-3 the head overshot the returns).",
    )
    value_max_grad_norm: float = helped(
        1.0, "value_baseline: the value head's gradients are clipped to this norm on their own."
    )
    value_warmup_ev: float = helped(
        0.2,
        "value_baseline: a batch uses GAE advantages once the head explains at least this share "
        "of its returns' variance (measured before training on them); 1.1: never (the head only learns).",
    )
    gae_gamma: float = helped(1.0, "value_baseline: GAE discount per token.")
    gae_lambda: float = helped(
        0.95, "value_baseline: GAE lambda (1: reward to go minus value; 0: one-step TD errors)."
    )
    # ---- dynamic sampling: resampling groups whose rewards all agree (dynamic_sampling.py) ----
    dynamic_sampling: bool = helped(
        False,
        "DAPO's dynamic sampling: groups whose rewards all agree (zero std: no signal under the "
        "group baseline) are dropped and replaced by informative groups of fresh prompts drawn from the "
        "training set, at most dynamic_sampling_max_rounds extra generation batches per step (each costs "
        "a full generation and scoring). Zero-std groups left after the last round stay. Logs "
        "dynamic_sampling/dropped, /redrawn (fresh groups sampled) and /left. Needs each process to hold "
        "whole groups (per_device_train_batch_size x steps_per_generation divisible by num_generations) "
        "and an indexable dataset.",
    )
    dynamic_sampling_max_rounds: int = helped(
        3, "dynamic_sampling: most extra generation batches per generation step."
    )
    # ---- the curriculum: wrongly answered positions again (curriculum.py) ----
    curriculum_ratio: float = helped(
        0.0,
        "A curriculum of the positions the policy gets wrong (grpo/curriculum.py): each P: prompt is "
        "replaced at these odds by a training position whose group wrote a legal B: in fewer than "
        "curriculum_threshold of its samples, until a group gets it right. 0: off (on the main job it lost to "
        "the recipe without it: docs/EXPERIMENTS.md).",
    )
    curriculum_threshold: float = helped(
        0.5, "curriculum: a position is wrong below this share of legal B: in its group."
    )
    curriculum_buffer_size: int = helped(
        2000, "curriculum: most wrong positions kept (oldest dropped first)."
    )
    # ---- field credit: each field of a P: answer its own advantage (credit.py) ----
    field_credit: bool = helped(
        False,
        "Give each listed move and each field of a P: answer (moves, evaluations, best move) the "
        "group advantage of its own verdict, and B:'s also to the listed move it copies, instead of one "
        "advantage for the whole completion (rookworld_trl/grpo/credit.py). Needs policy_reward among "
        "reward_funcs.",
    )
    choice_credit: float = helped(
        0.0,
        "Field credit: add this x B:'s choice to the advantage of B: and of the listed move it copies: "
        "B:'s value (0.4 legal + 0.6 engine quality) minus the mean value of the answer's listed moves, so "
        "that picking the best of one's own list pays even where the whole group picks alike (grpo/credit.py). "
        "0: off; 1.0 in the main job's recipe (docs/EXPERIMENTS.md).",
    )
    choice_against: str = helped(
        "mean",
        "What choice_credit compares B:'s value with: 'mean', the mean of the answer's listed moves (B: "
        "better than its list's average gains); 'best', the best listed move (nothing for picking the best, "
        "the shortfall otherwise: a second-best pick loses).",
        choices=["mean", "best"],
    )
    # ---- supervised replay of the training rows' reference completions (replay.py) ----
    replay_coef: float = helped(
        0.0,
        "Weight of a supervised loss on reference completions added to each micro-batch (InstructGPT's "
        "PPO-ptx; rookworld_trl/grpo/replay.py): holds what the reward does not train. 0: off.",
    )
    replay_task: str = helped(
        "A", "Training rows to replay: A (python-chess truth), P (engine labels) or all."
    )
    replay_batch_size: int = helped(16, "Rows replayed per micro-batch.")
    # ---- rewards and credit ----
    reward_shaping: str = helped(
        "graduated",
        "Shaping of the registry rewards: graduated, linear, continuous, dense, decisive, precise or "
        "binary (grpo/rewards/functions.py). decisive is dense with half of the P: quality on B:, which also follows "
        "B:'s expected-score loss up to 0.5 (a missed mate costs about what it gives up). precise grades each listed move (+1 engine top 5, 0 other legal, -1 illegal, "
        "repeated or past the fifth) and B: for legality, quality and consistency with E:: it pays for "
        "precision, never for count.",
    )
    # ---- safety: non-finite steps, rollback and the stable checkpoint ----
    nan_max_retries: int = helped(
        3, "NaN/Inf recovery: consecutive rollbacks allowed before training stops with an error."
    )
    nan_lr_factor: float = helped(
        0.5, "NaN/Inf recovery: multiply the learning rate by this after each rollback."
    )
    nan_snapshot_steps: int = helped(
        10,
        "NaN/Inf recovery: copy the trainable weights + optimizer state to host memory every N "
        "healthy steps (the rollback target). 1 is the most precise; the copy takes ~3x the trainable "
        "weights of RAM.",
    )
    save_stable: bool = helped(
        True, "Keep the last checkpoint of a healthy step (finite, KL < kl_warn) in output_dir/stable."
    )
    resume_from_checkpoint: str | None = helped(
        None,
        "A checkpoint path, 'auto' (latest complete checkpoint in output_dir, else a fresh "
        "start) or 'stable'/'recovery' (output_dir/stable). Incomplete checkpoints are never used; "
        "resuming from step N moves checkpoints past N to output_dir/superseded/.",
    )
    # ---- sampler and scoring ----
    generation_backend: str = helped(
        "rookworld",
        "Who samples the completions: 'rookworld' (rookworld_trl/model/decoding.py through TRL's rollout_func: "
        "one prefill per prompt shared by its group, a static KV cache, a CUDA graph per token on GPUs) or "
        "'transformers' (TRL's generate()). use_vllm: true uses vLLM either way.",
    )
    sampler_check_every: int = helped(
        50,
        "generation_backend rookworld: compare the sampler's log-probs with TRL's scoring forward on the "
        "same tokens at the first step and every N steps (0: the first step only), logged as "
        "sampling/logprob_gap/* and sampling/importance_sampling_ratio/* (rookworld_trl/model/generation.py).",
    )
    sampler_logprob_tolerance: float = helped(
        0.05,
        "Mean |sampler - scorer| log-prob per token past which the sampler leaves its path for the rest "
        "of the run (CUDA graph -> eager -> transformers' generate()); a sampler error does so too.",
    )
    sampler_importance_sampling: bool = helped(
        False,
        "generation_backend rookworld: correct the loss for the sampler's distribution as TRL does for "
        "vLLM (ratio of TRL's scoring forward to the sampler's log-probs, vllm_importance_sampling_mode and "
        "its clip bounds; logged as sampling/sampling_logp_difference/* and "
        "sampling/importance_sampling_ratio/*). Costs one scoring forward per generation batch.",
    )
    padding_aware_positions: bool = helped(
        True,
        "Number GPT-2 positions from the attention mask when TRL scores left-padded rows, as "
        "generate() does when sampling (policy and reference model); see "
        "rookworld_trl.model.loading.use_padding_aware_positions.",
    )
    shared_prefix_scoring: bool = helped(
        True,
        "Score GRPO completions with each distinct prompt computed once for its group "
        "(rookworld_trl/model/shared_prefix.py: the same log-probs and gradients as TRL's forward, about half "
        "its FLOPs at 8 samples per prompt). false: TRL's forward over every row.",
    )
    ref_model_device: str | None = helped(
        None,
        "Put the reference model on this device (e.g. 'cuda:1', 'cpu'): frees policy-GPU memory. "
        "Only with beta > 0 and full fine-tuning (with PEFT the reference is the adapter-disabled "
        "policy).",
    )
    # ---- learning-rate schedule ----
    lr_schedule: str | None = helped(
        None,
        "'warmup_cosine_linear' replaces lr_scheduler_type: linear warmup (warmup_steps; < 1 is "
        "a ratio), cosine down to lr_cosine_min_ratio, then a linear decay to zero over the last "
        "lr_final_decay_ratio of the steps.",
    )
    lr_cosine_min_ratio: float = helped(
        0.1, "warmup_cosine_linear: LR (fraction of peak) where the cosine ends."
    )
    lr_final_decay_ratio: float = helped(
        0.1, "warmup_cosine_linear: fraction of the steps in the final linear decay."
    )
    # ---- TRL defaults we change, and the console ----
    # TRL turns activation checkpointing on; it saves memory a 124M model does not need and costs ~20% speed.
    # transformers 5 renamed it `activation_checkpointing` (default off): a None alias leaves that name in
    # charge without a deprecation warning (as in sft.py).
    gradient_checkpointing: bool | None = helped(
        None, "Deprecated alias of `activation_checkpointing` (off unless set)."
    )
    disable_dropout: bool = helped(
        True,
        "Dropout off in the policy and the reference (TRL's option; on by default here): with dropout "
        "the same weights give other log-probs at every forward, so the KL and the importance ratio would "
        "measure dropout noise instead of policy change.",
    )
    print_completions_every: int | None = helped(
        None,
        "With log_completions, print a sample table of completions on the console every N steps "
        "(0: never; unset: at every logging step, as TRL does); the completions Parquet is still written at "
        "every logging step.",
    )
    metrics_jsonl: str | None = helped(
        "metrics.jsonl", "Append every log entry as one JSON line to this file (relative to output_dir)."
    )

    def __post_init__(self):
        if self.ref_model_device is not None:
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
        if self.nan_max_retries < 0 or not 0.0 < self.nan_lr_factor <= 1.0 or self.nan_snapshot_steps < 1:
            raise ValueError("need nan_max_retries >= 0, 0 < nan_lr_factor <= 1 and nan_snapshot_steps >= 1")
        if self.generation_backend not in BACKENDS:
            raise ValueError(f"generation_backend must be one of {BACKENDS}, got {self.generation_backend!r}")
        if self.lr_schedule not in (None, "warmup_cosine_linear"):
            raise ValueError(f"lr_schedule must be None or 'warmup_cosine_linear', got {self.lr_schedule!r}")
        if not 0.0 <= self.lr_cosine_min_ratio <= 1.0 or not 0.0 <= self.lr_final_decay_ratio < 1.0:
            raise ValueError("need lr_cosine_min_ratio in [0, 1] and lr_final_decay_ratio in [0, 1)")
        # the RL options' checks (they read beta, field_credit and multi_objective_aggregation too)
        for check in (
            check_kl,
            check_baseline,
            check_value,
            check_dynamic_sampling,
            check_curriculum,
            check_replay,
        ):
            check(self)
        if self.pad_to_multiple_of == "auto" and compiling(self):  # TRL's "auto" pads on Neuron only
            self.pad_to_multiple_of = COMPILE_PAD
        super().__post_init__()


@dataclass
class GRPOScriptArguments(DataArguments):
    """What the GRPO stage reads besides the trainer's config: data, rewards, engine, evals, self-play, tactics."""

    # the bounded fields' bounds (stages/recipe.py: the preflight and the stage check them)
    BOUNDS: ClassVar[dict[str, str]] = {
        "tactics_replay_coef": "finite",
        "engine_workers": ">= 1",
        "eval_every_steps": ">= 0 (0: off)",
        "eval_every_samples": ">= 1",
        "eval_samples": ">= 0 (0: no final eval)",
    }
    # ---- data: GRPO's own (the shared fields: DataArguments, data/args.py) ----
    dataset_max_samples: int | None = helped(None, "Train on the first N rows (after mixing); None: all.")
    dataset_num_proc: int | None = helped(
        None,
        "Processes that parse raw P:/A: lines (cached by the source's fingerprint in HF_DATASETS_CACHE; "
        "data/read.py). None: the machine's cores.",
    )
    puzzle_rating: str | None = helped(
        None, "A puzzle dataset_name (Lichess .csv): keep puzzles rated LOW-HIGH, e.g. 1000-1800."
    )
    puzzle_themes: str | None = helped(
        None,
        "A puzzle dataset_name (Lichess .csv): keep puzzles with any of these themes, e.g. mateIn1,mateIn2.",
    )
    # ---- rewards and the engine behind them ----
    reward_funcs: list[str] = helped(
        ["policy_reward", "env_reward"],
        "Reward functions: names in rookworld_trl.grpo.rewards.functions.REWARD_FUNCS, or your own by its "
        "dotted path (my_pkg.rewards.my_reward; examples/my_reward.py). Weight them with TRL's reward_weights "
        "(same order).",
    )
    engine_depth: int | None = helped(
        8,
        "Stockfish depth of the policy reward (and the evals). Dataset labels made at the same "
        "limit (column `limit`, e.g. 'depth=8') serve as a cache of the engine's answer.",
    )
    engine_nodes: int | None = helped(None, "Stockfish node limit (with or instead of depth).")
    engine_workers: int = helped(1, "Stockfish processes for the policy reward.")
    engine_cache: str | None = helped(
        "engine_cache.sqlite", "sqlite cache of engine analyses (relative to output_dir); null: memory only."
    )
    # ---- evals ----
    eval_every_steps: int = helped(
        0,
        "Every N steps (and before the first), a greedy policy + environment eval of the policy on a "
        "fixed held-out sample of dataset_test_split: the run's learning curve (report/learning_curve.png). 0: off.",
    )
    eval_every_samples: int = helped(
        200, "Positions and transitions per suite in each eval_every_steps eval."
    )
    eval_samples: int = helped(
        200, "Positions and transitions per suite in the before/after eval (0: no final eval)."
    )
    eval_env_samples: int | None = helped(
        None,
        "Transitions in the before/after eval's env suite, when not eval_samples (A: answers are ~75 "
        "tokens: the whole test split of both tasks takes ~20 min on 2 cores, its P: half ~2 min).",
    )
    eval_tactics_samples: int = helped(
        2000, "Tactics test positions in the before/after eval (with tactics_dataset; 0: none)."
    )
    # ---- self-play positions (grpo/selfplay.py) ----
    selfplay_ratio: float = helped(
        0.0,
        "Fraction of P: prompts replaced by positions from the policy's own self-play games once the "
        "buffer holds some (rookworld_trl/grpo/selfplay.py); the engine pool grades them. 0: off.",
    )
    selfplay_every: int = helped(10, "Self-play: play a round of games every N optimizer steps.")
    selfplay_games: int = helped(16, "Self-play: games per round (per process), from training P: positions.")
    selfplay_max_plies: int = helped(
        40, "Self-play: a game ends after N half-moves (or earlier: game over, illegal)."
    )
    selfplay_buffer_size: int = helped(5000, "Self-play: positions kept (FIFO, one per position).")
    # ---- tactics: their prompts and replay (grpo/tactics.py) ----
    tactics_dataset: str | None = helped(
        None,
        "Tactics data (`rookworld data generate --tactics`: mate in one, mate in two, only moves, split "
        "by game): its train split mixes into P: prompts (tactics_ratio) and is replayed (tactics_replay_coef), "
        "its test split joins the before/after eval as the `tactics` suite (rookworld_trl/grpo/tactics.py).",
    )
    tactics_ratio: float = helped(0.0, "Fraction of P: prompts replaced by tactics train rows. 0: none.")
    tactics_replay_coef: float = helped(
        0.0, "Weight of the supervised loss of tactics labels added to each micro-batch. 0: off."
    )
    tactics_replay_batch_size: int = helped(
        16, "Tactics rows replayed per micro-batch (tactics_replay_coef > 0)."
    )
    tactics_replay_target: str = helped(
        "completion",
        "What of a tactics label the replay teaches: the whole completion; best_move (the move after "
        "B: only: the move is imitated, the list and its evaluations are left to the reward); or moves (the "
        "listed moves and B:'s, the E: evaluations read but not taught).",
        choices=["completion", "best_move", "moves"],
    )
    # ---- publishing ----
    push_checkpoints: bool = helped(
        False,
        "With push_to_hub, also upload each complete checkpoint's model files (to checkpoints/"
        "checkpoint-N in the repo); final/ goes up at the end either way.",
    )

    @property
    def puzzle_filter(self) -> PuzzleFilter:
        """--puzzle_rating and --puzzle_themes, parsed (a bad range: ValueError, in one line)."""
        return PuzzleFilter.parse(self.puzzle_rating, self.puzzle_themes)

    def __post_init__(self):
        self.puzzle_filter  # noqa: B018  (a bad range fails now, not when the data is read)
        if not self.reward_funcs:
            raise ValueError("reward_funcs is empty: name at least one, e.g. ['policy_reward', 'env_reward']")
        if self.dataset_streaming:
            raise ValueError("dataset_streaming is not supported: the stage mixes and samples a loaded split")
        check_selfplay(self)
        check_tactics(self)


def check_rewards(script: GRPOScriptArguments, config) -> None:
    """reward_funcs against the trainer's config: its weights and field credit."""
    if config.field_credit and "policy_reward" not in script.reward_funcs:
        raise ValueError("field_credit needs policy_reward among reward_funcs (it reads its components)")
    if config.reward_weights is not None and len(config.reward_weights) != len(script.reward_funcs):
        raise ValueError(
            f"reward_weights has {len(config.reward_weights)} entries, reward_funcs {len(script.reward_funcs)}"
        )


def as_rookworld_config(args) -> RookWorldGRPOConfig:
    """`args` as a RookWorldGRPOConfig: a plain trl.GRPOConfig keeps the fields set away from its defaults."""

    if isinstance(args, RookWorldGRPOConfig):
        return args
    if args is None:
        return RookWorldGRPOConfig()
    if not isinstance(args, GRPOConfig):
        raise UserError(
            f"args must be a RookWorldGRPOConfig (or a trl.GRPOConfig), got {type(args).__name__}"
        )
    # the fields set away from GRPOConfig's defaults: by the user, or by __post_init__ from what the user set
    changed = {f.name: getattr(args, f.name) for f in fields(GRPOConfig) if f.init}
    changed = {k: v for k, v in changed.items() if v != trl_default(k)}
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


def check_completion_length(
    dataset, tokenizer, max_completion_length: int, n: int = 2000, strict=False
) -> None:
    """Warn when reference completions (+ EOS) would not fit in max_completion_length; `strict`: a UserError when
    it cuts more than half of them."""
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
