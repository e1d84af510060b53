"""CIFAR ResNets: the builder and its named presets."""

from .resnet import CifarResNet, cifar_resnet
from .zoo import PRESETS, build, count_params, create, describe, forward_gflops

__all__ = [
    "CifarResNet",
    "cifar_resnet",
    "PRESETS",
    "build",
    "create",
    "count_params",
    "describe",
    "forward_gflops",
]
