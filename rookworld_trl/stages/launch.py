"""How `rookworld train` / `rookworld sft` start their stage: the accelerate config (--accelerate_config, else the
recipe's device), the preflight's fast checks, then `accelerate launch -m rookworld_trl.stages.grpo ...` (or torchrun
for several CPU processes) in a session of its own (`run_group`), with the stage's own exit code.

    launch("rookworld_trl.stages.grpo", ["--max_steps", "5"], "recipes/grpo_tiny_cpu.yaml")

Where CUDA is available, `rookworld train` moves the main job's CPU recipe to the GPU in bf16 (docs/GPU.md); a
--use_cpu flag or an --accelerate_config that sets use_cpu wins (`gpu_flags`). Stop signals: see `run_group`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from rookworld_trl.common.entry import EXIT_FILE, FRONT_PID, death_signal_preexec, started_file
from rookworld_trl.common.errors import UserError, clip
from rookworld_trl.common.flags import flag_values, underscored
from rookworld_trl.common.paths import resolve_path
from rookworld_trl.stages.preflight import EXPECTED, preflight, recipe_values, short_help


def recipe_use_cpu(argv: list[str]) -> bool | None:
    """use_cpu as the stage will read it: the recipe's, overridden by a --use_cpu flag (as TrlParser does)."""
    recipe = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    use_cpu = recipe_values(recipe).get("use_cpu") if recipe else None  # a bad recipe: the stage says why
    if "--use_cpu" in argv[:-1]:
        use_cpu = argv[argv.index("--use_cpu") + 1].lower() in ("true", "1", "yes")
    return use_cpu


def default_accelerate_config(argv: list[str]) -> tuple[str, str]:
    """(accelerate config, why) when --accelerate_config is not given: cpu.yaml for a CPU recipe or machine,
    else single_gpu.yaml (bf16)."""
    import torch

    if recipe_use_cpu(argv):
        name, why = "cpu.yaml", "use_cpu: true in the recipe or as --use_cpu"
    elif torch.cuda.is_available():
        name, why = "single_gpu.yaml", "CUDA is available and use_cpu is not true"
    else:
        name, why = "cpu.yaml", "no CUDA device"
    return resolve_path(f"accelerate_configs/{name}"), why


def gpu_flags(
    argv: list[str], recipe_use_cpu: bool | None, config_use_cpu: bool | None, cuda: bool
) -> list[str]:
    """`--use_cpu false --bf16 true` (no --bf16 when given) when CUDA is available and only the recipe asks for
    the CPU; else none.

    >>> gpu_flags([], recipe_use_cpu=True, config_use_cpu=None, cuda=True)
    ['--use_cpu', 'false', '--bf16', 'true']
    >>> gpu_flags([], recipe_use_cpu=True, config_use_cpu=None, cuda=False)
    []
    >>> gpu_flags(["--use_cpu", "true"], recipe_use_cpu=True, config_use_cpu=None, cuda=True)
    []
    """
    flags = flag_values(argv)
    if not cuda or "use_cpu" in flags or config_use_cpu or not recipe_use_cpu:
        return []
    return ["--use_cpu", "false", *([] if "bf16" in flags else ["--bf16", "true"])]


def to_gpu(command: str, argv: list[str], accel: str | None) -> list[str]:
    """The flags that move `rookworld train` to the GPU where CUDA is available (`gpu_flags` decides)."""
    import torch

    if command != "train":
        return []
    return gpu_flags(
        argv, recipe_use_cpu(argv), recipe_values(accel).get("use_cpu"), torch.cuda.is_available()
    )


