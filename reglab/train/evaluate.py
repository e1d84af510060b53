"""Evaluation: loss/accuracy over a loader (optionally with flip TTA), per-class accuracy, confusion matrix."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class EvalResult:
    loss: float
    acc: float  # percent
    preds: torch.Tensor | None = None  # predicted class per sample (when requested)
    probs: torch.Tensor | None = None


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Logits, or with ``tta`` the mean of the logits of the image and its mirror image."""
    out = model(x).float()
    if tta:
        out = 0.5 * (out + model(x.flip(3)).float())
    return out


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, tta: bool = False, autocast=None, keep: bool = False) -> EvalResult:
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
                logits = predict_logits(model, x, tta)
        else:
            logits = predict_logits(model, x, tta)
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


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``m[i, j]`` = number of samples of true class i predicted as j."""
    return torch.bincount(labels.cpu() * num_classes + preds.cpu(), minlength=num_classes ** 2).view(
        num_classes, num_classes)


def per_class_accuracy(matrix: torch.Tensor) -> list[float]:
    return (100.0 * matrix.diag().double() / matrix.sum(1).clamp(min=1).double()).tolist()
