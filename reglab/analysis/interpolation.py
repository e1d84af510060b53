"""Interpolation test (after Liang et al., *Understanding Mixup Training Methods*, 2018): how a trained model
classifies mixtures of two test images of different classes.

For pairs ``(x1, y1), (x2, y2)`` with ``y1 != y2`` drawn once from the test set with a fixed seed, and
``lam`` in {0, 0.01, ..., 1} (101 values; "steps" 0-100 in the reproduced mixup report)::

    x(lam) = lam * x1 + (1 - lam) * x2          (in pixel space, then normalized; normalization is affine,
                                                 so this equals mixing the normalized images as mixup does)

Three curves per model, as fractions in percent of the pairs:

* ``acc_x1`` -- the top-1 prediction is ``y1`` (rises with ``lam`` as an S-curve),
* ``acc_x2`` -- the top-1 prediction is ``y2`` (falls),
* ``top2_both`` -- the two highest-scoring classes are exactly ``{y1, y2}`` (test-x1x2 in that report).

The endpoints are exact: ``lam = 1`` feeds ``1 * x1 + 0 * x2 == x1`` bit for bit, so ``acc_x1[lam=1]`` is
the plain test accuracy on the x1 images (likewise ``acc_x2[lam=0]`` on x2). Models are evaluated in eval
mode without test-time augmentation.

Summary numbers per model (to compare the S-curves without eyeballing): ``slope_mid``, the slope of
``acc_x1`` over ``lam`` in [0.4, 0.6] (points per unit ``lam``); ``transition_width``, the ``lam`` distance
between where ``acc_x1`` first reaches 20% and 80% of its value at ``lam = 1`` (smaller = steeper);
``crossover``, the ``lam`` where ``acc_x1`` first reaches ``acc_x2``; the peak of ``top2_both`` and its ``lam``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

LAMBDAS = torch.linspace(0, 1, 101)  # exact 0 and 1 at the ends


def sample_pairs(labels: torch.Tensor, n_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_pairs`` index pairs ``(i1, i2)`` with ``labels[i1] != labels[i2]``, drawn with a fixed seed:
    ``i1`` without replacement (when ``n_pairs <= N``), each ``i2`` uniform among the other classes' images."""
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    if n_pairs <= n:
        i1 = torch.randperm(n, generator=g)[:n_pairs]
    else:
        i1 = torch.randint(0, n, (n_pairs,), generator=g)
    i2 = torch.randint(0, n, (n_pairs,), generator=g)
    for _ in range(100):  # redraw partners of the same class (a tenth each round for 10 classes)
        same = labels[i1] == labels[i2]
        if not bool(same.any()):
            break
        i2[same] = torch.randint(0, n, (int(same.sum()),), generator=g)
    keep = labels[i1] != labels[i2]  # only fails for a one-class set
    if not bool(keep.all()):
        raise ValueError("cannot draw pairs of different classes (fewer than two classes?)")
    return i1, i2


