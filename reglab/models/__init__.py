"""CIFAR ResNets: the builder and its named presets."""

from .resnet import CifarResNet, cifar_resnet
from .zoo import ALIASES, PRESETS, count_params, create, describe, forward_gflops, model_from_config, resolve_name

__all__ = [
    "CifarResNet",
    "cifar_resnet",
    "PRESETS",
    "ALIASES",
    "resolve_name",
    "model_from_config",
    "create",
    "count_params",
    "describe",
    "forward_gflops",
]
