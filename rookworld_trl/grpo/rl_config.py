"""The RL options of RookWorldGRPOConfig (issue 19): KL estimator, baseline, value baseline with GAE, dynamic
sampling. A dataclass of fields that RookWorldGRPOConfig inherits, and `check_rl_options(config)`, which its
__post_init__ calls; the trainer side is rookworld_trl/grpo/trainer.py with rookworld_trl/grpo/rl_options.py.
Every default keeps TRL's behaviour (k3 KL, group baseline, no value head, no resampling).
"""

from __future__ import annotations

from dataclasses import dataclass, field

KL_ESTIMATORS = ("k3", "forward", "reverse", "symmetric")
BASELINES = ("group", "ema", "adaptive")


@dataclass
class RLOptions:
    """KL estimator, baseline, value baseline (GAE) and dynamic sampling fields; `check_rl_options` validates."""

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
    baseline: str = field(
        default="group",
        metadata={
            "help": "What each reward is compared with: 'group' (TRL's: the mean of its group of num_generations "
            "completions); 'ema' (a running mean of the rewards per task prefix P:/A:, decayed by "
            "baseline_ema_decay: all-equal groups still get a signal, e.g. all right while the task's mean is "
            "lower); 'adaptive' (per group, b = w g + (1 - w) e with g the group mean, e the task's running "
            "mean and w = t / (t + v / n): v the group's reward variance, n its size, t the running variance "
            "of group means around e; a noisy small group leans on e, a consistent one on its own mean). "
            "Advantages are (r - b) / s with s per scale_rewards (group: the group's std; a zero-std group "
            "takes the std of its task's rewards in the batch, else 1). Needs multi_objective_aggregation "
            "sum_then_normalize and field_credit false."
        },
    )
    baseline_ema_decay: float = field(
        default=0.9,
        metadata={
            "help": "ema/adaptive baselines: e <- decay e + (1 - decay) x (mean reward of the task in this "
            "batch), after the batch's advantages are taken (the first batch of a task starts e at its mean)."
        },
    )
    value_baseline: bool = field(
        default=False,
        metadata={
            "help": "A value head (linear, on the policy's last hidden states, detached: it does not train the "
            "policy) predicts the return at each completion token; advantages come from GAE over the "
            "completion tokens with the sequence reward at the last token (gae_gamma, gae_lambda), per token, "
            "divided by s as for `baseline`. Helps when where in the completion the reward is decided matters "
            "(credit per token instead of one per completion), once the head has learned (it starts at 0: "
            "early advantages are the reward itself). Costs one no-grad policy forward per generation batch "
            "and a head of hidden_size + 1 weights, saved as value_head.safetensors in each checkpoint (and "
            "restored on resume; a rollback of a bad step keeps the head). Replaces the baseline (leave "
            "baseline: group); not with field_credit."
        },
    )
    value_coef: float = field(
        default=0.1, metadata={"help": "value_baseline: weight of the value loss 0.5 (V - return)^2."}
    )
    value_learning_rate: float = field(
        default=1e-3,
        metadata={"help": "value_baseline: learning rate of the value head (same optimizer and schedule)."},
    )
    gae_gamma: float = field(default=1.0, metadata={"help": "value_baseline: GAE discount per token."})
    gae_lambda: float = field(
        default=0.95,
        metadata={"help": "value_baseline: GAE lambda (1: reward minus value; 0: one-step TD errors)."},
    )
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


def check_rl_options(config) -> None:
    """One-line ValueErrors for bad or conflicting RL options of a RookWorldGRPOConfig (they depend on its beta,
    field_credit and multi_objective_aggregation too)."""
    if config.kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {config.kl_estimator!r}")
    if config.kl_estimator != "k3" and config.beta <= 0.0:
        raise ValueError(
            f"kl_estimator {config.kl_estimator!r} needs beta > 0 (the KL enters the loss as beta x KL)"
        )
    if config.baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {config.baseline!r}")
    if not 0.0 < config.baseline_ema_decay < 1.0:
        raise ValueError(f"baseline_ema_decay must be in (0, 1), got {config.baseline_ema_decay}")
    reshaped = config.baseline != "group" or config.value_baseline
    if reshaped and config.multi_objective_aggregation != "sum_then_normalize":
        raise ValueError(
            "baseline ema/adaptive and value_baseline need multi_objective_aggregation: sum_then_normalize"
        )
    if config.baseline != "group" and config.field_credit:
        raise ValueError(
            f"baseline {config.baseline} does not reach P: answers under field_credit, which takes each "
            "field's advantage against its group itself: set field_credit: false (or baseline: group)"
        )
    if config.value_baseline:
        if config.baseline != "group":
            raise ValueError(
                "value_baseline replaces the baseline: set baseline: group (or value_baseline: false)"
            )
        if config.field_credit:
            raise ValueError("value_baseline and field_credit both set per-token advantages: choose one")
        if not (0.0 < config.gae_gamma <= 1.0 and 0.0 <= config.gae_lambda <= 1.0):
            raise ValueError(
                f"need 0 < gae_gamma <= 1 and 0 <= gae_lambda <= 1, got {config.gae_gamma}, {config.gae_lambda}"
            )
        if config.value_coef < 0.0 or config.value_learning_rate <= 0.0:
            raise ValueError("need value_coef >= 0 and value_learning_rate > 0")
    if config.dynamic_sampling_max_rounds < 1:
        raise ValueError(
            f"dynamic_sampling_max_rounds must be >= 1, got {config.dynamic_sampling_max_rounds}"
        )