@torch.no_grad()
def pair_hits(
    model: nn.Module,
    x1: torch.Tensor,
    y1: torch.Tensor,
    x2: torch.Tensor,
    y2: torch.Tensor,
    lambdas: torch.Tensor = LAMBDAS,
    batch_size: int = 500,
    *,
    autocast=None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Per pair and ``lam``, whether each curve's event happened: a bool tensor ``[3, len(lambdas), N]``
    (rows: top-1 = y1, top-1 = y2, top-2 = {y1, y2}); ``model`` is put in eval mode. ``autocast`` (a factory of
    an autocast context; None: fp32) is the forward's precision; ``channels_last`` mixes and feeds the images in
    that layout."""
    model.eval()
    if channels_last:
        x1, x2 = (t.contiguous(memory_format=torch.channels_last) for t in (x1, x2))
    n = len(y1)
    hits = torch.zeros(3, len(lambdas), n, dtype=torch.bool)
    for j, lam in enumerate(lambdas.tolist()):
        for s in range(0, n, batch_size):
            a, b = x1[s : s + batch_size], x2[s : s + batch_size]
            xm = lam * a + (1.0 - lam) * b  # exact at lam = 0 and 1
            if autocast is not None:
                with autocast():
                    logits = model(xm)
            else:
                logits = model(xm)
            top2 = logits.float().topk(2, dim=1).indices
            t1, t2 = y1[s : s + batch_size], y2[s : s + batch_size]
            hits[0, j, s : s + batch_size] = top2[:, 0] == t1
            hits[1, j, s : s + batch_size] = top2[:, 0] == t2
            hits[2, j, s : s + batch_size] = ((top2[:, 0] == t1) & (top2[:, 1] == t2)) | (
                (top2[:, 0] == t2) & (top2[:, 1] == t1)
            )
    return hits


def hits_options(run, amp: str | None = None) -> dict[str, Any]:
    """:func:`pair_hits`' keywords that evaluate a loaded run (:class:`reglab.analysis.common.LoadedRun`) as its
    own evaluation did: its precision (``train.amp`` as this CPU resolves it; ``amp="off"``: fp32) and its
    memory format."""
    return {"autocast": run.autocast(amp), "channels_last": getattr(run, "channels_last", False)}


def curves_from_hits(hits: torch.Tensor, lambdas: torch.Tensor = LAMBDAS) -> dict[str, Any]:
    """The three curves (percent of pairs) and the summary numbers from :func:`pair_hits`' tensor."""
    n = hits.shape[-1]
    pct = (100.0 * hits.double().sum(-1) / max(n, 1)).numpy()
    lam_np = lambdas.double().numpy()
    out = {
        "lambda": [round(v, 4) for v in lam_np.tolist()],
        "acc_x1": pct[0].tolist(),
        "acc_x2": pct[1].tolist(),
        "top2_both": pct[2].tolist(),
        "pairs": n,
    }
    out.update(summarize(lam_np, pct[0], pct[1], pct[2]))
    return out


def interpolation_curves(
    model: nn.Module,
    x1: torch.Tensor,
    y1: torch.Tensor,
    x2: torch.Tensor,
    y2: torch.Tensor,
    lambdas: torch.Tensor = LAMBDAS,
    batch_size: int = 500,
) -> dict[str, Any]:
    """Accuracy curves over ``lambdas`` for normalized float image pairs ``x1``/``x2`` (N x C x H x W) with
    labels ``y1``/``y2``; ``model`` is put in eval mode. Returns lists (percent) and the summary numbers."""
    return curves_from_hits(pair_hits(model, x1, y1, x2, y2, lambdas, batch_size), lambdas)


BOOTSTRAPPED = ("slope_mid", "transition_width", "crossover", "top2_peak")


def bootstrap_summaries(
    hits: dict[str, torch.Tensor], replicates: int = 1000, seed: int = 0, lambdas: torch.Tensor = LAMBDAS
) -> dict[str, dict[str, Any]]:
    """95% percentile-bootstrap intervals over the image pairs (Efron & Tibshirani, 1993) of the summary
    numbers in :data:`BOOTSTRAPPED`, per model, and of each model's difference to the first model. All models
    were tested on the same pairs, so each replicate resamples the pairs once for all of them (a paired
    bootstrap). Returns ``{model: {metric: [lo, hi], "minus_<first>": {metric: [diff, lo, hi]}}}``: ``diff`` is
    the point estimate, the difference of the two models' numbers on all the pairs (what the summary table
    shows, None where either is undefined), ``[lo, hi]`` its interval; a replicate where a number is undefined
    (e.g. no crossover) is left out of that number's interval."""
    names = list(hits)
    n = hits[names[0]].shape[-1]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (replicates, n), generator=g)
    weights = torch.zeros(replicates, n, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones(replicates, n, dtype=torch.float64)
    )
    lam = lambdas.double().numpy()
    point = {name: curves_from_hits(hits[name], lambdas) for name in names}  # on all the pairs, unresampled
    draws: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        curves = 100.0 * torch.einsum("bn,kln->bkl", weights, hits[name].double()).numpy() / n
        draws[name] = [summarize(lam, c[0], c[1], c[2]) for c in curves]

    def interval(values: list[float | None]) -> list[float | None]:
        got = np.array([v for v in values if v is not None], dtype=float)
        if len(got) == 0:
            return [None, None]
        return [round(float(np.percentile(got, 2.5)), 4), round(float(np.percentile(got, 97.5)), 4)]

    out: dict[str, dict[str, Any]] = {}
    first = names[0]
    for name in names:
        out[name] = {m: interval([d[m] for d in draws[name]]) for m in BOOTSTRAPPED}
        if name != first:
            diffs = {
                m: [
                    None if a[m] is None or b[m] is None else a[m] - b[m]
                    for a, b in zip(draws[name], draws[first])
                ]
                for m in BOOTSTRAPPED
            }
            out[name][f"minus_{first}"] = {
                m: [_difference(point[name][m], point[first][m]), *interval(vals)] for m, vals in diffs.items()
            }
    return out


