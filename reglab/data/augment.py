"""Batch augmentations with per-sample random parameters, run as whole-batch tensor ops on the device.

Every transform is a callable ``t(x, generator) -> x`` on a batch ``x`` of shape B x C x H x W. Transforms in
the loader's ``uint8`` stage see raw pixels (crop, flip, policies); transforms in its ``float`` stage see
normalized images (cutout, erasing). There is no per-image Python loop: random parameters are drawn as
tensors and applied with gathers, masks and ``torch.where``.
"""
from __future__ import annotations

import torch


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


class RandomFlip:
    """Horizontal flip of each sample independently with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        flip = torch.rand(x.shape[0], generator=gen, device=x.device) < self.p
        return torch.where(flip[:, None, None, None], x.flip(3), x)


def build_uint8_transforms(aug) -> list:
    """The raw-pixel stage of the training pipeline from an :class:`~reglab.config.AugConfig`."""
    out = []
    if aug.crop_pad > 0:
        out.append(RandomCrop(aug.crop_pad, aug.pad_mode))
    if aug.flip:
        out.append(RandomFlip(0.5))
    return out
