"""The headline figures of the held-out eval, named once: the console's held-out line, the end-of-run summary, the
learning-curve chart and the experiment tables all read `HEADLINE`.

    from rookworld_trl.training.headline import HEADLINE, shown_in
    [f.key for f in shown_in("console")]     # ['eval/policy/greedy/legal_best_move', ...]

A figure is `suites[suite][figure]` in eval.json and "eval/<suite>/<figure>" in metrics.jsonl. To show a new
figure, add its row here and name the views that show it.

"""

from __future__ import annotations

from dataclasses import dataclass

# the console's held-out line, the learning-curve chart, experiment_row, five_seeds, the end-of-run summary
VIEWS = ("console", "curve", "row", "seeds", "summary")


@dataclass(frozen=True)
class Headline:
    suite: str  # the eval suite that measures it (stages/eval/evaluate.py SUITES)
    figure: str  # its name in that suite
    label: str  # in words, where there is room: the summary, the chart's legend, five_seeds' table
    short: str  # on the console line and in experiment_row's cells
    percent: bool  # a fraction, shown in percent (deltas in points); else a plain number
    shown: tuple[str, ...]  # the VIEWS that show it, in HEADLINE's order

    @property
    def key(self) -> str:
        """Its metrics.jsonl key, as the in-training eval logs it."""
        return f"eval/{self.suite}/{self.figure}"


ALL = VIEWS
HEADLINE = (
    Headline("policy", "greedy/legal_best_move", "P: legal best move", "legal best move", True, ALL),
    Headline("policy", "greedy/legal_moves", "P: legal moves listed", "legal moves listed", True,
             ("curve", "summary")),
    Headline("policy", "greedy/best_move_accuracy", "P: best move = engine's top 1", "top 1", True, ALL),
    Headline("policy", "greedy/top5_move_accuracy", "P: best move in engine's top 5", "top 5", True,
             ("curve", "row", "seeds", "summary")),
    Headline("policy", "greedy/best_move_loss", "B: expected-score loss (lower is better)", "B: loss", False, ALL),
    Headline("policy", "greedy/reward", "P: reward (graduated)", "P: reward", False, ("curve", "row", "summary")),
    Headline("policy", "greedy/watch/precision", "P: listed moves legal (precision)", "precision", True,
             ("summary",)),
    Headline("env", "next_state_accuracy", "A: next state exact", "A: next state exact", True, ALL),
    Headline("tactics", "greedy/mate_in_one", "mate in one (tactics test split)", "mate in one", True,
             ("row", "seeds", "summary")),
    Headline("tactics", "greedy/mate_in_two_first_move", "mate in two, first move (tactics)", "mate in two", True,
             ("row", "seeds", "summary")),
    Headline("tactics", "greedy/only_move", "only move (tactics)", "only move", True, ("row", "seeds", "summary")),
)  # fmt: skip


def shown_in(view: str) -> tuple[Headline, ...]:
    """The figures one view shows, in order.

    >>> [f.short for f in shown_in("console")]
    ['legal best move', 'top 1', 'B: loss', 'A: next state exact']
    """
    if view not in VIEWS:
        raise ValueError(f"no view {view!r}: {', '.join(VIEWS)}")
    return tuple(f for f in HEADLINE if view in f.shown)
