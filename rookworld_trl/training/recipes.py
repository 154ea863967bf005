"""A recipe read: `check_recipe` (a YAML mapping of known fields, else one UserError naming the line or the field)
and `recipe_config` (the configs' `from_recipe`). The stages parse recipes with TRL's parser and check them here.

    from rookworld_trl.grpo.config import RookWorldGRPOConfig
    RookWorldGRPOConfig.from_recipe("grpo_tiny_cpu", max_steps=5)     # through recipe_config
"""

from __future__ import annotations

import os
from pathlib import Path

from rookworld_trl.common.errors import UserError, did_you_mean

# a recipe is a few kB; a larger file is no recipe, and YAML would parse it for minutes
MAX_RECIPE_BYTES = 1 << 20
MAX_RECIPE_NODES = 100_000  # values a recipe may expand to, aliases counted each time they are used


def check_recipe_file(path: str) -> None:
    """One UserError, before YAML reads it, for a recipe that is too large, binary, not UTF-8, or whose aliases
    expand past MAX_RECIPE_NODES values (a few hundred bytes of nested aliases stand for millions)."""
    import yaml

    size = os.path.getsize(path)
    if size > MAX_RECIPE_BYTES:
        raise UserError(f"recipe {path} is {size / 1e6:.1f} MB; a recipe is a few kB of `field: value` lines (at "
                        f"most {MAX_RECIPE_BYTES >> 20} MB): pass the recipe YAML, not a data or model file")  # fmt: skip
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"recipe {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}): save it as "
                        "UTF-8, or pass the recipe YAML, not a binary file") from None  # fmt: skip
    if "\x00" in text:
        raise UserError(f"recipe {path} holds NUL bytes: it is a binary file, not a recipe YAML")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return  # check_recipe names the line
    if root is not None and _expanded(root, {}) > MAX_RECIPE_NODES:
        raise UserError(f"recipe {path}: its aliases (*name) expand to more than {MAX_RECIPE_NODES} values; a "
                        "recipe needs none: write the values out")  # fmt: skip


def _expanded(node, seen: dict) -> int:
    """How many values `node` stands for, each alias counted every time it is used (memoized: no expansion)."""
    if id(node) in seen:
        return seen[id(node)]
    seen[id(node)] = 1  # a node that contains itself counts once
    value = node.value if isinstance(node.value, list) else []
    total = 1 + sum(
        _expanded(child, seen) for item in value for child in (item if isinstance(item, tuple) else (item,))
    )
    seen[id(node)] = total
    return total


def check_recipe(path: str, fields: set[str]) -> dict:
    """The recipe's fields; one UserError for a recipe that is not a YAML mapping of known fields."""
    import yaml

    check_recipe_file(path)
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
    return recipe


def recipe_config(config_class, recipe: str, stage_classes: tuple, overrides: dict):
    """A `config_class` with the fields a recipe (a name or path) sets, then `overrides`, as the stage reads them."""

    import dataclasses

    from trl import TrlParser

    from rookworld_trl import assets

    try:
        path = assets.recipe(str(recipe))
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    own = {f.name for f in dataclasses.fields(config_class) if f.init}
    stage = {f.name for cls in stage_classes for f in dataclasses.fields(cls) if f.init}
    values = check_recipe(path, own | stage)
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
