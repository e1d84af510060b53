"""Figures: training curves (as in the reports' figures) and the confusion matrix (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch for train / val / test (and EMA when present), side by side."""
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "acc")):
        for split, style in (("train", "-"), ("val", "-"), ("test", "-"), ("ema_val", "--"), ("ema_test", "--")):
            key = f"{split}_{metric}"
            pts = [(e, r[key]) for e, r in zip(epochs, rows) if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), style, marker="o" if len(pts) < 30 else None, markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss" if metric == "loss" else "accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    """Row-normalized confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    k = len(classes)
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = max(5, min(20, 0.45 * k + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        ax.set_xticks(range(k), classes, rotation=45, ha="right")
        ax.set_yticks(range(k), classes)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class CurvesCallback:
    """Redraw ``curves.png`` in the run directory after every epoch."""

    def on_epoch_end(self, run, row) -> None:
        plot_curves(run.metrics, run.dir.path / "curves.png", title=run.cfg.run.name or "")
