"""Checks of a training command's recipe, --flags and data in the `rookworld` process, before `accelerate
launch` starts (which costs 10-20 s: the launcher, then TRL's import): a bad input is one line in about a
second, not after the wait. The stage checks everything again with the real parser; this is the fast half.

    rookworld train --config my.yaml --max_step 5      # -> one line: unknown flag --max_step (did you mean ...)

Without importing TRL or datasets: the recipe, each --flag's name and type, the numbers' bounds and the data
source (up to DATA_SECONDS of it), against the stages' fields (stages/recipe.py `fields_of`, cached per version).

And `rookworld train --help` / `rookworld sft --help` (`short_help`): the few fields a user sets, with the values in
effect, read from the YAML alone (no torch, no TRL). `--help_all` prints every field (TRL's parser).

    rookworld train --config recipes/grpo_lora.yaml --max_steps 20 --help
"""

from __future__ import annotations

import os
import shutil
import textwrap
from types import SimpleNamespace

from rookworld_trl.common.errors import UserError, clip, did_you_mean
from rookworld_trl.common.flags import flag_values
from rookworld_trl.common.paths import resolve_path
from rookworld_trl.data.files import DATA_SECONDS, check_source
from rookworld_trl.stages.recipe import EXAMPLES, check_numbers, check_recipe, coerce, describe, fields_of

STAGES = ("train", "sft")  # both name their data dataset_name (TRL's ScriptArguments)
LAUNCHER_FLAGS = {"config", "accelerate_config"}


def bad_value(name: str, kind: str, value, default, recipe: str | None) -> UserError:
    """The one line for a value its field's type does not take, with an example from the field's default."""
    import yaml

    shown = value if recipe else " ".join(value) if isinstance(value, list) else value
    choices = [c for p in kind.split("|") if p.startswith("{") for c in p[1:-1].split(",")]
    close = did_you_mean(str(value)[:200], choices, prefix="") if choices else ""
    if recipe:
        example = f"`{name}: {yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip()}`"
        where = f"recipe {recipe}: {name}"
    else:
        flat = " ".join(map(str, default)) if isinstance(default, list) else default
        example, where = f"--{name} {flat}", f"--{name}"
    hint = f"; e.g. {example}" if default is not None and not isinstance(default, dict) else ""
    return UserError(f"{where} must be {describe(kind)}, got {clip(repr(shown), 120)}{close}{hint}")


def values(command: str, recipe: str | None, argv: list[str]) -> dict:
    """The recipe's values overlaid by the flags', each read as its field's type; UserError for an unknown
    field or flag, or a value its type does not take."""
    fields = fields_of(command)
    merged = {}
    if recipe is not None:
        try:
            read = check_recipe(recipe, set(fields))
        except UserError as e:
            raise UserError(f"{e}{other_kind(command, recipe)}") from None
        for name, value in read.items():
            kind, default, _ = fields.get(name, ["any", None, None])
            try:
                merged[name] = coerce(kind, value)
            except ValueError:
                raise bad_value(name, kind, value, default, recipe) from None
    for name, given in flag_values(argv).items():
        if name in LAUNCHER_FLAGS or name.startswith("help"):
            continue
        if name not in fields:
            raise UserError(f"unknown flag --{name}{did_you_mean(name, set(fields))}; see --help_all")
        kind, default, _ = fields[name]
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
    keys = set(recipe_values(recipe))  # {} when no mapping of fields: check_recipe's line says so
    if keys & {"distributed_type", "compute_environment"}:
        return (
            f"; {recipe} is an accelerate config: pass it as --accelerate_config (a recipe goes to --config)"
        )
    other = next((c for c in STAGES if c != command), None)
    unknown = keys - set(fields_of(command)) - {"env"}
    if other and unknown and unknown <= set(fields_of(other)):
        return f"; it is a `rookworld {other}` recipe (`rookworld {other} --config {recipe}`)"
    return ""


def preflight(command: str, argv: list[str], processes: int = 1) -> None:
    """The fast checks of `rookworld train` / `sft` (argv: the stage's, its --config resolved)."""
    if command not in STAGES:
        return
    recipe = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    if recipe is not None and os.path.isdir(recipe):
        raise UserError(
            f"--config {recipe} is a directory; pass a recipe YAML file (e.g. --config recipes/grpo_tiny_cpu.yaml)"
        )
    if recipe is not None and not os.path.isfile(recipe):
        folder = resolve_path(os.path.dirname(recipe) or ".")  # recipes/ from anywhere, as the recipe itself
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        hint = did_you_mean(os.path.basename(recipe), names, prefix=os.path.join(os.path.dirname(recipe), ""))
        fix = "; pass a YAML file (e.g. --config recipes/grpo_tiny_cpu.yaml)"
        raise UserError(f"recipe not found: {recipe}{hint or fix}")
    merged = values(command, recipe, argv)
    fields = fields_of(command)
    check_numbers(SimpleNamespace(**merged), bounds={name: spec[2] for name, spec in fields.items()})
    defaults = {name: spec[1] for name, spec in fields.items()}
    config = {**defaults, **merged}
    if command == "train":
        from rookworld_trl.grpo.rewards.functions import check_reward_names

        check_batch(config, processes)
        # registry names or importable functions TRL can call, as many reward_weights
        check_reward_names(config["reward_funcs"], config.get("reward_weights"), config.get("field_credit"))
        # a broken or hanging STOCKFISH_PATH: one line now, not after the model and data have loaded
        if "policy_reward" in (config.get("reward_funcs") or []) or config.get("eval_samples"):
            from rookworld_trl.chess.engine import EngineLimit, EnginePool

            with EnginePool(1, EngineLimit(depth=1)) as pool:
                pool.check()
    # empty, a file, a read-only place, a live run's: before accelerate
    if config.get("output_dir") is not None:
        from rookworld_trl.training.checkpoints import check_output_dir, check_run_free

        try:
            check_output_dir(str(config["output_dir"]))
            check_run_free(str(config["output_dir"]))
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
        check_source(
            resolve_path(source), skip, DATA_SECONDS, merged.get("puzzle_rating"), merged.get("puzzle_themes")
        )