def device_line(accel: str, argv: list[str], moved: list[str] | None = None) -> str:
    """Where the stage will train, and on a CPU run of a machine with CUDA, how to train on the GPU instead
    (`moved`: the flags to_gpu added)."""
    import torch

    if not torch.cuda.is_available():
        return "rookworld: device cpu (no CUDA device visible)"
    gpus = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    if moved:
        return (
            f"rookworld: device cuda ({gpus}): where CUDA is available the main job trains on the GPU "
            f"({' '.join(moved)} added to the recipe's use_cpu: true); to stay on the CPU add --use_cpu true"
        )
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

    `accelerate launch`, but for several CPU processes on one machine (MULTI_CPU), which accelerate starts only
    through mpirun: there torchrun starts them. A CPU config gets OMP_NUM_THREADS, else the physical cores shared
    out (what accelerate would pick, with a warning).
    """
    import psutil  # an accelerate dependency

    config = recipe_values(accelerate_config)
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
    """Run `accelerate launch --config_file CFG -m MODULE --config RECIPE ARGV` (see `launcher`); its exit code."""
    argv = underscored(argv)  # --accelerate-config as --accelerate_config: one spelling for what is read here
    # a recipe too large, binary, an alias bomb: one line before anything reads it
    if "--config" in argv[:-1] and os.path.isfile(path := resolve_path(argv[argv.index("--config") + 1])):
        from rookworld_trl.training.recipes import check_recipe_file

        try:
            check_recipe_file(path)
        except UserError as e:
            raise_usage(command, str(e))
    if "--help_all" in argv:  # every field, as the config classes define them
        return subprocess.call([sys.executable, "-m", module, "--help"])
    if {"-h", "--help"} & set(argv):
        given = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else default_recipe
        accel = argv[argv.index("--accelerate_config") + 1] if "--accelerate_config" in argv[:-1] else None
        print(short_help(command, resolve_path(given), argv, given, accel))
        return 0
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
        count = str(recipe_values(accel).get("num_processes", 1))  # none given, or no count: 1
        preflight(command, argv, int(processes or (int(count) if count.isdigit() else 1)))
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
    """One line for an --accelerate_config that is missing, a directory, or no accelerate config."""
    import yaml

    fix = "pass a YAML file of accelerate_configs/ (e.g. accelerate_configs/cpu.yaml)"
    if not os.path.isfile(path):
        why = "is a directory" if os.path.isdir(path) else "not found"
        raise_usage(command, f"accelerate config {path} {why}; {fix}")
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


def say_unset_fields(command: str, recipe: str, argv: list[str], default_recipe: str | None) -> None:
    """One line when a --config leaves out fields a user sets (EXPECTED): it replaces the default recipe, not
    layers on it (a GPU recipe must not inherit the CPU recipe's use_cpu)."""
    if not default_recipe or not os.path.isfile(recipe):
        return
    given = {**recipe_values(recipe), **flag_values(argv)}
    if unset := [name for name in EXPECTED[command] if name not in given]:
        print(
            f"rookworld: {recipe} sets no {', '.join(unset)}: a --config replaces the default recipe "
            f"({default_recipe}), so these take the config class's defaults (`rookworld {command} --config "
            f"{recipe} --help` shows the values in effect)",
            flush=True,
        )


# ---------------------------------------------------------------------------------------------- stop signals

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill / timeout / a scheduler, hang-up


def run_group(cmd: list[str], env: dict | None = None, command: str = "train") -> int:
    """Run the launcher cmd in a session of its own; its exit code (128 + the signal's number after a stop
    signal).

    A stop signal goes to the stage processes only, which finish their step and save; the wait goes on until
    they exit. A second signal is passed on too (the stage stops at once). A signal before every stage process
    has finished its imports (entry.started_file) stops the whole launch instead: nothing to save yet, and an
    import stopped midway would be a traceback. What is left of the session after the launcher exits is killed.
    """
    exit_file = (env or {}).get(EXIT_FILE)
    received: list[int] = []
    proc = None

    def stop_launch(signum) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"rookworld {command}: {name} before training began: stopped, nothing to save",
              file=sys.stderr, flush=True)  # fmt: skip
        _end_session(proc.pid)

    def forward(signum, frame):
        received.append(signum)
        if proc is None:  # not started yet: stopped as soon as it is
            return
        with contextlib.suppress(Exception):  # psutil.Error: a process has just exited
            stages = _stage_processes(proc.pid)
            ready = bool(stages) and all(
                os.path.exists(started_file(exit_file, p.pid)) for p in stages if exit_file
            )
            if not ready and len(received) == 1:  # still starting: nothing to save, so the launch stops
                stop_launch(signum)
            for stage in stages if ready else []:
                stage.send_signal(signum)

    # the handler first: a signal between the start and the handler would leave the launch running on its own
    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        # the parent-death signal: a `rookworld` killed with -9 runs no handler, so the launcher learns it from the kernel
        # (SIGTERM); each stage process does the same with its launcher (common/entry.py run_stage)
        proc = subprocess.Popen(
            cmd,
            start_new_session=True,
            env={**os.environ, **(env or {}), FRONT_PID: str(os.getpid())},
            preexec_fn=death_signal_preexec(),
        )
        if received:
            stop_launch(received[0])
        code = proc.wait()  # retried after each handler (PEP 475)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc is not None:
            _end_session(proc.pid)
    return 128 + received[0] if received and code else code


def _end_session(sid: int) -> None:
    """Kill what is left of the launcher's session `sid` (its process group and any group it made)."""
    import psutil

    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):  # gone meanwhile
            if os.getsid(p.pid) == sid and p.pid != os.getpid():
                p.kill()


def _stage_processes(pid: int) -> list:
    """The training processes under a launcher: the Python processes below it with no Python process below
    them (a launcher's or torchrun's agent would stop its workers on a signal; Stockfish must not get it)."""
    import psutil

    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    pythons = [p for p in below if "python" in p.name().lower()]
    return [p for p in pythons if not any("python" in c.name().lower() for c in p.children())]
