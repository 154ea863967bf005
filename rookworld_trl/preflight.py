"""Checks of a training command's recipe, --flags and data in the `rookworld` process, before `accelerate
launch` starts (which costs 10-20 s: the launcher, then TRL's import): a bad input is one line in about a
second, not after the wait. The stage checks everything again with the real parser; this is the fast half.

    rookworld train --config my.yaml --max_step 5      # -> one line: unknown flag --max_step (did you mean ...)

What it checks, without importing TRL or datasets: the recipe (YAML syntax, a mapping, known fields), each
--flag's name, the numbers (int and float fields parse; entry.check_numbers' bounds), and the data source: a
missing path, an empty directory, a Parquet file without its markers, and a text / JSON Lines file's lines (each
line a JSON object; every P:/A: line parses, as `rookworld data load` parses it) for up to DATA_SECONDS. The
field names and kinds come from RECIPE_FIELDS, which `python -m rookworld_trl.preflight` writes from the stages'
dataclasses (tests/test_preflight.py fails when it is stale).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from rookworld_trl.data import files
from rookworld_trl.entry import (
    check_numbers,
    check_recipe,
    did_you_mean,
    hub_id_like,
    missing_source,
    resolve_path,
)
from rookworld_trl.errors import UserError
from rookworld_trl.flags import flag_values

RECIPE_FIELDS = Path(__file__).resolve().parent / "assets" / "recipe_fields.json"
STAGES = ("train", "sft")  # both name their data dataset_name (TRL's ScriptArguments)
DATA_SECONDS = 1.5  # a longer file's later lines are checked by the stage as it loads them
LAUNCHER_FLAGS = {"config", "accelerate_config"}


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


def bad_value(name: str, kind: str, value, default, recipe: str | None) -> UserError:
    """The one line for a value its field's type does not take, with an example from the field's default."""
    import yaml

    shown = value if recipe else " ".join(value) if isinstance(value, list) else value
    choices = [c for p in split_type(kind) if p.startswith("{") for c in p[1:-1].split(",")]
    close = did_you_mean(str(value), choices).replace("--", "") if choices else ""
    if recipe:
        example = f"`{name}: {yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip()}`"
        where = f"recipe {recipe}: {name}"
    else:
        flat = " ".join(map(str, default)) if isinstance(default, list) else default
        example, where = f"--{name} {flat}", f"--{name}"
    hint = f"; e.g. {example}" if default is not None and not isinstance(default, dict) else ""
    return UserError(f"{where} must be {describe(kind)}, got {shown!r}{close}{hint}")


def values(command: str, recipe: str | None, argv: list[str]) -> dict:
    """The recipe's values overlaid by the flags', each read as its field's type (RECIPE_FIELDS); UserError for
    an unknown field or flag, or a value its field's type does not take (`num_generations: [8, 4]`, `eight`)."""
    fields = json.loads(RECIPE_FIELDS.read_text())[command]
    merged = {}
    if recipe is not None:
        try:
            check_recipe(recipe, set(fields))
        except UserError as e:
            raise UserError(f"{e}{other_kind(command, recipe)}") from None
        import yaml

        with open(recipe) as f:
            for name, value in (yaml.safe_load(f) or {}).items():
                kind, default = fields.get(name, ["any", None])
                try:
                    merged[name] = coerce(kind, value)
                except ValueError:
                    raise bad_value(name, kind, value, default, recipe) from None
    for name, given in flag_values(argv).items():
        if name in LAUNCHER_FLAGS or name.startswith("help"):
            continue
        if name not in fields:
            raise UserError(f"unknown flag --{name}{did_you_mean(name, set(fields))}; see --help_all")
        kind, default = fields[name]
        if not given and "bool" not in kind:  # `--output_dir` at the end of a line, its value forgotten
            raise UserError(f"--{name} needs a value, e.g. --{name} {merged.get(name, default)}")
        if "list[" not in kind and len(given) > 1:
            example = merged.get(name, default)
            raise UserError(f"--{name} takes one value, got {' '.join(given)}; e.g. --{name} {example}")
        value = given if "list[" in kind else (given[0] if given else "true" if "bool" in kind else "")
        try:
            merged[name] = coerce(kind, value)
        except ValueError:  # the example: the recipe's value, else the class default
            raise bad_value(name, kind, value, merged.get(name, default), None) from None
    return merged


