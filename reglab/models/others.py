"""Comparison models that are not CIFAR ResNets: VGG with batch norm, ResNeXt and DenseNet-BC for 32px images.

The mixup experiments compare against these (mixup on PreAct ResNet-18, DenseNet-BC-190 and ResNeXt-29 8x64d;
loss landscapes on VGG-11). Wide ResNets need no code here: WRN-28-10 is a preset of the
CIFAR ResNet builder (``wrn28_10`` in zoo.py). Each network is a few small modules composed the same way as
reglab/models/resnet.py: convs without bias before batch norm (except VGG, see :class:`VGG`), Kaiming-normal
(fan-out) conv init, ``forward_features`` -> ``forward_head`` with global average pooling, optional dropout
before the classifier (``dropout``, the same meaning as ``model.dropout`` for the ResNets).

Named presets (zoo.py) and their parameter counts (10 classes; tests/models/test_others.py, docs/models.md):
``vgg11_bn`` 9,231,114; ``resnext29_8x64d`` 34,426,698; ``densenet_bc_190_40`` 25,624,430.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .resnet import kaiming_init


def conv_bn_relu(
    cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, bias: bool = False, relu: bool = True
) -> nn.Sequential:
    """Post-activation unit: KxK conv (same padding) -> BN -> ReLU (ReLU left out with ``relu=False``)."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def bn_relu_conv(cin: int, cout: int, k: int) -> nn.Sequential:
    """Pre-activation unit: BN -> ReLU -> KxK conv (same padding, no bias), DenseNet's composite function."""
    return nn.Sequential(
        nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, k, 1, k // 2, bias=False)
    )


