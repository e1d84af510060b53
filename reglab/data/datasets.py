"""Datasets as uint8 tensors, the stratified validation split, and per-channel statistics.

:func:`load_splits` turns a :class:`~reglab.config.DataConfig` into :class:`DataSplits`: train, validation
(carved from the official training set, stratified, with its own fixed seed) and test. The test set is only
ever *reported*; every choice (best epoch, sweeps) reads the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import DataConfig
from ..errors import UserError
from . import cifar
from .synthetic import make_synthetic


@dataclass
class Split:
    images: torch.Tensor  # uint8, N x 3 x 32 x 32
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataSplits:
    name: str
    classes: list[str]
    train: Split
    val: Split | None
    test: Split
    mean: tuple[float, float, float]  # per channel, 0-1 units, measured on the train split
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def stratified_split(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held) with ``size`` held out, each class in proportion to its count.

    Class quotas use the largest-remainder rule, so the held-out class counts differ by at most one from
    exact proportionality. Both index arrays are sorted.
    """
    n = len(labels)
    if not 0 <= size < n:
        raise UserError(f"data.val_size={size} must be smaller than the {n} training images; lower it.")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / n
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: size - quota.sum()]:
        quota[i] += 1
    held = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and population std (0-1 units) of uint8 images, via 256-bin histograms."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = hist.sum()
        mean = (hist * values).sum() / total
        var = (hist * (values - mean) ** 2).sum() / total
        means.append(round(mean.item(), 6))
        stds.append(round(var.sqrt().item(), 6))
    return tuple(means), tuple(stds)


def load_arrays(cfg: DataConfig):
    """Raw arrays ``(classes, train_x, train_y, test_x, test_y)`` for the configured dataset."""
    if cfg.dataset == "synthetic":
        k = cfg.synthetic_classes
        arrays = make_synthetic(cfg.synthetic_train, cfg.synthetic_test, k, seed=cfg.split_seed)
        return [f"class{i}" for i in range(k)], *arrays
    layout = cifar.LAYOUTS[cfg.dataset]
    folder = cifar.ensure_files(layout, cifar.resolve_root(cfg.dir), download=cfg.download)
    coarse = cfg.dataset == "cifar100" and cfg.cifar100_labels == "coarse"
    key = "labels" if cfg.dataset == "cifar10" else ("coarse_labels" if coarse else "fine_labels")
    k = 20 if coarse else layout.num_classes
    classes = cifar.class_names(layout, folder, coarse=coarse)
    if len(classes) != k:
        raise UserError(
            f"{folder / layout.meta_file} names {len(classes)} classes, expected {k}; the file is corrupt."
        )
    train_x, train_y = cifar.read_split(layout, folder, layout.train_files, key, k, layout.train_rows)
    test_x, test_y = cifar.read_split(layout, folder, layout.test_files, key, k, layout.test_rows)
    return classes, train_x, train_y, test_x, test_y


def load_splits(cfg: DataConfig) -> DataSplits:
    classes, train_x, train_y, test_x, test_y = load_arrays(cfg)
    rest, held = stratified_split(train_y, cfg.val_size, cfg.split_seed)
    if cfg.train_subset is not None and cfg.train_subset < len(rest):
        _, keep = stratified_split(train_y[rest], cfg.train_subset, cfg.split_seed + 1)
        rest = rest[keep]
    as_split = lambda x, y: Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))  # noqa: E731
    train = as_split(train_x[rest], train_y[rest])
    val = as_split(train_x[held], train_y[held]) if len(held) else None
    mean, std = channel_stats(train.images)
    return DataSplits(cfg.dataset, classes, train, val, as_split(test_x, test_y), mean, std)
