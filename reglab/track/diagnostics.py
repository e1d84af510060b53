"""The train-test (generalization) gap of a run, over epochs and for the final checkpoint.

``gap = train accuracy - held-out accuracy`` (and ``held-out loss - train loss``), per epoch from the run's
metrics rows, against the validation split and, where it was evaluated, the test split.

Caveat, stated on the figure: the *logged* train accuracy and loss are running means over the epoch's
training batches -- augmented, and for mixup/cutmix runs *mixed* (accuracy against the argmax of the soft
target), with the weights changing during the epoch. For mixing runs the logged gap is therefore not
comparable with an ERM run's; :func:`clean_train_gap` (used by ``reglab eval``) measures the final
checkpoint on un-augmented training images instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def gap_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per epoch: ``epoch``, ``acc_gap_val``, ``loss_gap_val``, ``acc_gap_test``, ``loss_gap_test``
    (None where a split was not evaluated that epoch)."""
    out = []
    for r in rows:
        g: dict[str, Any] = {"epoch": r["epoch"]}
        for split in ("val", "test"):
            acc, loss = r.get(f"{split}_acc"), r.get(f"{split}_loss")
            g[f"acc_gap_{split}"] = None if acc is None or r.get("train_acc") is None else r["train_acc"] - acc
            g[f"loss_gap_{split}"] = (
                None if loss is None or r.get("train_loss") is None else loss - r["train_loss"]
            )
        out.append(g)
    return out


def clean_train_gap(
    train_acc: float, train_loss: float, split_acc: float, split_loss: float, split: str, images: int
) -> dict[str, Any]:
    """The final checkpoint's gap measured on ``images`` un-augmented training images (no mixing)."""
    return {
        "train_images": images,
        "train_acc_clean": round(train_acc, 3),
        "train_loss_clean": round(train_loss, 5),
        f"{split}_acc": round(split_acc, 3),
        f"{split}_loss": round(split_loss, 5),
        "acc_gap": round(train_acc - split_acc, 3),
        "loss_gap": round(split_loss - train_loss, 5),
    }


def plot_gap(rows: list[dict[str, Any]], path: str | Path, title: str = "", mixed: bool = False) -> Path:
    """Accuracy per epoch (train as logged, val, test) above, the gaps below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .plots import save_figure

    path = Path(path)
    gaps = gap_rows(rows)
    epochs = np.array([r["epoch"] for r in rows])
    fig, (ax, gx) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    for key, style in (("train_acc", "-"), ("val_acc", "-"), ("test_acc", "o")):
        pts = [(e, r[key]) for e, r in zip(epochs, rows) if r.get(key) is not None]
        if pts:
            ax.plot(
                *zip(*pts),
                style,
                label=key.replace("_acc", "")
                + (" (logged, mixed batches)" if key == "train_acc" and mixed else ""),
            )
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    for key, style in (("acc_gap_val", "-"), ("acc_gap_test", "o")):
        pts = [(g["epoch"], g[key]) for g in gaps if g[key] is not None]
        if pts:
            gx.plot(*zip(*pts), style, label=f"train - {key.rsplit('_', 1)[1]}")
    gx.axhline(0, color="black", linewidth=0.8)
    gx.set_xlabel("epoch")
    gx.set_ylabel("accuracy gap (points)")
    gx.xaxis.set_major_locator(MaxNLocator(integer=True))
    gx.grid(alpha=0.3)
    gx.legend(fontsize=8)
    note = "train = running mean over the epoch's augmented" + (" and mixed" if mixed else "") + " batches"
    fig.suptitle((title + "\n" if title else "") + note, fontsize=9)
    return save_figure(fig, path)
