"""The comparison models: wrn28_10 (a ResNet-builder preset) and vgg11_bn, resnext29_8x64d, densenet_bc_190_40
(reglab/models/others.py).

Parameter counts and output shapes of the full-size models come from the ``meta`` device (no memory, no
compute); real forwards run only vgg11_bn (0.3 GFLOPs per image) and tiny-width variants of the others.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json

import pytest
import torch
import torch.nn as nn

from reglab.config import ModelConfig, load_config
from reglab.errors import UserError
from reglab.models import PRESETS, count_params, create, describe, model_from_config
from reglab.models.others import VGG, DenseNet, ResNeXt, ResNeXtBlock
from reglab.models.resnet import Block, CifarResNet
from reglab.models.zoo import OTHER_MODELS

NEW = ["vgg11_bn", "wrn28_10", "resnext29_8x64d", "densenet_bc_190_40"]

# Computed here (10 and 100 classes). vgg11_bn equals kuangliu/pytorch-cifar's VGG('VGG11'), which has the
# same layers (convs with bias, BN, ReLU; Linear(512, 10)); wrn28_10 equals the reference WRN-28-10 code.
PARAMS = {
    "vgg11_bn": (9_231_114, 9_277_284),
    "wrn28_10": (36_479_194, 36_536_884),
    "resnext29_8x64d": (34_426_698, 34_518_948),
    "densenet_bc_190_40": (25_624_430, 25_821_620),
}
# The papers' CIFAR-10 parameter counts (Zagoruyko & Komodakis 2016; Xie et al. 2017, Table 7;
# Huang et al. 2017, Table 2). VGG-11 has none for CIFAR: Simonyan & Zisserman's 133M is the ImageNet net
# with its three 4096-wide fully connected layers, which a 32px model does not have.
PAPER = {"wrn28_10": 36.5e6, "resnext29_8x64d": 34.4e6, "densenet_bc_190_40": 25.6e6}


@functools.lru_cache(maxsize=None)
def meta_model(name: str, num_classes: int = 10) -> nn.Module:
    """Full-size preset on the meta device, built once per module (DenseNet-BC-190 takes ~0.3 s)."""
    with torch.device("meta"):
        return create(name, num_classes)


@functools.lru_cache(maxsize=None)
def cached_describe(name: str) -> dict:
    return describe(name)


def test_presets_are_registered():
    assert set(NEW) <= set(PRESETS)
    assert set(OTHER_MODELS) == set(NEW) - {"wrn28_10"}
    assert "arch" not in PRESETS["wrn28_10"]  # a plain builder preset, not new code
    assert isinstance(meta_model("wrn28_10"), CifarResNet)


@pytest.mark.parametrize("name", NEW)
def test_parameter_counts(name):
    assert (count_params(meta_model(name, 10)), count_params(meta_model(name, 100))) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_parameter_counts_within_one_percent_of_the_papers(name):
    assert abs(PARAMS[name][0] / PAPER[name] - 1) < 0.01


def test_sibling_configurations_match_their_papers():
    """The constructors' other published settings: ResNeXt-29 16x64d (Xie et al.: 68.1M) and DenseNet-BC-100
    with k=12 (Huang et al.: 0.8M, printed to one decimal)."""
    with torch.device("meta"):
        assert count_params(create("resnext29_8x64d", cardinality=16)) == 68_155_210
        assert count_params(create("densenet_bc_190_40", depth=100, growth_rate=12)) == 769_162
    assert abs(68_155_210 / 68.1e6 - 1) < 0.01 and abs(769_162 - 0.8e6) < 0.05e6


def test_vgg11_has_no_fully_connected_stack():
    """The kuangliu head: a single Linear(512, classes) in place of VGG-11's three fully connected layers, so
    the network has the eight convs of configuration A and 9 weight layers, not 11. Of the 9.23M parameters,
    the 2,752 conv biases are redundant under batch norm but kept (as kuangliu and torchvision do) so the
    count matches the CIFAR code."""
    model = meta_model("vgg11_bn")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 8 and len(linears) == 1
    assert (linears[0].in_features, linears[0].out_features) == (512, 10)
    assert sum(c.bias.numel() for c in convs) == 2752
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5


def test_wrn28_10_structure():
    model = meta_model("wrn28_10")
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert len(blocks) == 12 and all(b.preact for b in blocks)
    assert [b.out_channels for b in blocks[::4]] == [160, 320, 640]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # 16-wide stem conv + 24 block convs (3x3) + 3 projection shortcuts (1x1, at each width change)
    assert len(convs) == 28 and sum(c.kernel_size == (1, 1) for c in convs) == 3
    assert convs[0].out_channels == 16


def test_resnext29_structure():
    model = meta_model("resnext29_8x64d")
    blocks = [m for m in model.modules() if isinstance(m, ResNeXtBlock)]
    assert len(blocks) == 9
    grouped = [b.branch[1][0] for b in blocks]
    assert all(c.groups == 8 for c in grouped)
    assert [c.out_channels for c in grouped[::3]] == [512, 1024, 2048]  # 8 groups x 64d, doubling per stage
    assert [b.branch[2][0].out_channels for b in blocks[::3]] == [256, 512, 1024]
    # 29 layers: stem + 9 blocks x 3 convs + the classifier (projection shortcuts not counted)
    assert 1 + 3 * len(blocks) + 1 == 29 and model.num_features == 1024


def test_densenet_bc_190_structure():
    model = meta_model("densenet_bc_190_40")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 190  # stem + 3 x 31 x (1x1 + 3x3) + 2 transitions, plus the classifier
    assert convs[0].out_channels == 80  # 2k
    # 80 + 31*40 = 1320 -> 660 -> 1900 -> 950 -> 2190 channels
    assert model.num_features == 2190 and model.head.fc.in_features == 2190


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("num_classes", [10, 100])
def test_meta_forward_shape_of_full_models(name, num_classes):
    model = meta_model(name, num_classes).eval()
    with torch.device("meta"), torch.no_grad():
        out = model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, num_classes)


TINY = {  # tiny widths and depths of each architecture, through create()'s constructor keywords
    "vgg11_bn": {},  # the full model: cheap enough
    "wrn28_10": dict(blocks=[1, 1, 1], channels=[8, 16, 32]),
    "resnext29_8x64d": dict(blocks=[1, 1, 1], widths=[16, 32, 64], cardinality=2, base_width=4, stem_width=8),
    "densenet_bc_190_40": dict(depth=10, growth_rate=4),
}


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("num_classes", [10, 100])
def test_real_forward(name, num_classes):
    torch.manual_seed(0)
    model = create(name, num_classes, **TINY[name]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, num_classes) and torch.isfinite(out).all()


def test_tiny_variants_train_a_step():
    for model in (
        ResNeXt([1, 1], [8, 16], 2, 2, 4, num_classes=3),
        DenseNet(10, 2, 0.5, num_classes=3),
        VGG([8, "M", 16, "M"], num_classes=3, dropout=0.1),
    ):
        model.train()
        loss = model(torch.randn(2, 3, 16, 16)).logsumexp(1).mean()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())


def test_constructor_errors():
    with pytest.raises(ValueError, match="6n \\+ 4"):
        DenseNet(depth=101)
    with pytest.raises(ValueError, match="same length"):
        ResNeXt(blocks=[1, 1], widths=[16, 32, 64])


@pytest.mark.parametrize("name", sorted(OTHER_MODELS))
@pytest.mark.parametrize(
    "key, value",
    [("blocks", [1, 1, 1]), ("channels", [8, 16, 32]), ("preact", True), ("act", "gelu"), ("drop_path", 0.1)],
)
def test_resnet_override_on_non_resnet_is_a_user_error(name, key, value):
    with pytest.raises(UserError) as exc:
        model_from_config(ModelConfig(name=name, **{key: value}), 10)
    msg = str(exc.value)
    assert f"model.{key}" in msg and name in msg and "not a CIFAR ResNet" in msg and "model.dropout" in msg


def test_user_error_from_config_overrides():
    cfg = load_config(None, ["model.name=densenet_bc_190_40", "model.blocks=[1,1,1]", "model.act=gelu"])
    with pytest.raises(UserError, match="model.act, model.blocks: ResNet-builder options"):
        model_from_config(cfg.model, 10)


@pytest.mark.parametrize("name", sorted(OTHER_MODELS))
def test_dropout_is_supported(name):
    with torch.device("meta"):
        model = model_from_config(ModelConfig(name=name, dropout=0.3), 100)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == [0.3] and model.head.fc.out_features == 100


def test_wrn28_10_takes_builder_overrides():
    with torch.device("meta"):
        model = model_from_config(ModelConfig(name="wrn28_10", blocks=[1, 1, 1], dropout=0.3), 10)
    assert len([m for m in model.modules() if isinstance(m, Block)]) == 3


def test_unknown_name_suggests_new_presets():
    with pytest.raises(UserError, match="did you mean 'vgg11_bn'"):
        model_from_config(ModelConfig(name="vgg11"), 10)


@pytest.mark.parametrize("name", NEW)
def test_describe(name):
    row = cached_describe(name)
    assert row == {"name": name, "params": PARAMS[name][0], "gflops": row["gflops"]} and row["gflops"] > 0


def test_cli_models_lists_them(monkeypatch):
    """`reglab models --json` in-process. The ResNet presets' rows are stubbed (their real rows cost ~4 s and
    tests/e2e/test_cli_basic.py::test_models_json checks them in a subprocess); the new models' rows are real."""
    import reglab.models
    from reglab.cli import main

    monkeypatch.setattr(
        reglab.models,
        "describe",
        lambda name: cached_describe(name) if name in NEW else {"name": name, "params": 1, "gflops": 1.0},
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(out.getvalue())}
    assert list(rows) == list(PRESETS)
    for name in NEW:
        assert rows[name]["params"] == PARAMS[name][0] and rows[name]["gflops"] > 0
    # Forward GFLOPs per 32px image (2 x multiply-adds): the papers' nets are 10-20x a ResNet-18.
    assert rows["vgg11_bn"]["gflops"] == pytest.approx(0.3055, abs=1e-3)
    assert rows["densenet_bc_190_40"]["gflops"] > rows["resnext29_8x64d"]["gflops"] > rows["wrn28_10"]["gflops"]
