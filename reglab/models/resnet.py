"""The CIFAR ResNet builder: one network family, every variant a keyword.

He et al., *Deep Residual Learning for Image Recognition* (2016) -- basic and bottleneck blocks,
``y = act(F(x) + S(x))``; He et al., *Identity Mappings in Deep Residual Networks* (2016) -- pre-activation
blocks, ``y = x + F(act(BN(x)))``. Its design variables (the letters docs/models.md uses): N stages
(``len(blocks)``), B blocks per stage, C channels per stage, conv kernel F, skip-connection kernel K, final
average-pool size P. The stem is a 3x3 conv, stride 1 by default (32px inputs need no ImageNet stem;
``stem_stride=2`` trades resolution for speed); stage i > 0 halves the resolution.

ResNet-D (He et al., *Bag of Tricks*, 2019): deep 3-conv stem and average-pool shortcuts; the stride of a
bottleneck already sits on its 3x3 conv. Regularizers hook in here as options: squeeze-and-excitation (Hu et al., 2018; ``torchvision.ops.
SqueezeExcitation``), stochastic depth (Huang et al., 2016; ``torchvision.ops.StochasticDepth`` in "row" mode,
survival probability decaying linearly to ``1 - drop_path``), dropout before the classifier, and dropout in
place of the residual branch's batch norms (``bn_dropout=[p1, p2]``, one rate per conv of the block; a
projection shortcut keeps its batch norm).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": partial(nn.ReLU, inplace=True),
    "gelu": nn.GELU,
    "silu": partial(nn.SiLU, inplace=True),
    "elu": partial(nn.ELU, inplace=True),
    "leaky_relu": partial(nn.LeakyReLU, 0.1, inplace=True),
    "mish": partial(nn.Mish, inplace=True),
}


def kaiming_init(model: nn.Module) -> None:
    """He et al. (2015) normal init (fan-out) for convolutions; batch norms start as the identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class PadShortcut(nn.Module):
    """He et al.'s option A: subsample spatially and zero-pad the new channels (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


def shortcut(cin: int, cout: int, stride: int, kind: str, k: int, norm: bool, avg_down: bool = False) -> nn.Module:
    """Identity when shapes match; else a KxK projection conv (+BN unless pre-activation) or option A.
    ``avg_down`` (ResNet-D, He et al., *Bag of Tricks*, 2019): 2x2 average pool, then a stride-1 projection,
    so the shortcut sees every input pixel instead of one in four."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    if kind == "pad":
        if cout < cin:
            raise ValueError(
                f"an option-A (pad) shortcut cannot reduce {cin} channels to {cout}; widen the stage "
                "or use model.shortcut=conv"
            )
        return PadShortcut(cin, cout, stride)
    if avg_down and stride > 1:
        layers = [nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False), conv(cin, cout, k)]
    else:
        layers = [conv(cin, cout, k, stride)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    return nn.Sequential(*layers)


class Block(nn.Module):
    """Residual block, basic (two FxF convs) or bottleneck (1x1, FxF, 1x1 with ``expansion``), post- or
    pre-activation, with optional SE on the residual branch and stochastic depth."""

    def __init__(
        self,
        cin: int,
        width: int,
        stride: int,
        *,
        bottleneck: bool,
        expansion: int,
        preact: bool,
        act: Callable[[], nn.Module],
        k: int,
        skip: str,
        skip_k: int,
        se_ratio: float | None,
        drop_path: float,
        avg_down: bool = False,
        bn_dropout: Sequence[float] | None = None,
    ):
        super().__init__()
        cout = width * expansion if bottleneck else width
        self.preact = preact
        if bottleneck:
            shapes = [(cin, width, 1, 1), (width, width, k, stride), (width, cout, 1, 1)]
        else:
            shapes = [(cin, width, k, stride), (width, cout, k, 1)]
        self.convs = nn.ModuleList(conv(a, b, kk, s) for a, b, kk, s in shapes)
        norm_ch = [a for a, *_ in shapes] if preact else [b for _, b, *_ in shapes]
        if bn_dropout is not None:  # no batch norm in the residual branch: dropout where each one would be
            if len(bn_dropout) != len(shapes):
                raise ValueError(
                    f"bn_dropout needs {len(shapes)} rates for a {'bottleneck' if bottleneck else 'basic'}"
                    f" block, got {list(bn_dropout)}"
                )
            self.norms = nn.ModuleList(nn.Dropout(p) for p in bn_dropout)
        else:
            self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in norm_ch)
        self.acts = nn.ModuleList(act() for _ in shapes)
        if se_ratio or drop_path > 0:  # torchvision (~1.8 s to import here) only for models using it
            from torchvision.ops import SqueezeExcitation, StochasticDepth
        self.se = SqueezeExcitation(cout, max(1, int(cout * se_ratio))) if se_ratio else nn.Identity()
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path > 0 else nn.Identity()
        self.shortcut = shortcut(cin, cout, stride, skip, skip_k, norm=not preact, avg_down=avg_down)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            out = self.acts[0](self.norms[0](x))
            skip = self.shortcut(out) if not isinstance(self.shortcut, nn.Identity) else x
            for i, c in enumerate(self.convs):
                if i > 0:
                    out = self.acts[i](self.norms[i](out))
                out = c(out)
            return self.drop_path(self.se(out)) + skip
        out = x
        for i, (c, n) in enumerate(zip(self.convs, self.norms)):
            out = n(c(out))
            if i < len(self.convs) - 1:
                out = self.acts[i](out)
        return self.acts[-1](self.drop_path(self.se(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """stem -> stages of residual blocks -> (final BN+act if pre-activation) -> avg pool P -> dropout -> fc."""

    def __init__(
        self,
        blocks: Sequence[int],
        channels: Sequence[int],
        num_classes: int = 10,
        *,
        block: str = "basic",
        preact: bool = False,
        act: str = "relu",
        kernel_size: int = 3,
        skip_kernel: int = 1,
        shortcut: str = "conv",
        pool_size: int | None = None,
        stem_width: int | None = None,
        stem_stride: int = 1,
        expansion: int = 4,
        se_ratio: float | None = None,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        zero_init_residual: bool = False,
        resnet_d: bool = False,
        bn_dropout: Sequence[float] | None = None,
        in_channels: int = 3,
        image_size: int = 32,
    ):
        super().__init__()
        if len(blocks) != len(channels):
            raise ValueError(f"blocks {list(blocks)} and channels {list(channels)} need the same length")
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose from {sorted(ACTIVATIONS)}")
        act_fn = ACTIVATIONS[act]
        bottleneck = block == "bottleneck"
        if resnet_d:  # deep stem: three 3x3 convs (stem_width, stem_width, 2 * stem_width), as timm's 'deep'
            stem_width = stem_width or max(channels[0] // 2, 8)
            widths = [stem_width, stem_width, 2 * stem_width]
        else:
            stem_width = stem_width or channels[0]
            widths = [stem_width]
        layers, c_prev = [], in_channels
        for i, wd in enumerate(widths):
            layers.append(conv(c_prev, wd, 3, stem_stride if i == 0 else 1))
            if not preact or i < len(widths) - 1:
                layers += [nn.BatchNorm2d(wd), act_fn()]
            c_prev = wd
        self.stem = nn.Sequential(*layers)
        stem_width = widths[-1]
        total, idx = sum(blocks), 0
        stages, cin = [], stem_width
        for s, (n, width) in enumerate(zip(blocks, channels)):
            stage = []
            for j in range(n):
                rate = drop_path * idx / max(1, total - 1)  # linear decay rule (Huang et al., 2016)
                blk = Block(
                    cin,
                    width,
                    2 if (s > 0 and j == 0) else 1,
                    bottleneck=bottleneck,
                    expansion=expansion,
                    preact=preact,
                    act=act_fn,
                    k=kernel_size,
                    skip=shortcut,
                    skip_k=skip_kernel,
                    se_ratio=se_ratio,
                    drop_path=rate,
                    avg_down=resnet_d,
                    bn_dropout=bn_dropout,
                )
                stage.append(blk)
                cin, idx = blk.out_channels, idx + 1
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.final = nn.Sequential(nn.BatchNorm2d(cin), act_fn()) if preact else nn.Identity()
        final_size = image_size // stem_stride // 2 ** (len(blocks) - 1)
        self.pool_size = pool_size or final_size
        self.final_size = final_size
        if final_size % self.pool_size:
            raise ValueError(f"pool size {self.pool_size} does not divide the final feature map ({final_size}px)")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(cin * (final_size // self.pool_size) ** 2, num_classes)
        self.num_features = cin
        self._init(zero_init_residual)

    def _init(self, zero_init_residual: bool) -> None:
        kaiming_init(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Block) and m.preact:
                    nn.init.zeros_(m.convs[-1].weight)
                elif isinstance(m, Block) and isinstance(m.norms[-1], nn.BatchNorm2d):
                    nn.init.zeros_(m.norms[-1].weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.final_size:
            x = F.avg_pool2d(x, self.pool_size)
        else:  # a smaller training image (aug.low_res): the same output grid from whatever map is left
            x = F.adaptive_avg_pool2d(x, self.final_size // self.pool_size)
        return self.fc(self.dropout(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def cifar_resnet(
    blocks: Sequence[int] = (3, 5, 3), channels: Sequence[int] = (64, 128, 256), num_classes: int = 10, **options
) -> CifarResNet:
    """Build a CIFAR ResNet; ``options`` are :class:`CifarResNet`'s keyword arguments."""
    return CifarResNet(blocks, channels, num_classes, **options)
