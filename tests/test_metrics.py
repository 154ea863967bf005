"""rookworld_trl.stages.eval.suites (Metric): Wilson and bootstrap intervals, weighted means, paired differences.

.venv/bin/python -m pytest tests/test_metrics.py
"""

import pytest

from rookworld_trl.stages.eval.suites import Metric, delta_interval, wilson


def test_wilson_and_intervals():
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    rate = Metric([1.0, 0.0, None, 1.0, 1.0])
    assert rate.value == 0.75 and rate.n == 4 and rate.interval() == wilson(3, 4)
    mean = Metric([0.5, 1.5, 1.0], percent=False)
    lo, hi = mean.interval()
    assert 0.5 <= lo <= 1.0 <= hi <= 1.5
    weighted = Metric([0.0, 0.5], weights=[1, 3])
    assert weighted.value == pytest.approx(0.375)
    # Paired: the differences are 1, 1, 0, 1, so resampled means lie in [0.25, 1] with 1 the most likely top.
    lo, hi = delta_interval(Metric([1.0, 1.0, 0.0, 1.0]), Metric([0.0] * 4))
    assert 0.25 <= lo <= 0.75 and hi == 1.0
    assert delta_interval(Metric([1.0] * 5), Metric([0.0] * 5)) == (1.0, 1.0)
    assert delta_interval(Metric([1.0] * 5), Metric([1.0] * 7)) == (0.0, 0.0)  # unpaired: other lengths
