"""Named presets: the CIFAR ResNet builder's, plus the comparison models, with parameter counts and FLOPs.

Each preset is a dict of :func:`~reglab.models.resnet.cifar_resnet` keyword arguments; ``model.*`` config keys
override any of them. ``wrn28_10`` (Zagoruyko & Komodakis, 2016) is a builder preset too: pre-activation basic
blocks reproduce the reference WRN-28-10's 36,479,194 parameters exactly.

Compact ResNets (:data:`COMPACT_RESNETS`): ten CIFAR-10 ResNets of under 5M parameters each, the designs of a
compact-ResNet design study (docs/models.md compares their parameter counts with its table). Their names say
their structure: ``resnet{depth}_b{blocks per stage}_w{width}``, e.g. ``resnet24_b3-5-3_w64`` is 24 layers
deep (stem conv + 2 convs per basic block + classifier), 3 stages of 3, 5 and 3 basic blocks, 64 channels in
the first stage doubling at every stage (64/128/256). They use 3x3 convs, 1x1 projection shortcuts and
global average pooling, and all but one have a stem as wide as their first stage. Their former names still
work (:data:`ALIASES`), so configs and saved runs that use them load unchanged.

The comparison models that are not ResNets (reglab/models/others.py) are in :data:`OTHER_MODELS` and, so that
``reglab models`` lists them, in :data:`PRESETS` too. Their presets carry an ``arch`` key naming the
constructor in :data:`ARCHS` (no ``arch``: the ResNet builder). The ResNet builder's config keys (model.blocks,
model.channels, ...) do not apply to them: :func:`model_from_config` refuses them with a :class:`UserError`, except those
in :data:`ARCH_CONFIG_KEYS` (``model.dropout``, dropout before the classifier). :func:`create` accepts any
keyword of the constructor (e.g. ``growth_rate=4`` for a tiny DenseNet in tests).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..config import ModelConfig
from ..errors import UserError
from . import fastnet, others
from .resnet import cifar_resnet

_W4 = [64, 128, 256, 512]
_W3 = [64, 128, 256]
# The compact (< 5M-parameter) CIFAR-10 ResNets, resnet{depth}_b{blocks per stage}_w{first stage's width}: basic
# blocks, 3x3 convs, 1x1 projection shortcuts, global average pool; widths double at every stage.
COMPACT_RESNETS: dict[str, dict] = {
    "resnet26_b5-4-3_w64": dict(blocks=[5, 4, 3], channels=_W3),
    "resnet28_b6-4-3_w64": dict(blocks=[6, 4, 3], channels=_W3),
    "resnet24_b3-5-3_w64": dict(blocks=[3, 5, 3], channels=_W3),
    "resnet30_b7-4-3_w64": dict(blocks=[7, 4, 3], channels=_W3),
    "resnet90_b16-16-12_w32": dict(blocks=[16, 16, 12], channels=[32, 64, 128]),
    "resnet26_b4-5-3_w64": dict(blocks=[4, 5, 3], channels=_W3),
    "resnet32_b4-4-4-3_w32": dict(blocks=[4, 4, 4, 3], channels=[32, 64, 128, 256]),
    "resnet10_b1-1-1-1_w64": dict(blocks=[1, 1, 1, 1], channels=_W4),
    "resnet12_b2-1-1-1_w64": dict(blocks=[2, 1, 1, 1], channels=_W4),
    # The one whose stem (64) is wider than its first stage (32): only so does it have the published count.
    "resnet56_b16-4-4-3_w32": dict(blocks=[16, 4, 4, 3], channels=[32, 64, 128, 256], stem_width=64),
}
# Parameter counts (10 classes) the design study publishes for them, checked by tests/models/test_zoo.py. All
# match exactly except resnet90_b16-16-12_w32's, which is 928 more than the architecture it describes has
# (docs/models.md).
COMPACT_PUBLISHED_PARAMS: dict[str, int] = {
    "resnet26_b5-4-3_w64": 4771146,
    "resnet28_b6-4-3_w64": 4845130,
    "resnet24_b3-5-3_w64": 4918602,
    "resnet30_b7-4-3_w64": 4919114,
    "resnet90_b16-16-12_w32": 4947402,
    "resnet26_b4-5-3_w64": 4992586,
    "resnet32_b4-4-4-3_w32": 4754218,
    "resnet10_b1-1-1-1_w64": 4903242,
    "resnet12_b2-1-1-1_w64": 4977226,
    "resnet56_b16-4-4-3_w32": 4989194,
}
# Former name -> preset. The compact ResNets were first named s002_* after the internal report they come from;
# recipes, studies and saved runs use those names, which work wherever a preset name does (resolve_name), and
# `reglab models` shows them next to the new ones.
ALIASES: dict[str, str] = {
    "s002_resnet26": "resnet26_b5-4-3_w64",
    "s002_resnet28_1": "resnet28_b6-4-3_w64",
    "s002_resnet24": "resnet24_b3-5-3_w64",
    "s002_resnet30": "resnet30_b7-4-3_w64",
    "s002_resnet90": "resnet90_b16-16-12_w32",
    "s002_resnet26_1": "resnet26_b4-5-3_w64",
    "s002_resnet32": "resnet32_b4-4-4-3_w32",
    "s002_resnet10": "resnet10_b1-1-1-1_w64",
    "s002_resnet12": "resnet12_b2-1-1-1_w64",
    "s002_resnet56": "resnet56_b16-4-4-3_w32",
}
PRESETS: dict[str, dict] = {
    # kuangliu/pytorch-cifar-style ResNets: 3x3 stride-1 stem, four stages.
    "resnet18": dict(blocks=[2, 2, 2, 2], channels=_W4),
    "resnet34": dict(blocks=[3, 4, 6, 3], channels=_W4),
    "resnet50": dict(blocks=[3, 4, 6, 3], channels=_W4, block="bottleneck"),
    "resnet101": dict(blocks=[3, 4, 23, 3], channels=_W4, block="bottleneck"),
    # Pre-activation (He et al., *Identity Mappings in Deep Residual Networks*, 2016); the bottleneck 50 also
    # with GELU activations.
    "preact_resnet18": dict(blocks=[2, 2, 2, 2], channels=_W4, preact=True),
    "preact_resnet50": dict(blocks=[3, 4, 6, 3], channels=_W4, block="bottleneck", preact=True),
    "preact_resnet50_gelu": dict(blocks=[3, 4, 6, 3], channels=_W4, block="bottleneck", preact=True, act="gelu"),
    # ResNet-RS-50 (Bello et al., *Revisiting ResNets: Improved Training and Scaling Strategies*, 2021) for
    # 32px images: bottleneck [3,4,6,3], SE 0.25, ResNet-D deep stem (32, 32, 64) with stride 1 instead of
    # ImageNet's stride-2 stem and max pool.
    "resnetrs50": dict(
        blocks=[3, 4, 6, 3], channels=_W4, block="bottleneck", se_ratio=0.25, resnet_d=True, stem_width=32
    ),
    # A fast CPU preset (the `quick` recipe's model): 8 layers -- a stride-2 stem and one basic block per stage,
    # 64/128/256 wide at 16/8/4 px. About 1/10 of resnet18's FLOPs per image at ~1/9 of its parameters.
    "resnet8_s2": dict(blocks=[1, 1, 1], channels=[64, 128, 256], stem_stride=2),
    # He et al. (2016) CIFAR ResNets: 16/32/64 widths, option-A (zero-pad) shortcuts, 6n+2 layers.
    "resnet20": dict(blocks=[3, 3, 3], channels=[16, 32, 64], shortcut="pad"),
    "resnet32": dict(blocks=[5, 5, 5], channels=[16, 32, 64], shortcut="pad"),
    "resnet56": dict(blocks=[9, 9, 9], channels=[16, 32, 64], shortcut="pad"),
    "resnet110": dict(blocks=[18, 18, 18], channels=[16, 32, 64], shortcut="pad"),
    **COMPACT_RESNETS,
    # Wide ResNet-28-10 (Zagoruyko & Komodakis, 2016): 16-wide stem conv, 3 groups of 4 pre-activation basic
    # blocks of width 16k = 160/320/640, 1x1 shortcuts where the shape changes. model.dropout is dropout
    # before the classifier, not WRN's dropout between the two convs of each block (the builder has none).
    "wrn28_10": dict(blocks=[4, 4, 4], channels=[160, 320, 640], preact=True, stem_width=16),
}

# Constructors of the comparison models (reglab/models/others.py), keyed by a preset's ``arch``.
ARCHS: dict[str, Callable[..., nn.Module]] = {
    "vgg": others.VGG,
    "resnext": others.ResNeXt,
    "densenet": others.DenseNet,
    "fastnet": fastnet.FastNet,
}
# The model.* config keys each of those accepts (all other model.* keys are ResNet-builder options).
ARCH_CONFIG_KEYS: dict[str, frozenset[str]] = {arch: frozenset({"dropout"}) for arch in ARCHS}
ARCH_CONFIG_KEYS["fastnet"] = frozenset({"dropout", "channels"})
# Comparison models that are not CIFAR ResNets: the mixup experiments' ResNeXt-29 and DenseNet-BC-190 (next to
# preact_resnet18) and the loss-landscape analysis' VGG-11 (reglab/analysis/landscape.py).
OTHER_MODELS: dict[str, dict] = {
    # Kuangliu-style CIFAR VGG-11 with batch norm, one Linear(512, classes) head.
    "vgg11_bn": dict(arch="vgg", layers=others.VGG11),
    # Xie et al. (2017), CIFAR ResNeXt-29 with cardinality 8 and bottleneck width 64d.
    "resnext29_8x64d": dict(
        arch="resnext", blocks=[3, 3, 3], widths=[256, 512, 1024], cardinality=8, base_width=64
    ),
    # Huang et al. (2017), DenseNet-BC, depth 190, growth rate 40, compression 0.5.
    "densenet_bc_190_40": dict(arch="densenet", depth=190, growth_rate=40, compression=0.5),
}
# Time-to-accuracy networks (reglab/models/fastnet.py; the fast-* recipes): whitened stem, conv-pool groups.
FAST_MODELS: dict[str, dict] = {
    "fastnet": dict(arch="fastnet", channels=[64, 256, 256]),  # airbench94's widths, 0.24 GFLOPs/img
    "fastnet_half": dict(arch="fastnet", channels=[32, 128, 128]),  # a quarter of the FLOPs, for CPU budgets
}
PRESETS.update(OTHER_MODELS)
PRESETS.update(FAST_MODELS)


def resolve_name(name: str) -> str:
    """The preset ``name`` refers to: itself, or the preset a former name (:data:`ALIASES`) stands for. An
    unknown name is a :class:`UserError` that suggests the closest known one."""
    if name in PRESETS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    import difflib

    close = difflib.get_close_matches(name, [*PRESETS, *ALIASES], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"model.name: unknown model {name!r}{hint}. Run `reglab models` to list them.")


def is_known(name: str) -> bool:
    """Whether ``name`` is a preset or a former name of one."""
    return name in PRESETS or name in ALIASES


def aliases_of(name: str) -> list[str]:
    """The former names that stand for preset ``name`` (most presets have none)."""
    return [old for old, new in ALIASES.items() if new == name]


def preset_kwargs(name: str, **overrides) -> dict:
    """Builder (or constructor) keyword arguments of preset ``name``, an alias allowed, with ``overrides``
    applied."""
    return {**PRESETS[resolve_name(name)], **overrides}


def create(name: str, num_classes: int = 10, **overrides) -> nn.Module:
    """Preset ``name`` (or a former name of one) with ``num_classes`` outputs; ``overrides`` are keywords of its
    builder or constructor."""
    kwargs = preset_kwargs(name, **overrides)
    arch = kwargs.pop("arch", None)
    if arch is not None:
        return ARCHS[arch](num_classes=num_classes, **kwargs)
    blocks, channels = kwargs.pop("blocks"), kwargs.pop("channels")
    return cifar_resnet(blocks, channels, num_classes, **kwargs)


def model_from_config(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The model a config describes; builder errors, and ResNet-builder keys given to a model that is not a
    CIFAR ResNet, become :class:`UserError`."""
    overrides = cfg.overrides()
    arch = preset_kwargs(cfg.name).get("arch")
    if arch is not None:
        extra = sorted(set(overrides) - ARCH_CONFIG_KEYS[arch])
        if extra:
            keys, many = ", ".join(f"model.{k}" for k in extra), len(extra) > 1
            accepted = ", ".join(f"model.{k}" for k in sorted(ARCH_CONFIG_KEYS[arch])) or "no model.* option"
            raise UserError(
                f"{keys}: ResNet-builder option{'s' if many else ''}, but model.name={cfg.name} is not "
                f"a CIFAR ResNet (it accepts {accepted}); remove {'them' if many else 'it'} or pick "
                "a ResNet preset (`reglab models`)."
            )
    try:
        return create(cfg.name, num_classes, **overrides)
    except ValueError as exc:
        raise UserError(f"model: {exc}.") from None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def forward_gflops(model: nn.Module, image_size: int = 32) -> float:
    """Forward GFLOPs per image (2 x multiply-adds), counted by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def describe(name: str, num_classes: int = 10) -> dict:
    """Parameters and forward GFLOPs of a preset, computed on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        model = create(name, num_classes)
    return {"name": name, "params": count_params(model), "gflops": round(forward_gflops(model), 4)}
