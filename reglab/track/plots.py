"""Figures: training curves (as in the reports' figures) and the confusion matrix (matplotlib, Agg)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

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
    save_figure(fig, path)


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
                ax.text(
                    j,
                    i,
                    int(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    save_figure(fig, path)


class CurvesCallback:
    """Keep ``curves.png`` in the run directory current while spending at most ``share`` of the run's time on it.

    A redraw costs ~0.3 s (matplotlib), as much as a whole epoch of a fast GPU recipe: redrawing after each of
    ``fast-gpu-resnet18``'s 200 epochs would add about a minute to a 2.5-minute run. So it draws after the first
    epoch, then again once the time since the last drawing is at least that drawing's cost / ``share`` (every
    epoch whenever epochs take longer than that, as on a CPU), and always at the end of the run."""

    def __init__(self, share: float = 0.05, clock: Callable[[], float] = time.perf_counter):
        self.share, self.clock = share, clock
        self.due_at: float | None = None  # clock time from which the next drawing is due (None: the first)
        self.drawn = 0  # epochs in the last drawing

    def draw(self, run) -> None:
        start = self.clock()
        plot_curves(run.metrics, run.dir.path / "curves.png", title=run.cfg.run.name or "")
        now = self.clock()
        self.due_at, self.drawn = now + (now - start) / self.share, len(run.metrics)

    def on_epoch_end(self, run, row) -> None:
        if self.due_at is None or self.clock() >= self.due_at:
            self.draw(run)

    def on_end(self, run, summary) -> None:
        if self.drawn != len(run.metrics):
            self.draw(run)


def _mean_curve(runs: list[list[dict[str, Any]]], key: str) -> tuple[list[int], list[float]]:
    """Epoch -> mean of ``key`` over the runs that have it at that epoch."""
    by_epoch: dict[int, list[float]] = {}
    for rows in runs:
        for r in rows:
            if r.get(key) is not None:
                by_epoch.setdefault(int(r["epoch"]), []).append(float(r[key]))
    epochs = sorted(by_epoch)
    return epochs, [float(np.mean(by_epoch[e])) for e in epochs]


def eval_split(series: dict[str, list[list[dict[str, Any]]]]) -> str:
    """``test`` when every run evaluated the test set at >= 2 epochs, else ``val``."""
    runs = [rows for group in series.values() for rows in group]
    has_test = all(sum(r.get("test_acc") is not None for r in rows) >= 2 for rows in runs if rows)
    return "test" if has_test and any(runs) else "val"


def save_figure(fig, path: Path, root: Path | None = None) -> Path:
    """Lay out, write atomically (a new temporary file, rename) and close a figure; returns ``path``. Neither
    ``path`` nor a folder below ``root`` (default: its parent) may be a symbolic link; a failed write (a full
    disk) is a UserError and leaves no temporary file."""
    import os

    from ..errors import UserError
    from ..train.checkpoint import fsync_dir, temp_name
    from ..train.fsguard import ensure_dirs, open_new, refuse_links

    path = Path(path)
    root = Path(root) if root is not None else path.parent
    fig.tight_layout()
    refuse_links(path, root)
    tmp = temp_name(path)
    try:
        ensure_dirs(path.parent, root)
        with open(open_new(tmp), "wb") as fh:
            fig.savefig(fh, dpi=110, format=path.suffix.lstrip(".") or "png")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"cannot write {path}: {exc.strerror or exc}. Free some space or write elsewhere; "
            "files written earlier are unchanged."
        ) from None
    finally:
        plt.close(fig)
    fsync_dir(path.parent)
    return path


def plot_overlay(series: dict[str, list[list[dict[str, Any]]]], curves_path: Path, gap_path: Path) -> str:
    """Overlaid curves of several groups (each the mean over its seeds), to compare regularizers or
    augmentations: ``curves_path`` gets evaluation loss and accuracy vs epoch, ``gap_path`` the training
    loss and the train - evaluation accuracy gap. Returns the evaluation split used (test or val)."""
    split = eval_split(series)
    colors = plt.get_cmap("tab10" if len(series) <= 10 else "tab20").colors
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    fig2, axes2 = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (name, runs) in enumerate(series.items()):
        style = dict(color=colors[i % len(colors)], label=name)
        for ax, key in zip(axes, (f"{split}_loss", f"{split}_acc")):
            ep, ys = _mean_curve(runs, key)
            if ep:
                ax.plot(ep, ys, marker="o" if len(ep) < 25 else None, markersize=3, **style)
        ep, ys = _mean_curve(runs, "train_loss")
        if ep:
            axes2[0].plot(ep, ys, **style)
        gaps = [
            [
                {"epoch": r["epoch"], "gap": r["train_acc"] - r[f"{split}_acc"]}
                for r in rows
                if r.get("train_acc") is not None and r.get(f"{split}_acc") is not None
            ]
            for rows in runs
        ]
        ep, ys = _mean_curve(gaps, "gap")
        if ep:
            axes2[1].plot(ep, ys, **style)
    labels = [
        (axes[0], f"{split} loss"),
        (axes[1], f"{split} accuracy (%)"),
        (axes2[0], "train loss"),
        (axes2[1], f"train acc - {split} acc (points)"),
    ]
    for ax, ylabel in labels:
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes2[1].axhline(0, color="black", lw=0.8)
    for ax in (axes[1], axes2[1]):
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{split} loss and accuracy per epoch (mean over seeds)")
    fig2.suptitle("training loss and generalization gap per epoch")
    save_figure(fig, curves_path)
    save_figure(fig2, gap_path)
    return split
