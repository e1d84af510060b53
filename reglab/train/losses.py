"""Cross-entropy on hard or soft targets, label smoothing in two conventions, a clamped-probability form.

* Soft-target cross-entropy: ``L = -mean_i sum_k t_ik log softmax(z_i)_k`` -- what mixup/cutmix targets need
  (Zhang et al., 2018), equal to the paper's two-term ``lam*CE(y1) + (1-lam)*CE(y2)``.
* Label smoothing (Szegedy et al., 2016), ``torch`` convention (as ``F.cross_entropy(label_smoothing=eps)``):
  ``t = (1 - eps) * y + eps / K`` -- the true class gets ``1 - eps + eps/K``.
* Label smoothing, ``others`` convention (eps spread over the wrong classes only): true class ``1 - eps``,
  every other class ``eps / (K-1)``; on a soft target ``t = (1 - eps - eps/(K-1)) * y + eps/(K-1)``.
* ``clamped_ce``: ``-sum t * log(clamp(softmax(z), 1e-5, 1))``, averaged over the batch -- no sample's loss
  exceeds ``-log(1e-5)`` (about 11.5), and a target class predicted below 1e-5 adds no gradient. It reproduces
  a mixup recipe that wrote its loss this way, summed over the batch (the mean only rescales the learning rate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth_targets(targets: torch.Tensor, num_classes: int, eps: float, convention: str = "torch") -> torch.Tensor:
    """Soft targets from integer labels or from soft targets, smoothed by ``eps`` in ``convention``."""
    if targets.dtype in (torch.int64, torch.int32):
        targets = F.one_hot(targets.long(), num_classes).float()
    if eps == 0:
        return targets
    off = eps / num_classes if convention == "torch" else eps / (num_classes - 1)
    on = 1 - eps if convention == "torch" else 1 - eps - off
    return targets * on + off


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def clamped_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logp = F.softmax(logits.float(), dim=1).clamp(1e-5, 1).log()
    return -(targets * logp).sum(1).mean()


class Criterion:
    """``criterion(logits, targets)`` for integer labels or soft targets, with smoothing applied.

    Integer labels with plain CE take PyTorch's fused ``F.cross_entropy`` path (identical result).
    """

    def __init__(
        self, num_classes: int, kind: str = "ce", label_smoothing: float = 0.0, convention: str = "torch"
    ):
        if kind not in ("ce", "clamped_ce"):
            raise ValueError(f"unknown loss {kind!r}")
        self.num_classes, self.kind, self.eps, self.convention = num_classes, kind, label_smoothing, convention

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hard = targets.dtype in (torch.int64, torch.int32)
        if hard:
            targets = targets.long()
        if hard and self.kind == "ce" and (self.eps == 0 or self.convention == "torch"):
            return F.cross_entropy(logits.float(), targets, label_smoothing=self.eps)
        soft = smooth_targets(targets, self.num_classes, self.eps, self.convention)
        fn = soft_cross_entropy if self.kind == "ce" else clamped_cross_entropy
        return fn(logits, soft)
