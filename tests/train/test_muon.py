"""optim.name=muon: reglab's Muon against torch.optim.Muon (2-D weights), against a by-hand reshape (conv
filters), its SGD groups against torch.optim.SGD, the grouping, and a real run that resumes bit-identical."""

from __future__ import annotations

import math

import pytest
import torch

from reglab.config import load_config
from reglab.errors import UserError
from reglab.models import create
from reglab.train.muon import Muon, newton_schulz
from reglab.train.optim import build_optimizer
from tests.helpers.configs import SYN, TINY_FASTNET

MUON = [
    "optim.name=muon",
    "optim.lr=0.05",
    "optim.momentum=0.85",
    "optim.nesterov=true",
    "optim.muon_lr=0.1",
    "optim.muon_momentum=0.6",
    "optim.muon_ns_steps=3",
    "optim.muon_normalize=true",
]


def _steps(opt, params, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
@pytest.mark.parametrize("shape", [(16, 40), (40, 16)])
def test_muon_matches_torch_muon_on_matrices(shape):
    torch.manual_seed(0)
    w = torch.randn(shape)
    a, b = w.clone().requires_grad_(), w.clone().requires_grad_()
    ours = Muon(
        [{"params": [a], "muon": True}],
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=0.05,
        ns_steps=5,
        ns_dtype=torch.bfloat16,
    )
    ref = torch.optim.Muon([b], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05)
    _steps(ours, [a])
    _steps(ref, [b])
    assert not torch.equal(a, w)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_newton_schulz_orthogonalizes():
    g = torch.randn(32, 96, generator=torch.Generator().manual_seed(1))
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    o = newton_schulz(g, steps=5, dtype=torch.float32)
    inner = u.T @ o @ vh.T  # diagonal, with entries near 1 (Jordan: roughly Uniform(0.5, 1.5))
    d = torch.diagonal(inner)
    assert (d > 0.5).all() and (d < 1.5).all()
    assert (inner - torch.diag(d)).abs().max() < 1e-4
    assert torch.allclose(newton_schulz(g.T, 5, torch.float32), o.T, atol=1e-6)  # tall = transposed wide


def test_muon_on_conv_filters_is_the_reshaped_update_with_normalization():
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3)
    p = w.clone().requires_grad_()
    opt = Muon([{"params": [p], "muon": True, "normalize": True}], lr=0.2, momentum=0.6, nesterov=True, ns_steps=3)
    grad = torch.randn_like(w)
    p.grad = grad.clone()
    opt.step()
    u = grad.lerp((1 - 0.6) * grad, 0.6)  # Nesterov on the first step: B = (1 - mu) g; U = g.lerp(B, mu)
    w_n = w * math.sqrt(8) / w.norm()
    expected = w_n - 0.2 * newton_schulz(u.reshape(8, -1), 3, torch.float32).reshape(w.shape)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="2 or more dimensions"):
        Muon([{"params": [torch.zeros(3, requires_grad=True)], "muon": True}], lr=0.1)


def test_muon_groups_and_its_sgd_groups_step_as_torch_sgd():
    model = create("fastnet", 10, channels=[8, 16, 16])
    cfg = load_config(
        None, [*MUON, "optim.weight_decay=1e-3", "optim.param_groups=[{match: norm, lr_scale: 64}]"]
    ).optim
    opt = build_optimizer(model, cfg)
    *plain, muon = opt.param_groups
    filters = [p for p in model.parameters() if p.ndim == 4 and p.requires_grad]
    assert muon["muon"] and {id(p) for p in muon["params"]} == {id(p) for p in filters} and len(filters) == 6
    assert muon["lr"] == 0.1 and muon["momentum"] == 0.6 and muon["ns_steps"] == 3 and muon["normalize"]
    assert not any(g["muon"] for g in plain) and plain[0]["lr"] == 0.05 and plain[1]["lr"] == 0.05 * 64
    assert id(model.head.weight) in {id(p) for p in plain[0]["params"]}
    # the SGD groups: exactly torch.optim.SGD on the same groups
    ref_params = [[p.detach().clone().requires_grad_() for p in g["params"]] for g in plain]
    ref = torch.optim.SGD(
        [
            {**{k: v for k, v in g.items() if k not in ("params", "muon", "ns_steps", "normalize")}, "params": ps}
            for g, ps in zip(plain, ref_params)
        ],
        lr=0.05,
    )
    ours = [p for g in plain for p in g["params"]]
    for seed in range(3):
        _steps(opt, ours + filters, n=1, seed=seed)
        _steps(ref, [p for ps in ref_params for p in ps], n=1, seed=seed)
    for a, b in zip(ours, [p for ps in ref_params for p in ps]):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)


def test_muon_run_learns_and_resumes_bit_identical(resumes_bit_identical):
    a = resumes_bit_identical(
        [
            *SYN,
            *MUON,
            *TINY_FASTNET,
            "train.epochs=3",
            "optim.param_groups=[{match: norm, lr_scale: 16, wd_scale: 0.0625}]",
            "sched.name=linear",
            "train.freeze=[{match: whiten.bias, start_epoch: 2}]",
        ]
    )
    losses = [row["train_loss"] for row in a.metrics]
    assert losses[-1] < losses[0]
    assert a.summary["test_acc"] > 0.2  # synthetic classes are separable; chance is 0.1


def test_bad_muon_options_are_user_errors():
    for bad, key in [
        ("optim.muon_lr=0", "optim.muon_lr"),
        ("optim.muon_momentum=1", "optim.muon_momentum"),
        ("optim.muon_ns_steps=0", "optim.muon_ns_steps"),
        ("optim.muon_weight_decay=-1", "optim.muon_weight_decay"),
    ]:
        with pytest.raises(UserError, match=key):
            load_config(None, ["optim.name=muon", bad])
