"""Checkpoint tiers, verified completion markers and resume modes of the training stages. A run's output_dir
holds three tiers:

    output_dir/checkpoint-N/   regular, written by Trainer every save_steps and rotated by save_total_limit
    output_dir/stable/         the last regular checkpoint whose step was healthy (finite, KL below kl_warn);
                               a real copy of checkpoint-N, so it survives rotation and damage to checkpoint-N
    output_dir/final/          model + tokenizer at the end of training (save_final), its model card and, last,
                               its completion marker (mark_finished): the run is finished

A checkpoint counts only once its completion marker, written last with each file's size and sha256, verifies.
Resume modes (`--resume_from_checkpoint`): a path (must verify), "auto" (the newest checkpoint-N that verifies,
damaged ones moved to output_dir/damaged/, then stable/; else a fresh start), "stable" or "recovery". Last,
whether output_dir can hold a run at all: writable, no other run's, seen by every machine.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time

from rookworld_trl.common.entry import say
from rookworld_trl.model.source import safetensors_problem

logger = logging.getLogger(__name__)

MARKER = "rookworld_complete.json"
STABLE_DIR = "stable"
FINAL_DIR = "final"
INCOMPLETE_DIR = "incomplete"
SUPERSEDED_DIR = "superseded"
DAMAGED_DIR = "damaged"
RESUME_FIX = "resume with --resume_from_checkpoint auto"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def write_json_atomic(path: str, obj: dict) -> None:
    """Write JSON to a temp file, fsync, then rename: readers see the old file or the whole new one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _checkpoint_files(checkpoint_dir: str) -> list[str]:
    """Every file under checkpoint_dir except the marker, as sorted relative paths."""
    found = []
    for root, _, names in os.walk(checkpoint_dir):
        found += [os.path.relpath(os.path.join(root, name), checkpoint_dir) for name in names]
    return sorted(f for f in found if f != MARKER)


def mark_complete(checkpoint_dir: str, global_step: int) -> None:
    """Write the completion marker (the step, each file's size and sha256), after every file is written."""
    files = {}
    for rel in _checkpoint_files(checkpoint_dir):
        path = os.path.join(checkpoint_dir, rel)
        files[rel] = {"size": os.path.getsize(path), "sha256": file_sha256(path)}
    marker = {"global_step": global_step, "time": time.time(), "files": files}
    write_json_atomic(os.path.join(checkpoint_dir, MARKER), marker)


def is_complete(checkpoint_dir: str) -> bool:
    return os.path.isfile(os.path.join(checkpoint_dir, MARKER))


def _legacy_problem(checkpoint_dir: str) -> str | None:
    """A marker without a file list (written before checksums): check what can be checked without one."""
    for path in sorted(glob.glob(os.path.join(checkpoint_dir, "*.safetensors"))):
        if problem := safetensors_problem(path):
            return f"{os.path.basename(path)} is {problem}"
    # DeepSpeed keeps its state in global_stepN/
    optimizer = ("optimizer.pt", "optimizer.bin", "global_step*")
    if not any(glob.glob(os.path.join(checkpoint_dir, name)) for name in optimizer):
        return "optimizer.pt is missing (resuming would restart the optimizer from zero)"
    return None


def checkpoint_problem(checkpoint_dir: str) -> str | None:
    """None when checkpoint_dir's marker and every file it lists (size, sha256) verify, else what is wrong."""
    try:
        with open(os.path.join(checkpoint_dir, MARKER)) as f:
            files = json.load(f).get("files")
    except FileNotFoundError:
        return f"it has no completion marker ({MARKER}): its save was interrupted"
    except (OSError, ValueError) as e:
        return f"its completion marker {MARKER} is unreadable ({e})"
    if files is None:
        return _legacy_problem(checkpoint_dir)
    for rel, want in files.items():  # sizes first: cheap, and they catch truncation
        path = os.path.join(checkpoint_dir, rel)
        if not os.path.isfile(path):
            why = " (resuming would restart the optimizer from zero)" if "optimizer" in rel else ""
            return f"{rel} is missing{why}"
        if os.path.getsize(path) != want["size"]:
            return f"{rel} is {os.path.getsize(path)} bytes, its marker says {want['size']} (truncated or overwritten)"
    for rel, want in files.items():
        if file_sha256(os.path.join(checkpoint_dir, rel)) != want["sha256"]:
            return f"{rel} does not match the sha256 in its marker (damaged on disk)"
    return None


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """All checkpoint-N directories (complete or not) as (N, path), oldest first."""
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    found = [(int(m[1]), os.path.join(output_dir, m[0])) for m in map(_CHECKPOINT_RE.match, names) if m]
    return sorted((n, path) for n, path in found if os.path.isdir(path))


