"""Evaluation: loss/accuracy over a loader (optionally with test-time augmentation), per-class accuracy,
confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .distributed import Dist, all_sum


@dataclass
class EvalResult:
    loss: float
    acc: float  # percent
    preds: torch.Tensor | None = None  # predicted class per sample (when requested)
    probs: torch.Tensor | None = None


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, tta: bool = False, shifts: Sequence[Sequence[int]] = ()
) -> torch.Tensor:
    """Logits of the views ``train.tta`` and ``train.tta_shifts`` name: ``m(v)`` is the model's logits of a view,
    with ``tta`` the mean of them and of its mirror image's. Without shifts, ``m(x)``; with n shifts
    ``(dx, dy)``, ``0.5 * m(x) + (0.5 / n) * sum_i m(x_i)``, where ``x_i`` is the image seen through a window
    moved by ``(dx, dy)`` px (reflect padding). airbench's (Jordan, 2024) six views: tta, shifts (-1,-1), (1,1)."""

    def mirrored(v: torch.Tensor) -> torch.Tensor:
        out = model(v).float()
        return 0.5 * (out + model(v.flip(3)).float()) if tta else out

    out = mirrored(x)
    if shifts:
        h, w = x.shape[2], x.shape[3]
        p = max(abs(d) for shift in shifts for d in shift)
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        shifted = None
        for dx, dy in shifts:
            view = mirrored(padded[:, :, p + dy : p + dy + h, p + dx : p + dx + w])
            shifted = view if shifted is None else shifted + view
        out = 0.5 * out + (0.5 / len(shifts)) * shifted
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    *,
    tta: bool = False,
    shifts: Sequence[Sequence[int]] = (),
    autocast=None,
    keep: bool = False,
) -> EvalResult:
    """Mean cross-entropy and accuracy of ``model`` over ``loader``; sums stay on the device until the end."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=loader.device, dtype=torch.float64)
    correct = torch.zeros((), device=loader.device, dtype=torch.int64)
    n = 0
    preds, probs = [], []
    for x, y in loader:
        if autocast is not None:
            with autocast():
                logits = predict_logits(model, x, tta, shifts)
        else:
            logits = predict_logits(model, x, tta, shifts)
        logits = logits.float()  # loss, softmax and calibration in fp32 whatever the forward's precision
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        pred = logits.argmax(1)
        correct += (pred == y).sum()
        n += len(y)
        if keep:
            preds.append(pred.cpu())
            probs.append(logits.softmax(1).cpu())
    model.train(was_training)
    result = EvalResult(loss_sum.item() / max(n, 1), 100.0 * correct.item() / max(n, 1))
    if keep:
        result.preds, result.probs = torch.cat(preds), torch.cat(probs)
    return result


def evaluate_splits(
    targets: list[tuple[str, Callable]],
    loaders: dict[str, Any],
    dist: Dist,
    *,
    tta: bool = False,
    shifts: Sequence[Sequence[int]] = (),
    autocast=None,
) -> dict[str, float | None]:
    """``{prefix}{split}_loss`` and ``{prefix}{split}_acc`` for every target (a metric-name prefix and a model)
    and split (a loader; None: not evaluated, None in the row). Under DDP each rank evaluated its own shard and
    the sums are combined."""
    row: dict[str, float | None] = {}
    for prefix, model in targets:
        for split, loader in loaders.items():
            if loader is None:
                row[f"{prefix}{split}_loss"] = row[f"{prefix}{split}_acc"] = None
                continue
            res = evaluate(model, loader, tta=tta, shifts=shifts, autocast=autocast)
            loss, acc = res.loss, res.acc
            if dist.enabled:
                n = len(loader.labels)
                loss_sum, hits, total = all_sum([loss * n, round(acc * n / 100), n], dist)
                loss, acc = loss_sum / total, 100.0 * hits / total
            row[f"{prefix}{split}_loss"], row[f"{prefix}{split}_acc"] = loss, acc
    return row


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``m[i, j]`` = number of samples of true class i predicted as j."""
    return torch.bincount(labels.cpu() * num_classes + preds.cpu(), minlength=num_classes**2).view(
        num_classes, num_classes
    )


def per_class_accuracy(matrix: torch.Tensor) -> list[float]:
    return (100.0 * matrix.diag().double() / matrix.sum(1).clamp(min=1).double()).tolist()
