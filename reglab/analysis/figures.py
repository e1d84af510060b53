"""Figures of the loss-landscape analysis (matplotlib, Agg): 1D curves of several models, 2D contour and
surface plots of one model (Li et al., 2018, Figs. 5-6 style).

Losses spanning more than a decade (:data:`LOG_RATIO`) get log-spaced contour levels on a log colour scale and
a log 1D axis, with ticks as plain numbers; narrower ranges (e.g. 27-48) get even levels and a linear axis.
Every loss contour has a colour bar. ``*_figure`` functions return the figure; ``plot_*`` save it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors, ticker  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


LOG_RATIO = 10.0  # losses spanning more than this factor (one decade) get log-spaced levels and a log axis


def _plain(value: float, _pos=None) -> str:
    """A tick label as a plain number (0.5, 2, 30), never 3x10^1."""
    return f"{value:.3g}"


def _nice_ticks(lo: float, hi: float, log: bool) -> np.ndarray:
    """Readable tick values inside [lo, hi]: 1-2-5 per decade on a log scale, else about six round steps."""
    if log:
        decades = np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
        ticks = np.array([m * 10.0**d for d in decades for m in (1, 2, 5)])
    else:
        ticks = ticker.MaxNLocator(6).tick_values(lo, hi)
    ticks = ticks[(ticks >= lo * (1 - 1e-9)) & (ticks <= hi * (1 + 1e-9))]
    return ticks if len(ticks) >= 2 else np.array([lo, hi])


def loss_axis(ax, values, axis: str = "y") -> bool:
    """Scale an axis showing losses ``values``: logarithmic with plain-number 1-2-5 ticks when they span more
    than a decade, else linear. Returns whether it is logarithmic."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    log = bool(len(v)) and float(v.max()) > LOG_RATIO * float(v.min())
    target = ax.yaxis if axis == "y" else ax.xaxis
    if log:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        target.set_major_locator(ticker.FixedLocator(_nice_ticks(float(v.min()), float(v.max()), True)))
        target.set_major_formatter(ticker.FuncFormatter(_plain))
        target.set_minor_formatter(ticker.NullFormatter())
    return log


def landscape_1d_figure(results: dict[str, dict[str, Any]], title: str = ""):
    """The 1D figure (see :func:`plot_1d`), not saved."""
    fig, (lx, ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, res in results.items():
        one = res["1d"]
        lx.plot(one["alpha"], one["loss"], label=name)
        ax.plot(one["alpha"], one["acc"], label=name)
    log = loss_axis(lx, [v for res in results.values() for v in res["1d"]["loss"]])
    lx.set_ylabel(f"loss ({_where(results)}{', log scale' if log else ''})")
    ax.set_ylabel(f"accuracy (%) ({_where(results)})")
    for a in (lx, ax):
        a.set_xlabel("alpha (filter-normalized direction 1)")
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8)
    fig.suptitle(title or "1D loss landscape (Li et al., 2018)")
    fig.tight_layout()
    return fig


