"""reglab.train.ema: the EMA of weights and BN statistics against a by-hand recursion, its warm-up and its period."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from reglab.train.ema import EMA

# ----------------------------------------------------------------------------------------------------------
# EMA


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def _perturb(model: nn.Module, g: torch.Generator) -> None:
    """A fake optimizer step: new parameters and, via a train-mode forward, new BN statistics."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    model.train()
    model(torch.randn(8, 3, 6, 6, generator=g) * 3 + 1)


def _ema_recursion(decay: float, warmup_steps: int, k: int, seed: int = 0):
    torch.manual_seed(seed)
    model = Tiny()
    g = torch.Generator().manual_seed(seed)
    ema = EMA(model, decay, warmup_steps)
    manual = None
    for t in range(k):
        _perturb(model, g)
        ema.update(model, step=t + 1)
        cur = {n: v.detach().clone() for n, v in model.state_dict().items()}
        if manual is None:
            manual = cur  # the first update copies the model
        else:
            d = min(decay, (1 + t) / (10 + t)) if t < warmup_steps else decay
            manual = {n: (d * manual[n] + (1 - d) * cur[n]) if cur[n].is_floating_point() else cur[n] for n in cur}
    return model, ema, manual


@pytest.mark.parametrize("decay,warmup", [(0.7, 0), (0.99, 6)])
def test_ema_matches_manual_recursion(decay, warmup):
    model, ema, manual = _ema_recursion(decay, warmup, k=8)
    got = ema.module.state_dict()
    assert set(got) == set(manual)
    for name, want in manual.items():
        assert torch.allclose(got[name].double(), want.double(), rtol=1e-5, atol=1e-6), name
    # BN running statistics are averaged, not copied from the model
    assert not torch.allclose(got["bn.running_mean"], model.bn.running_mean)
    # num_batches_tracked stays an integer (the model's count)
    assert got["bn.num_batches_tracked"].dtype == torch.int64
    assert int(got["bn.num_batches_tracked"]) == int(model.bn.num_batches_tracked) == 8


def test_ema_warmup_decay_differs_from_plain_decay():
    _, ema_w, _ = _ema_recursion(0.99, 6, k=5)
    _, ema_p, manual_p = _ema_recursion(0.99, 0, k=5)
    w, p = ema_w.module.state_dict()["fc.weight"], ema_p.module.state_dict()["fc.weight"]
    assert not torch.allclose(w, p)  # warm-up uses decays 1/5.., plain uses 0.99 from the start
    assert torch.allclose(p, manual_p["fc.weight"], atol=1e-6)


def test_ema_every_n_steps():
    torch.manual_seed(0)
    model = Tiny()
    ema = EMA(model, 0.5, every=2)
    g = torch.Generator().manual_seed(0)
    _perturb(model, g)
    ema.update(model, step=1)  # skipped
    assert int(ema.averaged.n_averaged) == 0
    ema.update(model, step=2)
    assert int(ema.averaged.n_averaged) == 1
    assert torch.equal(ema.module.fc.weight, model.fc.weight)
