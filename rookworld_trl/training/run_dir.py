"""Whether output_dir can hold a run: a directory this process can write (check_output_dir), no other run's
(lock_run_dir, check_run_free), and, with several machines, one that every machine sees (check_shared_output_dir);
which machine a process is on.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from rookworld_trl.training.checkpoints import write_json_atomic


def check_output_dir(output_dir: str) -> None:
    """One clear line when output_dir cannot be a run directory (before anything else writes there)."""
    if not str(output_dir).strip():
        raise ValueError(
            "output_dir is empty; set --output_dir to the run's folder, e.g. --output_dir runs/mine"
        )
    for path in (output_dir, os.path.dirname(os.path.abspath(output_dir))):
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(
                f"output_dir {output_dir}: {path} is a file, not a directory; remove it or set --output_dir "
                "to another path"
            )
    existing = os.path.abspath(output_dir)
    while not os.path.exists(existing):  # the directory, or the nearest parent it would be made in
        existing = os.path.dirname(existing)
    try:  # a real write: os.access says yes to root on a read-only mount
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ValueError(
            f"output_dir {output_dir}: cannot write in {existing} ({e.strerror}); set --output_dir to a "
            "directory you can write, or fix its permissions"
        ) from None


SHARED_CHECK = ".rookworld_shared_check"


def machine_of_process() -> tuple[int, int]:
    """(this process's machine index, number of machines) from torchrun's variables (RANK, WORLD_SIZE,
    LOCAL_WORLD_SIZE; `accelerate launch` on several machines starts torchrun); (0, 1) without them."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if local < 1 or local >= world:
        return 0, 1
    return int(os.environ.get("RANK", 0)) // local, world // local


def _sees_token(path: str, token: str, wait_s: float) -> bool:
    """Whether the file at path holds token, polling up to wait_s (a network filesystem may show a new file
    to other machines a little later)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with open(path) as f:
                if json.load(f).get("token") == token:
                    return True
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def check_shared_output_dir(accelerator, output_dir: str, wait_s: float = 10.0) -> None:
    """With several processes, stop with one line unless every process sees output_dir as the main process
    writes it: checkpoints, final/ and the metrics are written once, by the main process, and every rank
    resumes from them, so machines must share output_dir (NFS, Lustre, ...).

    How: the main process writes a fresh token to output_dir/.rookworld_shared_check, every process reads it
    after a barrier, and all learn who could not. Each machine's first process raises UserError (one line per
    machine); the other processes exit with code 2."""
    if accelerator.num_processes == 1:
        return
    import socket
    import uuid

    from accelerate.utils import broadcast_object_list, gather_object

    from rookworld_trl.common.errors import UserError

    token = broadcast_object_list([uuid.uuid4().hex if accelerator.is_main_process else None])[0]
    path = os.path.join(output_dir, SHARED_CHECK)
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
        write_json_atomic(path, {"token": token})
    accelerator.wait_for_everyone()
    seen = _sees_token(path, token, wait_s)
    verdicts = gather_object([(accelerator.process_index, socket.gethostname(), seen)])
    blind = [(rank, host) for rank, host, ok in verdicts if not ok]
    if not blind:
        return
    if not accelerator.is_local_main_process:
        raise SystemExit(2)
    who = ", ".join(f"rank {rank} on {host}" for rank, host in blind)
    raise UserError(
        f"output_dir {output_dir} is not shared between the machines: {who} cannot see {SHARED_CHECK}, which "
        "the main process wrote there; checkpoints and resumes need one output_dir every machine mounts: set "
        "--output_dir to a path on a shared filesystem (NFS, Lustre, ...), see docs/SCALING.md"
    )


RUN_FIX = "wait for that run to finish or stop it"


def lock_run_dir(output_dir: str, command: str) -> None:
    """Lock output_dir for this run (common/locks.py), on the main process of the first machine: a second run on it
    is refused with one line naming the live PID; the lock goes when this process exits, however it exits."""
    from rookworld_trl.common.locks import hold

    if int(os.environ.get("RANK", "0") or 0) == 0:
        hold(output_dir, command, RUN_FIX)


def check_run_free(output_dir: str) -> None:
    """ValueError naming the live process when another run holds output_dir's lock (the launcher's early check,
    before accelerate starts; the stage takes the lock itself)."""
    from rookworld_trl.common.locks import holder, who

    if (info := holder(output_dir)) is not None:
        raise ValueError(
            f"output_dir {output_dir} is in use by {who(info)}: two runs would mix their checkpoints and logs; "
            f"{RUN_FIX} (kill {info.get('pid', 'PID')}), or set --output_dir to another folder"
        )
