"""The RL options of RookWorldGRPOConfig, one section per concept, each with its fields and its check: the KL
(the estimator in the loss, adaptive beta, the KL guard's bounds), the baseline, the value baseline with GAE,
dynamic sampling, the curriculum. RookWorldGRPOConfig inherits `RLOptions` (every section) and its __post_init__
calls `check_rl_options`; the trainer side: grpo/kl.py and kl_control.py, grpo/advantages.py (baselines, GAE),
grpo/value.py (the value head), grpo/dynamic_sampling.py, grpo/curriculum.py. Every default keeps TRL's
behaviour (k3 KL, fixed beta, group baseline, no value head, no resampling, no curriculum).
"""

from __future__ import annotations

from dataclasses import dataclass, field

KL_ESTIMATORS = ("k3", "forward", "reverse", "symmetric")
BASELINES = ("group", "ema", "adaptive")


@dataclass
class KLSection:
    """The KL to the reference: its estimator, adaptive beta and the KL guard's bounds."""

    kl_estimator: str = field(
        default="k3",
        metadata={
            "help": "The KL to the reference that enters the loss as beta x KL, and that adaptive_kl and the KL "
            "guard read. With p the policy and q the reference distribution (both at the sampling temperature) "
            "over the whole vocabulary at each completion token: 'k3' is TRL's one-sample estimator "
            "exp(log q - log p) - (log q - log p) - 1 of KL(p || q) at the sampled token (cheap, unbiased, "
            "noisy); 'reverse' is KL(p || q) = sum_v p (log p - log q), exact; 'forward' is KL(q || p) = "
            "sum_v q (log q - log p), exact (mass-covering: penalises the policy for dropping what the "
            "reference does); 'symmetric' is their mean (KL(p||q) + KL(q||p)) / 2. The exact ones cost a "
            "vocabulary-wide softmax of both models per completion token (chunked over tokens, recomputed in "
            "backward) and need beta > 0 and a separate reference model (no PEFT); TRL's use_bias_correction_kl "
            "(a sampled-token ratio) applies to k3 only. Logged as kl/<estimator>."
        },
    )
    adaptive_kl: bool = field(
        default=False,
        metadata={
            "help": "Adapt beta after each optimizer step from the measured KL (the kl_estimator's: TRL's k3 "
            "estimate of KL(policy || ref) by default). Needs beta > 0."
        },
    )
    kl_target: float = field(
        default=0.05,
        metadata={"help": "Adaptive KL: beta rises when KL > 1.5 x kl_target, falls when < kl_target/1.5."},
    )
    kl_horizon: int = field(
        default=10,
        metadata={"help": "Adaptive KL: optimizer steps of out-of-band KL that double (or halve) beta."},
    )
    beta_min: float = field(default=1e-4, metadata={"help": "Adaptive KL: lower bound of beta."})
    beta_max: float = field(default=1.0, metadata={"help": "Adaptive KL: upper bound of beta."})
    kl_warn: float = field(
        default=10.0,
        metadata={
            "help": "KL guard: warn above this KL; a step above it is not 'healthy' (no stable checkpoint)."
        },
    )
    kl_stop: float = field(
        default=50.0,
        metadata={"help": "KL guard: above this KL, save a checkpoint and stop. Only active when beta > 0."},
    )


def check_kl(config) -> None:
    if config.kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {config.kl_estimator!r}")
    if config.kl_estimator != "k3" and config.beta <= 0.0:
        raise ValueError(
            f"kl_estimator {config.kl_estimator!r} needs beta > 0 (the KL enters the loss as beta x KL)"
        )
    if config.adaptive_kl:
        if config.beta <= 0.0:
            raise ValueError("adaptive_kl needs beta > 0 (with beta = 0 TRL loads no reference model)")
        if not 0.0 < config.beta_min <= config.beta <= config.beta_max:
            raise ValueError(
                f"need 0 < beta_min <= beta <= beta_max, got {config.beta_min}, {config.beta}, {config.beta_max}"
            )
        if config.kl_target <= 0.0 or config.kl_horizon < 1:
            raise ValueError("adaptive_kl needs kl_target > 0 and kl_horizon >= 1")
    if not 0.0 < config.kl_warn < config.kl_stop:
        raise ValueError(
            f"need 0 < kl_warn < kl_stop, got kl_warn={config.kl_warn}, kl_stop={config.kl_stop}"
        )


