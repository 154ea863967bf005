"""The RL options, each one module holding its config section, its check and its builder (grpo/options.py's
protocol): KL control (kl_control.py), the running baseline (baselines.py), field credit (credit.py), the value
baseline with GAE (value.py), supervised replay (replay.py), self-play (selfplay.py), the curriculum
(curriculum.py), tactics and their replay (tactics.py), dynamic sampling (dynamic_sampling.py). Here they are
composed: `RLOptions` (the trainer config's sections: RookWorldGRPOConfig inherits it), `check_rl_options` (their
checks, in __post_init__) and `build_options` (the trainer's `options` list after KL control and the step guard).
Self-play and tactics read the stage's fields (stages/grpo_args.py inherits their sections): the stage builds
them (`selfplay_for`, `tactics_for`) and hands them over. Every default keeps TRL's behaviour.

A new option: its module (an Option, a section with its check, a builder), its section in RLOptions and SECTIONS,
its builder in build_options.
"""

from __future__ import annotations

from dataclasses import dataclass

from rookworld_trl.grpo.baselines import BaselineSection, RunningBaseline, check_baseline
from rookworld_trl.grpo.credit import CreditSection, FieldCredit
from rookworld_trl.grpo.curriculum import CurriculumSection, check_curriculum, curriculum_for
from rookworld_trl.grpo.dynamic_sampling import (
    DynamicSamplingSection,
    check_dynamic_sampling,
    dynamic_sampling_for,
)
from rookworld_trl.grpo.kl_control import KLSection, check_kl
from rookworld_trl.grpo.replay import ReplaySection, check_replay, replay_for
from rookworld_trl.grpo.tactics import tactics_replay_for
from rookworld_trl.grpo.value import ValueSection, check_value, value_baseline_for

# A section is its dataclass and its check; the fields appear in this order (dataclasses collect a class's bases
# last first).
SECTIONS = (
    (KLSection, check_kl),
    (BaselineSection, check_baseline),
    (ValueSection, check_value),
    (DynamicSamplingSection, check_dynamic_sampling),
    (CurriculumSection, check_curriculum),
    (CreditSection, None),
    (ReplaySection, check_replay),
)


@dataclass
class RLOptions(ReplaySection, CreditSection, CurriculumSection, DynamicSamplingSection, ValueSection,
                BaselineSection, KLSection):  # fmt: skip
    """Every RL option's section (SECTIONS); `check_rl_options` runs their checks."""


def check_rl_options(config) -> None:
    """One-line ValueErrors for bad or conflicting RL options of a RookWorldGRPOConfig (they depend on its beta,
    field_credit and multi_objective_aggregation too), section by section."""
    for _, check in SECTIONS:
        if check is not None:
            check(config)


def build_options(trainer, replay_rows, selfplay=None, tactics=None) -> list:
    """The run's options that the trainer's `options` list holds after KL control and the step guard, in step
    order: each hook runs over them in this order (advantages: the running baseline, field credit, the value
    baseline; loss terms: the value loss, then the replays; prompts: self-play, the curriculum, then tactics;
    after scoring: the curriculum, then dynamic sampling). `replay_rows`: what supervised replay draws from;
    `selfplay`, `tactics`: the stage's (None: off)."""
    a = trainer.args
    options = (
        RunningBaseline(a.baseline_ema_decay),
        FieldCredit(),
        value_baseline_for(trainer),
        replay_for(trainer, replay_rows),
        selfplay,
        curriculum_for(a, trainer.reward_funcs),
        tactics,
        tactics_replay_for(trainer, tactics),
        dynamic_sampling_for(trainer),
    )
    return [option for option in options if option is not None]
