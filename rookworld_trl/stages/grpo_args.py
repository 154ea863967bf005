"""GRPOScriptArguments: what only the GRPO stage reads, besides the trainer's config (RookWorldGRPOConfig) and the
model's (TRL's ModelConfig): the data (TRL's ScriptArguments fields, dataset_name and its splits), the reward
functions, the engine behind the policy reward and the evals, the evals, self-play positions and publishing. TrlParser parses the three together (stages/grpo.py), as TRL's scripts and
stages/sft.py do, so one YAML recipe feeds all three and every field is also a --flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from trl import ScriptArguments

from rookworld_trl.data.puzzles import PuzzleFilter
from rookworld_trl.grpo.selfplay import SelfPlaySection, check_selfplay
from rookworld_trl.grpo.tactics import TacticsSection, check_tactics
from rookworld_trl.stages.data_args import DataReading


@dataclass
class GRPOScriptArguments(TacticsSection, SelfPlaySection, DataReading, ScriptArguments):
    """Data, rewards, engine, evals, self-play and tactics (their sections: grpo/selfplay.py, grpo/tactics.py) and
    publishing of a GRPO run; checked in `__post_init__`."""

    # the bounded fields' bounds (stages/recipe.py: the preflight and the stage check them)
    BOUNDS: ClassVar[dict[str, str]] = {
        "mix_env_ratio": "finite",
        "engine_workers": ">= 1",
        "eval_every_steps": ">= 0 (0: off)",
        "eval_every_samples": ">= 1",
        "eval_samples": ">= 0 (0: no final eval)",
    }
    # ---- data (TRL's ScriptArguments: dataset_name, dataset_train_split, dataset_test_split) ----
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "P:/A: data: a local dataset dir/file or a hub id (rookworld_trl/data/load.py)."},
    )
    dataset_max_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows (after mixing); None: all."}
    )
    dataset_num_proc: int | None = field(
        default=None,
        metadata={
            "help": "Processes that parse raw P:/A: lines (cached by the source's fingerprint in HF_DATASETS_CACHE; "
            "data/parse.py). None: the machine's cores."
        },
    )
    fen_width: int | None = field(
        default=None,
        metadata={
            "help": "FEN field width of P: prompts (docs/FORMATS.md: 90, or 89 in some published files). None: "
            "the data's own (its most common); every prompt of training and eval is padded to it, and the model's "
            "config.json records it."
        },
    )
    puzzle_rating: str | None = field(
        default=None,
        metadata={
            "help": "A puzzle dataset_name (Lichess .csv): keep puzzles rated LOW-HIGH, e.g. 1000-1800."
        },
    )
    puzzle_themes: str | None = field(
        default=None,
        metadata={
            "help": "A puzzle dataset_name (Lichess .csv): keep puzzles with any of these themes, e.g. "
            "mateIn1,mateIn2."
        },  # fmt: skip
    )
    mix_env_ratio: float | None = field(
        default=0.2,
        metadata={
            "help": "Fraction of A: (environment) rows mixed with P: (policy) rows; null (YAML) keeps the "
            "stored mix."
        },
    )
    # ---- rewards and the engine behind them ----
    reward_funcs: list[str] = field(
        default_factory=lambda: ["policy_reward", "env_reward"],
        metadata={
            "help": "Reward functions: names in rookworld_trl.grpo.rewards.functions.REWARD_FUNCS, or your own by its "
            "dotted path (my_pkg.rewards.my_reward; examples/my_reward.py). Weight them with TRL's reward_weights "
            "(same order)."
        },
    )
    engine_depth: int | None = field(
        default=8,
        metadata={
            "help": "Stockfish depth of the policy reward (and the evals). Dataset labels made at the same "
            "limit (column `limit`, e.g. 'depth=8') serve as a cache of the engine's answer."
        },
    )
    engine_nodes: int | None = field(
        default=None, metadata={"help": "Stockfish node limit (with or instead of depth)."}
    )
    engine_workers: int = field(default=1, metadata={"help": "Stockfish processes for the policy reward."})
    engine_cache: str | None = field(
        default="engine_cache.sqlite",
        metadata={"help": "sqlite cache of engine analyses (relative to output_dir); null: memory only."},
    )
    # ---- evals ----
    eval_every_steps: int = field(
        default=0,
        metadata={
            "help": "Every N steps (and before the first), a greedy policy + environment eval of the policy on a "
            "fixed held-out sample of dataset_test_split: the run's learning curve (report/learning_curve.png). 0: off."
        },
    )
    eval_every_samples: int = field(
        default=200,
        metadata={"help": "Positions and transitions per suite in each eval_every_steps eval."},
    )
    dataset_test_split: str = field(
        default="test", metadata={"help": "Held-out split of dataset_name for evals."}
    )
    eval_samples: int = field(
        default=200,
        metadata={"help": "Positions and transitions per suite in the before/after eval (0: no final eval)."},
    )
    eval_env_samples: int | None = field(
        default=None,
        metadata={
            "help": "Transitions in the before/after eval's env suite, when not eval_samples (A: answers are ~75 "
            "tokens: the whole test split of both tasks takes ~20 min on 2 cores, its P: half ~2 min)."
        },
    )
    # ---- tactics ----
    eval_tactics_samples: int = field(
        default=2000,
        metadata={"help": "Tactics test positions in the before/after eval (with tactics_dataset; 0: none)."},
    )
    # ---- publishing ----
    push_checkpoints: bool = field(
        default=False,
        metadata={
            "help": "With push_to_hub, also upload each complete checkpoint's model files (to checkpoints/"
            "checkpoint-N in the repo); final/ goes up at the end either way."
        },
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