@dataclass
class BaselineSection:
    """What each reward is compared with."""

    baseline: str = field(
        default="group",
        metadata={
            "help": "What each reward is compared with: 'group' (TRL's: the mean of its group of num_generations "
            "completions, over the group's std per scale_rewards); 'ema' (the task's mean reward, per task prefix "
            "P:/A:: prompts are compared with each other, so an all-equal group still gets a signal, e.g. all "
            "right while the task's mean is lower); 'adaptive' (per group, b = w g + (1 - w) e with g the group "
            "mean, e the task's running mean, w = t / (t + v / n): v the group's reward variance, n its size, t "
            "the running variance of group means around e; a noisy small group leans on e, a consistent one on "
            "its own mean). Both: a = (r - b - c) / s, c the task's batch mean of r - b (a running mean lags the "
            "rewards: without c every sample gets the same sign and the policy collapses: docs/EXPERIMENTS.md, the seeds' RL options), s = "
            "max(sqrt(V), sd of r - b - c over the task's rows) with V the running mean square of r - b - c "
            "(decay baseline_ema_decay), never a group's std; so a task's advantages have mean 0 and |a| <= "
            "sqrt(N - 1) for its N rows in the batch; scale_rewards none: s = 1 (formulas: "
            "grpo/advantages.py RunningBaseline). With field_credit each P: field's term gets the same formula "
            "(w and s from the sequence rewards, e the batch's mean of the term). Needs "
            "multi_objective_aggregation sum_then_normalize. On the main job with its k3 anchor (docs/EXPERIMENTS.md, "
            "baselines) neither ends significantly below group on 2 seeds; at beta 0 ema ended 3-9 points below "
            "(a position's difficulty enters every advantage)."
        },
    )
    baseline_ema_decay: float = field(
        default=0.9,
        metadata={
            "help": "ema/adaptive baselines and value_baseline's scale: each running value x <- decay x + "
            "(1 - decay) x (this batch's), after the batch's advantages are taken (a task's first batch starts "
            "x at its own)."
        },
    )


def check_baseline(config) -> None:
    if config.baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {config.baseline!r}")
    if not 0.0 < config.baseline_ema_decay < 1.0:
        raise ValueError(f"baseline_ema_decay must be in (0, 1), got {config.baseline_ema_decay}")
    reshaped = config.baseline != "group" or config.value_baseline
    if reshaped and config.multi_objective_aggregation != "sum_then_normalize":
        raise ValueError(
            "baseline ema/adaptive and value_baseline need multi_objective_aggregation: sum_then_normalize"
        )


