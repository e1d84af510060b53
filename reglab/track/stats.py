"""Uncertainty over seeds: Student-t confidence intervals, paired differences and the verdict words.

A study runs every group with the same seeds, and a seed fixes the data order and the initialization where
the configs allow, so two groups are compared **paired by seed**: d_s = a_s - b_s for each seed s both have,
then the t interval of the mean of d over the n pairs,

    mean(d) ± t_{0.975, n-1} · sd(d) / sqrt(n)

(Student, 1908). Pairing removes the seed-to-seed spread the two groups share, so it resolves smaller
effects than comparing two unpaired means. With one pair there is no interval and no verdict.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Mapping

# Two-sided 95% quantiles t_{0.975, df} for df = 1..30 (checked against scipy.stats.t.ppf in the tests).
_T975 = [
    12.7062,
    4.3027,
    3.1824,
    2.7764,
    2.5706,
    2.4469,
    2.3646,
    2.3060,
    2.2622,
    2.2281,
    2.2010,
    2.1788,
    2.1604,
    2.1448,
    2.1314,
    2.1199,
    2.1098,
    2.1009,
    2.0930,
    2.0860,
    2.0796,
    2.0739,
    2.0687,
    2.0639,
    2.0595,
    2.0555,
    2.0518,
    2.0484,
    2.0452,
    2.0423,
]

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the multiplier of a two-sided 95% interval with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    # Cornish-Fisher expansion around the normal quantile; error < 1e-4 for df > 30.
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    """Mean of n values with its 95% t interval (``lo``/``hi`` are None when n < 2)."""

    mean: float
    n: int
    lo: float | None = None
    hi: float | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None else (self.hi - self.lo) / 2

    def text(self, digits: int = 2) -> str:
        """``mean ± half-width`` (or the mean alone for n = 1)."""
        if self.half_width is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def _clean(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def mean_interval(values: Iterable[float | None]) -> Interval | None:
    """The 95% Student-t interval of the mean of ``values`` (None and NaN dropped); None if nothing is left."""
    xs = _clean(values)
    if not xs:
        return None
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return Interval(mean, len(xs))
    half = t_quantile_975(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return Interval(mean, len(xs), mean - half, mean + half)


def paired_difference(a: Mapping[int, float | None], b: Mapping[int, float | None]) -> Interval | None:
    """Interval of mean(a_s - b_s) over the seeds s present (and not None) in both mappings."""
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    return mean_interval([a[s] - b[s] for s in seeds]) if seeds else None


def verdict(diff: Interval | None, higher_is_better: bool = True) -> str:
    """``better`` / ``worse`` when the 95% interval of a - b excludes zero, else ``no detectable difference``;
    ``n < 2`` (no interval) says so."""
    if diff is None or diff.lo is None:
        return f"n = {diff.n if diff else 0}: no interval"
    if diff.lo > 0:
        return BETTER if higher_is_better else WORSE
    if diff.hi < 0:
        return WORSE if higher_is_better else BETTER
    return NO_DIFFERENCE


def bootstrap_mean_interval(
    values: Iterable[float | None], replicates: int = 1000, seed: int = 0
) -> tuple[float, float, float] | None:
    """(mean, lo, hi): the mean of ``values`` and its 95% percentile-bootstrap interval (Efron & Tibshirani,
    1993), for numbers that are not seeds (directions, image pairs); None and NaN dropped, None if empty. With
    one value there is no spread to resample: ``lo`` and ``hi`` are None (no interval, so no verdict), as for
    :func:`mean_interval`."""
    import numpy as np

    xs = np.array(_clean(values), dtype=float)
    if len(xs) == 0:
        return None
    if len(xs) < 2:
        return float(xs[0]), None, None
    rng = np.random.default_rng(seed)
    means = xs[rng.integers(0, len(xs), (replicates, len(xs)))].mean(axis=1)
    return float(xs.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
