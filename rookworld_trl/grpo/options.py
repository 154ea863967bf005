"""An RL option as one small protocol the trainer loops over: `Option`, whose hooks are each a no-op until the option
overrides it. The trainer's `options` list (built by grpo/rl_options.py's `build_options`, in step order) is the one
place that names them; each hook of a step runs over the list in that order:

  1. prompts      `mix(rows, step)`                  self-play, curriculum and tactics positions into P: prompts
  2. scoring      `after_scoring(trainer, rows, out)` what an option learns from the scored batch (the curriculum),
                                                     or a batch in its place (dynamic sampling)
  3. advantages   `shape(trainer, shaping)`          running baseline, field credit, value baseline (advantages.py)
  4. loss         `loss_term(trainer, model, inputs, hidden)`  exact KL, value loss, replays (loss.py)
  5. checkpoints  `saved_state` / `restore_state`    keys of the trainer's STATE_FILE (beta, rollbacks, baselines)
                  `write_files` / `read_files`       files beside it (the value head's weights)

A new option is its module (an `Option`, its config section and check, its builder) and its entries in
grpo/rl_options.py (`RLOptions`, `SECTIONS`, `build_options`).
"""

from __future__ import annotations


class Option:
    """The protocol, with no-op defaults: an option overrides the hooks of the steps it takes part in."""

    def mix(self, rows: list[dict], step: int) -> tuple[list[dict], dict[str, float]]:
        """A generation batch's rows, some P: prompts replaced; and the figures to log."""
        return rows, {}

    def after_scoring(self, trainer, rows: list[dict], output: dict) -> dict | None:
        """The batch TRL scored (training only): what the option learns from it, and a batch in its place (dynamic
        sampling), or None to keep it."""

    def shape(self, trainer, shaping) -> None:
        """Advantages: change `shaping.output["advantages"]` in place (advantages.Shaping; training only)."""

    def loss_term(self, trainer, model, inputs: dict, hidden):
        """A tensor added to TRL's loss of this micro-batch, or None. `hidden`: the policy's completion hidden
        states when an option reads them (exact KL, value head), else None."""
        return None

    def saved_state(self) -> dict:
        """The STATE_FILE keys this option owns, JSON-serialisable."""
        return {}

    def restore_state(self, state: dict) -> None:
        """From a checkpoint's whole STATE_FILE dict (keys of other options ignored)."""

    def write_files(self, checkpoint: str) -> None:
        """Files of its own into the checkpoint directory."""

    def read_files(self, checkpoint: str) -> None:
        """Its files back from a checkpoint directory (called whether or not a STATE_FILE was there)."""
