"""The embedded model, data and recipes as paths, wherever the package is installed (no download):

    from rookworld_trl import assets
    assets.MODEL      # the 2.9M GPT-2 (assets/README.md: its card); load with transformers or our trainer
    assets.DATA       # its Stockfish-labelled data: train/validation/test Parquet (load_rookworld_dataset)
    assets.TACTICS    # the tactics suite's data (mate in one, mate in two, only move)
    assets.RECIPES    # the YAML recipes of `rookworld train` / `rookworld sft` (recipes/ in the repository)
    assets.recipe("grpo_tiny_cpu")   # a recipe's path by name (or a path, returned as is when it exists)

Only paths: importing this module reads no file and imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DATA", "MODEL", "RECIPES", "TACTICS", "recipe"]

HERE = Path(__file__).resolve().parent
MODEL = str(HERE / "model")
DATA = str(HERE / "data")
TACTICS = str(HERE / "tactics")
# recipes/ of the repository; in the repository this is a link to it, in an installed package a copy
RECIPES = str(HERE / "recipes")


def recipe(name: str) -> str:
    """A recipe's path: `name` itself when that file exists, else RECIPES/name (".yaml" optional), so that
    "grpo_tiny_cpu", "grpo_tiny_cpu.yaml" and "recipes/grpo_tiny_cpu.yaml" resolve from any working directory.
    FileNotFoundError names the recipes there are.

    >>> Path(recipe("grpo_tiny_cpu")).name
    'grpo_tiny_cpu.yaml'
    """
    if Path(name).is_file():
        return str(name)
    stem = Path(name).name.removesuffix(".yaml").removesuffix(".yml")
    path = Path(RECIPES) / f"{stem}.yaml"
    if path.is_file():
        return str(path)
    from rookworld_trl.common.errors import did_you_mean

    known = sorted(p.stem for p in Path(RECIPES).glob("*.yaml"))
    raise FileNotFoundError(
        f"recipe not found: {name!r}{did_you_mean(stem, known, prefix='')}; pass a YAML file or one of the "
        f"bundled: {', '.join(known)}"
    )
