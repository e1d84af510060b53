"""reglab.models.fastnet (issue 8): patch whitening, the Dirac conv, the presets, and the whitening stem and its
bias in training -- each against an independent computation. The other time-to-accuracy parts are tested with
their modules: lookahead (train/test_lookahead.py), norm lr scale and warm-up start (train/test_optim.py),
translate TTA (train/test_evaluate.py), alternating flip (data/test_augment.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reglab.config import load_config
from reglab.errors import UserError
from reglab.models import create, forward_gflops, model_from_config
from reglab.models.fastnet import dirac_conv, patch_whitening
from tests.helpers.configs import SYN, TINY_FASTNET


def correlated_images(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 32, 32, generator=g)
    smooth = F.avg_pool2d(F.pad(base, (1, 1, 1, 1), mode="reflect"), 3, 1)  # neighbouring pixels correlate
    mix = torch.tensor([[1.0, 0.2, 0.1], [0.9, 0.4, 0.0], [0.8, 0.1, 0.5]])
    return torch.einsum("ck,nkhw->nchw", mix[:, :1], smooth) + 0.1 * torch.randn(n, 3, 32, 32, generator=g)


def test_patch_whitening_makes_patch_covariance_the_identity():
    x = correlated_images()
    w = patch_whitening(x, 2, eps=1e-8)
    assert w.shape == (24, 3, 2, 2)
    assert torch.allclose(w[12:], -w[:12])
    out = F.conv2d(x, w[:12]).permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = out.T @ out / len(out)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=1e-3)
    # against numpy's eigendecomposition of the same covariance: the same whitening (up to each sign)
    import numpy as np

    p = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double().numpy()
    vals, vecs = np.linalg.eigh(p.T @ p / len(p))
    ref = vecs[:, ::-1].T / np.sqrt(vals[::-1] + 1e-8)[:, None]
    got = w[:12].reshape(12, 12).double().numpy()
    assert np.allclose(np.abs(got), np.abs(ref), rtol=1e-3, atol=1e-3)


def test_dirac_conv_passes_its_input_through():
    conv = dirac_conv(8, 16)
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(conv(x)[:, :8], x, atol=1e-6)


def test_fastnet_presets_shapes_and_flops():
    m = create("fastnet", 10)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert forward_gflops(m) == pytest.approx(0.236, abs=0.002)  # airbench94's 0.36 PFLOP / (50k * 10 * 3)
    assert forward_gflops(create("fastnet_half", 10)) == pytest.approx(0.066, abs=0.002)
    assert not m.whiten.weight.requires_grad and m.whiten.bias.requires_grad
    assert all(not bn.weight.requires_grad for bn in m.modules() if isinstance(bn, torch.nn.BatchNorm2d))
    narrow = model_from_config(load_config(None, ["model.name=fastnet", "model.channels=[8,16,16]"]).model, 100)
    assert narrow(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(UserError, match="model.blocks"):
        model_from_config(load_config(None, ["model.name=fastnet", "model.blocks=[1,1,1]"]).model, 10)


def test_training_sets_the_whitening_stem_from_the_training_images_and_keeps_it_frozen(tmp_path):
    cfg = load_config(
        None,
        [
            *SYN,
            *TINY_FASTNET,
            "train.epochs=1",
            "train.init_images=300",
            f"run.dir={tmp_path / 'r'}",
        ],
    )
    from reglab.train.loop import Run

    r = Run(cfg, torch.device("cpu"))
    expected = patch_whitening(r.train_loader.normalize(r.train_loader.images[:300]), 2)
    assert r.model.whitened and torch.allclose(r.model.whiten.weight, expected)
    before = r.model.whiten.weight.clone(), r.model.whiten.bias.clone()
    r.train_epoch([])
    assert torch.equal(r.model.whiten.weight, before[0])  # frozen
    assert not torch.equal(r.model.whiten.bias, before[1])  # trained


def test_whiten_bias_trains_for_its_epochs_then_stays_put():
    cfg = load_config(
        None,
        [
            *SYN,
            *TINY_FASTNET,
            "train.epochs=3",
            "train.freeze=[{match: whiten.bias, start_epoch: 1}]",
            "optim.weight_decay=0.01",
        ],
    )
    from reglab.train.loop import Run

    r = Run(cfg, torch.device("cpu"))
    start = r.model.whiten.bias.clone()
    r.train_epoch([])
    r.epoch = 1
    after_one = r.model.whiten.bias.clone()
    head = r.model.head.weight.clone()
    r.train_epoch([])
    assert not torch.equal(after_one, start)  # trained in epoch 1
    assert torch.equal(r.model.whiten.bias, after_one)  # frozen from epoch 2: no step, no momentum, no decay
    assert not torch.equal(r.model.head.weight, head)  # while the rest trains
    with pytest.raises(UserError, match=r"train.freeze\[0\].match: 'whiten.bias' selects no trainable parameter"):
        Run(load_config(None, [*SYN, "model.name=resnet8_s2", "train.whiten_bias_epochs=1"]), torch.device("cpu"))
