"""A training stage's recipe and --flags: TRL's parser with one-line errors (`stage_parser`) and the numbers no
run can mean (`check_numbers`: each field's bound, in its dataclass's BOUNDS), which the preflight runs too.

    from rookworld_trl.stages.recipe import check_numbers, stage_parser
    script, args, model_args = stage_parser((GRPOScriptArguments, RookWorldGRPOConfig, ModelConfig), "train")...

The preflight's view of the fields: `fields_of(command)` ({field: [type, default, bound]}) and `coerce`. Reading
the dataclasses imports TRL (5-10 s on 2 cores; the preflight's budget is about a second), so a child process
reads them once into the user's cache, keyed by the package's sources and the TRL and transformers versions.

    python -m rookworld_trl.stages.recipe     # the table, as JSON (what the child process prints)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from pathlib import Path

from rookworld_trl.common.errors import UserError, did_you_mean
from rookworld_trl.common.paths import resolve_path
from rookworld_trl.training.recipes import check_recipe


def stage_parser(dataclass_types: tuple, command: str):
    """TRL's TrlParser (recipes + --flags) whose errors are one line, not 200+ lines of usage."""
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
                raise _in_user_terms(str(e), fields) from None

    parser = StageParser(dataclass_types)  # HfArgumentParser: --help shows each field's default
    parser.allow_abbrev = False  # --max_step is a typo (did you mean --max_steps?), not a silent prefix
    parser.prog = f"rookworld {command}"
    parser.epilog = EXAMPLES.get(command)
    return parser


EXAMPLES = {  # one example per training command, shown at the end of --help
    "train": "example: rookworld train --config recipes/grpo_tiny_cpu.yaml --max_steps 300 --learning_rate 5e-5",
    "sft": "example: rookworld sft --config recipes/sft_tiny_cpu.yaml --max_steps 200",
}


# A field's bound is declared in its dataclass's BOUNDS (not metadata: TRL's parser hands that to argparse whole):
# "finite", ">= N" or "> N", together as "finite > 0", a (reason) after.
TRL_BOUNDS = {  # TRL's and transformers' fields that count something or must be finite (ours: their class's BOUNDS)
    "per_device_train_batch_size": ">= 1", "gradient_accumulation_steps": ">= 1", "logging_steps": ">= 0",
    "save_steps": ">= 0", "learning_rate": "finite >= 0",
    "num_generations": ">= 2 (a group needs two completions to compare)", "beta": "finite",
    "temperature": "finite > 0 (sampling divides the logits by it; 0 is no sampling)", "top_p": "finite > 0",
    "weight_decay": "finite", "max_grad_norm": "finite", "epsilon": "finite",
}  # fmt: skip
BOUND = re.compile(r"(finite)?\s*(?:(>=|>)\s*(-?[0-9.]+))?\s*(\(.*\))?")


def bounds_of(cls) -> dict[str, str | None]:
    """{field: bound} of a dataclass: the `BOUNDS` of it and its bases (a subclass's win), else TRL_BOUNDS'."""
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
    """One UserError for a number no run can mean: max_steps 0 or below -1 (TrainingArguments would turn -5 into
    an epoch-based run), any number outside its field's bound. `bounds`: for configs that are no dataclasses."""
    for config in configs:
        steps = getattr(config, "max_steps", None)
        if steps is not None and (steps == 0 or steps < -1):
            raise UserError(
                f"max_steps must be a positive number of optimizer steps (or -1: train num_train_epochs "
                f"epochs), got {steps}: set e.g. --max_steps 10"
            )
        check_report_to(getattr(config, "report_to", None))
        # such runs trained nothing or crashed deep in the step (--learning_rate inf, --beta nan, --temperature 0)
        known = bounds if bounds is not None else bounds_of(type(config))
        for name, value in sorted(vars(config).items()):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and (problem := bound_problem(value, known.get(name))):
                raise UserError(f"{name} must be {problem}, got {value}: fix --{name} or the recipe")
        check_no_remote_code(config)


def check_no_remote_code(config) -> None:
    """One UserError for trust_remote_code (a field, or in model_init_kwargs): it would only let a model folder
    run code (for TRL's reference model; the policy loads as plain GPT-2)."""
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
    """One line, not transformers' RuntimeError from inside the Trainer, for a report_to integration that is
    unknown or not installed."""
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


def _in_user_terms(message: str, fields: set[str]) -> Exception:
    """TRL's errors for an unknown flag and an indivisible generation batch, in the fields users set."""
    if unknown := re.match(r"Some specified arguments are not used by the HfArgumentParser: (.*)", message):
        flag = next(iter(re.findall(r"'(--[^']*)'", unknown[1])), unknown[1])  # ['--max_step', '5']
        return UserError(f"unknown flag {flag}{did_you_mean(flag, fields)}; see --help_all")
    m = re.match(r"generation_batch_size \((\d+)\) must be divisible by num_generations \((\d+)\)", message)
    if not m:
        return ValueError(message)
    return ValueError(
        f"per_device_train_batch_size x gradient_accumulation_steps x processes is {m[1]} completions per "
        f"generation round, which must be whole groups of num_generations ({m[2]}): make "
        f"per_device_train_batch_size a multiple of {m[2]} (e.g. {int(m[2]) * max(1, int(m[1]) // int(m[2]))})"
    )


# ------------------------------------------------------------------------------------ the preflight's fields

PACKAGE = Path(__file__).resolve().parents[1]

BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def coerce(kind: str, value):
    """`value` (a recipe's YAML value or a flag's text) as a field of type `kind` (type_text's) reads it;
    ValueError when no part of the type takes it.

    >>> coerce("int|None", "8"), coerce("list[float]|None", ["1", 0.5]), coerce("{no,steps}", "steps")
    (8, [1.0, 0.5], 'steps')
    """
    for part in kind.split("|"):
        try:
            return _coerce_part(part, value)
        except (ValueError, TypeError, KeyError):
            continue
    raise ValueError(kind)


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
    parts = [p for p in kind.split("|") if p != "None"]
    said = []
    for part in parts:
        if part.startswith("{"):
            choices = part[1:-1].split(",")
            said.append("one of " + ", ".join(choices[:8]) + (", ..." if len(choices) > 8 else ""))
        elif part.startswith("list["):
            inner = describe(part[5:-1]).removeprefix("a ")
            said.append(f"a list ([...]) of {inner}s".replace("one of", "each one of"))
        else:
            said.append(words.get(part, part))
    return " or ".join(said) + (" (or null)" if "None" in kind.split("|") else "")


def field_specs(dataclass_types) -> dict[str, list]:
    """{field: [type, default, bound]} of the dataclasses a stage's parser reads (a default JSON cannot hold:
    None); a field of several classes keeps the first one's."""
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
    """A field's type as the preflight checks it: |-joined int, float, bool, str, dict, None, list[PART],
    {a,b,...} (an Enum's or a Literal's values) or any.

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
    """The table's file in the user's cache, named by a hash of this package's sources and the versions."""
    import hashlib
    from importlib.metadata import version

    key = hashlib.sha256(f"{version('trl')} {version('transformers')} {sys.version}".encode())
    for source in sorted(PACKAGE.rglob("*.py")):
        key.update(source.read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rookworld_trl"
    return cache / f"fields-{key.hexdigest()[:20]}.json"


if __name__ == "__main__":  # the table as JSON, for fields_of in the parent process
    print(json.dumps(stage_fields()))
