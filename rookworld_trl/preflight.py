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


def typed(name: str, kind: str, value, where: str):
    """`value` as the field's kind ("int", "float", "bool", ...), or a UserError naming it and where it is set."""
    text = str(value).strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool" and text.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError
    except ValueError:
        raise UserError(f"{name} must be {'a number' if kind != 'bool' else 'true or false'}, got {text!r} "
                        f"({where})") from None  # fmt: skip
    return value


def values(command: str, recipe: str | None, argv: list[str]) -> dict:
    """The recipe's values overlaid by the flags', typed; UserError for an unknown field or flag, a bad number."""
    fields = json.loads(RECIPE_FIELDS.read_text())[command]
    merged = {}
    if recipe is not None:
        check_recipe(recipe, set(fields))
        import yaml

        with open(recipe) as f:
            for name, value in (yaml.safe_load(f) or {}).items():
                merged[name] = typed(name, fields.get(name, "str"), value, f"in {recipe}")
    for name, given in flag_values(argv).items():
        if name in LAUNCHER_FLAGS or name.startswith("help"):
            continue
        if name not in fields:
            raise UserError(f"unknown flag --{name}{did_you_mean(name, set(fields))}; see --help_all")
        kind = fields[name]
        value = given if kind == "list" else (given[0] if given else "true" if kind == "bool" else "")
        merged[name] = value if kind == "list" else typed(name, kind, value, f"--{name}")
    return merged


def check_data(source: str, skip_bad_rows: bool, seconds: float = DATA_SECONDS) -> None:
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
    if fmt.lines is None:  # a table that datasets reads (Parquet): its structure only
        if fmt.check is not None:
            fmt.check(path)
        return
    check_lines(path, skip_bad_rows, seconds)


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


def preflight(command: str, argv: list[str]) -> None:
    """The fast checks of `rookworld train` / `sft` (argv: the stage's, its --config resolved); other commands
    launched through accelerate check their own arguments."""
    if command not in STAGES:
        return
    recipe = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    if recipe is not None and not os.path.isfile(recipe):
        raise UserError(
            f"recipe not found: {recipe}; pass a YAML file (e.g. --config recipes/grpo_tiny_cpu.yaml)"
        )
    merged = values(command, recipe, argv)
    check_numbers(SimpleNamespace(**merged))
    source = merged.get("dataset_name")
    if isinstance(source, str) and source:
        skip = str(merged.get("skip_bad_rows", False)).lower() in ("true", "yes", "1")
        check_data(resolve_path(source), skip)


def field_kinds(dataclass_types) -> dict[str, str]:
    """{field: kind} as the stage's parser reads them: int, float, bool, list or str (the rest)."""
    from trl import TrlParser

    kinds = {}
    for action in TrlParser(dataclass_types)._actions:
        if action.dest == "help":
            continue
        kind = {int: "int", float: "float"}.get(action.type, "str")
        kind = "bool" if getattr(action.type, "__name__", "") == "string_to_bool" else kind
        kinds[action.dest] = "list" if action.nargs in ("+", "*") else kind
    return dict(sorted(kinds.items()))


def stage_fields() -> dict[str, dict[str, str]]:
    """RECIPE_FIELDS' content, from the stages' dataclasses (imports TRL: seconds)."""
    from trl import ModelConfig

    from rookworld_trl.grpo.config import RookWorldGRPOConfig
    from rookworld_trl.stages.grpo_args import GRPOScriptArguments
    from rookworld_trl.stages.sft import RookWorldSFTConfig, SFTScriptArguments

    return {
        "train": field_kinds((GRPOScriptArguments, RookWorldGRPOConfig, ModelConfig)),
        "sft": field_kinds((SFTScriptArguments, RookWorldSFTConfig)),
    }


if __name__ == "__main__":  # python -m rookworld_trl.preflight: rewrite RECIPE_FIELDS
    RECIPE_FIELDS.write_text(json.dumps(stage_fields(), indent=1) + "\n")
    print(f"wrote {RECIPE_FIELDS}", file=sys.stderr)
