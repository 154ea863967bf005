"""How `rookworld train` / `rookworld sft` start their stage: the accelerate config (--accelerate_config, else the
recipe's device), the preflight's fast checks, then `accelerate launch -m rookworld_trl.stages.grpo ...` (or torchrun
for several CPU processes) in a process group of its own (stages/signals.py), with the stage's own exit code.

    launch("rookworld_trl.stages.grpo", ["--max_steps", "5"], "recipes/grpo_tiny_cpu.yaml")
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rookworld_trl.common.entry import EXIT_FILE
from rookworld_trl.common.errors import UserError, clip
from rookworld_trl.common.flags import underscored
from rookworld_trl.common.paths import resolve_path
from rookworld_trl.stages.preflight import preflight
from rookworld_trl.stages.signals import run_group


def recipe_use_cpu(argv: list[str]) -> bool | None:
    """use_cpu as the stage will read it: the recipe's, overridden by a --use_cpu flag (as TrlParser does)."""
    from rookworld_trl.stages.short_help import recipe_values

    recipe = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    use_cpu = recipe_values(recipe).get("use_cpu") if recipe else None  # a bad recipe: the stage says why
    if "--use_cpu" in argv[:-1]:
        use_cpu = argv[argv.index("--use_cpu") + 1].lower() in ("true", "1", "yes")
    return use_cpu


def default_accelerate_config(argv: list[str]) -> tuple[str, str]:
    """(accelerate config, why) for a stage's argv when --accelerate_config is not given: the recipe decides.
    A CPU recipe (`use_cpu: true` in its YAML, or --use_cpu true) gets cpu.yaml whatever devices are
    visible; any other gets single_gpu.yaml (bf16) where CUDA is available, else cpu.yaml."""
    import torch

    if recipe_use_cpu(argv):
        name, why = "cpu.yaml", "use_cpu: true in the recipe or as --use_cpu"
    elif torch.cuda.is_available():
        name, why = "single_gpu.yaml", "CUDA is available and use_cpu is not true"
    else:
        name, why = "cpu.yaml", "no CUDA device"
    return resolve_path(f"accelerate_configs/{name}"), why


def to_gpu(command: str, argv: list[str], accel: str | None) -> list[str]:
    """The flags that move `rookworld train` to the GPU where CUDA is available (stages/device.py decides)."""
    import torch

    from rookworld_trl.stages.device import gpu_flags
    from rookworld_trl.stages.short_help import recipe_values

    if command != "train":
        return []
    config_cpu = recipe_values(accel).get("use_cpu") if accel else None
    return gpu_flags(argv, recipe_use_cpu(argv), config_cpu, torch.cuda.is_available())


def device_line(accel: str, argv: list[str], moved: list[str] | None = None) -> str:
    """Where the stage will train, and on a CPU run of a machine with CUDA, how to train on the GPU instead
    (`moved`: the flags to_gpu added, said with how to stay on the CPU)."""
    import torch

    from rookworld_trl.stages.device import gpu_line
    from rookworld_trl.stages.short_help import recipe_values

    if not torch.cuda.is_available():
        return "rookworld: device cpu (no CUDA device visible)"
    gpus = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    if moved:
        return gpu_line(gpus, moved)
    if recipe_use_cpu(argv) or recipe_values(accel).get("use_cpu"):
        return (
            f"rookworld: device cpu, although CUDA is available ({gpus}): the recipe or the accelerate config "
            "sets use_cpu. To train on the GPU add `--use_cpu false --bf16 true` (accelerate_configs/"
            "single_gpu.yaml: bf16), or use recipes/grpo_rookworld_124m_gpu.yaml"
        )
    return f"rookworld: device cuda ({gpus})"


# torchrun without its own traceback when a process fails: the stage has said what went wrong in one line
TORCHRUN = """
import sys
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run
try:
    run(parse_args(sys.argv[1:]))
except ChildFailedError as e:
    sys.exit(max(f.exitcode for f in e.failures.values()) if e.failures else 1)  # the others were stopped
"""


