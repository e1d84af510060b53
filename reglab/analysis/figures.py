"""Figures of the loss-landscape analysis (matplotlib, Agg): 1D curves of several models, 2D contour and
surface plots of one model (Li et al., 2018, Figs. 5-6 style)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_1d(results: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss (log scale) and accuracy along direction 1 for every model; a colour per model."""
    fig, (lx, ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, res in results.items():
        one = res["1d"]
        lx.plot(one["alpha"], one["loss"], label=name)
        ax.plot(one["alpha"], one["acc"], label=name)
    lx.set_yscale("log")
    lx.set_ylabel(f"loss ({_where(results)})")
    ax.set_ylabel(f"accuracy (%) ({_where(results)})")
    for a in (lx, ax):
        a.set_xlabel("alpha (filter-normalized direction 1)")
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8)
    fig.suptitle(title or "1D loss landscape (Li et al., 2018)")
    fig.tight_layout()
    return _save(fig, path)


def _where(results: dict[str, dict[str, Any]]) -> str:
    res = next(iter(results.values()))
    return f"{res['subset']} {res['split']} images"


def contour_levels(*losses) -> np.ndarray:
    """25 log-spaced loss levels spanning every given grid (pass several models' grids to share levels)."""
    lo = max(min(float(np.min(v)) for v in losses), 1e-3)
    hi = max(float(np.max(v)) for v in losses)
    if hi <= lo * 1.001:
        return np.array([lo, lo * 1.01])
    return np.unique(np.geomspace(lo, hi, 25))


def plot_contour(grid: dict[str, Any], path: str | Path, title: str = "", xlabel: str = "alpha (direction 1)",
                 ylabel: str = "beta (direction 2)", levels: np.ndarray | None = None) -> Path:
    """Loss contours (log-spaced ``levels``, labelled; default: spanning this grid) and accuracy contours."""
    a, b = np.asarray(grid["a"]), np.asarray(grid["b"])
    loss, acc = np.asarray(grid["loss"]), np.asarray(grid["acc"])
    fig, (lx, ax) = plt.subplots(1, 2, figsize=(11, 4.8))
    levels = contour_levels(loss) if levels is None else levels
    cs = lx.contour(a, b, loss, levels=levels, cmap="viridis", linewidths=0.9, vmin=levels[0], vmax=levels[-1])
    lx.clabel(cs, cs.levels[::3], fontsize=7, fmt="%.2g")
    lx.plot([0], [0], "r*", markersize=10)
    lx.set_title("loss")
    cs2 = ax.contourf(a, b, acc, levels=np.linspace(0, 100, 21), cmap="magma")
    fig.colorbar(cs2, ax=ax, label="accuracy (%)")
    ax.plot([0], [0], "c*", markersize=10)
    ax.set_title("accuracy")
    for p in (lx, ax):
        p.set_xlabel(xlabel)
        p.set_ylabel(ylabel)
        p.set_aspect("equal" if abs((a[-1] - a[0]) - (b[-1] - b[0])) < 1e-9 else "auto")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_surface(grid: dict[str, Any], path: str | Path, title: str = "", zmax: float | None = None,
                 xlabel: str = "alpha", ylabel: str = "beta") -> Path:
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