def plot_1d(results: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss and accuracy along direction 1 for every model, a colour per model; the loss axis is logarithmic
    (ticks at 1-2-5 x 10^k, written as plain numbers) when the losses span more than a decade, else linear."""
    return _save(landscape_1d_figure(results, title), path)


def _where(results: dict[str, dict[str, Any]]) -> str:
    res = next(iter(results.values()))
    return f"{res['subset']} {res['split']} images"


def contour_levels(*losses, n: int = 25) -> np.ndarray:
    """``n`` loss levels spanning every given grid (pass several models' grids to share levels): log-spaced
    when the losses span more than a decade (so the levels crowd near the minimum, where the basin is), else
    evenly spaced."""
    lo = max(min(float(np.min(v)) for v in losses), 1e-3)
    hi = max(float(np.max(v)) for v in losses)
    if hi <= lo * 1.001:
        return np.array([lo, lo * 1.01])
    return np.unique(np.geomspace(lo, hi, n) if hi > LOG_RATIO * lo else np.linspace(lo, hi, n))


def levels_are_log(levels) -> bool:
    """Whether ``levels`` (from :func:`contour_levels`) are log-spaced."""
    return float(levels[-1]) > LOG_RATIO * float(levels[0])


def contour_figure(
    grid: dict[str, Any],
    title: str = "",
    xlabel: str = "alpha (direction 1)",
    ylabel: str = "beta (direction 2)",
    levels: np.ndarray | None = None,
    labelled: int = 4,
):
    """The contour figure (see :func:`plot_contour`), not saved."""
    a, b = np.asarray(grid["a"]), np.asarray(grid["b"])
    loss, acc = np.asarray(grid["loss"], dtype=float), np.asarray(grid["acc"])
    fig, (lx, ax) = plt.subplots(1, 2, figsize=(11.5, 4.8))
    levels = contour_levels(loss) if levels is None else np.asarray(levels, dtype=float)
    log = levels_are_log(levels)
    norm = colors.LogNorm(levels[0], levels[-1]) if log else colors.Normalize(levels[0], levels[-1])
    shown = np.clip(loss, levels[0], levels[-1])  # a value off the shared levels takes the end colour
    filled = lx.contourf(a, b, shown, levels=levels, cmap="viridis", norm=norm)
    lines = lx.contour(a, b, shown, levels=levels, colors="white", linewidths=0.6, alpha=0.8)
    reached = [v for v in lines.levels if v >= float(loss.min())]
    labels = [*reached[:labelled], *reached[labelled + 5 :: 6]]  # the lowest levels, then a few for orientation
    if labels:
        lx.clabel(lines, labels, fontsize=7, fmt=_plain, colors="white")
    bar = fig.colorbar(filled, ax=lx, label="loss" + (" (log scale)" if log else ""))
    bar.set_ticks(_nice_ticks(levels[0], levels[-1], log))
    bar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(_plain))
    bar.ax.yaxis.set_minor_locator(ticker.NullLocator())
    lx.plot([0], [0], "r*", markersize=10)
    lx.set_title(
        f"loss ({len(levels)} {'log-spaced' if log else 'evenly spaced'} levels, "
        f"{_plain(levels[0])}-{_plain(levels[-1])})",
        fontsize=10,
    )
    cs2 = ax.contourf(a, b, acc, levels=np.linspace(0, 100, 21), cmap="magma")
    fig.colorbar(cs2, ax=ax, label="accuracy (%)")
    ax.plot([0], [0], "c*", markersize=10)
    ax.set_title("accuracy", fontsize=10)
    for p in (lx, ax):
        p.set_xlabel(xlabel)
        p.set_ylabel(ylabel)
        p.set_aspect("equal" if abs((a[-1] - a[0]) - (b[-1] - b[0])) < 1e-9 else "auto")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_contour(
    grid: dict[str, Any],
    path: str | Path,
    title: str = "",
    xlabel: str = "alpha (direction 1)",
    ylabel: str = "beta (direction 2)",
    levels: np.ndarray | None = None,
) -> Path:
    """Loss contours (filled, with a colour bar; default levels: :func:`contour_levels` of this grid, log-spaced
    with a log colour scale when the losses span more than a decade; the lowest levels the grid reaches are
    labelled) beside accuracy contours."""
    return _save(contour_figure(grid, title, xlabel, ylabel, levels), path)


def plot_surface(
    grid: dict[str, Any],
    path: str | Path,
    title: str = "",
    zmax: float | None = None,
    xlabel: str = "alpha",
    ylabel: str = "beta",
) -> Path:
    """3D loss surface; losses above ``zmax`` are clipped to it (stated in the title)."""
    a, b = np.meshgrid(np.asarray(grid["a"]), np.asarray(grid["b"]))
    loss = np.asarray(grid["loss"])
    clipped = np.minimum(loss, zmax) if zmax is not None else loss
    fig = plt.figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(a, b, clipped, cmap="viridis", linewidth=0, antialiased=True, alpha=0.95)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_zlabel("loss")
    ax.view_init(elev=35, azim=-60)
    clip_note = f" (clipped at {zmax:g})" if zmax is not None and float(loss.max()) > zmax else ""
    ax.set_title(title + clip_note, fontsize=10)
    return _save(fig, path)
