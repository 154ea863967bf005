"""A training stage's recipe and --flags: TRL's parser with one-line errors (`stage_parser`), the recipe's own
check (a YAML mapping of known fields, with the one did-you-mean), and the numbers no run can mean
(`check_numbers`: each field's bound, declared beside it in its dataclass's BOUNDS), which the preflight
(stages/preflight.py) runs before accelerate starts too.

    from rookworld_trl.stages.recipe import check_numbers, stage_parser
    script, args, model_args = stage_parser((GRPOScriptArguments, RookWorldGRPOConfig, ModelConfig), "train")...
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys

from rookworld_trl.common.errors import UserError, did_you_mean
from rookworld_trl.common.paths import resolve_path
from rookworld_trl.training.recipes import check_recipe


def stage_parser(dataclass_types: tuple, command: str):
    """TRL's TrlParser (recipes + --flags) whose errors are one line: argparse would print the full usage
    (200+ lines for GRPO) before the error, and TRL words the batch-size check in a field the user never set."""
    from trl import TrlParser

    class StageParser(TrlParser):
        def error(self, message):
            where = " (in the recipe or a --flag)" if message.startswith("argument --") else ""
            print(f"rookworld {command}: error: {message}{where}; see --help", file=sys.stderr)
            sys.exit(2)

        def parse_args_and_config(self, args=None, *more, **kwargs):
            argv = list(sys.argv[1:] if args is None else args)
            fields = {action.dest for action in self._actions}
            if "--config" in argv[:-1]:  # recipes/NAME.yaml from any working directory, as `rookworld` does
                at = argv.index("--config") + 1
                argv[at] = resolve_path(argv[at])
                check_recipe(argv[at], fields)
            try:
                return super().parse_args_and_config(argv, *more, **kwargs)
            except ValueError as e:
                unknown = re.match(
                    r"Some specified arguments are not used by the HfArgumentParser: (.*)", str(e)
                )
                if unknown:
                    flag = next((a for a in eval_list(unknown[1]) if a.startswith("--")), unknown[1])
                    raise UserError(
                        f"unknown flag {flag}{did_you_mean(flag, fields)}; see --help_all"
                    ) from None
                raise ValueError(_batch_size_in_user_fields(str(e))) from None

    parser = StageParser(dataclass_types)  # HfArgumentParser: --help shows each field's default
    parser.allow_abbrev = False  # --max_step is a typo (did you mean --max_steps?), not a silent prefix
    parser.prog = f"rookworld {command}"
    parser.epilog = EXAMPLES.get(command)
    return parser


def eval_list(text: str) -> list[str]:
    import ast

    try:
        return [str(item) for item in ast.literal_eval(text)]
    except (ValueError, SyntaxError):
        return [text]


EXAMPLES = {  # one example per training command, shown at the end of --help
    "train": "example: rookworld train --config recipes/grpo_tiny_cpu.yaml --max_steps 300 --learning_rate 5e-5",
    "sft": "example: rookworld sft --config recipes/sft_tiny_cpu.yaml --max_steps 200",
}


# A field's bound is declared beside it, in its dataclass's BOUNDS (metadata would not do: TRL's parser hands a
# field's metadata to argparse whole): "finite", ">= N" or "> N", together as "finite > 0", a (reason) after.
# The stage checks the parsed dataclasses' bounds, the preflight the same bounds read by stages/recipe_fields.py.
TRL_BOUNDS = {  # TRL's and transformers' fields that count something or must be finite (ours: their class's BOUNDS)
    "per_device_train_batch_size": ">= 1",
    "gradient_accumulation_steps": ">= 1",
    "logging_steps": ">= 0",
    "save_steps": ">= 0",
    "learning_rate": "finite >= 0",
    "num_generations": ">= 2 (a group needs two completions to compare)",
    "beta": "finite",
    "temperature": "finite > 0 (sampling divides the logits by it; 0 is no sampling)",
    "top_p": "finite > 0",
    "weight_decay": "finite",
    "max_grad_norm": "finite",
    "epsilon": "finite",
}
BOUND = re.compile(r"(finite)?\s*(?:(>=|>)\s*(-?[0-9.]+))?\s*(\(.*\))?")


def bounds_of(cls) -> dict[str, str | None]:
    """{field: bound} of a dataclass: the `BOUNDS` of it and its bases (a subclass's win), else TRL_BOUNDS' by
    the field's name; ValueError for a bound BOUND cannot read or one naming no field."""
    names = {f.name for f in dataclasses.fields(cls)}
    declared = {}
    for klass in reversed(cls.__mro__):
        declared.update(vars(klass).get("BOUNDS", {}))
    for name, bound in declared.items():
        if name not in names or not BOUND.fullmatch(bound):
            raise ValueError(
                f"{cls.__name__}.BOUNDS[{name!r}] = {bound!r}: a field's name -> 'finite', '>= N', '> N' or "
                "'finite > N', a (reason) after"
            )
    return {name: declared.get(name, TRL_BOUNDS.get(name)) for name in names}


def bound_problem(value, bound: str | None) -> str | None:
    """What a number must be, in words, when `value` breaks `bound` (a NaN breaks any); None when it keeps it.

    >>> bound_problem(0, ">= 1"), bound_problem(float("inf"), "finite >= 0"), bound_problem(0.5, "> 0 (why)")
    ('>= 1', 'a finite number', None)
    >>> bound_problem(1, ">= 2 (a group needs two)"), bound_problem(float("nan"), None)
    ('>= 2 (a group needs two)', 'a finite number')
    """
    if isinstance(value, float) and math.isnan(value):
        return "a finite number"
    finite, op, limit, why = BOUND.fullmatch((bound or "").strip()).groups()
    if finite and math.isinf(value):
        return "a finite number"
    if op and not (value >= float(limit) if op == ">=" else value > float(limit)):
        return f"{op} {limit}" + (f" {why}" if why else "")
    return None


def check_numbers(*configs, bounds: dict[str, str | None] | None = None) -> None:
    """One UserError for a count that cannot be meant: max_steps 0 or below -1 (TrainingArguments would turn
    -5 into an epoch-based run of thousands of steps), and any number outside its field's bound (`bounds_of`:
    a batch size of 0, a negative learning rate, --temperature 0, --beta nan, ...). `bounds`: {field: bound}
    for configs that are no dataclasses (the preflight's, from recipe_fields.fields_of)."""
    for config in configs:
        steps = getattr(config, "max_steps", None)
        if steps is not None and (steps == 0 or steps < -1):
            raise UserError(
                f"max_steps must be a positive number of optimizer steps (or -1: train num_train_epochs "
                f"epochs), got {steps}: set e.g. --max_steps 10"
            )
        check_report_to(getattr(config, "report_to", None))
        check_bounds(config, bounds if bounds is not None else bounds_of(type(config)))
        check_no_remote_code(config)


def check_bounds(config, bounds: dict[str, str | None]) -> None:
    """One UserError for the first number field (by name) that breaks its bound, or is NaN: such runs trained
    nothing or crashed deep in the step (--learning_rate inf, --beta nan, --temperature 0)."""
    for name, value in sorted(vars(config).items()):
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if problem := bound_problem(value, bounds.get(name)):
            raise UserError(f"{name} must be {problem}, got {value}: fix --{name} or the recipe")


def check_no_remote_code(config) -> None:
    """One UserError for trust_remote_code (a field, or in model_init_kwargs): it would run Python files from the
    model folder, for TRL's reference model only (the policy loads as plain GPT-2), so it never helps here and
    only widens what a model folder can do."""
    kwargs = getattr(config, "model_init_kwargs", None)
    wanted = getattr(config, "trust_remote_code", False) or (
        isinstance(kwargs, dict) and kwargs.get("trust_remote_code")
    )
    if wanted not in (False, None, "false", "False", 0):
        raise UserError(
            "trust_remote_code is refused: it would run Python code from the model folder (for TRL's reference "
            "model only; the policy is loaded as plain GPT-2, which needs no code); drop trust_remote_code from "
            "the recipe or flags"
        )


# report_to's integrations (transformers' names) -> the package each needs
REPORTERS = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow",
             "comet_ml": "comet_ml", "clearml": "clearml", "neptune": "neptune", "dvclive": "dvclive",
             "swanlab": "swanlab", "codecarbon": "codecarbon", "azure_ml": "azureml", "dagshub": "dagshub",
             "flyte": "flytekit"}  # fmt: skip


