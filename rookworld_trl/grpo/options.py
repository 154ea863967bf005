"""What an RL option keeps across a checkpoint, as one small protocol the trainer loops over: each stateful part
(KL control's beta, the step guard's rollbacks, the running baselines, the value baseline) owns some keys of the
trainer's STATE_FILE (`saved_state` / `restore_state`) and may write files of its own beside it (`write_files` /
`read_files`: the value head's weights). The trainer's `stateful` list is the one place that names them, and
`checkpoint_written` / `on_resume` only loop over it.
"""

from __future__ import annotations


class Stateful:
    """The protocol, with no-op defaults: a part overrides what it keeps."""

    def saved_state(self) -> dict:
        """The STATE_FILE keys this part owns, JSON-serialisable."""
        return {}

    def restore_state(self, state: dict) -> None:
        """From a checkpoint's whole STATE_FILE dict (keys of other parts ignored)."""

    def write_files(self, checkpoint: str) -> None:
        """Files of its own into the checkpoint directory."""

    def read_files(self, checkpoint: str) -> None:
        """Its files back from a checkpoint directory (called whether or not a STATE_FILE was there)."""