class Classifier(nn.Module):
    """Shared head: global average pool -> dropout -> Linear."""

    def __init__(self, features: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(self.dropout(x))


class Net(nn.Module):
    """``features`` (a module mapping images to a feature map with ``num_features`` channels) + :class:`Classifier`."""

    num_features: int

    def _init(self) -> None:
        kaiming_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ----------------------------------------------------------------------------------------------------------
# VGG

VGG11: list[Union[int, str]] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG(Net):
    """Simonyan & Zisserman, *Very Deep Convolutional Networks for Large-Scale Image Recognition* (ICLR 2015),
    configuration A (VGG-11), with batch norm after every conv (Ioffe & Szegedy, 2015), as CIFAR code uses it.

    ``layers``: an int is a 3x3 conv (stride 1, padding 1) -> BN -> ReLU with that many output channels, "M" a
    2x2 max pool. For 32px images five pools leave a 1x1x512 map, so the ImageNet head (three fully connected
    layers of 4096) is replaced, as in kuangliu/pytorch-cifar, by a single Linear(512, num_classes) (global
    average pooling is the identity on a 1x1 map; it lets smaller configurations or inputs work too). The
    convs keep their bias, as kuangliu's and torchvision's vgg11_bn do, although batch norm cancels it (2,752
    redundant parameters in VGG-11), so the parameter count matches the code the CIFAR papers used:
    9,231,114 with 10 classes.
    """

    def __init__(
        self,
        layers: Sequence[Union[int, str]] = VGG11,
        num_classes: int = 10,
        dropout: float = 0.0,
        in_channels: int = 3,
    ):
        super().__init__()
        mods, c = [], in_channels
        for v in layers:
            if v == "M":
                mods.append(nn.MaxPool2d(2, 2))
            else:
                mods.append(conv_bn_relu(c, int(v), 3, bias=True))
                c = int(v)
        self.features = nn.Sequential(*mods)
        self.head = Classifier(c, num_classes, dropout)
        self.num_features = c
        self._init()
        for m in self.modules():  # zero the redundant conv biases (BN removes them anyway)
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------------------
# ResNeXt


class ResNeXtBlock(nn.Module):
    """Xie et al.'s aggregated residual transformation in its grouped-conv form (their Fig. 3c): 1x1 conv to
    ``group_width`` = cardinality x bottleneck width, 3x3 conv with ``cardinality`` groups (carrying the
    stride), 1x1 conv to ``cout``; BN after each conv, ReLU after the first two and after the residual sum.
    The shortcut is a 1x1 projection + BN when the shape changes, else the identity."""

    def __init__(self, cin: int, cout: int, group_width: int, cardinality: int, stride: int):
        super().__init__()
        self.branch = nn.Sequential(
            conv_bn_relu(cin, group_width, 1),
            conv_bn_relu(group_width, group_width, 3, stride, groups=cardinality),
            conv_bn_relu(group_width, cout, 1, relu=False),
        )
        self.shortcut = (
            conv_bn_relu(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + self.shortcut(x), inplace=True)


class ResNeXt(Net):
    """Xie et al., *Aggregated Residual Transformations for Deep Neural Networks* (CVPR 2017), CIFAR version
    (their Sec. 5.3): a 3x3 conv stem of ``stem_width`` (64), then ``len(blocks)`` stages of ``blocks[i]``
    bottleneck blocks with output widths ``widths`` (256, 512, 1024); stages after the first halve the
    resolution. The grouped width of stage i is ``cardinality * base_width * widths[i] // widths[0]``, i.e. the
    bottleneck width per group ("d") starts at ``base_width`` and doubles with the output width. ResNeXt-29
    (8x64d): blocks (3, 3, 3), cardinality 8, base width 64 -- 9 blocks x 3 convs + stem + classifier = 29
    layers, 34,426,698 parameters with 10 classes (the paper: 34.4M)."""

    def __init__(
        self,
        blocks: Sequence[int] = (3, 3, 3),
        widths: Sequence[int] = (256, 512, 1024),
        cardinality: int = 8,
        base_width: int = 64,
        stem_width: int = 64,
        num_classes: int = 10,
        dropout: float = 0.0,
        in_channels: int = 3,
    ):
        super().__init__()
        if len(blocks) != len(widths):
            raise ValueError(f"blocks {list(blocks)} and widths {list(widths)} need the same length")
        mods, c = [conv_bn_relu(in_channels, stem_width, 3)], stem_width
        for s, (n, w) in enumerate(zip(blocks, widths)):
            group_width = cardinality * base_width * w // widths[0]
            for j in range(n):
                mods.append(ResNeXtBlock(c, w, group_width, cardinality, 2 if s > 0 and j == 0 else 1))
                c = w
        self.features = nn.Sequential(*mods)
        self.head = Classifier(c, num_classes, dropout)
        self.num_features = c
        self._init()


# ----------------------------------------------------------------------------------------------------------
# DenseNet-BC


class DenseLayer(nn.Module):
    """One DenseNet-BC layer: BN-ReLU-1x1 conv to ``4 * growth_rate`` (the "B", bottleneck), BN-ReLU-3x3 conv to
    ``growth_rate``; its output is concatenated to its input."""

    def __init__(self, cin: int, growth_rate: int):
        super().__init__()
        self.body = nn.Sequential(
            bn_relu_conv(cin, 4 * growth_rate, 1), bn_relu_conv(4 * growth_rate, growth_rate, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


class Transition(nn.Sequential):
    """Between dense blocks: BN-ReLU-1x1 conv to ``cout`` (the "C", compression) and a 2x2 average pool."""

    def __init__(self, cin: int, cout: int):
        super().__init__(*bn_relu_conv(cin, cout, 1), nn.AvgPool2d(2))


class DenseNet(Net):
    """Huang et al., *Densely Connected Convolutional Networks* (CVPR 2017), DenseNet-BC for CIFAR: a 3x3 conv
    to ``2 * growth_rate`` channels, three dense blocks of n = (depth - 4) / 6 bottleneck layers (each adds
    ``growth_rate`` channels), two transitions that multiply the channels by ``compression`` (floor) and halve
    the resolution, then BN-ReLU, global average pool and the classifier. DenseNet-BC-190 (k = 40): n = 31,
    25,624,430 parameters with 10 classes (the paper: 25.6M). The paper's dropout after each conv (used only
    without data augmentation) is not implemented; ``dropout`` acts before the classifier."""

    def __init__(
        self,
        depth: int = 190,
        growth_rate: int = 40,
        compression: float = 0.5,
        num_classes: int = 10,
        dropout: float = 0.0,
        in_channels: int = 3,
    ):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"DenseNet-BC depth must be 6n + 4 with n >= 1, got {depth}")
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        n = (depth - 4) // 6
        c = 2 * growth_rate
        mods: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)]
        for b in range(3):
            for _ in range(n):
                mods.append(DenseLayer(c, growth_rate))
                c += growth_rate
            if b < 2:
                mods.append(Transition(c, int(c * compression)))
                c = int(c * compression)
        mods += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]  # pre-activation nets end with BN-ReLU
        self.features = nn.Sequential(*mods)
        self.head = Classifier(c, num_classes, dropout)
        self.num_features = c
        self._init()
