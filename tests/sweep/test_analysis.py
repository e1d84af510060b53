"""Sweep analysis (reglab/sweep/analysis.py): the numpy-only rank correlation. The reports of a finished sweep
(importance, figures, best.yaml) are tested in tests/sweep/test_runner.py."""

from __future__ import annotations

import pytest


def test_spearman_matches_scipy_without_needing_it():
    """The report's rank correlation is numpy-only (scipy is the optional sweep extra) and equals scipy's."""
    import numpy as np
    from scipy.stats import spearmanr

    from reglab.sweep.analysis import spearman

    rng = np.random.default_rng(0)
    for n in (3, 5, 17, 40):
        xs = rng.integers(0, 4, n).astype(float).tolist()  # many ties
        ys = (rng.normal(size=n) + np.array(xs)).tolist()
        assert spearman(xs, ys) == pytest.approx(float(spearmanr(xs, ys).statistic), abs=1e-12)
        assert spearman(ys, ys) == pytest.approx(1.0)
    assert np.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert np.isnan(spearman([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0]))
