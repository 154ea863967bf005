"""metrics.jsonl: every log entry of a training stage (GRPO or SFT) as one JSON line, following resumes: a resumed
run first drops the lines past its checkpoint's step, so the log always describes the weights on disk.

`MetricLog`: the training figures a run logs between two log lines, by name, on TRL's own collection (TRL averages
each name over the logging interval, then clears it in place).

    metrics = MetricLog(collections.defaultdict(list))
    metrics.add("value/loss", 0.3); metrics.values("value/loss")  # [0.3]
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time

import torch
from transformers import TrainerCallback

from rookworld_trl.training.checkpoints import save_error
from rookworld_trl.training.jsonl import read_jsonl


def memory_metrics() -> dict[str, float]:
    """Peak host RSS (GiB) and, with CUDA, peak allocated GPU memory on this process's device (GiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss_gib = rss / 2**30 if sys.platform == "darwin" else rss / 2**20
    out = {"memory/cpu_peak_rss_gib": rss_gib}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["memory/cuda_max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


class MetricLog:
    def __init__(self, collected: dict[str, list[float]]):
        self.collected = collected

    def add(self, name: str, value: float) -> None:
        """A training figure for the next log line."""
        self.collected[name].append(value)

    def values(self, name: str) -> list[float]:
        """The values of `name` collected since the last log line (a live list)."""
        return self.collected[name]


class JSONLMetricsCallback(TrainerCallback):
    """Every log entry as one JSON line; a resumed run first drops the lines past its checkpoint's step."""

    def __init__(self, path: str):
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not os.path.isfile(self.path):
            return
        rows = [row for row in read_jsonl(self.path) if row.get("step", 0) <= state.global_step]
        with open(f"{self.path}.tmp", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(f"{self.path}.tmp", self.path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in logs.items()}
        row = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **clean}
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            raise save_error(e, f"writing the metrics log at step {state.global_step}", self.path) from None