@dataclass
class ValueSection:
    """A learned value head as the baseline, with GAE."""

    value_baseline: bool = field(
        default=False,
        metadata={
            "help": "A value head (linear, on the policy's last hidden states, detached: it does not train the "
            "policy) predicts the return to go at each completion token; once it predicts well, advantages "
            "come from GAE over the completion tokens (gae_gamma, gae_lambda), centred and scaled per task as "
            "for `baseline` (a = (A - c) / s over the task's tokens). Rewards per token: the sequence reward at "
            "the last token; with field_credit each P: field's term at the field's last token (each written "
            "move's at the move's), so GAE credits each token with what follows it. Warm-up: each batch, "
            "before the head trains on it, its explained variance of these returns is measured; below "
            "value_warmup_ev the batch keeps the group baseline's advantages (field credit's with field_credit) "
            "and only the head trains. The head is its own part: its own optimizer group (value_learning_rate, "
            "no weight decay, the policy's LR schedule), its own gradient clipping (value_max_grad_norm; TRL's "
            "max_grad_norm clips the policy only), its loss weight value_coef; its bias starts at the first "
            "batch's mean return. Logs value/loss, "
            "value/explained_variance (and per task), value/gae_used, value/grad_norm (before clipping), "
            "value/mean. Costs one no-grad policy forward per generation batch and hidden_size + 1 weights, "
            "saved as value_head.safetensors in each checkpoint (restored on resume; a rollback of a bad step "
            "keeps the head). Replaces the baseline (leave baseline: group). On the main job the head explains at "
            "most ~0.16 of the returns' variance (scripts/value_study.py, docs/EXPERIMENTS.md, baselines): the gate "
            "stays shut and the run is the group run, bit for bit."
        },
    )
    value_coef: float = field(
        default=0.1,
        metadata={
            "help": "value_baseline: weight of the value loss 0.5 (V - return)^2 (it trains the head only)."
        },
    )
    value_learning_rate: float = field(
        default=1e-4,
        metadata={
            "help": "value_baseline: learning rate of the value head's optimizer group (Adam moves each of its "
            "hidden_size weights by about this much per step: at 1e-3 the head overshot the returns)."
        },
    )
    value_max_grad_norm: float = field(
        default=1.0,
        metadata={
            "help": "value_baseline: the value head's gradients are clipped to this norm on their own."
        },
    )
    value_warmup_ev: float = field(
        default=0.2,
        metadata={
            "help": "value_baseline: a batch uses GAE advantages once the head explains at least this share "
            "of its returns' variance (measured before training on them); 1.1: never (the head only learns)."
        },
    )
    gae_gamma: float = field(default=1.0, metadata={"help": "value_baseline: GAE discount per token."})
    gae_lambda: float = field(
        default=0.95,
        metadata={"help": "value_baseline: GAE lambda (1: reward to go minus value; 0: one-step TD errors)."},
    )


def check_value(config) -> None:
    if not config.value_baseline:
        return
    if config.baseline != "group":
        raise ValueError(
            "value_baseline replaces the baseline: set baseline: group (or value_baseline: false)"
        )
    if not (0.0 < config.gae_gamma <= 1.0 and 0.0 <= config.gae_lambda <= 1.0):
        raise ValueError(
            f"need 0 < gae_gamma <= 1 and 0 <= gae_lambda <= 1, got {config.gae_gamma}, {config.gae_lambda}"
        )
    if config.value_coef < 0.0 or config.value_learning_rate <= 0.0 or config.value_max_grad_norm <= 0.0:
        raise ValueError("need value_coef >= 0, value_learning_rate > 0 and value_max_grad_norm > 0")


@dataclass
class DynamicSamplingSection:
    """Resampling groups whose rewards are all equal."""

    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "DAPO's dynamic sampling: groups whose rewards all agree (zero std: no signal under the "
            "group baseline) are dropped and replaced by informative groups of fresh prompts drawn from the "
            "training set, at most dynamic_sampling_max_rounds extra generation batches per step (each costs "
            "a full generation and scoring). Zero-std groups left after the last round stay. Logs "
            "dynamic_sampling/dropped, /redrawn (fresh groups sampled) and /left. Needs each process to hold "
            "whole groups (per_device_train_batch_size x steps_per_generation divisible by num_generations) "
            "and an indexable dataset."
        },
    )
    dynamic_sampling_max_rounds: int = field(
        default=3, metadata={"help": "dynamic_sampling: most extra generation batches per generation step."}
    )


def check_dynamic_sampling(config) -> None:
    if config.dynamic_sampling_max_rounds < 1:
        raise ValueError(
            f"dynamic_sampling_max_rounds must be >= 1, got {config.dynamic_sampling_max_rounds}"
        )


