"""reglab.train.losses: the criterion's label-smoothing conventions, soft targets and the clamped cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reglab.train.losses import Criterion, clamped_cross_entropy, smooth_targets, soft_cross_entropy

# ----------------------------------------------------------------------------------------------------------
# Criterion


def test_hard_labels_torch_convention_equals_f_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(16, 10, generator=g) * 3, torch.randint(0, 10, (16,), generator=g)
    for eps in (0.0, 0.1, 0.3):
        got = Criterion(10, "ce", eps, "torch")(logits, y)
        assert torch.allclose(got, F.cross_entropy(logits, y, label_smoothing=eps), atol=1e-6), eps
        # the soft-target path with torch-convention targets must agree with the fused path
        soft = smooth_targets(y, 10, eps, "torch")
        assert torch.allclose(soft_cross_entropy(logits, soft), got, atol=1e-6), eps


def test_others_convention_targets_and_loss():
    k, eps = 10, 0.1
    y = torch.tensor([3, 0, 9])
    t = smooth_targets(y, k, eps, "others")
    for i, c in enumerate(y.tolist()):
        assert t[i, c].item() == pytest.approx(1 - eps, abs=1e-7)
        others = torch.cat([t[i, :c], t[i, c + 1 :]])
        assert torch.allclose(others, torch.full((k - 1,), eps / (k - 1)), atol=1e-7)
    assert torch.allclose(t.sum(1), torch.ones(3), atol=1e-6)
    # torch convention differs: true class 1 - eps + eps/K, others eps/K
    tt = smooth_targets(y, k, eps, "torch")
    assert tt[0, 3].item() == pytest.approx(1 - eps + eps / k, abs=1e-7)
    assert tt[0, 0].item() == pytest.approx(eps / k, abs=1e-7)

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, k, generator=g) * 2
    logp = torch.log_softmax(logits.double(), 1)
    manual = 0.0
    for i, c in enumerate(y.tolist()):
        manual += -(1 - eps) * logp[i, c].item() - sum(
            eps / (k - 1) * logp[i, j].item() for j in range(k) if j != c
        )
    manual /= 3
    got = Criterion(k, "ce", eps, "others")(logits, y)
    assert got.item() == pytest.approx(manual, rel=1e-5)
    assert got.item() != pytest.approx(F.cross_entropy(logits, y, label_smoothing=eps).item(), rel=1e-5)


def test_soft_targets_equal_two_term_mixup_loss():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 10, generator=g)
    y1, y2 = torch.randint(0, 10, (8,), generator=g), torch.randint(0, 10, (8,), generator=g)
    for lam in (0.0, 0.3, 0.75, 1.0):
        mixed = lam * F.one_hot(y1, 10).float() + (1 - lam) * F.one_hot(y2, 10).float()
        got = Criterion(10, "ce")(logits, mixed)
        want = lam * F.cross_entropy(logits, y1) + (1 - lam) * F.cross_entropy(logits, y2)
        assert torch.allclose(got, want, atol=1e-6), lam
        # smoothing is linear in the target, so the two-term form holds with smoothing too
        got_ls = Criterion(10, "ce", 0.1, "torch")(logits, mixed)
        want_ls = lam * F.cross_entropy(logits, y1, label_smoothing=0.1) + (1 - lam) * F.cross_entropy(
            logits, y2, label_smoothing=0.1
        )
        assert torch.allclose(got_ls, want_ls, atol=1e-6), lam


def test_clamped_ce_formula_and_difference_from_ce():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 10, generator=g)
    logits[0, 0] = -30.0  # softmax(class 0) << 1e-5 for sample 0, whose label is 0
    logits[0, 1] = 10.0
    y = torch.tensor([0, 1, 2, 3])
    t = F.one_hot(y, 10).float()
    manual = -(t * torch.log(torch.clamp(torch.softmax(logits, 1), 1e-5, 1))).sum() / 4
    got = Criterion(10, "clamped_ce")(logits, y)
    assert torch.allclose(got, manual, atol=1e-6)
    assert torch.allclose(clamped_cross_entropy(logits, t), manual, atol=1e-6)
    assert torch.softmax(logits, 1)[0, 0] < 1e-5
    ce = F.cross_entropy(logits, y)
    assert ce.item() > got.item() + 1.0  # the clamp caps sample 0's loss at -log(1e-5)
    # where every probability is >= 1e-5 the two agree
    mild = torch.randn(4, 10, generator=g) * 0.5
    assert torch.allclose(Criterion(10, "clamped_ce")(mild, y), F.cross_entropy(mild, y), atol=1e-6)


def test_clamped_ce_with_smoothing_uses_smoothed_targets():
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(4))
    y = torch.arange(5)
    t = smooth_targets(y, 10, 0.2, "others")
    assert torch.allclose(Criterion(10, "clamped_ce", 0.2, "others")(logits, y), clamped_cross_entropy(logits, t))