def check_report_to(report_to) -> None:
    """report_to names integrations whose packages are installed (trackio: local dashboards with TRL's
    completions table, no account): one line saying how to install one, not transformers' RuntimeError from
    inside the Trainer; a misspelt name gets a "did you mean"."""
    import importlib.util

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name in names:
        if name in ("none", "all"):
            continue
        if name not in REPORTERS:
            raise UserError(
                f"report_to: unknown integration {name!r}{did_you_mean(name, REPORTERS, prefix='')}; use one of "
                f"{', '.join(REPORTERS)}, or none"
            )
        if importlib.util.find_spec(REPORTERS[name]) is None:
            local = " (local, no account)" if name == "trackio" else ""
            raise UserError(
                f"report_to {name} needs the {REPORTERS[name]} package{local}: `pip install {REPORTERS[name]}` in "
                f"this environment (.venv/bin/pip install {REPORTERS[name]}), or drop {name} from report_to"
            )


def _batch_size_in_user_fields(message: str) -> str:
    """TRL's 'generation_batch_size (12) must be divisible by num_generations (8)' in the fields users set."""
    m = re.match(r"generation_batch_size \((\d+)\) must be divisible by num_generations \((\d+)\)", message)
    if not m:
        return message
    return (
        f"per_device_train_batch_size x gradient_accumulation_steps x processes is {m[1]} completions per "
        f"generation round, which must be whole groups of num_generations ({m[2]}): make "
        f"per_device_train_batch_size a multiple of {m[2]} (e.g. {int(m[2]) * max(1, int(m[1]) // int(m[2]))})"
    )
