"""The training figures a run logs between two log lines, by name: `add` one, `values` reads them. The trainer
builds it on TRL's own collection (training/trl_compat.py: TRL averages each name over the logging interval,
then clears it in place); grpo/trainer.py adds the step's figures to it.

    metrics = MetricLog(collections.defaultdict(list))
    metrics.add("value/loss", 0.3); metrics.values("value/loss")  # [0.3]
"""

from __future__ import annotations


class MetricLog:
    def __init__(self, collected: dict[str, list[float]]):
        self.collected = collected

    def add(self, name: str, value: float) -> None:
        """A training figure for the next log line."""
        self.collected[name].append(value)

    def values(self, name: str) -> list[float]:
        """The values of `name` collected since the last log line (a live list)."""
        return self.collected[name]
