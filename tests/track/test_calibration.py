"""Calibration: ECE (15 equal-width bins), MCE, NLL, Brier, reliability diagram."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reglab.track.calibration import calibration, plot_reliability, summary_line


def synthetic_predictor(n: int, k: int, seed: int, overconfidence: float = 0.0):
    """Probabilities whose top class has confidence c ~ U(1/k, 1) and is right with probability
    ``c - overconfidence`` (perfectly calibrated at 0); the rest of the mass is spread evenly."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(1.0 / k + 0.01, 1.0, n)
    pred = rng.integers(0, k, n)
    right = rng.random(n) < conf - overconfidence
    other = (pred + rng.integers(1, k, n)) % k  # a different class
    labels = np.where(right, pred, other)
    probs = np.repeat(((1 - conf) / (k - 1))[:, None], k, axis=1)
    probs[np.arange(n), pred] = conf
    return probs, labels


def test_perfectly_calibrated_predictor_has_ece_near_zero():
    probs, labels = synthetic_predictor(200_000, 10, seed=0)
    res = calibration(probs, labels)
    assert res["n_bins"] == 15 and len(res["bins"]) == 15
    assert "equal-width" in res["binning"]
    assert res["ece"] < 0.006  # sampling noise only (each bin ~13k samples)
    assert abs(res["acc"] - res["avg_conf"]) < 0.005


def test_overconfident_predictor_ece_equals_the_gap():
    probs, labels = synthetic_predictor(200_000, 10, seed=1, overconfidence=0.1)
    res = calibration(probs, labels)
    assert res["ece"] == pytest.approx(0.1, abs=0.006)
    assert res["avg_conf"] - res["acc"] == pytest.approx(0.1, abs=0.006)


def test_constant_confidence_exact_values():
    # confidence 0.9 on every sample, 6 of 10 right: one bin, ECE = MCE = 0.3
    probs = np.full((10, 2), 0.1)
    probs[:, 0] = 0.9
    labels = np.array([0] * 6 + [1] * 4)
    res = calibration(probs, labels)
    assert res["ece"] == pytest.approx(0.3)
    assert res["mce"] == pytest.approx(0.3)
    assert res["nll"] == pytest.approx(-(6 * math.log(0.9) + 4 * math.log(0.1)) / 10)
    assert res["brier"] == pytest.approx((6 * 2 * 0.01 + 4 * 2 * 0.81) / 10)
    full = [b for b in res["bins"] if b["count"]]
    assert len(full) == 1 and full[0]["lo"] < 0.9 <= full[0]["hi"]


def test_bin_edges_are_right_closed():
    # 4 bins: (0, .25], (.25, .5], (.5, .75], (.75, 1]; exact binary fractions land on the edges
    def row(c):
        return [c] + [(1 - c) / 3] * 3

    probs = np.array([row(0.25), row(0.5), row(0.75), row(1.0), row(0.5 + 1e-9)])
    res = calibration(probs, [0] * 5, n_bins=4)
    assert [b["count"] for b in res["bins"]] == [1, 1, 2, 1]
    assert [b["hi"] for b in res["bins"]] == [0.25, 0.5, 0.75, 1.0]


def test_nll_matches_cross_entropy_and_accepts_tensors():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=g) * 3
    labels = torch.randint(0, 10, (500,), generator=g)
    res = calibration(logits.softmax(1), labels)
    assert res["nll"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert res["acc"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert sum(b["count"] for b in res["bins"]) == 500


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        calibration(np.ones((4, 3)) / 3, [0, 1])
    with pytest.raises(ValueError):
        calibration(np.ones((4, 3)) / 3, [0, 1, 2, 0], n_bins=0)


def test_reliability_png_and_summary(tmp_path):
    probs, labels = synthetic_predictor(2000, 10, seed=2, overconfidence=0.2)
    res = calibration(probs, labels)
    out = plot_reliability(res, tmp_path / "sub" / "rel.png", title="t")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ECE" in summary_line(res) and "15 equal-width bins" in summary_line(res)
