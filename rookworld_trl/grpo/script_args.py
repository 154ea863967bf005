"""GRPOScriptArguments: what the GRPO stage needs besides the trainer's config (RookWorldGRPOConfig) and the
model's (TRL's ModelConfig): the data, the engine behind the policy reward and the evals, the evals, self-play
positions and checkpoint publishing. TrlParser parses the three together (stages/grpo.py), as TRL's scripts and
stages/sft.py do, so one YAML recipe feeds all three and every field is also a --flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GRPOScriptArguments:
    """Data, engine, evals, self-play and publishing of a GRPO run; checked in `__post_init__`."""

    dataset_path: str | None = field(
        default=None,
        metadata={"help": "Local dataset dir/file or hub id, read by rookworld_trl.data.commands."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Dataset split to train on."})
    dataset_max_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows (after mixing); None: all."}
    )
    fen_width: int | None = field(
        default=None,
        metadata={
            "help": "FEN field width of P: prompts (docs/FORMATS.md: 90, or 89 in some published files). None: "
            "the data's own (its most common); every prompt of training and eval is padded to it, and the model's "
            "config.json records it."
        },
    )
    mix_env_ratio: float | None = field(
        default=0.2,
        metadata={
            "help": "Fraction of A: (environment) rows mixed with P: (policy) rows; null (YAML) keeps the "
            "stored mix."
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
    eval_every_steps: int = field(
        default=0,
        metadata={
            "help": "Every N steps (and before the first), a greedy policy + environment eval of the policy on a "
            "fixed held-out sample of eval_split: the run's learning curve (report/learning_curve.png). 0: off."
        },
    )
    eval_every_samples: int = field(
        default=200,
        metadata={"help": "Positions and transitions per suite in each eval_every_steps eval."},
    )
    eval_split: str = field(default="test", metadata={"help": "Held-out split of dataset_path for evals."})
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
    selfplay_ratio: float = field(
        default=0.0,
        metadata={
            "help": "Fraction of P: prompts replaced by positions from the policy's own self-play games once the "
            "buffer holds some (rookworld_trl/grpo/selfplay.py); the engine pool grades them. 0: off."
        },
    )
    selfplay_every: int = field(
        default=10, metadata={"help": "Self-play: play a round of games every N optimizer steps."}
    )
    selfplay_games: int = field(
        default=16, metadata={"help": "Self-play: games per round (per process), from training P: positions."}
    )
    selfplay_max_plies: int = field(
        default=40,
        metadata={"help": "Self-play: a game ends after N half-moves (or earlier: game over, illegal)."},
    )
    selfplay_buffer_size: int = field(
        default=5000, metadata={"help": "Self-play: positions kept (FIFO, one per position)."}
    )
    push_checkpoints: bool = field(
        default=False,
        metadata={
            "help": "With push_to_hub, also upload each complete checkpoint's model files (to checkpoints/"
            "checkpoint-N in the repo); final/ goes up at the end either way."
        },
    )

    def __post_init__(self):
        if not 0.0 <= self.selfplay_ratio <= 1.0:
            raise ValueError(f"selfplay_ratio must be in [0, 1], got {self.selfplay_ratio}")
        small = [
            n for n in ("every", "games", "max_plies", "buffer_size") if getattr(self, f"selfplay_{n}") < 1
        ]
        if small:
            raise ValueError(f"selfplay_{small[0]} must be >= 1, got {getattr(self, f'selfplay_{small[0]}')}")