def _difference(a: float | None, b: float | None) -> float | None:
    """``a - b`` of two summary numbers (rounded as they are), None where either is undefined."""
    return None if a is None or b is None else round(a - b, 4)


def _first_crossing(lam: np.ndarray, curve: np.ndarray, level: float) -> float | None:
    """Linearly interpolated ``lam`` where ``curve`` first reaches ``level`` (None if it never does)."""
    above = np.flatnonzero(curve >= level)
    if len(above) == 0:
        return None
    k = int(above[0])
    if k == 0:
        return float(lam[0])
    c0, c1 = curve[k - 1], curve[k]
    return float(lam[k - 1] + (level - c0) / (c1 - c0) * (lam[k] - lam[k - 1])) if c1 != c0 else float(lam[k])


def summarize(lam: np.ndarray, acc1: np.ndarray, acc2: np.ndarray, both: np.ndarray) -> dict[str, Any]:
    """The S-curve numbers of the module docstring."""
    i_lo, i_hi = int(np.argmin(np.abs(lam - 0.4))), int(np.argmin(np.abs(lam - 0.6)))
    slope = (acc1[i_hi] - acc1[i_lo]) / (lam[i_hi] - lam[i_lo])
    top = acc1[-1]
    l20, l80 = _first_crossing(lam, acc1, 0.2 * top), _first_crossing(lam, acc1, 0.8 * top)
    cross = _first_crossing(lam, acc1 - acc2, 0.0)
    k = int(np.argmax(both))
    r = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
    return {
        "slope_mid": r(slope),
        "transition_width": r(None if l20 is None or l80 is None else l80 - l20),
        "crossover": r(cross),
        "top2_peak": r(both[k]),
        "top2_peak_lambda": r(lam[k]),
        "acc_x1_at_1": r(acc1[-1]),
        "acc_x2_at_0": r(acc2[0]),
    }


def plot_interpolation(results: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """One figure, all models: ``acc_x1`` solid, ``acc_x2`` dashed, ``top2_both`` dotted; a colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, res) in enumerate(results.items()):
        c = colors[i % len(colors)]
        steps = 100 * np.asarray(res["lambda"])
        ax.plot(steps, res["acc_x1"], "-", color=c, label=f"{name}: top-1 = y1 (x1)")
        ax.plot(steps, res["acc_x2"], "--", color=c, label=f"{name}: top-1 = y2 (x2)")
        ax.plot(steps, res["top2_both"], ":", color=c, linewidth=2, label=f"{name}: top-2 = {{y1, y2}}")
    ax.set_xlabel("step (lambda x 100);  x = lambda * x1 + (1 - lambda) * x2")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    n = next(iter(results.values()))["pairs"] if results else 0
    ax.set_title(title or f"interpolation test: {n} test pairs of different classes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _with_interval(value: Any, ci: list | None) -> Any:
    if value is None or not ci or ci[0] is None:
        return value
    return f"{value:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]"


def summary_table(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the per-model summary numbers, with their bootstrap intervals where computed."""
    cols = [
        "model",
        "acc_x1_at_1",
        "acc_x2_at_0",
        "slope_mid",
        "transition_width",
        "crossover",
        "top2_peak",
        "top2_peak_lambda",
    ]
    rows = [
        [name, *(_with_interval(res[c], res.get("ci95", {}).get(c)) for c in cols[1:])]
        for name, res in results.items()
    ]
    return cols, rows


def difference_table(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Each model against the first, paired over the same pairs: the difference of every bootstrapped number
    (of the values the summary table shows, so the columns agree) with its 95% interval and whether the
    interval excludes zero."""
    names = list(results)
    cols = ["model", *(c for m in BOOTSTRAPPED for c in (f"{m} Δ [95% CI]", "excludes 0"))]
    rows = []
    for name in names[1:]:
        diff = results[name].get("ci95", {}).get(f"minus_{names[0]}")
        if not diff:
            continue
        row: list[Any] = [f"{name} − {names[0]}"]
        for m in BOOTSTRAPPED:
            _, lo, hi = diff[m]
            delta = _difference(results[name].get(m), results[names[0]].get(m))
            if delta is None:  # undefined on the pairs themselves (e.g. no crossover): nothing to compare
                row += ["-", "-"]
                continue
            row += [
                f"{delta:+.4g}" + ("" if lo is None else f" [{lo:+.4g}, {hi:+.4g}]"),
                "-" if lo is None else ("yes: higher" if lo > 0 else "yes: lower" if hi < 0 else "no"),
            ]
        rows.append(row)
    return cols, rows


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