def other_kind(command: str, recipe: str) -> str:
    """'; it looks like ...' when a recipe that `command` refuses is an accelerate config, or the other
    training command's recipe (a GRPO recipe given to sft), else ''."""
    import yaml

    try:
        with open(recipe) as f:
            keys = set(yaml.safe_load(f) or {})
    except (yaml.YAMLError, TypeError):  # not a mapping of fields: check_recipe's line says so
        return ""
    if keys & {"distributed_type", "compute_environment"}:
        return (
            f"; {recipe} is an accelerate config: pass it as --accelerate_config (a recipe goes to --config)"
        )
    everything = json.loads(RECIPE_FIELDS.read_text())
    other = next((c for c in STAGES if c != command), None)
    unknown = keys - set(everything[command]) - {"env"}
    if other and unknown and unknown <= set(everything[other]):
        return f"; it is a `rookworld {other}` recipe (`rookworld {other} --config {recipe}`)"
    return ""


def missing_recipe(recipe: str) -> str:
    """The one line for a --config that is not there, with the recipe of a close name when there is one."""
    import difflib

    folder = resolve_path(os.path.dirname(recipe) or ".")  # recipes/ from anywhere, as the recipe itself
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    close = difflib.get_close_matches(os.path.basename(recipe), names, n=1)
    hint = f"did you mean {os.path.join(os.path.dirname(recipe), close[0])}?" if close else ""
    return (
        f"recipe not found: {recipe}; {hint or 'pass a YAML file (e.g. --config recipes/grpo_tiny_cpu.yaml)'}"
    )


def check_data(source: str, skip_bad_rows: bool, seconds: float = DATA_SECONDS, puzzles=(None, None)) -> None:
    """What is wrong with a data source, as one UserError naming it and the fix: a missing path, an empty
    directory, a file whose structure its format refuses (data/files.py, which the loader reads through too), or
    its first bad P:/A: line (read for `seconds`; the stage checks later lines as it loads them). A hub id is the
    stage's to try."""
    path = Path(source)
    if not path.exists():
        if hub_id_like(source):
            return
        raise UserError(missing_source(source))
    if path.is_dir():
        files.check_dir(path)
        return
    fmt = files.sniff(path)
    if fmt.positions is not None:  # a puzzle file: positions the stage labels
        check_puzzles(path, *puzzles, seconds=seconds)
        return
    if fmt.lines is None:  # a table that datasets reads (Parquet): its structure only
        if fmt.check is not None:
            fmt.check(path)
        return
    check_lines(path, skip_bad_rows, seconds)


def check_puzzles(path: Path, rating: str | None, themes: str | None, seconds: float) -> None:
    """A puzzle file's filters and its first bad row within `seconds`: one UserError naming file:row and the fix."""
    from rookworld_trl.data.puzzles import PuzzleFilter, read_puzzles

    deadline = time.monotonic() + seconds
    try:
        for _ in read_puzzles(path, PuzzleFilter.parse(rating, themes)):
            if time.monotonic() > deadline:
                return
    except ValueError as e:  # a bad --puzzle_rating; DataSourceError is a UserError already
        raise UserError(str(e)) from None


def check_lines(path: Path, skip_bad_rows: bool, seconds: float) -> None:
    """A file's first bad P:/A: line within `seconds`: UserError naming file:line and the fix."""
    from rookworld_trl.chess.environment import sample_from_line
    from rookworld_trl.chess.formats import FormatError

    deadline, seen = time.monotonic() + seconds, False
    for line_no, line in enumerate(files.read_lines(path), start=1):
        if time.monotonic() > deadline:
            return
        if not line.strip():
            continue
        seen = True
        try:
            sample_from_line(line)
        except FormatError as e:
            if not skip_bad_rows:
                raise files.line_error(path, line_no, str(e)) from None
    if not seen:
        raise files.empty_error(path)


