"""Loss landscape (reglab/analysis/landscape.py, seed 001): filter-normalized directions, the evaluator of
perturbed weights (eval-mode BN, the run's layout and precision), first crossings and basin widths, the fixed
stratified subset. The `reglab analyze landscape` command is tested in tests/commands/test_analyze.py."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from reglab.analysis.interpolation import pair_hits
from reglab.analysis.landscape import (
    Evaluator,
    basin_width,
    directions,
    filter_normalize,
    first_crossings,
    fixed_subset,
    paired_width_difference,
    random_direction,
    resolve_levels,
)
from reglab.models import create


def tiny_model():
    torch.manual_seed(0)
    return create("resnet20", 10, channels=[8, 16, 32], blocks=[1, 1, 1]).eval()


def test_filter_normalization_matches_each_weight_filter_norm():
    model = tiny_model()
    d = random_direction(model, torch.Generator().manual_seed(0))
    checked = 0
    for name, p in model.named_parameters():
        if p.dim() <= 1:  # biases and BN parameters: not perturbed (Li et al.'s ignore='biasbn')
            assert torch.count_nonzero(d[name]) == 0, name
            continue
        dn = d[name].flatten(1).norm(dim=1)
        wn = p.detach().flatten(1).norm(dim=1)
        torch.testing.assert_close(dn, wn, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(d[name], p.detach())  # a random direction, not the weights themselves
        checked += 1
    assert checked >= 6  # convolutions and the fc layer
    a, b = directions(model, 2, seed=1)
    c, _ = directions(model, 2, seed=1)
    assert all(torch.equal(a[n], c[n]) for n in a) and not all(torch.equal(a[n], b[n]) for n in a)


def test_filter_normalize_rows_of_a_matrix():
    w = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    d = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(filter_normalize(d, w), torch.tensor([[5.0, 0.0], [2**0.5, 2**0.5]]))


def test_evaluator_uses_eval_mode_bn_and_leaves_the_model_untouched():
    model = tiny_model()
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, 32, 32, generator=g), torch.randint(0, 10, (40,), generator=g)
    before = copy.deepcopy(model.state_dict())
    ev = Evaluator(model, x, y, batch_size=16)
    with torch.no_grad():
        logits = model(x)
    loss0, acc0 = ev([], [])
    assert loss0 == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert acc0 == pytest.approx(100.0 * (logits.argmax(1) == y).float().mean().item())
    d = random_direction(model, g)
    loss, _ = ev([0.3], [d])
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in shifted.named_parameters():
            p.add_(0.3 * d[n])
        ref = F.cross_entropy(shifted.eval()(x), y).item()
    assert loss == pytest.approx(ref, rel=1e-4)
    assert loss != pytest.approx(loss0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert ev.calls == 2


def test_evaluator_and_pair_hits_in_the_runs_layout_and_precision():
    """channels_last gives the fp32 result (up to summation order); bf16 autocast stays close, and neither changes
    the model's own parameters or their layout."""
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 3, 32, 32, generator=g), torch.randint(0, 10, (60,), generator=g)
    d = random_direction(model, g)
    ref = Evaluator(model, x, y, batch_size=25)
    cl = Evaluator(model, x, y, batch_size=25, channels_last=True)
    bf = Evaluator(
        model, x, y, batch_size=25, channels_last=True, autocast=lambda: torch.autocast("cpu", torch.bfloat16)
    )
    for coeffs in ([], [0.2]):
        loss, acc = ref(coeffs, [d])
        assert cl(coeffs, [d])[0] == pytest.approx(loss, rel=1e-4)
        assert bf(coeffs, [d])[0] == pytest.approx(loss, rel=5e-2)
    assert all(p.is_contiguous() for p in model.parameters())
    x1, x2, y1, y2 = x[:30], x[30:], y[:30], (y[30:] + 1) % 10
    lam = torch.tensor([0.0, 0.5, 1.0])
    plain = pair_hits(model, x1, y1, x2, y2, lam, 16)
    layout = pair_hits(model, x1, y1, x2, y2, lam, 16, channels_last=True)
    assert (plain == layout).float().mean() > 0.97
    half = pair_hits(model, x1, y1, x2, y2, lam, 16, autocast=lambda: torch.autocast("cpu", torch.bfloat16))
    assert half.shape == plain.shape and (plain == half).float().mean() > 0.8


class Quadratic:
    """A fake evaluator: loss = 1 + a^2 along any direction (for first_crossings / basin_width)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, coeffs, dirs):
        self.calls += 1
        a = coeffs[0] * dirs[0]["w"].item() if coeffs else 0.0
        return 1.0 + a * a, 0.0


def test_first_crossings_and_basin_width_on_a_known_curve():
    ev = Quadratic()
    d = {"w": torch.tensor(2.0)}  # loss = 1 + 4 a^2 -> reaches L at a = sqrt((L - 1) / 4)
    got = first_crossings(ev, d, [2.0, 5.0, 1e9], loss0=1.0, bisect=12)
    assert got[0] == pytest.approx(0.5, rel=1e-3)
    assert got[1] == pytest.approx(1.0, rel=1e-3)
    assert got[2] is None  # not reached within max_alpha
    res = basin_width(ev, [d], ["+1", "5", "0.5"])
    assert res["loss0"] == 1.0 and res["rays"] == 2
    assert res["levels"]["+1"]["loss"] == 2.0 and res["levels"]["+1"]["mean"] == pytest.approx(0.5, rel=1e-2)
    assert res["levels"]["5"]["mean"] == pytest.approx(1.0, rel=1e-2)
    assert res["levels"]["0.5"]["below_minimum"] and res["levels"]["0.5"]["mean"] == 0.0
    assert resolve_levels(["+0.5", 3], 1.25) == [("+0.5", 1.75), ("3", 3.0)]
    # one direction: a mean but no interval (a zero-width one would read as certainty)
    assert res["levels"]["+1"]["per_direction"] == [pytest.approx(0.5, rel=1e-2)]
    assert res["levels"]["+1"]["ci95"] is None
    flat = {"w": torch.tensor(0.0)}  # the loss never changes along it: the level is never reached
    three = basin_width(ev, [d, flat, flat], ["+1"])["levels"]["+1"]
    assert three["per_direction"][1:] == [None, None] and three["ci95"] is None  # one direction reached it
    diff = paired_width_difference([0.5], [0.4])
    assert diff[0] == pytest.approx(0.1) and diff[1:] == (None, None)
    mean, lo, hi = paired_width_difference([0.5, 0.7, 0.6], [0.4, 0.4, 0.5])
    assert lo <= mean <= hi and lo < hi


def test_fixed_subset_is_stratified_and_deterministic():
    labels = torch.arange(1000) % 10
    idx = fixed_subset(labels, 200, seed=0)
    assert len(idx) == 200 and torch.equal(idx, fixed_subset(labels, 200, seed=0))
    assert torch.bincount(labels[idx], minlength=10).tolist() == [20] * 10
    assert len(fixed_subset(labels, 5000)) == 1000
