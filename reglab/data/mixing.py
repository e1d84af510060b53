"""Mixing methods: a batch and its labels in, mixed images and *soft* targets out.

* mixup (Zhang et al., *mixup: Beyond Empirical Risk Minimization*, 2018):
  ``x = lam * x_i + (1 - lam) * x_j``, ``y = lam * y_i + (1 - lam) * y_j``, ``lam ~ Beta(alpha, alpha)``,
  one ``lam`` per batch or one per sample, partner ``j`` a random permutation.
* CutMix (Yun et al., 2019): paste a box of ``x_j`` into ``x_i``; the box has area ``(1 - lam) * H * W``,
  a uniformly random centre, is clipped to the image, and ``lam`` is corrected to the area actually kept.
* Decoupled mixing (after Liang et al., *Understanding Mixup Training Methods*, 2018): images mixed with
  ``lam_x``, labels with ``lam_y``, each from ``Beta(alpha, alpha)`` or ``Uniform(l1, l2)`` or tied
  (``lam_y = lam_x``).

The pure functions :func:`mixup` and :func:`cutmix` take the partner permutation, ratios and boxes as
arguments (so they can be checked against torchvision's ``v2.MixUp`` / ``v2.CutMix``); :class:`Mixer` draws
them on the device from the loader's generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import MixConfig
from .augment import box_masks


def one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(y.long(), num_classes).float() if y.dtype in (torch.int64, torch.int32) else y


def _per_sample(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v.view(-1, *([1] * (x.ndim - 1))) if v.ndim else v


def mixup(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam_x, lam_y=None):
    """Mix ``x`` with ``x[perm]`` by ``lam_x`` and soft targets ``y`` with ``y[perm]`` by ``lam_y``
    (default: tied). ``lam_x``/``lam_y`` are scalars or one value per sample."""
    lam_y = lam_x if lam_y is None else lam_y
    xm = torch.lerp(x[perm], x, _per_sample(lam_x, x))
    ym = torch.lerp(y[perm], y, _per_sample(lam_y, y))
    return xm, ym


def cutmix(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, boxes: torch.Tensor):
    """Paste ``boxes`` (B x 4 or 1 x 4: y0, y1, x0, x1) of ``x[perm]`` into ``x``; targets weighted by the
    area each image keeps (the corrected lambda). Returns (images, targets, lam)."""
    h, w = x.shape[-2:]
    mask = box_masks(boxes, h, w)
    xm = torch.where(mask, x[perm], x)
    area = ((boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])).to(y.dtype)
    lam = 1 - area / (h * w)
    ym = torch.lerp(y[perm], y, _per_sample(lam if len(boxes) > 1 else lam[0], y))
    return xm, ym, lam


def sample_boxes(lam: torch.Tensor, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Boxes with area ~ ``(1 - lam) * h * w`` (side ratio sqrt(1 - lam)), uniform centre, clipped."""
    n = lam.numel()
    cut = torch.sqrt(1 - lam)
    ch, cw = (cut * h).long(), (cut * w).long()
    cy = torch.randint(0, h, (n,), generator=gen, device=lam.device)
    cx = torch.randint(0, w, (n,), generator=gen, device=lam.device)
    return torch.stack(
        [
            (cy - ch // 2).clamp(0, h),
            (cy + ch // 2).clamp(0, h),
            (cx - cw // 2).clamp(0, w),
            (cx + cw // 2).clamp(0, w),
        ],
        1,
    )


def sample_beta(alpha: float, n: int, gen: torch.Generator, device) -> torch.Tensor:
    """``Beta(alpha, alpha)`` as ``G1 / (G1 + G2)`` of two Gamma(alpha) draws, computed from log-Gammas
    (``sigmoid(log G1 - log G2)``) so that small alphas, whose Gammas underflow float32, stay finite.
    (``torch._standard_gamma`` takes no generator, hence :func:`_log_gamma`.)"""
    a = torch.full((2, n), float(alpha), device=device)
    lg = _log_gamma(a, gen)
    return torch.sigmoid(lg[0] - lg[1])


def _log_gamma(a: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """log of Gamma(a, 1) samples by Marsaglia & Tsang (2000), vectorized, with the a < 1 boost
    ``G(a) = G(a + 1) * U^(1/a)`` applied in log space; 8 proposals per sample (acceptance > 95% each),
    falling back to the mean in the astronomically rare all-rejected case."""
    boost = a < 1
    a1 = torch.where(boost, a + 1, a)
    d = a1 - 1.0 / 3
    c = 1.0 / torch.sqrt(9 * d)
    k = 8
    z = torch.randn((k, *a.shape), generator=gen, device=a.device)
    u = torch.rand((k, *a.shape), generator=gen, device=a.device)
    v = (1 + c * z) ** 3
    ok = (v > 0) & (torch.log(u.clamp_min(1e-30)) < 0.5 * z**2 + d - d * v + d * torch.log(v.clamp_min(1e-30)))
    first = ok.float().argmax(0, keepdim=True)
    sample = torch.where(ok.any(0), (d * v).gather(0, first)[0], a1)
    log_sample = torch.log(sample)
    u2 = torch.rand(a.shape, generator=gen, device=a.device).clamp_min(1e-38)
    return torch.where(boost, log_sample + torch.log(u2) / a, log_sample)


class Mixer:
    """``mixer(x, y, gen) -> (x, soft_targets)`` for a normalized float batch and integer labels.

    Args:
        num_classes: K, for the one-hot targets.
        mixup_alpha / cutmix_alpha: Beta parameters; 0 disables that method. With both > 0, each batch
            uses cutmix with probability ``switch_prob``, else mixup.
        prob: probability that a batch is mixed at all.
        per_sample: one ratio (and one cutmix box) per sample instead of one per batch.
        lam_x / lam_y: decoupled mixup, the image ratio and the label ratio drawn separately:
            ``("beta", alpha)`` (the default, with ``mixup_alpha``), ``("uniform", (l1, l2))`` or
            ``("fixed", v)``; ``lam_y=None`` ties the label ratio to the image ratio.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        switch_prob: float = 0.5,
        prob: float = 1.0,
        per_sample: bool = False,
        lam_x: tuple | None = None,
        lam_y: tuple | None = None,
    ):
        self.k = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.switch_prob, self.prob, self.per_sample = switch_prob, prob, per_sample
        self.lam_x = lam_x or ("beta", mixup_alpha)
        self.lam_y = lam_y

    def _ratio(self, spec: tuple, n: int, gen: torch.Generator, device) -> torch.Tensor:
        kind, arg = spec
        if kind == "beta":
            return sample_beta(arg, n, gen, device)
        if kind == "uniform":
            lo, hi = arg
            return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)
        return torch.full((n,), float(arg), device=device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        """Mixed batch and soft targets. Coin flips stay on the device (``torch.where``), so there is no
        host sync; with both methods on, both are computed and one is kept (cheap next to the model)."""
        dev = x.device
        y = one_hot(y, self.k)
        perm = torch.randperm(len(x), generator=gen, device=dev)
        n = len(x) if self.per_sample else 1
        outs = []
        if self.mixup_alpha > 0 or self.lam_x[0] != "beta":
            lam_x = self._ratio(self.lam_x, n, gen, dev)
            lam_y = None if self.lam_y is None else self._ratio(self.lam_y, n, gen, dev)
            if n == 1:
                lam_x, lam_y = lam_x[0], (None if lam_y is None else lam_y[0])
            outs.append(mixup(x, y, perm, lam_x, lam_y))
        if self.cutmix_alpha > 0:
            lam = sample_beta(self.cutmix_alpha, n, gen, dev)
            xm, ym, _ = cutmix(x, y, perm, sample_boxes(lam, x.shape[-2], x.shape[-1], gen))
            outs.append((xm, ym))
        if not outs:
            return x, y
        xm, ym = outs[0]
        if len(outs) == 2:
            use_cut = torch.rand((), generator=gen, device=dev) < self.switch_prob
            xm, ym = torch.where(use_cut, outs[1][0], xm), torch.where(use_cut, outs[1][1], ym)
        if self.prob < 1:
            apply = torch.rand((), generator=gen, device=dev) < self.prob
            xm, ym = torch.where(apply, xm, x), torch.where(apply, ym, y)
        return xm, ym


def build_mixer(mix: MixConfig, num_classes: int) -> Mixer:
    """The Mixer a ``mix:`` config section describes (decoupled ratios when ``lam_x``/``lam_y`` say so)."""
    lam_x = (
        ("beta", mix.mixup_alpha) if mix.lam_x == "beta" else (mix.lam_x, _ratio_arg(mix.lam_x, mix.lam_x_range))
    )
    lam_y = (
        None
        if mix.lam_y == "tied"
        else (
            ("beta", mix.mixup_alpha)
            if mix.lam_y == "beta"
            else (mix.lam_y, _ratio_arg(mix.lam_y, mix.lam_y_range))
        )
    )
    return Mixer(
        num_classes,
        mix.mixup_alpha,
        mix.cutmix_alpha,
        mix.switch_prob,
        mix.prob,
        mix.per_sample,
        lam_x=lam_x,
        lam_y=lam_y,
    )


def _ratio_arg(kind: str, rng: list[float]):
    return tuple(rng) if kind == "uniform" else rng[0]