@dataclass
class CurriculumSection:
    """Wrongly answered positions again."""

    curriculum_ratio: float = field(
        default=0.0,
        metadata={
            "help": "A curriculum of the positions the policy gets wrong (grpo/curriculum.py): each P: prompt is "
            "replaced at these odds by a training position whose group wrote a legal B: in fewer than "
            "curriculum_threshold of its samples, until a group gets it right. 0: off (at 0.5 the main job gained "
            "+2.0 / +1.8 on two seeds, below the recipe without it: docs/EXPERIMENTS.md)."
        },
    )
    curriculum_threshold: float = field(
        default=0.5,
        metadata={"help": "curriculum: a position is wrong below this share of legal B: in its group."},
    )
    curriculum_buffer_size: int = field(
        default=2000, metadata={"help": "curriculum: most wrong positions kept (oldest dropped first)."}
    )


def check_curriculum(config) -> None:
    if not (0.0 <= config.curriculum_ratio <= 1.0 and 0.0 < config.curriculum_threshold <= 1.0):
        raise ValueError(
            f"need curriculum_ratio in [0, 1] and curriculum_threshold in (0, 1], got {config.curriculum_ratio}, "
            f"{config.curriculum_threshold}"
        )
    if config.curriculum_buffer_size < 1:
        raise ValueError(f"curriculum_buffer_size must be >= 1, got {config.curriculum_buffer_size}")


# A section is its dataclass and its check; the fields appear in this order (dataclasses collect a class's bases
# last first).
SECTIONS = (
    (KLSection, check_kl),
    (BaselineSection, check_baseline),
    (ValueSection, check_value),
    (DynamicSamplingSection, check_dynamic_sampling),
    (CurriculumSection, check_curriculum),
)


@dataclass
class RLOptions(CurriculumSection, DynamicSamplingSection, ValueSection, BaselineSection, KLSection):
    """Every RL option's section (SECTIONS); `check_rl_options` runs their checks."""


def check_rl_options(config) -> None:
    """One-line ValueErrors for bad or conflicting RL options of a RookWorldGRPOConfig (they depend on its beta,
    field_credit and multi_objective_aggregation too), section by section."""
    for _, check in SECTIONS:
        check(config)


def rl_options(trainer, replay_rows, selfplay=None, tactics=None) -> list:
    """The run's options (grpo/options.py) that the trainer's `options` list holds after KL control and the step
    guard, in step order: each hook runs over them in this order (advantages: the running baseline, field credit,
    the value baseline; loss terms: the value loss, then the replays; prompts: self-play, the curriculum, then
    tactics). `replay_rows`: what supervised replay draws from; `selfplay`, `tactics`: the stage's prompt sources
    (None: off). A new option adds its section above and its entry here."""
    from rookworld_trl.grpo.baselines import RunningBaseline
    from rookworld_trl.grpo.credit import FieldCredit
    from rookworld_trl.grpo.curriculum import curriculum_for
    from rookworld_trl.grpo.replay import Replay
    from rookworld_trl.grpo.value import ValueBaseline

    a, tokenizer = trainer.args, trainer.processing_class
    replay = tactics_replay = None
    if a.replay_coef > 0:
        replay = Replay(replay_rows, a.replay_task, tokenizer, a.replay_batch_size, a.seed, a.process_index,
                        a.pad_to_multiple_of, coef=a.replay_coef)  # fmt: skip
    if tactics is not None and tactics.replay_coef > 0:
        tactics_replay = Replay(tactics.dataset, "P", tokenizer, tactics.replay_batch_size, a.seed, a.process_index,
                                a.pad_to_multiple_of, tactics.replay_target, tactics.replay_coef,
                                "tactics_replay_loss")  # fmt: skip
    options = (
        RunningBaseline(a.baseline_ema_decay),
        FieldCredit(),
        ValueBaseline(trainer) if a.value_baseline else None,
        replay,
        selfplay,
        curriculum_for(a, trainer.reward_funcs),
        tactics,
        tactics_replay,
    )
    return [option for option in options if option is not None]
