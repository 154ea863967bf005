"""The fields of a training command's recipe as the preflight (stages/preflight.py) checks them: `fields_of(command)`
({field: [type, default, bound]}, read from the stages' dataclasses) and how a recipe value or a --flag's text is
read as a field of a type (`coerce`).

A field is declared once, in its dataclass: its type, default, help and, in the class's `BOUNDS` beside it, its
bound (stages/recipe.py `bounds_of`). Reading them means importing TRL's configs, which import torch and
transformers' TrainingArguments (5-10 s on 2 cores; the preflight's budget is about a second): a child process
reads them once and the table is kept in the user's cache, under a key of the package's sources and the versions
of TRL and transformers, so an edited field or an upgrade reads them again.

    python -m rookworld_trl.stages.recipe_fields     # the table, as JSON (what the child process prints)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rookworld_trl.common.errors import UserError
from rookworld_trl.stages.recipe import bounds_of

PACKAGE = Path(__file__).resolve().parents[1]

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


def stage_fields() -> dict[str, dict[str, list]]:
    """{command: {field: [type, default, bound]}} of the dataclasses each stage's parser reads (imports TRL)."""
    from trl import ModelConfig

    from rookworld_trl.grpo.config import GRPOScriptArguments, RookWorldGRPOConfig
    from rookworld_trl.training.sft import RookWorldSFTConfig, SFTScriptArguments

    return {
        "train": field_specs((GRPOScriptArguments, RookWorldGRPOConfig, ModelConfig)),
        "sft": field_specs((SFTScriptArguments, RookWorldSFTConfig)),
    }


def fields_of(command: str) -> dict[str, list]:
    """stage_fields()[command], from the user's cache when this package and its TRL have been read before."""
    path = cache_path()
    try:
        return json.loads(path.read_text())[command]
    except (OSError, ValueError, KeyError):
        pass
    import subprocess

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run([sys.executable, "-m", __name__], capture_output=True, text=True, env=env)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"reading the config classes' fields failed: {last}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(done.stdout)
        os.replace(temporary, path)  # a reader sees the old table or the new one, never half
        for old in sorted(path.parent.glob("fields-*.json"), key=os.path.getmtime)[:-8]:
            old.unlink(missing_ok=True)  # a few checkouts' tables kept
    except OSError:  # a read-only cache: read again next time
        pass
    return json.loads(done.stdout)[command]


def cache_path() -> Path:
    """The table's file in the user's cache: its name a hash of this package's sources and the versions of TRL and
    transformers (a few milliseconds)."""
    import hashlib
    from importlib.metadata import version

    key = hashlib.sha256(f"{version('trl')} {version('transformers')} {sys.version}".encode())
    for source in sorted(PACKAGE.rglob("*.py")):
        key.update(source.read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rookworld_trl"
    return cache / f"fields-{key.hexdigest()[:20]}.json"


if __name__ == "__main__":  # the table as JSON, for fields_of in the parent process
    print(json.dumps(stage_fields()))
