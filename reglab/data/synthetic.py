"""A synthetic stand-in for CIFAR with learnable class structure, for tests and quick checks.

Each class owns a smooth random colour pattern (a 4x4x3 grid upsampled to 32x32). An image is its class
pattern, shifted by up to 4 pixels, scaled in contrast, plus Gaussian noise, stored as uint8 like CIFAR. A
small convnet learns it to well above chance in one or two epochs; it is deterministic given the seed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def make_synthetic(n_train: int, n_test: int, num_classes: int = 10, seed: int = 0, noise: float = 40.0):
    """Return ``(train_x, train_y, test_x, test_y)``: uint8 N x 3 x 32 x 32 arrays and int64 labels."""
    gen = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_classes, 3, 4, 4, generator=gen) * 200 + 28
    protos = F.interpolate(protos, size=(40, 40), mode="bicubic", align_corners=False)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=gen)]
        dy, dx = torch.randint(0, 9, (2, n), generator=gen)
        rows = (dy[:, None] + torch.arange(32))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(32))[:, None, None, :]
        base = protos[y[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
        contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen)
        x = (base - 128) * contrast + 128 + noise * torch.randn(n, 3, 32, 32, generator=gen)
        return x.clamp(0, 255).round().to(torch.uint8).numpy(), y.numpy().astype(np.int64)

    train_x, train_y = sample(n_train)
    test_x, test_y = sample(n_test)
    return train_x, train_y, test_x, test_y
