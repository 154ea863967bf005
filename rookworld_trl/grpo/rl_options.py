"""The RL options' builder: the trainer's `options` list after KL control and the step guard. Each option is one
module holding its maths, its check and its builder (grpo/options.py's protocol): KL control (kl_control.py), the
running baseline (baselines.py), field credit (credit.py), the value baseline with GAE (value.py), supervised
replay (replay.py), self-play (selfplay.py), the curriculum (curriculum.py), tactics and their replay (tactics.py),
dynamic sampling (dynamic_sampling.py). Their fields are RookWorldGRPOConfig's (grpo/config.py, one section each,
whose `__post_init__` runs their checks); self-play and tactics read the stage's fields (GRPOScriptArguments): the
stage builds them (`selfplay_for`, `tactics_for`) and hands them over. Every default keeps TRL's behaviour.

A new option: its module (an Option, a check, a builder), its fields and check in grpo/config.py, its builder here.
"""

from __future__ import annotations

from rookworld_trl.grpo.baselines import RunningBaseline
from rookworld_trl.grpo.credit import FieldCredit
from rookworld_trl.grpo.curriculum import curriculum_for
from rookworld_trl.grpo.dynamic_sampling import dynamic_sampling_for
from rookworld_trl.grpo.replay import replay_for
from rookworld_trl.grpo.tactics import tactics_replay_for
from rookworld_trl.grpo.value import value_baseline_for


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
