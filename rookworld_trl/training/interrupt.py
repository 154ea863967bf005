"""Stop signals during training: Ctrl-C (SIGINT), SIGTERM (kill, timeout, a cluster's preemption) and SIGHUP finish
the optimizer step under way, save a checkpoint and stop (exit 128 + the signal's number); a second signal stops
at once. The launcher's side (the whole process group, Stockfish spared) is rookworld_trl/stages/cli.py's.
"""

from __future__ import annotations

import signal
import threading

from transformers import TrainerCallback

from rookworld_trl.chess.engine import clear_stop, request_stop
from rookworld_trl.common.entry import say
from rookworld_trl.training.checkpoints import latest_complete_checkpoint


class SaveOnInterrupt(TrainerCallback):
    """The module's stop signals as a TrainerCallback (a second one raises KeyboardInterrupt). After train(),
    `step` is the step it stopped at, or None; `exit_code` is 128 + the first signal's number."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.step: int | None = None
        self.signum: int = signal.SIGINT
        self._requested = False
        self._previous: dict = {}

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)

    def on_train_begin(self, args, state, control, **kwargs):
        clear_stop()  # a stop request of an earlier run in this process is not this run's
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = {sig: signal.signal(sig, self._request) for sig in self.SIGNALS}

    def _request(self, signum, frame):
        for sig in self.SIGNALS:  # the second signal, of any kind, stops at once
            signal.signal(sig, signal.default_int_handler)
        self._requested, self.signum = True, signum
        request_stop()  # an engine that hangs must not hold the step: its wait ends within STOP_GRACE seconds
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        say(
            f"{name}: finishing this step and saving a checkpoint (a second signal, e.g. Ctrl-C, stops at once)"
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self._requested and self.step is None:
            self.step = state.global_step
            control.should_save = control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        clear_stop()  # engine calls after training (a caller's own) are not cut short
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def said_interrupted(trainer) -> int:
    """Say where a stop signal left the run and how to go on; the exit code."""
    last = latest_complete_checkpoint(trainer.args.output_dir)
    say(
        f"interrupted at step {trainer.state.global_step} (last checkpoint: {last or 'none'}); resume with the "
        "same command and --resume_from_checkpoint auto"
    )
    return trainer.interrupt.exit_code
