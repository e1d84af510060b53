"""Sweep figures (matplotlib, Agg): accuracy against each hyperparameter, validation accuracy per epoch of
every trial with pruned ones marked, parameter importance with each parameter's correlation with the
objective, and parallel coordinates.

``rows`` are the trial dictionaries of :func:`reglab.sweep.analysis.collect`: ``number``, ``state``
(COMPLETE / PRUNED / FAIL / ...), ``value`` (the objective; for a pruned trial its last reported accuracy),
``params`` (decoded values), ``curve`` ([(epoch, val_acc), ...]).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..track.plots import save_figure as _save  # noqa: E402
from .space import Param  # noqa: E402

GREY = "#9a9a9a"


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _position(p: Param, value: Any) -> float:
    """Where ``value`` sits on the parameter's axis, in [0, 1] (log scale for log parameters)."""
    if p.type == "categorical":
        labels = [_label(c) for c in p.choices]
        k = len(labels)
        return labels.index(_label(value)) / (k - 1) if k > 1 else 0.5
    lo, hi, v = float(p.low), float(p.high), float(value)
    if p.log:
        lo, hi, v = math.log(lo), math.log(hi), math.log(v)
    return (v - lo) / (hi - lo)


def _best(rows: list[dict]) -> dict | None:
    done = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    return max(done, key=lambda r: r["value"]) if done else None


def plot_params(rows: list[dict], space: list[Param], path: Path, objective: str) -> Path:
    """Figure 5: the objective of every trial against each hyperparameter (pruned trials hollow, at the last
    accuracy they reported)."""
    n = len(space)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
    best = _best(rows)
    rng = np.random.default_rng(0)
    for ax, p in zip(axes.flat, space):
        for state, style in (
            ("PRUNED", dict(facecolors="none", edgecolors=GREY, label="pruned (last val)")),
            ("COMPLETE", dict(color="C0", label="complete")),
        ):
            pts = [r for r in rows if r["state"] == state and r["value"] is not None and p.key in r["params"]]
            if not pts:
                continue
            ys = [r["value"] for r in pts]
            if p.type == "categorical":
                labels = [_label(c) for c in p.choices]
                xs = [labels.index(_label(r["params"][p.key])) + rng.uniform(-0.15, 0.15) for r in pts]
            else:
                xs = [r["params"][p.key] for r in pts]
            ax.scatter(xs, ys, s=22, **style)
        if best is not None and p.key in best["params"]:
            v = best["params"][p.key]
            x = [_label(c) for c in p.choices].index(_label(v)) if p.type == "categorical" else v
            ax.scatter(
                [x], [best["value"]], marker="*", s=160, color="C3", zorder=5, label=f"best (#{best['number']})"
            )
        if p.type == "categorical":
            ax.set_xticks(
                range(len(p.choices)), [_label(c) for c in p.choices], rotation=20 if len(p.choices) > 3 else 0
            )
        elif p.log:
            ax.set_xscale("log")
        ax.set_xlabel(p.key)
        ax.set_ylabel(f"{objective} (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Validation accuracy over the hyperparameters")
    return _save(fig, path)


