"""A time-to-accuracy network: whitened 2x2 stem, then conv -> max-pool -> BN -> GELU groups (no residuals).

The design line of Page's "How to train your ResNet" (2018, the DAWNBench ResNet-9), tysam-code's
hlb-CIFAR10 and Jordan's airbench (2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"), rebuilt from their
published descriptions with reglab's components:

* **Whitening stem.** A frozen 2x2 conv (no padding) of ``2 * 3 * 2 * 2 = 24`` filters: the eigenvectors ``v_i``
  of the covariance ``S = E[p p^T]`` of 2x2 training patches ``p``, scaled to unit variance,
  ``w_i = v_i / sqrt(lambda_i + eps)``, and their negatives (so a GELU after it keeps both signs). Set from the
  training images by :meth:`FastNet.init_from_data`, which the run's builder (:mod:`reglab.train.components`)
  calls before the first step when a model has it. Its bias (``whiten.bias``) trains; airbench trains it for the
  first 3 epochs only: ``train.freeze: [{match: whiten.bias, start_epoch: 3}]``.
* **Groups.** ``conv3x3 -> maxpool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU`` per width in ``channels``
  (``convs`` convs per group), then a max-pool over what is left, a bias-free linear head and a fixed
  ``logit_scale`` (1/9 in airbench; it tempers the logits the head starts with).
* **Identity init.** Each 3x3 conv starts as a Dirac identity on its first ``min(cin, cout)`` filters plus
  PyTorch's default uniform init elsewhere, so the untrained net passes its input through.
* **Batch norm** without a learnable scale (gamma fixed at 1, as airbench), eps 1e-12, running-stat momentum
  ``bn_momentum`` (torch convention: weight of the new batch; 0.4 = airbench's 0.6 in Keras convention). Pair it
  with a large lr for the BN biases (``optim.param_groups: [{match: norm, lr_scale: 64, wd_scale: 0.015625}]``)
  as airbench does.

Forward FLOPs per image: 0.24 G for the 64/256/256 widths (airbench94's), 0.06 G at 32/128/128.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class FrozenScaleBN(nn.BatchNorm2d):
    """BatchNorm2d whose scale stays 1 (``weight.requires_grad = False``); only the shift is learned."""

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


def dirac_conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    """A bias-free KxK same-padding conv initialized to identity on its first ``min(cin, cout)`` filters."""
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(cin, cout)])
    return conv


class ConvGroup(nn.Module):
    """``conv -> maxpool(2) -> BN -> act``, then ``convs - 1`` times ``conv -> BN -> act``."""

    def __init__(self, cin: int, cout: int, convs: int = 2, bn_momentum: float = 0.4, act: str = "gelu"):
        super().__init__()
        self.conv1 = dirac_conv(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBN(cout, bn_momentum)
        self.rest = nn.ModuleList(
            [
                nn.ModuleDict({"conv": dirac_conv(cout, cout), "norm": FrozenScaleBN(cout, bn_momentum)})
                for _ in range(convs - 1)
            ]
        )
        self.act = nn.GELU() if act == "gelu" else nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        for layer in self.rest:
            x = self.act(layer["norm"](layer["conv"](x)))
        return x


def patch_whitening(images: torch.Tensor, kernel: int, eps: float = 5e-4) -> torch.Tensor:
    """Filters ``[W; -W]`` (``2 * c*k*k`` x c x k x k) whose rows ``W_i = v_i / sqrt(lambda_i + eps)`` whiten
    the ``k x k`` patches of ``images`` (N x c x H x W, normalized): ``v_i, lambda_i`` are the eigenvectors and
    eigenvalues of the patch covariance ``E[p p^T]``, largest first."""
    c = images.shape[1]
    patches = images.float().unfold(2, kernel, 1).unfold(3, kernel, 1)  # N c H' W' k k
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel).double()
    cov = patches.T @ patches / len(patches)
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    eigvals, eigvecs = eigvals.flip(0), eigvecs.flip(1)
    w = (eigvecs.T / torch.sqrt(eigvals.clamp(min=0) + eps)[:, None]).reshape(-1, c, kernel, kernel)
    return torch.cat([w, -w]).float()


class FastNet(nn.Module):
    """See the module docstring. ``channels``: width of each group; ``convs``: convs per group."""

    def __init__(
        self,
        num_classes: int = 10,
        channels: Sequence[int] = (64, 256, 256),
        convs: int = 2,
        whiten_kernel: int = 2,
        bn_momentum: float = 0.4,
        logit_scale: float = 1 / 9,
        act: str = "gelu",
        dropout: float = 0.0,
    ):
        super().__init__()
        width = 2 * 3 * whiten_kernel**2
        self.whiten = nn.Conv2d(3, width, whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        self.act = nn.GELU() if act == "gelu" else nn.ReLU(inplace=True)
        widths = [width, *channels]
        self.groups = nn.Sequential(
            *[ConvGroup(widths[i], widths[i + 1], convs, bn_momentum, act) for i in range(len(channels))]
        )
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(channels[-1], num_classes, bias=False)
        self.logit_scale = logit_scale
        self.whitened = False  # set by init_from_data; until then the stem is PyTorch's random init

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening stem from normalized training images (a few thousand suffice)."""
        w = patch_whitening(images, self.whiten.kernel_size[0])
        self.whiten.weight.copy_(w.to(self.whiten.weight.device, self.whiten.weight.dtype))
        self.whitened = True

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.act(self.whiten(x)))
        return F.adaptive_max_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(x))) * self.logit_scale
