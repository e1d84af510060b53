"""CIFAR ResNets: the builder and its named presets."""

from .resnet import CifarResNet, cifar_resnet
from .zoo import ALIASES, PRESETS, build, count_params, create, describe, forward_gflops, resolve_name

__all__ = [
    "CifarResNet",
    "cifar_resnet",
    "PRESETS",
    "ALIASES",
    "resolve_name",
    "build",
    "create",
    "count_params",
    "describe",
    "forward_gflops",
]
