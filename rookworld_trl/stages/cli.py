"""The `rookworld` console command: a thin dispatcher to the command modules.

    rookworld --help
    rookworld train [--accelerate_config accelerate_configs/cpu.yaml] [--config recipe.yaml] [overrides]
    rookworld <command> --help

Each command module exposes `main(argv)`. `train` and `sft` go through `accelerate launch` (stages/launch.py);
the others run in this process, after a second's check of the models and data they name.
"""

from __future__ import annotations

import importlib
import sys

from rookworld_trl.common.entry import quiet_broken_pipe, run_stage
from rookworld_trl.common.errors import UserError, clip, did_you_mean
from rookworld_trl.common.flags import flag_values, underscored
from rookworld_trl.common.paths import resolve_path
from rookworld_trl.stages.launch import launch

# command -> (module, one-line help, default recipe for accelerate-launched stages or None)
COMMANDS: dict[str, tuple[str, str, str | None]] = {
    "train": ("rookworld_trl.stages.grpo", "GRPO training with chess rewards (via accelerate launch)",
              "recipes/grpo_tiny_cpu.yaml"),
    "sft": ("rookworld_trl.stages.sft", "supervised training with TRL's SFTTrainer (via accelerate launch)",
            "recipes/sft_embedded_cpu.yaml"),
    "data": ("rookworld_trl.data.commands", "generate / load / audit P: and A: datasets", None),
    "tokenizer": ("rookworld_trl.data.tokenizer", "train a compact byte-level BPE tokenizer", None),
    "eval": ("rookworld_trl.stages.eval.evaluate",
             "evaluation suites (policy, environment, mate-in-one, self-play, match)", None),
    "report": ("rookworld_trl.stages.eval.charts", "PNG training curves and a markdown summary of a run", None),
    "push": ("rookworld_trl.training.publish", "upload a finished run's final model and card to the hub", None),
    "parity": ("rookworld_trl.stages.eval.parity", "check our pure-PyTorch GPT-2 against transformers on a model",
               None),
    "doctor": ("rookworld_trl.stages.doctor",
               "check a new machine: environment, each GPU path on a tiny model, a 2-step GRPO run", None),
}  # fmt: skip


def usage() -> str:
    lines = ["usage: rookworld <command> [args]", "", "commands:"]
    lines += [f"  {name:<10} {spec[1]}" for name, spec in COMMANDS.items()]
    lines += ["", "Run `rookworld <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`rookworld ARGS`: the exit code. Ctrl-C before a stage's trainer takes it over is one line and exit 130."""
    try:
        return dispatch(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        print("rookworld: interrupted (Ctrl-C) before training began: nothing to save", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rookworld ... | head`: the reader has what it wanted
        return quiet_broken_pipe()


def dispatch(argv: list[str]) -> int:
    if argv and argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    if not argv:  # a script that forgot its command must not pass: the usage, and a nonzero exit
        print(usage(), file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        if name.startswith("-"):  # a flag before the command: say where it goes
            print(f"rookworld: error: {name} comes after a command, e.g. `rookworld train {' '.join(argv)}`; "
                  f"commands: {', '.join(COMMANDS)}", file=sys.stderr)  # fmt: skip
            return 2
        print(
            f"rookworld: error: unknown command {name!r}{did_you_mean(name, COMMANDS, prefix='')}; choose from "
            f"{', '.join(COMMANDS)} (`rookworld --help` says what each does)",
            file=sys.stderr,
        )
        return 2
    module, _, default_recipe = COMMANDS[name]
    if default_recipe is not None:
        return launch(module, rest, default_recipe, name)
    try:  # a wrong model name or a bad data file in a second, before the command's imports and its engines
        if not {"-h", "--help"} & set(rest):
            check_models(name, rest)
            check_source(name, rest)
    except UserError as e:
        print(f"rookworld {name}: error: {clip(str(e))}", file=sys.stderr)
        return 2
    return run_stage(name, importlib.import_module(module).main, rest)


def check_models(command: str, argv: list[str]) -> None:
    """model/source.py's check of the models `rookworld eval` / `parity` name (the first argument, --baseline)."""
    if command not in ("eval", "parity") or not argv or argv[0].startswith("-"):
        return
    from rookworld_trl.model.source import model_source

    names = [argv[0]]
    flags = underscored(argv)
    if command == "eval" and "--baseline" in flags[:-1]:
        names.append(flags[flags.index("--baseline") + 1])
    for name in names:
        model_source(resolve_path(name))


def check_source(command: str, argv: list[str]) -> None:
    """The preflight's check of the file `rookworld data load` / `audit` name, before `datasets` and Stockfish
    load (audit counts bad lines instead of stopping at the first)."""
    if command != "data" or len(argv) < 2 or argv[0] not in ("load", "audit") or argv[1].startswith("-"):
        return
    from rookworld_trl.data import files

    flags = flag_values(underscored(argv[2:]))
    puzzles = tuple((flags.get(k) or [None])[0] for k in ("puzzle_rating", "puzzle_themes"))
    skip_bad_rows = argv[0] == "audit" or "skip_bad_rows" in flags
    files.check_source(resolve_path(argv[1]), skip_bad_rows, files.DATA_SECONDS, *puzzles)


if __name__ == "__main__":
    sys.exit(main())
