"""Interpolation test (reglab/analysis/interpolation.py, seed 001): pairs of different classes fixed by the seed,
the accuracy curves along x = (1 - lam) x2 + lam x1 against the plain accuracy at the endpoints, the S-curve's
summary numbers, and the paired bootstrap over pairs. The `reglab analyze interpolation` command is tested in
tests/commands/test_analyze.py; the tiny trained ``study`` fixture is in tests/conftest.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reglab.analysis.common import load_run
from reglab.analysis.interpolation import LAMBDAS, interpolation_curves, sample_pairs, summarize


def test_sample_pairs_are_of_different_classes_and_fixed_by_seed():
    labels = torch.arange(300) % 10
    i1, i2 = sample_pairs(labels, 200, seed=3)
    assert len(i1) == len(i2) == 200 and len(set(i1.tolist())) == 200
    assert bool((labels[i1] != labels[i2]).all())
    j1, j2 = sample_pairs(labels, 200, seed=3)
    assert torch.equal(i1, j1) and torch.equal(i2, j2)
    assert not torch.equal(i2, sample_pairs(labels, 200, seed=4)[1])
    with pytest.raises(ValueError):
        sample_pairs(torch.zeros(20, dtype=torch.long), 5)


def test_interpolation_endpoints_equal_plain_accuracy(study):
    r = load_run(study / "runs" / "erm-s0")
    test = r.data.test
    i1, i2 = sample_pairs(test.labels, 60, seed=0)
    x1, x2 = r.normalize(test.images[i1]), r.normalize(test.images[i2])
    y1, y2 = test.labels[i1], test.labels[i2]
    res = interpolation_curves(r.model, x1, y1, x2, y2, batch_size=64)
    assert LAMBDAS[0].item() == 0.0 and LAMBDAS[-1].item() == 1.0 and len(res["lambda"]) == 101
    with torch.no_grad():
        p1, p2 = r.model(x1).argmax(1), r.model(x2).argmax(1)
        top2_x2 = r.model(x2).topk(2, dim=1).indices
    assert res["acc_x1"][-1] == pytest.approx(100.0 * (p1 == y1).double().mean().item())
    assert res["acc_x2"][0] == pytest.approx(100.0 * (p2 == y2).double().mean().item())
    assert res["acc_x1"][0] == pytest.approx(100.0 * (p2 == y1).double().mean().item())  # x2 alone, as y1: rare
    both = ((top2_x2[:, 0] == y1) & (top2_x2[:, 1] == y2)) | ((top2_x2[:, 0] == y2) & (top2_x2[:, 1] == y1))
    assert res["top2_both"][0] == pytest.approx(100.0 * both.double().mean().item())
    # the plain test accuracy of the run on the x1 images, through the run's own evaluation path
    from reglab.data import DeviceLoader, Split
    from reglab.train.evaluate import evaluate

    plain = evaluate(r.model, DeviceLoader(Split(test.images[i1], y1), 1000, r.meta["mean"], r.meta["std"]))
    assert res["acc_x1"][-1] == pytest.approx(plain.acc)


def test_s_curve_summary_numbers():
    lam = np.linspace(0, 1, 101)
    steep = 100 / (1 + np.exp(-(lam - 0.5) * 40))
    flat = 100 / (1 + np.exp(-(lam - 0.5) * 6))
    s_steep, s_flat = (
        summarize(lam, steep, steep[::-1], np.zeros(101)),
        summarize(lam, flat, flat[::-1], np.zeros(101)),
    )
    assert s_steep["slope_mid"] > s_flat["slope_mid"] > 0
    assert s_steep["transition_width"] < s_flat["transition_width"]
    assert s_steep["crossover"] == pytest.approx(0.5, abs=0.01)
    # logistic: 20% and 80% of the top at lam = 0.5 -+ ln(4)/k
    assert s_steep["transition_width"] == pytest.approx(2 * math.log(4) / 40, abs=0.01)


def test_paired_bootstrap_over_pairs():
    from reglab.analysis.interpolation import bootstrap_summaries

    g = torch.Generator().manual_seed(0)
    lam = LAMBDAS.view(1, -1, 1)
    u = torch.rand(1, 1, 400, generator=g)  # each pair's own switch point
    steep = (lam > 0.5 + 0.1 * (u - 0.5)).expand(3, -1, -1).clone()  # top-1 = y1 once lam passes ~0.5
    flat = (lam > 0.5 + 0.8 * (u - 0.5)).expand(3, -1, -1).clone()  # the switch points spread 8x wider
    steep[1], flat[1] = ~steep[0], ~flat[0]
    ci = bootstrap_summaries({"flat": flat, "steep": steep, "same": flat.clone()}, replicates=200)
    mean, lo, hi = ci["steep"]["minus_flat"]["slope_mid"]
    assert lo > 0 and lo <= mean <= hi  # steeper at lam = 0.5, and the interval says so
    assert ci["same"]["minus_flat"]["slope_mid"] == [0.0, 0.0, 0.0]  # identical models: no difference
    lo, hi = ci["flat"]["crossover"]
    assert lo < 0.5 < hi


def test_difference_shown_is_the_difference_of_the_shown_numbers():
    """The Δ of the difference table is the summary table's numbers subtracted (the point estimate on all the
    pairs), not the mean of the bootstrap replicates; the bracket beside it is the bootstrap interval."""
    from reglab.analysis.interpolation import (
        BOOTSTRAPPED,
        bootstrap_summaries,
        curves_from_hits,
        difference_table,
    )

    g = torch.Generator().manual_seed(1)
    lam = LAMBDAS.view(1, -1, 1)
    u = torch.rand(1, 1, 60, generator=g)  # few pairs: a skewed bootstrap whose mean is off the point
    steep = (lam > 0.5 + 0.2 * (u - 0.5)).expand(3, -1, -1).clone()
    flat = (lam > 0.45 + 0.9 * (u - 0.5)).expand(3, -1, -1).clone()
    steep[1], flat[1] = ~steep[0], ~flat[0]
    steep[2], flat[2] = steep[0] & (lam < 0.6), flat[0] & (lam < 0.7)
    hits = {"flat": flat, "steep": steep}
    results = {name: curves_from_hits(h) for name, h in hits.items()}
    for name, ci in bootstrap_summaries(hits, replicates=200).items():
        results[name]["ci95"] = ci
    cols, rows = difference_table(results)
    (row,) = rows
    for m in BOOTSTRAPPED:
        shown = round(results["steep"][m] - results["flat"][m], 4)
        diff, lo, hi = results["steep"]["ci95"]["minus_flat"][m]
        assert diff == pytest.approx(shown)
        cell = row[cols.index(f"{m} Δ [95% CI]")]
        assert cell == f"{shown:+.4g} [{lo:+.4g}, {hi:+.4g}]", (m, cell)