def preflight(command: str, argv: list[str], processes: int = 1) -> None:
    """The fast checks of `rookworld train` / `sft` (argv: the stage's, its --config resolved; `processes`: the
    accelerate config's); other commands launched through accelerate check their own arguments."""
    if command not in STAGES:
        return
    recipe = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    if recipe is not None and os.path.isdir(recipe):
        raise UserError(
            f"--config {recipe} is a directory; pass a recipe YAML file (e.g. --config recipes/grpo_tiny_cpu.yaml)"
        )
    if recipe is not None and not os.path.isfile(recipe):
        raise UserError(missing_recipe(recipe))
    merged = values(command, recipe, argv)
    check_numbers(SimpleNamespace(**merged))
    defaults = {name: spec[1] for name, spec in json.loads(RECIPE_FIELDS.read_text())[command].items()}
    config = {**defaults, **merged}
    if command == "train":
        check_batch(config, processes)
        check_reward_funcs(config)
    if config.get("output_dir"):  # a file or a read-only place: before accelerate starts
        from rookworld_trl.training.run_dir import check_output_dir

        try:
            check_output_dir(config["output_dir"])
        except ValueError as e:
            raise UserError(str(e)) from None
    # a push's token and repo name: before training, not after it
    pushes = str(config.get("push_to_hub")).lower() in ("true", "yes", "1")
    if pushes and (config.get("hub_model_id") or config.get("output_dir")):
        from rookworld_trl.training.publish import check_hub

        check_hub(SimpleNamespace(**{k: config.get(k) for k in ("hub_model_id", "hub_token", "output_dir")}))
    if config.get("model_name_or_path"):  # a local folder's parts, or one request to the hub
        from rookworld_trl.model.source import model_source

        tokenizer = not config.get("tokenizer_name_or_path")
        model_source(resolve_path(config["model_name_or_path"]), config.get("model_revision"), tokenizer)
    source = merged.get("dataset_name")
    for path in merged.get("exclude") or []:
        if not os.path.isfile(path):
            raise UserError(f"--exclude {path}: no such file; pass a FEN list, an .epd file, a Lichess puzzle "
                            ".csv or a BIG-bench checkmate_in_one task.json")  # fmt: skip
    if isinstance(source, str) and source:
        skip = str(merged.get("skip_bad_rows", False)).lower() in ("true", "yes", "1")
        check_data(
            resolve_path(source), skip, puzzles=(merged.get("puzzle_rating"), merged.get("puzzle_themes"))
        )


def check_batch(config: dict, processes: int) -> None:
    """TRL's rule (GRPOConfig.__post_init__), in the fields a user sets: a generation round holds
    per_device_train_batch_size x processes x steps_per_generation (default: gradient_accumulation_steps)
    completions, or generation_batch_size, and must be whole groups of num_generations."""
    per, groups = config["per_device_train_batch_size"], config["num_generations"]
    steps = config["steps_per_generation"] or config["gradient_accumulation_steps"]
    size, given = config["generation_batch_size"], config["generation_batch_size"] is not None
    if given and config["steps_per_generation"] is not None:
        raise UserError(
            "set generation_batch_size or steps_per_generation, not both (TRL derives one from the other)"
        )
    if given and size % (per * processes):
        raise UserError(
            f"generation_batch_size ({size}) must be a multiple of per_device_train_batch_size x processes "
            f"({per} x {processes}); e.g. --generation_batch_size {per * processes * max(1, size // (per * processes))}"
        )
    size = size if given else per * processes * steps
    if groups and size % groups:
        how = (
            "generation_batch_size"
            if given
            else (
                f"per_device_train_batch_size {per} x {'steps_per_generation' if config['steps_per_generation'] else 'gradient_accumulation_steps'} "
                f"{steps} x processes {processes}"
            )
        )
        divisors = [d for d in range(2, size + 1) if size % d == 0 and d <= groups] or [size]
        raise UserError(
            f"{how} = {size} completions per generation round, which must be whole groups of num_generations "
            f"({groups}): set num_generations to a divisor of {size} (e.g. {divisors[-1]}) or "
            f"per_device_train_batch_size to a multiple of {groups} (e.g. {groups * max(1, per // groups)})"
        )


def check_reward_funcs(config: dict) -> None:
    """Each reward_funcs entry: a registry name, or your own function that imports and that TRL can call
    (rewards/own.py); the same count of reward_weights."""
    from rookworld_trl.rewards.own import check_reward_names

    check_reward_names(config["reward_funcs"], config.get("reward_weights"), config.get("field_credit"))


def field_specs(dataclass_types) -> dict[str, list]:
    """{field: [type, default]} of the dataclasses a stage's parser reads: the type as `type_text` writes it,
    the default when JSON can hold it (else None). A field of several classes keeps the first one's."""
    import dataclasses
    import typing

    specs = {}
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init or f.name in specs:
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            default = getattr(default, "value", default)  # an Enum's value, as a recipe writes it
            try:
                json.dumps(default)
            except TypeError:
                default = None
            specs[f.name] = [type_text(hints[f.name], f.metadata.get("choices")), default]
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


if __name__ == "__main__":  # python -m rookworld_trl.preflight: rewrite RECIPE_FIELDS
    RECIPE_FIELDS.write_text(fields_text(stage_fields()))
    print(f"wrote {RECIPE_FIELDS}", file=sys.stderr)
