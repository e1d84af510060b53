"""Model-side regularizers (stochastic depth, SE, ResNet-D, stem stride, dropout in place of batch norm, head
dropout) and one-epoch training runs with every regularization option of the config.

Models are tiny (resnet20 at widths 8/16/32) or built on the ``meta`` device for parameter counts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from torchvision.ops import SqueezeExcitation, StochasticDepth

from reglab.config import ModelConfig, load_config
from reglab.errors import UserError
from reglab.models import count_params, create, model_from_config
from reglab.models.resnet import Block, PadShortcut
from tests.helpers.configs import SYNTHETIC_300, TINY_RESNET

SMALL = dict(channels=[8, 16, 32])


def blocks_of(model: nn.Module) -> list[Block]:
    return [m for m in model.modules() if isinstance(m, Block)]


def meta_create(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return create(name, **kw)


# ----------------------------------------------------------------------------------------------------------
# Stochastic depth


def test_drop_path_rates_increase_linearly():
    model = create("resnet20", drop_path=0.5, **SMALL)
    blocks = blocks_of(model)
    assert len(blocks) == 9
    rates = [b.drop_path.p if isinstance(b.drop_path, StochasticDepth) else 0.0 for b in blocks]
    assert np.allclose(rates, np.linspace(0, 0.5, 9))
    assert isinstance(blocks[0].drop_path, nn.Identity)  # rate 0: no module at all
    assert all(b.drop_path.mode == "row" for b in blocks[1:])
    assert all(isinstance(b.drop_path, nn.Identity) for b in blocks_of(create("resnet20", **SMALL)))


def test_drop_path_eval_is_deterministic_and_equals_plain_model():
    torch.manual_seed(0)
    model = create("resnet20", drop_path=0.5, **SMALL).eval()
    plain = create("resnet20", **SMALL).eval()
    plain.load_state_dict(model.state_dict())  # StochasticDepth holds no parameters or buffers
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        a, b, c = model(x), model(x), plain(x)
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-6)
    model.train()
    with torch.no_grad():
        d, e = model(x), model(x)
    assert not torch.equal(d, e)  # training mode drops branches at random


@pytest.mark.parametrize("index, rate", [(7, 0.4375), (8, 0.5)])
def test_drop_path_drops_the_branch_per_sample(index, rate):
    torch.manual_seed(1)
    model = create("resnet20", drop_path=0.5, **SMALL)
    blk = blocks_of(model)[index]
    assert isinstance(blk.shortcut, nn.Identity) and blk.drop_path.p == pytest.approx(rate)
    blk.train()
    n = 2000
    x = torch.randn(n, 32, 4, 4)
    seen = {}
    hook = blk.drop_path.register_forward_hook(lambda m, i, o: seen.update(inp=i[0].detach(), out=o.detach()))
    with torch.no_grad():
        out = blk(x)
    hook.remove()
    # Dropped samples: block output is the shortcut alone, act(0 + x).
    dropped = torch.isclose(out, torch.relu(x), atol=1e-6).flatten(1).all(1)
    frac = dropped.float().mean().item()
    assert abs(frac - rate) < 5 * math.sqrt(rate * (1 - rate) / n), frac
    # Inside the module: each sample's branch is either zeroed or scaled by 1 / (1 - p) (inverted dropout).
    zero = (seen["out"] == 0).flatten(1).all(1)
    kept = torch.isclose(seen["out"], seen["inp"] / (1 - rate), atol=1e-5).flatten(1).all(1)
    assert (zero ^ kept).all()
    assert torch.equal(zero, dropped)


# ----------------------------------------------------------------------------------------------------------
# Squeeze-and-excitation


def se_params(c: int, ratio: float = 0.25) -> int:
    s = max(1, int(c * ratio))
    return 2 * c * s + c + s  # fc1 and fc2 as 1x1 convs with bias


@pytest.mark.parametrize(
    "name, kw", [("resnet20", SMALL), ("resnet18", {}), ("resnet50", {}), ("preact_resnet18", {})]
)
def test_se_adds_exactly_its_parameters(name, kw):
    base = count_params(meta_create(name, **kw))
    model = meta_create(name, se_ratio=0.25, **kw)
    blocks = blocks_of(model)
    assert all(isinstance(b.se, SqueezeExcitation) for b in blocks)
    expect = sum(se_params(b.out_channels) for b in blocks)
    assert count_params(model) - base == expect


def test_se_sits_on_the_residual_branch():
    torch.manual_seed(2)
    model = create("resnet20", se_ratio=0.25, **SMALL).eval()
    blk = blocks_of(model)[4]
    x = torch.randn(4, blk.convs[0].in_channels, 8, 8)
    with torch.no_grad():
        blk.se.fc2.bias.fill_(-1e4)  # sigmoid gate ~ 0: the branch is switched off
        out = blk(x)
        assert torch.allclose(out, torch.relu(blk.shortcut(x)), atol=1e-5)
        blk.se.fc2.bias.fill_(1e4)  # gate ~ 1: the same as no SE
        blk.se.fc2.weight.zero_()
        gated = blk(x)
        se, blk.se = blk.se, nn.Identity()
        assert torch.allclose(gated, blk(x), atol=1e-5)
        blk.se = se


# ----------------------------------------------------------------------------------------------------------
# ResNet-D, stem stride, the ResNet-RS-50 preset


def test_resnet_d_stem_and_shortcuts():
    plain, d = meta_create("resnet18"), meta_create("resnet18", resnet_d=True)
    convs = lambda seq: [m for m in seq if isinstance(m, nn.Conv2d)]  # noqa: E731
    assert len(convs(plain.stem)) == 1
    stem = convs(d.stem)
    assert [c.out_channels for c in stem] == [32, 32, 64] and [c.stride for c in stem] == [(1, 1)] * 3
    for model, avg in ((plain, False), (d, True)):
        downs = [b.shortcut for b in blocks_of(model) if not isinstance(b.shortcut, nn.Identity)]
        assert len(downs) == 3
        for sc in downs:
            kinds = [type(m) for m in sc]
            if avg:
                assert kinds == [nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d]
                assert sc[0].kernel_size == 2 and sc[0].stride == 2
                assert sc[1].kernel_size == (1, 1) and sc[1].stride == (1, 1)
            else:
                assert kinds == [nn.Conv2d, nn.BatchNorm2d] and sc[0].stride == (2, 2)
    # Bottleneck: the stride sits on the 3x3 conv of the first block of each later stage.
    rs = meta_create("resnet50", resnet_d=True)
    first = [s[0] for s in rs.stages][1:]
    assert all(b.convs[1].stride == (2, 2) and b.convs[0].stride == (1, 1) for b in first)
    assert all(isinstance(b.shortcut[0], nn.AvgPool2d) for b in first)


def test_resnet_d_forward_small():
    torch.manual_seed(3)
    model = create("resnet18", resnet_d=True, channels=[8, 16, 32, 64]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    # The average-pool shortcut sees every input pixel: perturbing an odd pixel changes it.
    sc = [
        b.shortcut
        for b in blocks_of(model)
        if isinstance(b.shortcut, nn.Sequential) and isinstance(b.shortcut[0], nn.AvgPool2d)
    ][0]
    x = torch.randn(1, sc[1].in_channels, 8, 8)
    y = x.clone()
    y[..., 1, 1] += 1
    plain_sc = [
        b.shortcut
        for b in blocks_of(create("resnet18", channels=[8, 16, 32, 64]).eval())
        if isinstance(b.shortcut, nn.Sequential) and b.shortcut[0].stride == (2, 2)
    ][0]
    with torch.no_grad():
        assert not torch.allclose(sc(x), sc(y))
        assert torch.equal(plain_sc(x), plain_sc(y))  # a strided 1x1 conv skips that pixel


def test_pad_shortcut_never_drops_channels():
    try:
        model = create("resnet20", resnet_d=True, **SMALL)
    except (ValueError, UserError):
        return  # refusing the combination is acceptable
    pads = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert all(p.extra >= 0 for p in pads)


def test_resnetrs50_parameters_and_forward():
    assert count_params(meta_create("resnetrs50")) == 33_626_410
    torch.manual_seed(4)
    model = create("resnetrs50").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_stem_stride_two_halves_the_feature_map():
    torch.manual_seed(5)
    m1 = create("resnet20", **SMALL).eval()
    m2 = create("resnet20", stem_stride=2, **SMALL).eval()
    assert (m1.pool_size, m2.pool_size) == (8, 4)
    assert m2.stem[0].stride == (2, 2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert m1.forward_features(x).shape == (2, 32, 8, 8)
        assert m2.forward_features(x).shape == (2, 32, 4, 4)
        assert m2(x).shape == (2, 10)
    assert count_params(m1) == count_params(m2)


# ----------------------------------------------------------------------------------------------------------
# Dropout in place of batch norm (bn_dropout), head dropout


def test_bn_dropout_replaces_every_branch_batch_norm():
    plain, model = meta_create("resnet18"), meta_create("resnet18", bn_dropout=[0.2, 0.5])
    count = lambda m, t: sum(isinstance(x, t) for x in m.modules())  # noqa: E731
    assert count(plain, nn.BatchNorm2d) == 1 + 16 + 3 and count(plain, nn.Dropout) == 0
    assert count(model, nn.BatchNorm2d) == 1 + 3  # stem and projection shortcuts keep theirs
    assert count(model, nn.Dropout) == 16
    for b in blocks_of(model):
        assert [type(n) for n in b.norms] == [nn.Dropout, nn.Dropout]
        assert [n.p for n in b.norms] == [0.2, 0.5]
    # 16 branch BNs of widths 64..512, weight and bias each, are gone.
    widths = [64] * 4 + [128] * 4 + [256] * 4 + [512] * 4
    assert count_params(plain) - count_params(model) == 2 * sum(widths)


def test_bn_dropout_forward_and_train_noise():
    torch.manual_seed(6)
    model = create("resnet20", bn_dropout=[0.2, 0.5], **SMALL)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("name, rates, n", [("resnet50", [0.2, 0.5], 3), ("resnet18", [0.1, 0.2, 0.3], 2)])
def test_bn_dropout_wrong_length_is_a_user_error(name, rates, n):
    with pytest.raises(UserError, match=f"needs {n} rates"):
        model_from_config(ModelConfig(name=name, bn_dropout=rates), 10)
    with pytest.raises(UserError):
        model_from_config(load_config(None, [f"model.name={name}", f"model.bn_dropout={rates}"]).model, 10)


def test_bn_dropout_with_zero_init_residual():
    try:
        model = model_from_config(
            ModelConfig(name="resnet20", channels=[8, 16, 32], bn_dropout=[0.2, 0.5], zero_init_residual=True), 10
        )
    except UserError:
        return  # refusing the combination clearly is acceptable
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_head_dropout_before_fc():
    torch.manual_seed(7)
    model = create("resnet20", dropout=0.5, **SMALL)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.5
    assert isinstance(create("resnet20", **SMALL).dropout, nn.Identity)
    seen = []
    model.fc.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        model(x)
        model.train()
        model(x)
    clean, noisy = seen
    assert (clean > 0).float().mean() > 0.5  # pooled ReLU features are mostly positive
    pos = clean > 0
    zero_frac = (noisy[pos] == 0).float().mean().item()
    assert abs(zero_frac - 0.5) < 0.06
    # Training-mode features differ from eval by BN batch statistics; check the inverted-dropout scaling by
    # comparing with the same training-mode features without dropout.
    model.dropout = nn.Identity()
    with torch.no_grad():
        model(x)
    train_clean = seen[2]
    kept = noisy != 0
    assert torch.allclose(noisy[kept], 2 * train_clean[kept], atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Every option trains for an epoch


BASE = [*SYNTHETIC_300, "train.batch_size=50", "train.epochs=1", *TINY_RESNET, "run.device=cpu"]
STEPS = 4  # (300 - 100) // 50


def _has(t):
    return lambda m: any(isinstance(x, t) for x in m.modules())


OPTIONS = [
    (["aug.policy=autoaugment"], "BatchPolicy", None),
    (["aug.policy=randaugment"], "BatchPolicy", None),
    (["aug.policy=trivialaugment"], "BatchPolicy", None),
    (["aug.cutout_holes=4", "aug.cutout_size=4"], "Cutout", None),
    (["aug.erasing_p=0.5", "aug.erasing_value=random"], "RandomErasing", None),
    (["aug.rotation=15"], "RandomRotation", None),
    (["mix.mixup_alpha=1"], "Mixer", None),
    (["mix.cutmix_alpha=1"], "Mixer", None),
    (["mix.mixup_alpha=1", "mix.cutmix_alpha=1", "mix.switch_prob=0.5"], "Mixer", None),
    (["mix.mixup_alpha=0.2", "mix.per_sample=true", "train.label_smoothing=0.1"], "Mixer", None),
    (
        ["mix.lam_x=fixed", "mix.lam_x_range=[0.5,0.5]", "mix.lam_y=uniform", "mix.lam_y_range=[0,1]"],
        "Mixer",
        None,
    ),
    (["mix.mixup_alpha=1", "mix.start_epoch=1"], "Mixer0", None),  # mixing inactive in epoch 0
    (["model.drop_path=0.2"], None, _has(StochasticDepth)),
    (["model.se_ratio=0.25"], None, _has(SqueezeExcitation)),
    (
        ["model.resnet_d=true", "model.shortcut=conv"],
        None,
        lambda m: sum(isinstance(x, nn.Conv2d) for x in m.stem) == 3,
    ),
    (["model.dropout=0.3"], None, lambda m: isinstance(m.dropout, nn.Dropout) and m.dropout.p == 0.3),
    (
        ["model.bn_dropout=[0.2,0.5]"],
        None,
        lambda m: not any(isinstance(n, nn.BatchNorm2d) for b in blocks_of(m) for n in b.norms),
    ),
    (["train.loss=clamped_ce"], None, None),
    (["train.smoothing_convention=others", "train.label_smoothing=0.2"], None, None),
    (["optim.name=adadelta", "optim.lr=1.0", "train.grad_clip=1.0"], None, None),
    (["sched.name=cosine_cycles_decay"], None, None),
    (["ema.enabled=true"], None, None),
]


@pytest.mark.parametrize("overrides, counted, model_check", OPTIONS, ids=[" ".join(o[0]) for o in OPTIONS])
def test_option_trains_one_epoch(overrides, counted, model_check, tmp_path, monkeypatch):
    from reglab.data import augment, mixing, policies
    from reglab.train import components, loop

    classes = {
        "BatchPolicy": policies.BatchPolicy,
        "Cutout": augment.Cutout,
        "RandomErasing": augment.RandomErasing,
        "RandomRotation": augment.RandomRotation,
        "Mixer": mixing.Mixer,
        "Mixer0": mixing.Mixer,
    }
    calls = {"n": 0}
    if counted:
        cls = classes[counted]
        original = cls.__call__

        def counting(self, *a, **kw):
            calls["n"] += 1
            return original(self, *a, **kw)

        monkeypatch.setattr(cls, "__call__", counting)
    models = []
    real_build = components.model_from_config
    monkeypatch.setattr(
        components, "model_from_config", lambda cfg, k: models.append(real_build(cfg, k)) or models[-1]
    )

    cfg = load_config(None, BASE + overrides + [f"run.dir={tmp_path / 'run'}"])
    result = loop.run(cfg)
    s = result.summary
    assert isinstance(s["test_acc"], (int, float)) and not isinstance(s["test_acc"], bool)
    assert math.isfinite(s["test_acc"]) and 0 <= s["test_acc"] <= 100
    assert math.isfinite(s["final_train_loss"])
    assert s["epochs"] == 1
    if counted:
        assert calls["n"] == (0 if counted == "Mixer0" else STEPS), calls
    if model_check:
        assert model_check(models[0])
    if "ema.enabled=true" in overrides:
        assert isinstance(s["ema_test_acc"], float) and math.isfinite(s["ema_test_acc"])
    if "optim.name=adadelta" in overrides:
        assert result.metrics[0]["lr"] == 1.0
