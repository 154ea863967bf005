"""One writer per folder (a run's output_dir, a dataset being written): `hold(folder, command)` takes an exclusive
flock on FOLDER/.rookworld.lock, writes who holds it and keeps it until the process exits (or `release`).

    from rookworld_trl.common.locks import hold
    hold("runs/grpo_tiny_cpu", "rookworld train")   # UserError if another process holds it

Why flock: the kernel drops it when its holder dies however it dies (kill -9 included), so a lock left by a dead
process is stale by construction. The descriptor is close-on-exec, so Stockfish and other children never hold it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import socket
import sys
import time

from rookworld_trl.common.errors import UserError

LOCK_NAME = ".rookworld.lock"
_HELD: dict[str, int] = {}  # lock path -> descriptor, for this process's lifetime
_MADE: set[str] = set()  # lock paths whose folder hold() made: removed again when nothing else was written


def lock_path(folder: str | os.PathLike) -> str:
    return os.path.join(os.path.abspath(os.fspath(folder)), LOCK_NAME)


def _read(path: str) -> dict:
    """Who a lock file says holds it ({} when empty or unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        with open(path, encoding="utf-8") as f:
            found = json.loads(f.read(4096) or "{}")
        return found if isinstance(found, dict) else {}
    return {}


def who(info: dict) -> str:
    """'PID 123 on host (rookworld train, since 21:03:04)' from a lock file's contents."""
    since = time.strftime("%H:%M:%S", time.localtime(info["since"])) if "since" in info else "?"
    return (
        f"PID {info.get('pid', '?')} on {info.get('host', '?')} ({info.get('command', '?')}, since {since})"
    )


def holder(folder: str | os.PathLike) -> dict | None:
    """Who holds the folder's lock now (the lock file's contents), or None when no live process does."""
    path = lock_path(folder)
    if path in _HELD:
        return None  # this process: not another writer
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(path) or {"pid": "?"}
    except OSError:  # a filesystem without locks: nobody can be seen holding one
        return None
    finally:
        os.close(fd)  # closing drops the probe's lock
    return None


def hold(folder: str | os.PathLike, command: str, fix: str = "wait for it to finish or stop it") -> None:
    """Take FOLDER's lock for the rest of this process's life (made with the folder); UserError naming the live
    holder when another process has it; a stale lock is taken over with one line."""
    folder = os.fspath(folder)
    path = lock_path(folder)
    if path in _HELD:
        return
    made = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = _read(path)
        raise UserError(
            f"{folder} is in use by {who(info)}: two writers would mix their files; {fix} "
            f"(kill {info.get('pid', 'PID')}), or choose another folder"
        ) from None
    except OSError as e:  # a filesystem without flock (some network mounts): run, but say what is not checked
        os.close(fd)
        print(f"rookworld: {folder}: cannot lock it ({e.strerror}); a second writer would not be refused",
              file=sys.stderr, flush=True)  # fmt: skip
        return
    stale = _read(path)
    if stale.get("pid") and (stale.get("pid"), stale.get("host")) != (os.getpid(), socket.gethostname()):
        print(f"rookworld: {folder}: a stale lock of {who(stale)}, which is no longer running, taken over",
              file=sys.stderr, flush=True)  # fmt: skip
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    _HELD[path] = fd
    if made:
        _MADE.add(path)


def release(folder: str | os.PathLike) -> None:
    """Drop FOLDER's lock, emptied first: only a holder that died leaves its name behind."""
    path = lock_path(folder)
    fd = _HELD.pop(path, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)
    if path in _MADE:  # a run refused before it wrote anything leaves no folder behind
        _MADE.discard(path)
        with contextlib.suppress(OSError):
            if os.listdir(os.path.dirname(path)) == [LOCK_NAME]:
                os.unlink(path)
                os.rmdir(os.path.dirname(path))


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        release(os.path.dirname(path))


@contextlib.contextmanager
def holding(folder: str | os.PathLike, command: str, fix: str = "wait for it to finish or stop it"):
    """`hold` for the block, then `release` (unless this process held it already)."""
    with scoped():
        hold(folder, command, fix)
        yield


@contextlib.contextmanager
def scoped():
    """Every lock taken inside the block is released when it ends (a main() run in tests or a notebook)."""
    before = set(_HELD)
    try:
        yield
    finally:
        for path in set(_HELD) - before:
            release(os.path.dirname(path))
