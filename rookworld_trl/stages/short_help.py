"""`rookworld train --help` / `rookworld sft --help`: the few fields a user sets, with the values of the recipe in
use (the default recipe, or --config's) and of the --flags given, read from the YAML alone (no torch, no TRL:
it answers in a moment). `--help_all` prints every field of the config classes (TRL's parser).

    rookworld train --help
    rookworld train --config recipes/grpo_lora.yaml --max_steps 20 --help
"""

from __future__ import annotations

import textwrap

from rookworld_trl.common.flags import flag_values

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


def recipe_values(path: str) -> dict:
    """The recipe's fields ({} when it cannot be read: the stage itself will say why)."""
    import yaml

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
    if accelerate is None:  # as cli.default_accelerate_config decides
        accelerate = (
            (
                "cpu.yaml (GPU where CUDA)"
                if command == "train" and "use_cpu" not in flag_values(argv)
                else "cpu.yaml (use_cpu)"
            )
            if str(values.get("use_cpu")).lower() == "true"
            else "auto: GPU or CPU"
        )
    rows.append(("--accelerate_config", accelerate, "how processes and devices are launched"))
    width = max(len(r[0]) for r in rows)
    value_width = min(max(len(r[1]) for r in rows), 30)
    lines = [
        f"usage: rookworld {command} [--config RECIPE] [--FIELD VALUE ...]",
        "",
        *textwrap.wrap(
            f"What you set, with the values in effect ({shown_recipe} and the flags given):", help_width()
        ),
    ]
    columns = help_width()
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
    from rookworld_trl.stages.recipe import EXAMPLES

    return "\n".join([*lines, EXAMPLES[command]])


def help_width() -> int:
    """The terminal's width, between 80 and 100 columns (100 when not a terminal)."""
    import shutil

    return max(80, min(100, shutil.get_terminal_size((100, 24)).columns))


# the fields a recipe of each command should set (an SFT may train a new model, or for num_train_epochs)
EXPECTED = {
    "train": ("output_dir", "max_steps", "model_name_or_path", "dataset_name", "learning_rate"),
    "sft": ("output_dir", "dataset_name", "learning_rate"),
}


def unset_fields(command: str, recipe: str, argv: list[str]) -> list[str]:
    """The EXPECTED fields that neither the recipe nor a --flag sets."""
    values = {**recipe_values(recipe), **flag_values(argv)}
    return [name for name in EXPECTED[command] if name not in values]
