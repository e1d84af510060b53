"""reglab.train.lookahead: the Lookahead update against its formula, after the model's tensors are replaced, and a
lookahead run that resumes bit-identical."""

from __future__ import annotations

import math

import torch

from reglab.train.lookahead import Lookahead
from tests.helpers.configs import SYN, TINY_FASTNET


def test_lookahead_follows_its_formula():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    la = Lookahead(model, total_steps=20, every=5, decay=0.8, power=2.0)
    slow = [t.clone() for t in la.slow]
    for step in range(1, 21):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
        fast = [t.detach().clone() for t in model.state_dict().values() if t.is_floating_point()]
        la.update(model, step)
        now = [t for t in model.state_dict().values() if t.is_floating_point()]
        if step == 20:
            assert all(torch.allclose(n, s, atol=1e-6) for n, s in zip(now, slow))  # the end: model = slow
        elif step % 5 == 0:
            d = 0.8 * (step / 20) ** 2
            slow = [d * s + (1 - d) * f for s, f in zip(slow, fast)]
            assert all(torch.allclose(n, s, atol=1e-6) for n, s in zip(now, slow))
        else:
            assert all(torch.equal(n, f) for n, f in zip(now, fast))


def test_lookahead_follows_the_model_when_its_tensors_are_replaced():
    """Lookahead keeps views of the model's tensors; after ``.to(memory_format=...)`` gives the conv weight new
    storage it must update the new tensor, not the old one."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    la = Lookahead(model, total_steps=10, every=1, decay=0.5, power=0.0)
    before = model[0].weight.data_ptr()
    model.to(memory_format=torch.channels_last)
    assert model[0].weight.data_ptr() != before
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    la.update(model, 1)  # d = 0.5: slow <- (slow + fast) / 2 = start + 0.5; fast <- slow
    torch.testing.assert_close(model[0].weight.detach(), start + 0.5)
    torch.testing.assert_close(la.slow[0], start + 0.5)


def test_lookahead_run_resumes_bit_identical(resumes_bit_identical):
    a = resumes_bit_identical(
        [
            *SYN,
            *TINY_FASTNET,
            "train.epochs=3",
            "optim.lookahead=true",
            "optim.lookahead_every=2",
            "optim.param_groups=[{match: norm, lr_scale: 16, wd_scale: 0.0625}]",
            "train.tta=true",
            "train.tta_shifts=[[-1, -1], [1, 1]]",
            "train.freeze=[{match: whiten.bias, start_epoch: 2}]",
        ]
    )  # the resumed third epoch must freeze the bias again
    assert math.isfinite(a.summary["test_acc"])