def check_batch(config: dict, processes: int) -> None:
    """TRL's rule (GRPOConfig.__post_init__) in the fields a user sets: a generation round must be whole
    groups of num_generations."""
    per, groups = config["per_device_train_batch_size"], config["num_generations"]
    steps_field = "steps_per_generation" if config["steps_per_generation"] else "gradient_accumulation_steps"
    steps = config[steps_field]
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
        how = f"per_device_train_batch_size {per} x {steps_field} {steps} x processes {processes}"
        how = "generation_batch_size" if given else how
        divisors = [d for d in range(2, size + 1) if size % d == 0 and d <= groups] or [size]
        raise UserError(
            f"{how} = {size} completions per generation round, which must be whole groups of num_generations "
            f"({groups}): set num_generations to a divisor of {size} (e.g. {divisors[-1]}) or "
            f"per_device_train_batch_size to a multiple of {groups} (e.g. {groups * max(1, per // groups)})"
        )


# ---------------------------------------------------------------------------------------------- --help

# command -> (field, what it is) in the order a user decides them
FIELDS = {
    "train": (
        ("output_dir", "where checkpoints, final/, eval/, report/ and metrics.jsonl go"),
        ("max_steps", "optimizer steps"),
        ("model_name_or_path", "the model to train: a local dir or a hub id"),
        ("dataset_name", "P:/A: data: a `rookworld data generate` dir, .txt/.jsonl/.parquet, a hub id"),
        ("learning_rate", "peak learning rate"),
        ("per_device_train_batch_size", "completions per step and process (whole groups of num_generations)"),
        ("num_generations", "completions per prompt (the group)"),
        ("seed", "random seed"),
        ("resume_from_checkpoint", "auto: an interrupted run continues, a finished one trains nothing"),
        ("eval_samples", "positions per suite in the before/after eval (0: none)"),
        ("report_to", "tensorboard, trackio (pip install trackio) or none"),
    ),
    "sft": (
        ("output_dir", "where checkpoints, the model and metrics.jsonl go"),
        ("max_steps", "optimizer steps"),
        ("model_name_or_path", "a model to continue (unset: a new GPT-2 from scratch)"),
        ("dataset_name", "P:/A: data: a `rookworld data generate` dir or a .txt/.jsonl/.parquet file"),
        ("tokenizer_name_or_path", "a new model's tokenizer (`rookworld tokenizer train`)"),
        ("learning_rate", "peak learning rate"),
        ("per_device_train_batch_size", "samples per step and process"),
        ("seed", "random seed"),
        ("report_to", "tensorboard, trackio (pip install trackio) or none"),
    ),
}


def recipe_values(path: str | None) -> dict:
    """A recipe's (or an accelerate config's) fields; {} when there is none or it cannot be read."""
    import yaml

    if path is None:
        return {}
    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return {}
    return values if isinstance(values, dict) else {}


def short_help(command: str, recipe: str, argv: list[str], shown_recipe: str, accelerate: str | None) -> str:
    """The help text: usage, the fields a user sets with their values in effect, where the rest is."""
    values = {**recipe_values(recipe), **flag_values(argv)}
    rows = [("--config", shown_recipe, "the recipe (YAML): sets every field; a --flag overrides it")]
    for name, what in FIELDS[command]:
        value = values.get(name, "(class default)")
        rows.append((f"--{name}", ",".join(map(str, value)) if isinstance(value, list) else str(value), what))
    if accelerate is None:  # as launch.default_accelerate_config and gpu_flags decide
        if str(values.get("use_cpu")).lower() != "true":
            accelerate = "auto: GPU or CPU"
        elif command == "train" and "use_cpu" not in flag_values(argv):
            accelerate = "cpu.yaml (GPU where CUDA)"
        else:
            accelerate = "cpu.yaml (use_cpu)"
    rows.append(("--accelerate_config", accelerate, "how processes and devices are launched"))
    width = max(len(r[0]) for r in rows)
    value_width = min(max(len(r[1]) for r in rows), 30)
    columns = max(80, min(100, shutil.get_terminal_size((100, 24)).columns))  # 100 when not a terminal
    lines = [f"usage: rookworld {command} [--config RECIPE] [--FIELD VALUE ...]", ""]
    lines += textwrap.wrap(
        f"What you set, with the values in effect ({shown_recipe} and the flags given):", columns
    )
    for flag, value, what in rows:  # the meaning wrapped under itself, so no line wraps in the terminal
        lead = f"  {flag:<{width}}  {value:<{value_width}}  "
        lines += textwrap.wrap(what, columns, initial_indent=lead, subsequent_indent=" " * len(lead))
    lines += [""]
    lines += textwrap.wrap(
        f"Every field of the recipe is also a --flag. `rookworld {command} --help_all` lists them all with their "
        "meaning and the config class's default. A --config replaces the default recipe: fields it leaves out "
        "take the config class's defaults.",
        columns,
    )
    return "\n".join([*lines, EXAMPLES[command]])


# the fields a recipe of each command should set (an SFT may train a new model, or for num_train_epochs)
EXPECTED = {
    "train": ("output_dir", "max_steps", "model_name_or_path", "dataset_name", "learning_rate"),
    "sft": ("output_dir", "dataset_name", "learning_rate"),
}
