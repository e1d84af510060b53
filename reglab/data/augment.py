"""Batch augmentations with per-sample random parameters, run as whole-batch tensor ops on the device.

Every transform is a callable ``t(x, generator) -> x`` on a batch ``x`` of shape B x C x H x W. Transforms in
the loader's ``uint8`` stage see raw pixels; transforms in its ``float`` stage see normalized images. There is
no per-image Python loop: random parameters are drawn as tensors and applied with gathers, masks and
``torch.where``. :data:`AUGMENTATIONS` at the end is the one list of them (name, stage, on-condition, builder)
that the config and the loader derive theirs from. The one exception to the signature is an *indexed* transform
(``t.indexed``), which depends on which images a batch holds: the horizontal flip's alternating mode,
:class:`AlternatingFlip`. Both flip modes live here; the loader only applies what :func:`build_transforms` gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from .loader import DeviceLoader


def _reflect_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """Map indices in [-pad, n + pad) onto [0, n) by mirror reflection without repeating the edge."""
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


class RandomCrop:
    """Random ``H x W`` crop of the image padded by ``pad`` pixels on each side (zero or reflect padding).

    The standard CIFAR augmentation (He et al., 2016): offsets ``dy, dx ~ U{0..2*pad}`` per sample. The
    padded image is never materialized: output pixel ``(r, c)`` reads input ``(r + dy - pad, c + dx - pad)``,
    mirrored (reflect) or masked to zero (zero) where it falls outside.
    """

    def __init__(self, pad: int = 4, mode: str = "reflect"):
        if mode not in ("zero", "reflect"):
            raise ValueError(f"pad mode must be 'zero' or 'reflect', got {mode!r}")
        self.pad, self.mode = pad, mode

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.pad == 0:
            return x
        b, c, h, w = x.shape
        offs = torch.randint(0, 2 * self.pad + 1, (2, b, 1), generator=gen, device=x.device) - self.pad
        rows = torch.arange(h, device=x.device) + offs[0]  # B x H
        cols = torch.arange(w, device=x.device) + offs[1]  # B x W
        if self.mode == "reflect":
            rows, cols = _reflect_index(rows, h), _reflect_index(cols, w)
            mask = None
        else:
            mask = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[:, None, None, :]
            rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        out = x[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
        return out * mask if mask is not None else out


def _mirror(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """``x`` with the samples where the boolean vector ``flip`` is true mirrored left-right."""
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class RandomFlip:
    """Horizontal flip of each sample independently with probability ``p`` (``aug.flip_mode=random``)."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return _mirror(x, torch.rand(x.shape[0], generator=gen, device=x.device) < self.p)


class AlternatingFlip:
    """airbench's (Jordan, 2024) derandomized flip (``aug.flip_mode=alternating``): each image of the split gets
    one random bit ``b_i`` and is mirrored in pass ``e`` over the data iff ``b_i XOR (e mod 2)``, so every image
    is seen both ways in any two consecutive epochs.

    An *indexed* transform: it depends on which images a batch holds, not on random draws per batch. The loader
    calls :meth:`bind` once (the bits are the first draw of its generator, so they are restored with it) and
    then ``t(x, gen, idx, epoch)`` with the batch's indices into the split and the pass number. It runs first in
    the raw-pixel stage, wherever ``aug.order`` places the flip (:func:`build_transforms`)."""

    indexed = True

    def __init__(self):
        self.bits: torch.Tensor | None = None

    def bind(self, n: int, generator: torch.Generator) -> None:
        """Draw the bits of a split of ``n`` images from ``generator`` (the loader's, on the data's device)."""
        self.bits = torch.rand(n, generator=generator, device=generator.device) < 0.5

    def __call__(self, x: torch.Tensor, gen: torch.Generator, idx, epoch: int) -> torch.Tensor:
        return _mirror(x, self.bits[idx] ^ (epoch % 2 == 1))


