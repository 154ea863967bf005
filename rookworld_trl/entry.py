"""How a stage runs, below the `rookworld` command: recipe + --flag parsing with one-line errors, bundled paths,
and `run_stage`, which turns bad input into one line and an exit code instead of a traceback.

    from rookworld_trl.entry import run_stage, stage_parser, resolve_path
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from rookworld_trl.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
# the fix a malformed data line's one-line error ends with (data loading, the stages, the preflight)
BAD_LINE_FIX = "fix or delete that line, or pass --skip_bad_rows to skip malformed lines (they are counted)"


def say(message: str) -> None:
    """One line on stderr: resume decisions must be seen, and INFO logs are not shown by default."""
    print(f"rookworld: {message}", file=sys.stderr, flush=True)


def resolve_path(path: str) -> str:
    """A recipe/config path as given, else relative to the repository root (for the bundled ones)."""
    if Path(path).exists() or Path(path).is_absolute():
        return path
    candidate = REPO_ROOT / path
    if candidate.exists():
        return str(candidate)
    bundled = (
        Path(__file__).resolve().parent / "assets" / path
    )  # recipes/ ships in the package (assets/recipes)
    return str(bundled) if bundled.exists() else path


# what a data source's one-line error ends with when the source cannot be read at all (the preflight, data loading)
DATA_SOURCE_FIX = "pass a `rookworld data generate` output dir or a .parquet/.jsonl/.txt file of P:/A: rows"


def missing_source(source: str) -> str:
    """The one line for a data source that is neither a local path nor tried on the hub."""
    return (
        f"no such file or directory: {source!r} (nor a hub dataset id like 'owner/name'); {DATA_SOURCE_FIX}"
    )


def hub_id_like(source: str) -> bool:
    """Whether a data source that is no local path is tried as a hub dataset id ('owner/name').

    >>> hub_id_like("jrahn/rookworld_7m"), hub_id_like("mydata.jsonl"), hub_id_like("./a/b")
    (True, False, False)
    """
    return source.count("/") == 1 and not source.startswith((".", "/"))


def resolve_paths(config, *names: str) -> None:
    """resolve_path on each named field of `config` that is set (a stage's model, data, ... from any cwd)."""
    for name in names:
        if getattr(config, name):
            setattr(config, name, resolve_path(getattr(config, name)))


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


def did_you_mean(name: str, fields: set[str]) -> str:
    """' (did you mean --learning_rate?)' for a misspelt field, else '' (errors.did_you_mean: every command's)."""
    from rookworld_trl.errors import did_you_mean as suggest

    return suggest(name, fields)


def eval_list(text: str) -> list[str]:
    import ast

    try:
        return [str(item) for item in ast.literal_eval(text)]
    except (ValueError, SyntaxError):
        return [text]


def check_recipe(path: str, fields: set[str]) -> None:
    """One UserError for a recipe that is not a YAML mapping of known fields: a syntax error (its line and
    column), a top-level value that is no mapping, a misspelt field (and the field it is closest to)."""
    import yaml

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


def recipe_config(config_class, recipe: str, command: str, overrides: dict):
    """A `config_class` (RookWorldGRPOConfig, RookWorldSFTConfig) with the fields a recipe sets, by name
    ("grpo_tiny_cpu") or path, then `overrides`; the recipe's other fields (model, data, rewards: the
    stage's, `rookworld train --help_all`) are left out. Values are read as the stage's parser reads them."""
    import dataclasses
    import json

    import yaml
    from trl import TrlParser

    from rookworld_trl import assets

    try:
        path = assets.recipe(str(recipe))
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    stage_fields = json.loads((Path(assets.HERE) / "recipe_fields.json").read_text())[command]
    own = {f.name for f in dataclasses.fields(config_class) if f.init}
    check_recipe(path, own | set(stage_fields))
    with open(path) as f:
        values = yaml.safe_load(f)
    for key, value in (values.pop("env", None) or {}).items():  # as TrlParser does
        os.environ[key] = str(value)
    values = {k: v for k, v in values.items() if k in own} | overrides
    unknown = [k for k in overrides if k not in own]
    if unknown:
        raise TypeError(
            f"{config_class.__name__}.from_recipe: unknown field {unknown[0]!r}"
            f"{did_you_mean(unknown[0], own).replace('--', '')}; help({config_class.__name__}) lists the fields"
        )
    parser = TrlParser((config_class,))
    parser.set_defaults_with_config(**values)  # argparse converts string values by the field's type
    try:
        return parser.parse_args_into_dataclasses(args=[])[0]
    except SystemExit:  # argparse printed which value it could not read
        raise UserError(f"recipe {path}: a value does not fit its field (see above)") from None


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

    from rookworld_trl.errors import did_you_mean as suggest

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name in names:
        if name in ("none", "all"):
            continue
        if name not in REPORTERS:
            raise UserError(
                f"report_to: unknown integration {name!r}{suggest(name, REPORTERS, prefix='')}; use one of "
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


EXIT_FILE = (
    "ROOKWORLD_EXIT_FILE"  # set by `rookworld` for the stage it launches: the stage's exit code goes there
)


def started_file(exit_file: str, pid: int) -> str:
    """The file a stage process under `rookworld` touches once its imports are done (`run_stage`): a Ctrl-C
    before then would be a traceback from inside an import, so `rookworld` stops such a process itself."""
    return f"{exit_file}.{pid}.started"


def run_stage(command: str, stage_main: Callable[[list[str] | None], int | None], argv=None) -> int:
    """`_run_stage`, with the exit code also written to $ROOKWORLD_EXIT_FILE when set: `accelerate launch`
    turns every failure into exit code 1, and `rookworld` passes on the stage's own (2: bad input)."""
    code = 1  # a bug's traceback
    if os.environ.get(EXIT_FILE):  # the imports are done: from here a Ctrl-C is this function's to answer
        with contextlib.suppress(OSError):
            Path(started_file(os.environ[EXIT_FILE], os.getpid())).touch()
    try:
        code = _run_stage(command, stage_main, argv)
    except SystemExit as e:  # argparse (2), --help (0), sys.exit("message") (1)
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
        raise
    finally:
        if os.environ.get(EXIT_FILE):
            with contextlib.suppress(OSError):
                Path(os.environ[EXIT_FILE]).write_text(str(code))
    return code


def _run_stage(command: str, stage_main: Callable[[list[str] | None], int | None], argv=None) -> int:
    """Run a stage's `main(argv)`. Bad input (a ValueError such as a config check or a data source that will
    not load, a missing file, a model that will not load, no Stockfish) prints one line that names the
    problem, not a traceback through accelerate, and returns 2; so does a full disk, whichever writer hit it.
    Ctrl-C returns 130. Other exceptions are bugs and keep their traceback."""
    try:
        return int(stage_main(argv) or 0)
    except BrokenPipeError:  # `rookworld data load ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a writer the reader left
    except (ValueError, OSError, UserError) as e:
        print(f"rookworld {command}: error: {e or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the training stage says more (the step, how to resume) before this
        print(f"rookworld {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a full disk seen by any writer (sqlite, parquet, tensorboard) is no bug either
        if not _disk_full(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"rookworld {command}: error: no space left on device ({type(e).__name__}: {first}); free some "
            "space, then resume with --resume_from_checkpoint auto",
            file=sys.stderr,
        )
        return 2


def _disk_full(e: BaseException) -> bool:
    import errno

    text = str(e).lower()
    return getattr(e, "errno", None) == errno.ENOSPC or "no space left" in text or "disk is full" in text