def launcher(
    accelerate_config: str, target: list[str], argv: list[str], processes: str | None = None
) -> tuple[list[str], dict]:
    """(command, extra environment) that starts `target` (["-m", module] or [script]) with `argv` as the
    accelerate config says (`processes`: --num_processes, in place of the config's).

    `accelerate launch` with the config, for every config but one: several CPU processes on one machine
    (distributed_type MULTI_CPU), which accelerate starts only through mpirun; there torch's own launcher
    (torchrun) starts them and accelerate joins them into one gloo group (the stage gets --use_cpu true).
    A CPU config gets its thread count per process passed: OMP_NUM_THREADS when set, else the physical cores
    shared out (what accelerate would pick, with a warning).
    """
    import psutil  # an accelerate dependency
    import yaml

    with open(accelerate_config) as f:
        config = yaml.safe_load(f) or {}
    given, processes = processes, int(processes or config.get("num_processes", 1))
    threads = os.environ.get("OMP_NUM_THREADS") or str(
        max(1, (psutil.cpu_count(logical=False) or 1) // processes)
    )
    if config.get("distributed_type") == "MULTI_CPU" and int(config.get("num_machines", 1)) == 1:
        port = str(config.get("main_process_port", 29500))
        cmd = [sys.executable, "-c", TORCHRUN, f"--nproc_per_node={processes}", f"--master_port={port}",
               *target, *argv, "--use_cpu", "true"]  # fmt: skip
        return cmd, {"OMP_NUM_THREADS": threads}
    # --quiet: when the stage exits with an error it has already printed, accelerate exits 1 instead of adding
    # a traceback of its own launcher
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file", accelerate_config]
    cmd += ["--num_processes", given] if given else []
    if config.get("use_cpu"):  # the stage must know too: a bf16 recipe would fail the Trainer's GPU check
        cmd += ["--num_cpu_threads_per_process", threads]
        argv = [*argv, "--use_cpu", "true"]
    return [*cmd, *target, *argv], {}


def launch(module: str, argv: list[str], default_recipe: str | None, command: str = "train") -> int:
    """Run `accelerate launch --config_file CFG -m MODULE --config RECIPE ARGV` (see `launcher`) and return its
    exit code. --help: the fields a user sets with the recipe's values (stages/short_help.py); --help_all: all."""
    argv = underscored(argv)  # --accelerate-config as --accelerate_config: one spelling for what is read here
    check_given_recipe(argv, command)  # too large, binary, an alias bomb: one line before anything reads it
    if "--help_all" in argv:  # every field, as the config classes define them
        return subprocess.call([sys.executable, "-m", module, "--help"])
    if {"-h", "--help"} & set(argv):
        return print_short_help(command, argv, default_recipe)
    accel = launcher_flag(argv, "--accelerate_config", "a path (e.g. accelerate_configs/cpu.yaml)", command)
    accel = resolve_path(accel) if accel else None
    processes = launcher_flag(argv, "--num_processes", "a count (e.g. --num_processes 4)", command)
    if processes is not None and not (processes.isdigit() and int(processes) > 0):
        raise_usage(command, f"--num_processes must be a positive whole number, got {processes!r}")
    if accel is not None:
        check_accelerate_config(accel, command)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
            raise_usage(command, f"--config needs a recipe, e.g. --config {default_recipe}")
        argv[i + 1] = resolve_path(argv[i + 1])
    elif default_recipe:
        argv = ["--config", resolve_path(default_recipe), *argv]
    try:  # bad input costs a second here, not the launch's 10-20 s (nor torch's import: to_gpu)
        preflight(command, argv, int(processes or config_processes(accel)))
    except UserError as e:
        print(f"rookworld {command}: error: {clip(str(e))}", file=sys.stderr)
        return 2
    moved = to_gpu(command, argv, accel)  # system-made flags: --use_cpu false --bf16 true, nothing to check
    argv += moved
    if "--config" in argv[:-1] and argv[argv.index("--config") + 1] != resolve_path(default_recipe or ""):
        say_unset_fields(command, argv[argv.index("--config") + 1], argv, default_recipe)
    if accel is None:
        accel, why = default_accelerate_config(argv)
        shown = os.path.relpath(accel) if not os.path.relpath(accel).startswith("..") else accel
        print(f"rookworld: accelerate config {shown} ({why}; --accelerate_config to choose)", flush=True)
    print(device_line(accel, argv, moved), flush=True)
    cmd, env = launcher(accel, ["-m", module], argv, processes)
    shown = [arg for arg in cmd if arg not in ("-c", TORCHRUN)]  # torch's launcher, shown as what it is
    print("rookworld: " + " ".join(["torchrun", *shown[1:]] if TORCHRUN in cmd else cmd), flush=True)
    with tempfile.TemporaryDirectory() as tmp:  # the stage's own exit code (accelerate's is 1 on any failure)
        exit_file = os.path.join(tmp, "exit_code")
        code = run_group(cmd, {**env, EXIT_FILE: exit_file}, command)
        with contextlib.suppress(OSError, ValueError):
            stage_code = int(Path(exit_file).read_text())
            code = stage_code if code == 1 and stage_code else code
    return code


def check_given_recipe(argv: list[str], command: str) -> None:
    """The --config recipe through training/recipes.py check_recipe_file (when it is a file); one line, exit 2."""
    from rookworld_trl.training.recipes import check_recipe_file

    if "--config" not in argv[:-1]:
        return
    path = resolve_path(argv[argv.index("--config") + 1])
    if os.path.isfile(path):
        try:
            check_recipe_file(path)
        except UserError as e:
            raise_usage(command, str(e))


def launcher_flag(argv: list[str], flag: str, what: str, command: str) -> str | None:
    """The value of a flag `rookworld` reads itself (and takes out of argv), or None when not given."""
    if flag not in argv:
        return None
    i = argv.index(flag)
    if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
        raise_usage(command, f"{flag} needs {what}")
    value = argv[i + 1]
    del argv[i : i + 2]
    return value


def check_accelerate_config(path: str, command: str) -> None:
    """One line, before the launcher's traceback, for an --accelerate_config that is missing, a directory, or
    no accelerate config (a recipe given there: it has no distributed_type)."""
    import yaml

    fix = "pass a YAML file of accelerate_configs/ (e.g. accelerate_configs/cpu.yaml)"
    if not os.path.isfile(path):
        raise_usage(
            command,
            f"accelerate config {path} {'is a directory' if os.path.isdir(path) else 'not found'}; {fix}",
        )
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise_usage(command, f"accelerate config {path}: not readable YAML ({str(e).splitlines()[0]}); {fix}")
    if not isinstance(config, dict) or "distributed_type" not in config:
        raise_usage(command, f"{path} is no accelerate config (it sets no distributed_type); {fix}; a recipe "
                    "goes to --config")  # fmt: skip


def raise_usage(command: str, message: str):
    print(f"rookworld {command}: error: {clip(message)}", file=sys.stderr)
    sys.exit(2)


def config_processes(accelerate_config: str | None) -> int:
    """num_processes of an accelerate config (1 when none is given: cpu.yaml and single_gpu.yaml have one)."""
    import yaml

    if accelerate_config is None:
        return 1
    try:
        with open(accelerate_config) as f:
            return int((yaml.safe_load(f) or {}).get("num_processes", 1))
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return 1  # accelerate says what is wrong with it


def print_short_help(command: str, argv: list[str], default_recipe: str) -> int:
    from rookworld_trl.stages.short_help import short_help

    given = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    recipe = resolve_path(given or default_recipe)
    accel = argv[argv.index("--accelerate_config") + 1] if "--accelerate_config" in argv[:-1] else None
    print(short_help(command, recipe, argv, given or default_recipe, accel))
    return 0


def say_unset_fields(command: str, recipe: str, argv: list[str], default_recipe: str | None) -> None:
    """One line when a --config leaves out fields a user sets: it replaces the default recipe, not layers on it
    (a GPU recipe must not inherit the CPU recipe's use_cpu), so those take the config class's defaults."""
    from rookworld_trl.stages.short_help import unset_fields

    unset = unset_fields(command, recipe, argv) if os.path.isfile(recipe) else []
    if unset and default_recipe:
        print(
            f"rookworld: {recipe} sets no {', '.join(unset)}: a --config replaces the default recipe "
            f"({default_recipe}), so these take the config class's defaults (`rookworld {command} --config "
            f"{recipe} --help` shows the values in effect)",
            flush=True,
        )
