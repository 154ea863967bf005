"""How every command runs below its own parsing: `run_stage` turns bad input into one line and an exit code, `say`
is a one-line notice on stderr, and a closed stdout (`rookworld ... | head`) ends quietly.

    from rookworld_trl.common.entry import run_stage
    raise SystemExit(run_stage("eval", main))
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from rookworld_trl.common.errors import UserError, clip


def say(message: str) -> None:
    """One line on stderr: resume decisions must be seen, and INFO logs are not shown by default."""
    print(f"rookworld: {message}", file=sys.stderr, flush=True)


EXIT_FILE = "ROOKWORLD_EXIT_FILE"  # set by `rookworld` for the stage it launches: its exit code goes there
FRONT_PID = "ROOKWORLD_FRONT_PID"  # set by `rookworld` for what it launches: the process a stage dies with
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def death_signal_preexec(signum: int = signal.SIGTERM):
    """A function that makes Linux send its caller `signum` when the caller's parent exits, however it exits
    (prctl(PR_SET_PDEATHSIG)); None where there is no prctl. libc is looked up here, so that as a preexec_fn the
    child only makes the call between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)


def started_file(exit_file: str, pid: int) -> str:
    """The file a stage process touches once its imports are done: before then, `rookworld` stops it itself on
    Ctrl-C (else a traceback from inside an import)."""
    return f"{exit_file}.{pid}.started"


def run_stage(command: str, stage_main: Callable[[list[str] | None], int | None], argv=None) -> int:
    """Run a stage's `main(argv)`; its exit code. Bad input (ValueError, OSError, UserError) and a full disk print
    one line and return 2, Ctrl-C 130; other exceptions are bugs and keep their traceback. The code also goes to
    $ROOKWORLD_EXIT_FILE: `accelerate launch` turns every failure into 1."""
    code = 1  # a bug's traceback
    if front := os.environ.get(FRONT_PID):  # launched by `rookworld`: this stage ends with its launcher
        if die_with_parent := death_signal_preexec(signal.SIGTERM):  # SIGTERM: the stage saves its step first
            die_with_parent()
        import psutil  # an accelerate dependency

        # its `rookworld` exited before the death signal was set (another user's process of that PID: alive)
        if front.isdigit() and not psutil.pid_exists(int(front)):
            print(f"rookworld {command}: its `rookworld` process has exited; stopping", file=sys.stderr)
            return 143
    if os.environ.get(EXIT_FILE):  # the imports are done: from here a Ctrl-C is this function's to answer
        with contextlib.suppress(OSError):
            Path(started_file(os.environ[EXIT_FILE], os.getpid())).touch()
    try:
        code = int(stage_main(argv) or 0)
    except SystemExit as e:  # argparse (2), --help (0), sys.exit("message") (1)
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
        raise
    except BrokenPipeError:  # `rookworld data load ... | head`: the reader has what it wanted
        code = quiet_broken_pipe()
    except (ValueError, OSError, UserError) as e:
        print(f"rookworld {command}: error: {clip(str(e)) or type(e).__name__}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:  # the training stage says more (the step, how to resume) before this
        print(f"rookworld {command}: interrupted", file=sys.stderr)
        code = 130
    except Exception as e:  # a full disk seen by any writer (sqlite, parquet, tensorboard) is no bug either
        text = str(e).strip()
        full = "no space left" in text.lower() or "disk is full" in text.lower()
        if not full and getattr(e, "errno", None) != errno.ENOSPC:
            raise
        first = text.splitlines()[0] if text else ""
        print(
            f"rookworld {command}: error: no space left on device ({type(e).__name__}: {first}); free some "
            "space, then resume with --resume_from_checkpoint auto",
            file=sys.stderr,
        )
        code = 2
    finally:
        if os.environ.get(EXIT_FILE):
            with contextlib.suppress(OSError):
                Path(os.environ[EXIT_FILE]).write_text(str(code))
    return code


def quiet_broken_pipe() -> int:
    """Leave a closed stdout without a second error at exit; the code a SIGPIPE gives (141)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + signal.SIGPIPE
