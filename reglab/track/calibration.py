"""Calibration of a classifier's probabilities: ECE, NLL and the reliability diagram.

* Expected calibration error (Naeini et al., 2015; as used by Guo et al., *On Calibration of Modern Neural
  Networks*, 2017): the confidence ``c_i = max_k p_ik`` of each prediction falls in one of ``M`` bins,
  ``ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)|``. Binning: ``M = 15`` **equal-width** bins on [0, 1]
  (Guo et al.'s choice), bin ``b`` holding confidences in ``((b-1)/M, b/M]`` (the first bin also holds 0).
  ``MCE`` is the largest per-bin gap among non-empty bins.
* Negative log-likelihood ``NLL = -1/n * sum_i log p_{i, y_i}`` (natural log; ``p`` clamped at 1e-12).
* Brier score ``1/n * sum_i sum_k (p_ik - [k = y_i])^2`` (Brier, 1950), for completeness.

API (used by ``reglab eval`` and the HTML report)::

    res = calibration(probs, labels, n_bins=15)   # dict: ece, mce, nll, brier, acc, avg_conf, bins, binning
    plot_reliability(res, "reliability.png", title="...")

``probs`` is an ``N x K`` array or tensor of probabilities (rows sum to 1), ``labels`` ``N`` integer classes.
ECE, MCE, accuracy and confidence are fractions in [0, 1] (not percent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

BINNING = "{n} equal-width confidence bins on [0, 1], bin b = ((b-1)/{n}, b/{n}]; confidence = max probability"


def _numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def calibration(probs, labels, n_bins: int = 15) -> dict[str, Any]:
    """ECE / MCE over ``n_bins`` equal-width confidence bins, NLL, Brier score, accuracy and the bins
    (``lo``, ``hi``, ``count``, ``acc``, ``conf``; ``acc``/``conf`` are None for empty bins)."""
    p = _numpy(probs).astype(np.float64)
    y = _numpy(labels).astype(np.int64)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise ValueError(f"probs must be N x K and labels N; got {p.shape} and {y.shape}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    n = len(y)
    conf = p.max(1)
    pred = p.argmax(1)
    correct = (pred == y).astype(np.float64)
    # bin index: ceil(c * M) - 1, so c in ((b-1)/M, b/M] -> b-1; c = 0 goes to the first bin
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    nz = counts > 0
    bin_acc = np.divide(acc_sum, counts, out=np.zeros(n_bins), where=nz)
    bin_conf = np.divide(conf_sum, counts, out=np.zeros(n_bins), where=nz)
    gaps = np.abs(bin_acc - bin_conf)
    ece = float((counts * gaps).sum() / max(n, 1))
    mce = float(gaps[nz].max()) if nz.any() else 0.0
    p_true = p[np.arange(n), y] if n else np.zeros(0)
    nll = float(-np.log(np.clip(p_true, 1e-12, None)).mean()) if n else float("nan")
    onehot = np.zeros_like(p)
    onehot[np.arange(n), y] = 1.0
    brier = float(((p - onehot) ** 2).sum(1).mean()) if n else float("nan")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = [
        {
            "lo": round(float(edges[b]), 6),
            "hi": round(float(edges[b + 1]), 6),
            "count": int(counts[b]),
            "acc": float(bin_acc[b]) if nz[b] else None,
            "conf": float(bin_conf[b]) if nz[b] else None,
        }
        for b in range(n_bins)
    ]
    return {
        "ece": ece,
        "mce": mce,
        "nll": nll,
        "brier": brier,
        "acc": float(correct.mean()) if n else float("nan"),
        "avg_conf": float(conf.mean()) if n else float("nan"),
        "n": n,
        "n_bins": n_bins,
        "binning": BINNING.format(n=n_bins),
        "bins": bins,
    }


def summary_line(res: dict[str, Any]) -> str:
    """One line: ``ECE 3.21% (15 equal-width bins), MCE ..., NLL ..., mean confidence ... vs accuracy ...``."""
    return (
        f"ECE {100 * res['ece']:.2f}% ({res['n_bins']} equal-width bins), MCE {100 * res['mce']:.2f}%, "
        f"NLL {res['nll']:.4f}, Brier {res['brier']:.4f}, mean confidence {100 * res['avg_conf']:.2f}% vs "
        f"accuracy {100 * res['acc']:.2f}%"
    )


def plot_reliability(res: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Reliability diagram (Guo et al., 2017, Fig. 1): per-bin accuracy as bars against the diagonal of
    perfect calibration, the gap to each bin's mean confidence shaded, and a histogram of confidences below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_figure

    path = Path(path)
    bins = res["bins"]
    lo = np.array([b["lo"] for b in bins])
    width = np.array([b["hi"] - b["lo"] for b in bins])
    counts = np.array([b["count"] for b in bins])
    acc = np.array([b["acc"] if b["acc"] is not None else 0.0 for b in bins])
    conf = np.array([b["conf"] if b["conf"] is not None else 0.0 for b in bins])
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(
        lo, acc, width=width, align="edge", color="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy"
    )
    nz = counts > 0
    ax.bar(
        lo[nz],
        (conf - acc)[nz],
        bottom=acc[nz],
        width=width[nz],
        align="edge",
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        hatch="//",
        linewidth=0.5,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.text(
        0.98,
        0.03,
        f"ECE {100 * res['ece']:.2f}%\nNLL {res['nll']:.3f}\n{res['n_bins']} equal-width bins",
        ha="right",
        va="bottom",
        transform=ax.transAxes,
        fontsize=9,
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
    )
    ax.set_title(title or "reliability diagram")
    hx.bar(
        lo,
        counts / max(counts.sum(), 1),
        width=width,
        align="edge",
        color="gray",
        edgecolor="black",
        linewidth=0.5,
    )
    hx.set_xlabel("confidence (max probability)")
    hx.set_ylabel("fraction")
    return save_figure(fig, path)
