"""Uncertainty over seeds (reglab.track.stats), checked against scipy."""

from __future__ import annotations

import pytest

from reglab.track.stats import mean_interval, paired_difference, t_quantile_975, verdict

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 29, 30, 31, 45, 100, 1000])
def test_t_quantile_matches_scipy(df):
    assert t_quantile_975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=2e-4)


def test_mean_interval_matches_scipy_t_interval():
    xs = [53.1, 55.4, 54.0, 52.2]
    got = mean_interval(xs)
    lo, hi = scipy_stats.t.interval(0.95, len(xs) - 1, loc=sum(xs) / 4, scale=scipy_stats.sem(xs))
    assert (got.n, got.lo, got.hi) == (4, pytest.approx(lo, abs=1e-3), pytest.approx(hi, abs=1e-3))
    assert mean_interval([1.0]).lo is None and mean_interval([None, float("nan")]) is None


def test_pairing_by_seed_removes_the_shared_seed_spread():
    # group b is a + 1 on every seed, while the seeds themselves differ by 10 points
    a = {0: 40.0, 1: 50.0, 2: 60.0}
    b = {0: 41.0, 1: 51.2, 2: 60.9}
    diff = paired_difference(b, a)
    assert diff.n == 3 and diff.lo > 0 and verdict(diff) == "better"
    unpaired = mean_interval(b.values()).lo - mean_interval(a.values()).hi
    assert unpaired < 0  # the unpaired intervals overlap: no difference would be seen without pairing
    assert verdict(paired_difference(a, b), higher_is_better=False) == "better"  # a lower loss is better
    # seeds only one side has are ignored; one pair gives no interval
    assert paired_difference({0: 1.0, 5: 3.0}, {0: 0.5, 6: 0.0}).n == 1
    assert verdict(paired_difference({0: 1.0}, {0: 0.5})) == "n = 1: no interval"
    assert verdict(paired_difference({0: 1.0, 1: 2.0}, {0: 1.5, 1: 1.4})) == "no detectable difference"


def test_bootstrap_interval_needs_two_values():
    """One direction (or image pair) has no spread to resample: the mean, but no interval, so no verdict."""
    from reglab.track.stats import bootstrap_mean_interval

    assert bootstrap_mean_interval([0.25, None]) == (0.25, None, None)
    assert bootstrap_mean_interval([None]) is None
    mean, lo, hi = bootstrap_mean_interval([0.1, 0.2, 0.4])
    assert lo < mean < hi
