"""training/headline.py: the one table of headline figures that the console, summary, charts and scripts read."""

import pytest

from rookworld_trl.stages.eval.charts import PANELS, human_name
from rookworld_trl.training.console import HELD_OUT_FIELDS
from rookworld_trl.training.headline import HEADLINE, VIEWS, shown_in


def test_each_figure_is_named_once_and_shown_in_known_views():
    assert len({f.key for f in HEADLINE}) == len(HEADLINE)
    assert all(f.shown and set(f.shown) <= set(VIEWS) for f in HEADLINE)  # a misspelt view would hide it
    with pytest.raises(ValueError, match="no view 'sumary'"):
        shown_in("sumary")


def test_the_console_and_the_chart_read_the_table():
    assert [k for k, _, _ in HELD_OUT_FIELDS] == [f.key for f in shown_in("console")]
    assert PANELS["learning_curve"][0] == tuple(f.key for f in shown_in("curve"))
    loss = next(f for f in HEADLINE if f.figure == "greedy/best_move_loss")
    assert human_name(loss.key) == loss.label
    assert (loss.key, "B: loss", "{:.3f}") in HELD_OUT_FIELDS  # a plain number, not a percentage
