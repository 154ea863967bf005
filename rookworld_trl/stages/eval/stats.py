"""Figures with 95% confidence intervals: a `Metric` keeps one value per evaluated item (None where the
figure does not apply), so a run reports its interval and two models evaluated on the same items get a
paired interval of their difference (`delta_interval`).

    from rookworld_trl.stages.eval.stats import Metric, delta_interval
    a, b = Metric([1.0, 0.0, 1.0, 1.0]), Metric([0.0, 0.0, 1.0, 0.0])
    a.value, a.interval(), delta_interval(a, b)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile
BOOTSTRAP_RESAMPLES = 1000


@dataclass
class Metric:
    """One figure. `values[i]` belongs to item i (None: undefined there); the figure is their (weighted) mean.

    `percent`: a rate shown in %, else a plain number (MAE, half-moves). `reference`: the published
    figure in the same unit, if one applies. `lower_is_better`: a loss, marked so in the tables.
    """

    values: list[float | None]
    weights: list[float] | None = None
    percent: bool = True
    reference: float | None = None
    lower_is_better: bool = False

    def defined(self) -> tuple[np.ndarray, np.ndarray]:
        keep = [i for i, v in enumerate(self.values) if v is not None]
        w = self.weights or [1.0] * len(self.values)
        return np.array([self.values[i] for i in keep], float), np.array([w[i] for i in keep], float)

    @property
    def n(self) -> int:
        return sum(v is not None for v in self.values)

    @property
    def value(self) -> float | None:
        x, w = self.defined()
        return float(np.sum(x * w) / np.sum(w)) if len(x) and np.sum(w) > 0 else None

    def interval(self, seed: int = 0) -> tuple[float, float] | None:
        """95% interval: Wilson for an unweighted 0/1 rate, else a percentile bootstrap over items."""
        x, w = self.defined()
        if not len(x):
            return None
        if self.weights is None and np.isin(x, (0.0, 1.0)).all():
            return wilson(int(x.sum()), len(x))
        idx = np.random.default_rng(seed).integers(0, len(x), (BOOTSTRAP_RESAMPLES, len(x)))
        means = np.sum(x[idx] * w[idx], axis=1) / np.maximum(np.sum(w[idx], axis=1), 1e-12)
        return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson score interval of a binomial rate (well behaved at 0% and 100%, unlike the normal one)."""
    p, z2 = successes / n, Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def delta_interval(a: Metric, b: Metric, seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap interval of a.value - b.value.

    Same number of items: a paired bootstrap over the items both define (same positions for both
    models; for games, pairing independent games is harmless). Otherwise each side is resampled alone.
    """
    rng = np.random.default_rng(seed)
    wa, wb = a.weights or [1.0] * len(a.values), b.weights or [1.0] * len(b.values)
    if len(a.values) == len(b.values):
        keep = [
            i
            for i, (x, y) in enumerate(zip(a.values, b.values, strict=True))
            if x is not None and y is not None
        ]
        if not keep:
            return None
        xa, xb = (np.array([m.values[i] for i in keep], float) for m in (a, b))
        va, vb = (np.array([w[i] for i in keep], float) for w in (wa, wb))
        ia = ib = rng.integers(0, len(keep), (BOOTSTRAP_RESAMPLES, len(keep)))
    else:
        (xa, va), (xb, vb) = a.defined(), b.defined()
        if not len(xa) or not len(xb):
            return None
        ia = rng.integers(0, len(xa), (BOOTSTRAP_RESAMPLES, len(xa)))
        ib = rng.integers(0, len(xb), (BOOTSTRAP_RESAMPLES, len(xb)))
    ma = np.sum(xa[ia] * va[ia], axis=1) / np.maximum(np.sum(va[ia], axis=1), 1e-12)
    mb = np.sum(xb[ib] * vb[ib], axis=1) / np.maximum(np.sum(vb[ib], axis=1), 1e-12)
    return float(np.quantile(ma - mb, 0.025)), float(np.quantile(ma - mb, 0.975))
