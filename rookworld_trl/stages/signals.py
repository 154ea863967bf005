"""Stop signals during a launched stage: the launcher runs in a session of its own; Ctrl-C, SIGTERM or SIGHUP goes
to the stage processes only, which finish their step and save (training/interrupt.py), or stops the whole launch
while they are still importing; whatever of the session is left when the launcher exits is killed.

    code = run_group(cmd, env, "train")     # 130 after Ctrl-C, 143 after SIGTERM
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from rookworld_trl.common.entry import EXIT_FILE, FRONT_PID, death_signal_preexec, started_file

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill / timeout / a scheduler, hang-up


def run_group(cmd: list[str], env: dict | None = None, command: str = "train") -> int:
    """Run the launcher cmd in a session of its own and return its exit code (128 + the signal's number
    after a stop signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP).

    A stop signal (STOP_SIGNALS) goes to the stage under the launcher only, which finishes its step, saves a
    checkpoint and says how to resume; the wait goes on until it has exited, so the prompt returns once the
    checkpoint is on disk. A second signal is passed on too: the stage then stops at once. A signal before
    every stage process has finished its imports (entry.started_file) stops the whole launch instead, with one
    line: there is nothing to save yet, and a stage stopped inside an import would print a traceback.
    Whatever of the run's session is still running when the launcher has exited (an engine, a stage stuck past
    its launcher) is killed: nothing of the run is left behind with parent PID 1. When this process itself is
    killed (kill -9 runs no handler), the kernel sends the launcher SIGTERM (PR_SET_PDEATHSIG), and each stage
    process under it the same when the launcher goes: the stage saves its step and stops.
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