def plot_curves(rows: list[dict], path: Path) -> Path:
    """Figure 6: validation accuracy per epoch of every trial; pruned trials grey, ending in an x."""
    fig, ax = plt.subplots(figsize=(8, 5))
    done = [r["value"] for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    lo, hi = (min(done), max(done)) if done else (0.0, 1.0)
    cmap = plt.get_cmap("viridis")
    best = _best(rows)
    labelled = set()
    for r in rows:
        if not r["curve"]:
            continue
        ep, acc = zip(*r["curve"])
        if r["state"] == "PRUNED":
            kw = dict(color=GREY, lw=0.9, alpha=0.8, label="pruned" if "p" not in labelled else None)
            labelled.add("p")
            ax.plot(ep, acc, **kw)
            ax.plot(ep[-1], acc[-1], "x", color="C3", ms=6)
        elif r["state"] == "COMPLETE":
            ax.plot(ep, acc, color=cmap((r["value"] - lo) / (hi - lo) if hi > lo else 0.5), lw=1.2)
        elif r["state"] == "FAIL":
            ax.plot(ep, acc, ":", color="C1", lw=1, label="failed" if "f" not in labelled else None)
            labelled.add("f")
    if best is not None:
        ep, acc = zip(*best["curve"])
        ax.plot(ep, acc, color="C3", lw=2.4, label=f"best: trial {best['number']} ({best['value']:.2f}%)")
    if done:
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
        fig.colorbar(sm, ax=ax, label="objective of complete trials (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Validation accuracy per epoch (x = pruned here)")
    ax.grid(alpha=0.3)
    if labelled or best is not None:
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_importance(
    importance: dict[str, float] | None,
    method: str,
    correlation: list[tuple[str, float]],
    n_complete: int,
    path: Path,
) -> Path:
    """Figure 7: parameter importance and each parameter's Spearman correlation with the objective."""
    rows = max(len(importance or {}), len(correlation), 1)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.45 * rows + 1.8))
    if importance:
        names = list(importance)[::-1]
        a1.barh(names, [importance[k] for k in names], color="#4a7ebb")
        a1.set_xlim(0, max(1e-9, max(importance.values())) * 1.15)
    else:
        a1.text(0.5, 0.5, "too few complete trials", ha="center", va="center", transform=a1.transAxes)
    a1.set_title(f"importance ({method}, {n_complete} complete trials)")
    a1.grid(axis="x", alpha=0.3)
    if correlation:
        names = [c[0] for c in correlation][::-1]
        vals = [0.0 if math.isnan(c[1]) else c[1] for c in correlation][::-1]
        a2.barh(names, vals, color=["#27ae60" if v >= 0 else "#c0392b" for v in vals])
        for i, c in enumerate(correlation[::-1]):
            if math.isnan(c[1]):
                a2.text(0.02, i, "n/a (constant)", va="center", fontsize=8, color=GREY)
    a2.axvline(0, color="black", lw=0.8)
    a2.set_xlim(-1, 1)
    a2.set_title("Spearman correlation with the objective")
    a2.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_parallel(rows: list[dict], space: list[Param], path: Path, objective: str) -> Path:
    """Parallel coordinates: one vertical axis per parameter (log parameters on a log scale, choices evenly
    spaced) plus the objective; complete trials coloured by it, pruned trials grey at their last accuracy."""
    fig, ax = plt.subplots(figsize=(max(7.0, 1.9 * (len(space) + 1)), 5))
    vals = [r["value"] for r in rows if r["state"] in ("COMPLETE", "PRUNED") and r["value"] is not None]
    if not vals:
        ax.text(0.5, 0.5, "no finished trials", ha="center")
        return _save(fig, path)
    vlo, vhi = min(vals), max(vals)
    done = [r["value"] for r in rows if r["state"] == "COMPLETE"]
    clo, chi = (min(done), max(done)) if done else (vlo, vhi)
    cmap = plt.get_cmap("viridis")
    xs = list(range(len(space) + 1))
    for state in ("PRUNED", "COMPLETE"):
        for r in rows:
            if r["state"] != state or r["value"] is None or any(p.key not in r["params"] for p in space):
                continue
            ys = [_position(p, r["params"][p.key]) for p in space]
            ys.append((r["value"] - vlo) / (vhi - vlo) if vhi > vlo else 0.5)
            if state == "PRUNED":
                ax.plot(xs, ys, color=GREY, lw=0.8, alpha=0.5)
            else:
                ax.plot(xs, ys, color=cmap((r["value"] - clo) / (chi - clo) if chi > clo else 0.5), lw=1.5)
    for x, p in zip(xs, space):
        ax.axvline(x, color="black", lw=0.8)
        if p.type == "categorical":
            for c in p.choices:
                ax.text(x + 0.03, _position(p, c), _label(c), fontsize=8, va="center")
        else:
            for v in (p.low, p.high):
                ax.text(x + 0.03, _position(p, v), f"{v:.3g}", fontsize=8, va="center")
    ax.axvline(xs[-1], color="black", lw=0.8)
    for v in (vlo, vhi):
        ax.text(xs[-1] + 0.03, (v - vlo) / (vhi - vlo) if vhi > vlo else 0.5, f"{v:.1f}%", fontsize=8, va="center")
    ax.set_xticks(xs, [p.key for p in space] + [objective], rotation=15)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.2, xs[-1] + 0.5)
    if done:
        fig.colorbar(
            plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(clo, chi)),
            ax=ax,
            label=f"{objective} of complete trials (%)",
        )
    ax.set_title("Parallel coordinates (grey: pruned)")
    return _save(fig, path)