def box_masks(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """B x 1 x H x W boolean masks, True inside each ``(y0, y1, x0, x1)`` box (half-open)."""
    r = torch.arange(h, device=boxes.device).view(1, h, 1)
    c = torch.arange(w, device=boxes.device).view(1, 1, w)
    b = boxes.view(-1, 4, 1, 1)
    inside = (r >= b[:, 0]) & (r < b[:, 1]) & (c >= b[:, 2]) & (c < b[:, 3])
    return inside.unsqueeze(1)


class Cutout:
    """Cutout (DeVries & Taylor, 2017): ``holes`` squares of side ``size`` with uniformly random centres
    (clipped at the border) set to ``value`` -- 0 on normalized images, i.e. the dataset mean colour."""

    def __init__(self, holes: int = 1, size: int = 8, value: float = 0.0, p: float = 1.0):
        self.holes, self.size, self.value, self.p = holes, size, value, p

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        centres = torch.stack(
            [
                torch.randint(0, h, (self.holes, b), generator=gen, device=x.device),
                torch.randint(0, w, (self.holes, b), generator=gen, device=x.device),
            ]
        )
        lo = centres - self.size // 2
        hi = lo + self.size
        mask = torch.zeros(b, 1, h, w, dtype=torch.bool, device=x.device)
        for k in range(self.holes):  # loop over holes (a handful), not images
            boxes = torch.stack([lo[0, k], hi[0, k], lo[1, k], hi[1, k]], 1)
            mask |= box_masks(boxes, h, w)
        if self.p < 1:
            mask &= (torch.rand(b, generator=gen, device=x.device) < self.p).view(b, 1, 1, 1)
        return x.masked_fill(mask, self.value)


class RandomErasing:
    """Random erasing (Zhong et al., 2020) with torchvision's parameters: with probability ``p`` erase a
    rectangle of area ``s * H * W``, ``s ~ U(scale)``, aspect ``r`` log-uniform in ``ratio``; like torchvision,
    up to 10 proposals per image, the first that fits is used (none fits: the image is left alone).
    ``value``: a number, or ``"random"`` for per-pixel standard normal noise."""

    def __init__(
        self, p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value: float | str = 0.0, attempts: int = 10
    ):
        self.p, self.scale, self.ratio, self.value, self.attempts = p, scale, ratio, value, attempts

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        dev, k = x.device, self.attempts
        area = (
            h * w * (self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(b, k, generator=gen, device=dev))
        )
        lo, hi = torch.log(torch.tensor(self.ratio, device=dev))
        ratio = torch.exp(lo + (hi - lo) * torch.rand(b, k, generator=gen, device=dev))
        eh = torch.sqrt(area * ratio).round().long()
        ew = torch.sqrt(area / ratio).round().long()
        fits = (eh < h) & (ew < w)
        first = fits.float().argmax(1, keepdim=True)
        eh, ew = eh.gather(1, first)[:, 0], ew.gather(1, first)[:, 0]
        top = (torch.rand(b, generator=gen, device=dev) * (h - eh + 1)).long()
        left = (torch.rand(b, generator=gen, device=dev) * (w - ew + 1)).long()
        mask = box_masks(torch.stack([top, top + eh, left, left + ew], 1), h, w)
        apply = fits.any(1) & (torch.rand(b, generator=gen, device=dev) < self.p)
        mask &= apply.view(b, 1, 1, 1)
        if self.value == "random":
            noise = torch.randn(x.shape, generator=gen, device=dev, dtype=x.dtype)
            return torch.where(mask, noise, x)
        return x.masked_fill(mask, float(self.value))


class RandomRotation:
    """Rotate each image by its own angle ``~ U(-degrees, degrees)`` about the centre (bilinear, zero fill
    -- the mean colour on normalized images), as one ``affine_grid`` + ``grid_sample`` over the batch."""

    def __init__(self, degrees: float):
        self.degrees = degrees

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        theta = (torch.rand(b, generator=gen, device=x.device) * 2 - 1) * math.radians(self.degrees)
        cos, sin = torch.cos(theta), torch.sin(theta)
        zero = torch.zeros_like(cos)
        mat = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1).to(x.dtype)
        grid = F.affine_grid(mat, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class RandomSolarize:
    """Solarize (PIL's ``ImageOps.solarize``, one of AutoAugment's operations; Cubuk et al., 2019) as an
    augmentation of its own: with probability ``p``, independently per sample, every pixel value
    ``>= threshold`` becomes ``255 - value``, as ``torchvision.transforms.v2.functional.solarize`` does.
    Raw uint8 pixels; ``threshold`` 0 inverts the whole image."""

    def __init__(self, p: float = 0.5, threshold: int = 128):
        self.p, self.threshold = p, threshold

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        pick = torch.rand(x.shape[0], generator=gen, device=x.device) < self.p
        return torch.where(pick[:, None, None, None] & (x >= self.threshold), 255 - x, x)


# ----------------------------------------------------------------------------------------------------------
# The registry. reglab.config derives the aug.order names, their default order, the order's validation and
# AugConfig.enabled() from it; build_transforms the loader's two stages; the preview its title.

UINT8, FLOAT = "uint8", "float"  # raw pixels before normalization / normalized images after it


@dataclass(frozen=True)
class BatchAug:
    """One batch augmentation: ``name`` (its ``aug.order`` entry), ``stage`` (:data:`UINT8` or :data:`FLOAT`),
    ``enabled(aug)`` (does this AugConfig switch it on), ``build(aug)`` (its transform) and ``label(aug)`` (a
    few words for the preview's title)."""

    name: str
    stage: str
    enabled: Callable[[Any], bool]
    build: Callable[[Any], Optional[Callable]]
    label: Callable[[Any], str]


def _policy(aug):
    from .policies import BatchPolicy  # torchvision.transforms.v2 is imported only when a policy is used

    return BatchPolicy(aug.policy, num_ops=aug.ra_num_ops, magnitude=aug.ra_magnitude)


# The order here is the default aug.order.
AUGMENTATIONS: tuple[BatchAug, ...] = (
    BatchAug(
        "crop",
        UINT8,
        lambda a: a.crop_pad > 0,
        lambda a: RandomCrop(a.crop_pad, a.pad_mode),
        lambda a: f"crop pad {a.crop_pad} ({a.pad_mode})",
    ),
    BatchAug(
        "flip",
        UINT8,
        lambda a: a.flip,
        lambda a: RandomFlip(0.5) if a.flip_mode == "random" else AlternatingFlip(),
        lambda a: "flip",
    ),
    BatchAug(
        "policy",
        UINT8,
        lambda a: a.policy is not None,
        _policy,
        lambda a: a.policy + (f" N={a.ra_num_ops} M={a.ra_magnitude}" if a.policy == "randaugment" else ""),
    ),
    BatchAug(
        "solarize",
        UINT8,
        lambda a: a.solarize_p > 0,
        lambda a: RandomSolarize(a.solarize_p, a.solarize_threshold),
        lambda a: f"solarize p={a.solarize_p:g} ≥{a.solarize_threshold}",
    ),
    BatchAug(
        "rotation",
        FLOAT,
        lambda a: a.rotation > 0,
        lambda a: RandomRotation(a.rotation),
        lambda a: f"rotation ±{a.rotation:g}°",
    ),
    BatchAug(
        "cutout",
        FLOAT,
        lambda a: a.cutout_holes > 0,
        lambda a: Cutout(a.cutout_holes, a.cutout_size),
        lambda a: f"cutout {a.cutout_holes}x{a.cutout_size}px",
    ),
    BatchAug(
        "erasing",
        FLOAT,
        lambda a: a.erasing_p > 0,
        lambda a: RandomErasing(
            a.erasing_p,
            tuple(a.erasing_scale),
            tuple(a.erasing_ratio),
            "random" if a.erasing_value == "random" else 0.0,
        ),
        lambda a: f"erasing p={a.erasing_p:g}",
    ),
)
BY_NAME = {a.name: a for a in AUGMENTATIONS}
UINT8_AUGS = tuple(a.name for a in AUGMENTATIONS if a.stage == UINT8)
FLOAT_AUGS = tuple(a.name for a in AUGMENTATIONS if a.stage == FLOAT)


def build_transforms(aug) -> tuple[list, list]:
    """(raw-pixel stage, normalized stage) of the training pipeline from an :class:`~reglab.config.AugConfig`,
    each in the order ``aug.order`` gives; switched-off augmentations are left out. Indexed transforms (the
    alternating flip) come first in their stage, as they always have: a flip and a crop commute in
    distribution, not bit for bit."""
    stages: dict[str, list] = {UINT8: [], FLOAT: []}
    for name in aug.order:
        entry = BY_NAME[name]
        if entry.enabled(aug):
            stages[entry.stage].append(entry.build(aug))
    raw, normalized = (sorted(stages[s], key=lambda t: not getattr(t, "indexed", False)) for s in (UINT8, FLOAT))
    return raw, normalized  # sorted() is stable: the rest keep aug.order


def training_loader(data, aug, batch_size: int, **kwargs) -> DeviceLoader:
    """The training split of ``data`` (:class:`~reglab.data.DataSplits`) as training sees it: shuffled, the last
    short batch dropped, ``aug``'s pipeline (:func:`build_transforms`). ``kwargs`` go to :class:`DeviceLoader`
    (``seed``, ``device``, ``channels_last``, ``rank``, ``world_size``, ...)."""
    raw, normalized = build_transforms(aug)
    return DeviceLoader(
        data.train,
        batch_size,
        data.mean,
        data.std,
        shuffle=True,
        drop_last=True,
        uint8_transforms=raw,
        float_transforms=normalized,
        **kwargs,
    )


def training_size(aug, epochs: int, epoch: int) -> int | None:
    """Side of the training images in (0-based) ``epoch`` of ``epochs`` under progressive resizing:
    ``aug.low_res`` in the first ``aug.low_res_epochs``, but never in the last epoch (the model is evaluated at
    full size, so it ends training there); None = the stored size. What the loop sets as the loader's ``size``."""
    return aug.low_res if aug.low_res and epoch < min(aug.low_res_epochs, epochs - 1) else None
