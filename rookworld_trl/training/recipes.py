"""A recipe read: `check_recipe` (a YAML mapping of known fields, one UserError naming the line or the field, with the
one did-you-mean) and `recipe_config` (a trainer config class from a recipe by name or path, with overrides: the
configs' `from_recipe`). The stages parse recipes with TRL's parser (stages/recipe.py) and check them here first.

    from rookworld_trl.grpo.config import RookWorldGRPOConfig
    RookWorldGRPOConfig.from_recipe("grpo_tiny_cpu", max_steps=5)     # through recipe_config
"""

from __future__ import annotations

import os
from pathlib import Path

from rookworld_trl.common.errors import UserError, did_you_mean


def check_recipe(path: str, fields: set[str]) -> None:
    """One UserError for a recipe that is not a YAML mapping of known fields: a syntax error (its line and
    column), a top-level value that is no mapping, a misspelt field (and the field it is closest to)."""
    import yaml

    try:
        with open(path) as f:
            recipe = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"recipe {path}: YAML syntax error{where}: {problem}; fix that line") from None
    if not isinstance(recipe, dict):
        raise UserError(
            f"recipe {path}: expected `field: value` lines (a YAML mapping), got {type(recipe).__name__}"
        )
    for name in recipe:
        if name not in fields and name != "env":
            raise UserError(
                f"recipe {path}: unknown field {name!r}{did_you_mean(str(name), fields)}; "
                "`rookworld train --help_all` (or sft) lists the fields"
            )


def recipe_config(config_class, recipe: str, command: str, overrides: dict):
    """A `config_class` (RookWorldGRPOConfig, RookWorldSFTConfig) with the fields a recipe sets, by name
    ("grpo_tiny_cpu") or path, then `overrides`; the recipe's other fields (model, data, rewards: the
    stage's, `rookworld train --help_all`) are left out. Values are read as the stage's parser reads them."""
    import dataclasses
    import json

    import yaml
    from trl import TrlParser

    from rookworld_trl import assets

    try:
        path = assets.recipe(str(recipe))
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    stage_fields = json.loads((Path(assets.HERE) / "recipe_fields.json").read_text())[command]
    own = {f.name for f in dataclasses.fields(config_class) if f.init}
    check_recipe(path, own | set(stage_fields))
    with open(path) as f:
        values = yaml.safe_load(f)
    for key, value in (values.pop("env", None) or {}).items():  # as TrlParser does
        os.environ[key] = str(value)
    values = {k: v for k, v in values.items() if k in own} | overrides
    unknown = [k for k in overrides if k not in own]
    if unknown:
        raise TypeError(
            f"{config_class.__name__}.from_recipe: unknown field {unknown[0]!r}"
            f"{did_you_mean(unknown[0], own, prefix='')}; help({config_class.__name__}) lists the fields"
        )
    parser = TrlParser((config_class,))
    parser.set_defaults_with_config(**values)  # argparse converts string values by the field's type
    try:
        return parser.parse_args_into_dataclasses(args=[])[0]
    except SystemExit:  # argparse printed which value it could not read
        raise UserError(f"recipe {path}: a value does not fit its field (see above)") from None
