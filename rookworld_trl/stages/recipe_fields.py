"""The fields of a training command's recipe, as the preflight (stages/preflight.py) checks them without importing
TRL: RECIPE_FIELDS ({command: {field: [type, default, bound]}}), written from the stages' dataclasses, how a
recipe value or a --flag's text is read as a field of a type (`coerce`).

A field is declared once, in its dataclass: its type, default, help and, in the class's `BOUNDS` beside it, its
bound (stages/recipe.py `bounds_of`); this file is written from them, and a test fails when it is stale.

    python -m rookworld_trl.stages.recipe_fields     # rewrite RECIPE_FIELDS after a field changes
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rookworld_trl.stages.recipe import bounds_of

RECIPE_FIELDS = Path(__file__).resolve().parents[1] / "assets" / "recipe_fields.json"

BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def coerce(kind: str, value):
    """`value` as a field of type `kind` (type_text's) reads it: a recipe's YAML value or a flag's text;
    ValueError when no part of the type takes it.

    >>> coerce("int|None", "8"), coerce("list[float]|None", ["1", 0.5]), coerce("{no,steps}", "steps")
    (8, [1.0, 0.5], 'steps')
    """
    for part in split_type(kind):
        try:
            return _coerce_part(part, value)
        except (ValueError, TypeError, KeyError):
            continue
    raise ValueError(kind)


def split_type(kind: str) -> list[str]:
    """The |-parts of a type text, keeping {a,b} and list[...] whole (their insides hold no |)."""
    return kind.split("|")


def _coerce_part(part: str, value):
    if part == "any":
        return value
    if part.startswith("list["):
        if not isinstance(value, list):
            raise ValueError(part)
        return [coerce(part[5:-1], item) for item in value]
    if isinstance(value, list | dict):
        if part == "dict" and isinstance(value, dict):
            return value
        raise ValueError(part)
    if part == "None" and value is None:
        return None
    if part.startswith("{") and value is not None and str(value) in part[1:-1].split(","):
        return str(value)
    if part == "bool" and isinstance(value, bool | str):
        return value if isinstance(value, bool) else BOOL_WORDS[value.strip().lower()]
    if isinstance(value, bool) or value is None:  # `true` where a number or a name belongs
        raise ValueError(part)
    if part == "int" and not isinstance(value, float):
        return int(value.strip() if isinstance(value, str) else value)
    if part == "float":
        return float(value)
    if part == "str":  # a YAML number where a name belongs (a revision, a path) reads as its text
        return value if isinstance(value, str) else str(value)
    raise ValueError(part)


def describe(kind: str) -> str:
    """What a type text takes, in words: 'a whole number (or null)', 'one of no, steps, epoch', ..."""
    words = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string",
             "dict": "a mapping", "any": "a value"}  # fmt: skip
    parts = [p for p in split_type(kind) if p != "None"]
    said = []
    for part in parts:
        if part.startswith("{"):
            choices = part[1:-1].split(",")
            said.append("one of " + ", ".join(choices[:8]) + (", ..." if len(choices) > 8 else ""))
        elif part.startswith("list["):
            said.append(
                f"a list ([...]) of {describe(part[5:-1]).removeprefix('a ')}s".replace(
                    "one of", "each one of"
                )
            )
        else:
            said.append(words.get(part, part))
    return " or ".join(said) + (" (or null)" if "None" in split_type(kind) else "")


def field_specs(dataclass_types) -> dict[str, list]:
    """{field: [type, default, bound]} of the dataclasses a stage's parser reads: the type as `type_text` writes
    it, the default when JSON can hold it (else None), the bound (`field_bound`). A field of several classes keeps
    the first one's."""
    import dataclasses
    import typing

    specs = {}
    for cls in dataclass_types:
        hints, bounds = typing.get_type_hints(cls), bounds_of(cls)
        for f in dataclasses.fields(cls):
            if not f.init or f.name in specs:
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            default = getattr(default, "value", default)  # an Enum's value, as a recipe writes it
            try:
                json.dumps(default)
            except TypeError:
                default = None
            specs[f.name] = [type_text(hints[f.name], f.metadata.get("choices")), default, bounds[f.name]]
    return dict(sorted(specs.items()))


def type_text(hint, choices=None) -> str:
    """A field's type as the preflight checks it: parts joined by |, each int, float, bool, str, dict, None,
    list[PART], {a,b,...} (an Enum's or a Literal's values) or any (not checked).

    >>> import enum, typing
    >>> type_text(int | None), type_text(list[str]), type_text(enum.Enum("E", {"A": "no", "B": "steps"}) | str)
    ('int|None', 'list[str]', '{no,steps}')
    """
    import enum
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if choices:
        return "{" + ",".join(map(str, choices)) + "}" + ("|None" if type(None) in args else "")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums:  # Enum | str: TrainingArguments turns the string into the Enum, so only its values pass
            args = tuple(a for a in args if a is not str)
        return "|".join(dict.fromkeys(type_text(a) for a in args))
    if origin is typing.Literal:
        return "{" + ",".join(map(str, args)) + "}" if all(isinstance(a, str) for a in args) else "any"
    if origin in (list, tuple) or hint in (list, tuple):
        return f"list[{type_text(args[0]) if args else 'any'}]"
    if origin is dict or hint is dict:
        return "dict"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "{" + ",".join(str(m.value) for m in hint) + "}"
    if hint is type(None):
        return "None"
    return {int: "int", float: "float", bool: "bool", str: "str"}.get(hint, "any")


def stage_fields() -> dict[str, dict[str, str]]:
    """RECIPE_FIELDS' content, from the stages' dataclasses (imports TRL: seconds)."""
    from trl import ModelConfig

    from rookworld_trl.grpo.config import RookWorldGRPOConfig
    from rookworld_trl.stages.grpo_args import GRPOScriptArguments
    from rookworld_trl.stages.sft import RookWorldSFTConfig, SFTScriptArguments

    return {
        "train": field_specs((GRPOScriptArguments, RookWorldGRPOConfig, ModelConfig)),
        "sft": field_specs((SFTScriptArguments, RookWorldSFTConfig)),
    }


def fields_text(stages: dict) -> str:
    """RECIPE_FIELDS' JSON, one field a line: a diff shows which field changed."""
    blocks = []
    for stage, specs in stages.items():
        rows = ",\n".join(f"  {json.dumps(name)}: {json.dumps(spec)}" for name, spec in specs.items())
        blocks.append(f" {json.dumps(stage)}: {{\n{rows}\n }}")
    return "{\n" + ",\n".join(blocks) + "\n}\n"


if __name__ == "__main__":  # python -m rookworld_trl.stages.recipe_fields: rewrite RECIPE_FIELDS
    RECIPE_FIELDS.write_text(fields_text(stage_fields()))
    print(f"wrote {RECIPE_FIELDS}", file=sys.stderr)
