"""A training stage's recipe and --flags: TRL's parser with one-line errors (`stage_parser`), the recipe's own
check (a YAML mapping of known fields, with the one did-you-mean), and the counts no run can mean
(`check_numbers`), which the preflight (stages/preflight.py) runs before accelerate starts too.

    from rookworld_trl.stages.recipe import check_numbers, stage_parser
    script, args, model_args = stage_parser((GRPOScriptArguments, RookWorldGRPOConfig, ModelConfig), "train")...
"""

from __future__ import annotations

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


# fields that count something (steps, rows, processes): (name, smallest value, what the value means)
POSITIVE = (
    ("per_device_train_batch_size", 1, ""),
    ("gradient_accumulation_steps", 1, ""),
    ("logging_steps", 0, ""),
    ("save_steps", 0, ""),
    ("learning_rate", 0, ""),
    ("num_generations", 2, " (a group needs two completions to compare)"),
    ("engine_workers", 1, ""),
    ("eval_samples", 0, " (0: no final eval)"),
    ("eval_every_steps", 0, " (0: off)"),
    ("eval_every_samples", 1, ""),
)


def check_numbers(*configs) -> None:
    """One UserError for a count that cannot be meant: max_steps 0 or below -1 (TrainingArguments would turn
    -5 into an epoch-based run of thousands of steps), a batch size of 0, a negative learning rate, ..."""
    for config in configs:
        steps = getattr(config, "max_steps", None)
        if steps is not None and (steps == 0 or steps < -1):
            raise UserError(
                f"max_steps must be a positive number of optimizer steps (or -1: train num_train_epochs "
                f"epochs), got {steps}: set e.g. --max_steps 10"
            )
        check_report_to(getattr(config, "report_to", None))
        for name, least, meaning in POSITIVE:
            value = getattr(config, name, None)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < least:
                raise UserError(
                    f"{name} must be >= {least}{meaning}, got {value}: fix --{name} or the recipe"
                )
        check_finite(config)
        check_no_remote_code(config)


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


# fields that must be a finite number (inf trains nothing: every update is skipped), and those that must be > 0
FINITE = ("learning_rate", "beta", "temperature", "top_p", "weight_decay", "replay_coef", "tactics_replay_coef",
          "max_grad_norm", "epsilon", "warmup_ratio", "mix_env_ratio")  # fmt: skip
ABOVE_ZERO = {"temperature": " (sampling divides the logits by it; 0 is no sampling)", "top_p": ""}


def check_finite(config) -> None:
    """One UserError for a NaN in any number field, an infinite one among FINITE, or ABOVE_ZERO's at or below 0:
    such runs trained nothing or crashed deep in the step (--learning_rate inf, --beta nan, --temperature 0)."""
    for name, value in sorted(vars(config).items()):
        if not isinstance(value, float):
            continue
        if math.isnan(value) or (math.isinf(value) and name in FINITE):
            raise UserError(f"{name} must be a finite number, got {value}: fix --{name} or the recipe")
        if name in ABOVE_ZERO and value <= 0:
            raise UserError(f"{name} must be > 0{ABOVE_ZERO[name]}, got {value}: fix --{name} or the recipe")


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