def latest_complete_checkpoint(output_dir: str) -> str | None:
    complete = [path for _, path in list_checkpoints(output_dir) if is_complete(path)]
    return complete[-1] if complete else None


def _move_aside(path: str, output_dir: str, folder: str, why: str) -> str:
    dest = os.path.join(output_dir, folder, f"{os.path.basename(path)}-{int(time.time())}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.replace(path, dest)
    logger.warning(f"checkpoint {path} {why}; moved to {dest}")
    return dest


def quarantine_incomplete(output_dir: str) -> list[str]:
    """Move checkpoint-N dirs without a marker to output_dir/incomplete/: Trainer's rotation counts every
    checkpoint-* dir, and a later save of the same step would write into the stale directory."""
    return [
        _move_aside(path, output_dir, INCOMPLETE_DIR, "has no completion marker (interrupted save)")
        for _, path in list_checkpoints(output_dir)
        if not is_complete(path)
    ]


def retire_later_checkpoints(output_dir: str, step: int) -> list[str]:
    """Move checkpoint-N with N > step to output_dir/superseded/: a later 'auto' must not resume from them."""
    return [
        _move_aside(path, output_dir, SUPERSEDED_DIR, f"is past the resumed step {step}")
        for n, path in list_checkpoints(output_dir)
        if n > step
    ]


def checkpoint_step(checkpoint_dir: str) -> int:
    with open(os.path.join(checkpoint_dir, MARKER)) as f:
        return int(json.load(f)["global_step"])


def promote_to_stable(checkpoint_dir: str, output_dir: str) -> str:
    """Make checkpoint_dir the stable checkpoint: a real copy (hard links would share damage done in place to
    checkpoint-N, whose fallback stable/ is), swapped in by replace_dir."""
    stable = os.path.join(output_dir, STABLE_DIR)
    shutil.rmtree(f"{stable}.tmp", ignore_errors=True)
    shutil.copytree(checkpoint_dir, f"{stable}.tmp")
    replace_dir(f"{stable}.tmp", stable)
    return stable


def replace_dir(tmp_dir: str, final_dir: str) -> None:
    """Swap a fully written tmp_dir into final_dir by renames, the older one kept as final_dir.old meanwhile."""
    old = f"{final_dir}.old"
    if os.path.isdir(final_dir):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    shutil.rmtree(old, ignore_errors=True)


def _first_verified(candidates: list[str], output_dir: str | None) -> tuple[str | None, list[str]]:
    """The first of candidates (newest first) that verifies, and a line for each one skipped on the way; with
    output_dir, skipped checkpoint-N dirs move to output_dir/damaged/ (never rotated, reused or tried again)."""
    skipped = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append(f"skipped {path}: {problem}")
        say(skipped[-1])
        if output_dir and _CHECKPOINT_RE.match(os.path.basename(path)):
            _move_aside(path, output_dir, DAMAGED_DIR, problem)
    return None, skipped


def resolve_resume(mode: str | None, output_dir: str) -> str | None:
    """A resume mode (None, "auto", "stable"/"recovery" or a path) as a verified checkpoint path or None; call it
    on the main process first (it moves checkpoint dirs aside). ValueError / FileNotFoundError, one line."""
    if not mode or str(mode).lower() in ("none", "false", "no"):
        return None
    mode = str(mode)
    # an explicit path: checked before the quarantine below moves it
    if os.path.isdir(mode) and (problem := checkpoint_problem(mode)):
        raise ValueError(
            f"--resume_from_checkpoint {mode}: {problem}. Pick an earlier checkpoint, or use "
            "--resume_from_checkpoint auto to take the newest one that verifies"
        )
    quarantine_incomplete(output_dir)
    if mode.lower() in ("auto", "true", "latest"):
        newest_first = [path for _, path in reversed(list_checkpoints(output_dir))]
        path, skipped = _first_verified(newest_first, output_dir)
        if path is None:  # all damaged, or rotation deleted the last one before the new one's marker
            path, more = _first_verified(_stable_dirs(output_dir), None)
            skipped += more
        if path is None:
            why = "no checkpoint verifies" if skipped else "no complete checkpoint"
            say(f"resume 'auto': {why} in {output_dir}; starting from scratch")
            return None
    elif mode.lower() in ("stable", "recovery"):
        path, skipped = _first_verified(_stable_dirs(output_dir), None)
        if path is None:
            why = "; ".join(skipped) or f"there is no {os.path.join(output_dir, STABLE_DIR)}"
            raise FileNotFoundError(
                f"resume '{mode}': no stable checkpoint that verifies ({why}); use --resume_from_checkpoint auto "
                "or a checkpoint path"
            )
    elif not os.path.isdir(mode):
        raise FileNotFoundError(f"--resume_from_checkpoint {mode}: no such directory")
    else:
        path = mode
    retire_later_checkpoints(output_dir, checkpoint_step(path))
    return path


def _stable_dirs(output_dir: str) -> list[str]:
    """output_dir/stable, then the previous copy kept while a new one was being swapped in."""
    paths = [os.path.join(output_dir, name) for name in (STABLE_DIR, f"{STABLE_DIR}.old")]
    return [p for p in paths if os.path.isdir(p)]


def finished_step(checkpoint_dir: str, max_steps: int) -> int | None:
    """The checkpoint's step when it already reached the run's end (max_steps, else its trainer state's), else None."""
    try:
        with open(os.path.join(checkpoint_dir, "trainer_state.json")) as f:
            state = json.load(f)
    except (OSError, ValueError):  # no trainer state (not a Trainer checkpoint): the marker's step
        state = {}
    target = max_steps if max_steps > 0 else state.get("max_steps", 0)
    step = state.get("global_step", checkpoint_step(checkpoint_dir))
    return step if target > 0 and step >= target else None


class SaveError(OSError):
    """A checkpoint, final model or log could not be written; the message says why in words and the fix."""


def save_error(e: BaseException, what: str, path: str) -> SaveError | None:
    """A SaveError for an I/O failure while `what` ("saving checkpoint-4"), else None (a bug: keep its
    traceback). The disk check: torch.save reports a full disk as "basic_ios::clear: iostream error"."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if getattr(e, "errno", None) == errno.ENOSPC or free < 1 << 20:
        fix = f"free some space (or lower save_total_limit), then {RESUME_FIX}"
        return SaveError(errno.ENOSPC, f"no space left on device while {what} ({path}): {fix}")
    if isinstance(e, OSError):
        return SaveError(
            e.errno, f"{os.strerror(e.errno) if e.errno else e} while {what} ({path}); {RESUME_FIX}"
        )
    return None


def save_final(trainer) -> str:
    """Model + tokenizer to output_dir/final, written to a temp dir first and renamed into place."""
    final = os.path.join(trainer.args.output_dir, FINAL_DIR)
    tmp = f"{final}.tmp"
    if trainer.args.should_save:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        trainer.save_model(tmp)  # on every rank: DeepSpeed/FSDP gather the weights collectively
    except Exception as e:
        error = save_error(e, "saving the final model", tmp)
        if error is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise error from None
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        replace_dir(tmp, final)
    return final


def mark_finished(output_dir: str, global_step: int) -> None:
    """Mark output_dir/final complete once everything in it (model, tokenizer, card) is written."""
    mark_complete(os.path.join(output_dir, FINAL_DIR), global_step)


def is_finished(output_dir: str) -> bool:
    """Whether output_dir/final is marked complete and its files still verify."""
    return checkpoint_problem(os.path.join(output_dir, FINAL_DIR)) is None


# ---------------------------------------------------------------------------------------------- the run folder


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
    """(this process's machine index, number of machines) from torchrun's RANK, WORLD_SIZE, LOCAL_WORLD_SIZE."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if local < 1 or local >= world:
        return 0, 1
    return int(os.environ.get("RANK", 0)) // local, world // local


def _sees_token(path: str, token: str, wait_s: float) -> bool:
    """Whether the file at path holds token, polling up to wait_s (a network filesystem may lag)."""
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
    """With several processes, stop with one line unless every process sees the token the main process writes to
    output_dir (every rank resumes from its checkpoints); the other processes of a machine exit with code 2."""
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
    """Lock output_dir for this run (common/locks.py) on the main process: a second run is refused in one line."""
    from rookworld_trl.common.locks import hold

    if int(os.environ.get("RANK", "0") or 0) == 0:
        hold(output_dir, command, RUN_FIX)


def check_run_free(output_dir: str) -> None:
    """ValueError naming the live process when another run holds output_dir's lock (the launcher's check)."""

    from rookworld_trl.common.locks import holder, who

    if (info := holder(output_dir)) is not None:
        raise ValueError(
            f"output_dir {output_dir} is in use by {who(info)}: two runs would mix their checkpoints and logs; "
            f"{RUN_FIX} (kill {info.get('pid', 'PID')}), or set --output_dir to another folder"
        )
