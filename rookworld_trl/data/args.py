"""DataArguments: the data fields both training stages read (GRPO: GRPOScriptArguments, grpo/config.py; SFT:
SFTScriptArguments, training/sft.py), on TRL's ScriptArguments (dataset_name and its splits). Each is declared once
here; a stage with other defaults says them in one place with `stage_defaults`. Every field is also a recipe key
and a --flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from trl import ScriptArguments

from rookworld_trl.common.flags import helped


@dataclass
class DataArguments(ScriptArguments):
    BOUNDS: ClassVar[dict[str, str]] = {"mix_env_ratio": "finite"}  # stages/recipe.py bounds_of
    # fmt: off
    dataset_name: str | None = helped(None, "P:/A: data: the output directory of `rookworld data generate`, a data "
                                      "file or a hub id (rookworld_trl/data/load.py).")
    dataset_test_split: str = helped("test", "Held-out split of dataset_name (GRPO: the evals; SFT: the evaluation loss).")
    skip_bad_rows: bool = helped(False, "Skip malformed lines of raw-text data and count them (default: stop at the "
                                 "first, naming it).")
    exclude: list[str] = helped([], "Drop every training row whose position (first four FEN fields) is in these files: "
                                "FEN lists, .epd files, Lichess puzzle .csv files, BIG-bench checkmate_in_one task.json "
                                "(data/files.py Exclusion).")
    mix_env_ratio: float | None = helped(0.2, "Fraction of A: (environment) rows mixed with P: (policy) rows; null "
                                         "(YAML) keeps the stored mix.")
    fen_width: int | None = helped(None, "FEN field width of P: prompts (docs/FORMATS.md: 90, or 89 in some published "
                                   "files). None: the data's own (its most common); every prompt of training and eval "
                                   "is padded to it, and the model's config.json records it.")
    # fmt: on


def stage_defaults(**defaults):
    """A class decorator, under @dataclass: a stage's own defaults for DataArguments fields, each keeping the type
    and help of its one declaration above."""

    def apply(cls):
        declared = DataArguments.__dataclass_fields__
        if "__annotations__" not in vars(cls):  # else cls.__annotations__ would be a base's
            cls.__annotations__ = {}
        for name, default in defaults.items():
            cls.__annotations__[name] = declared[name].type
            setattr(cls, name, field(default=default, metadata=declared[name].metadata))
        return cls

    return apply
