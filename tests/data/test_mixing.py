"""reglab.data.mixing: Beta sampling, mixup, CutMix, decoupled ratios, the Mixer, and torchvision cross-checks.

Statistical checks use Kolmogorov-Smirnov statistics at alpha = 0.001 (c(alpha) = 1.95) with fixed seeds, so
they are deterministic: a failure is a real distribution error, not bad luck on this run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision.transforms import v2

from reglab.config import load_config
from reglab.data.mixing import Mixer, build_mixer, cutmix, mixup, one_hot, sample_beta, sample_boxes
from reglab.train.losses import Criterion, smooth_targets

KS_C = 1.95  # c(alpha) for alpha = 0.001


def ks_two_sample(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic and its critical value at alpha = 0.001."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    grid = np.concatenate([a, b])
    d = np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)).max()
    n, m = len(a), len(b)
    return float(d), KS_C * math.sqrt((n + m) / (n * m))


def ks_uniform(x: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """One-sample KS statistic against Uniform(lo, hi) and its critical value at alpha = 0.001."""
    x = np.sort(np.asarray(x, np.float64))
    n = len(x)
    cdf = np.clip((x - lo) / (hi - lo), 0, 1)
    i = np.arange(1, n + 1)
    d = max((i / n - cdf).max(), (cdf - (i - 1) / n).max())
    return float(d), KS_C / math.sqrt(n)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def read_mixup(xm, ym, x):
    """From the output of a mixup with x: B x 1 x 1 x 1 (distinct values) and y = one-hot(arange(B)):
    partner index, label ratio (ym[i, i]) and image ratio per sample; fixed points (partner == self) dropped."""
    b = len(x)
    eye = torch.eye(b, dtype=torch.bool)
    lam_y = ym[eye]
    partner = ym.masked_fill(eye, -1).argmax(1)
    keep = (partner != torch.arange(b)) & (ym[torch.arange(b), partner] > 1e-3)
    xi, xj, xo = x.flatten().double(), x.flatten()[partner].double(), xm.flatten().double()
    lam_x = (xo - xj) / (xi - xj)
    return partner[keep], lam_y[keep].double(), lam_x[keep]


# ----------------------------------------------------------------------------------------------------------
# sample_beta


@pytest.mark.parametrize("alpha", [0.2, 0.5, 1.0, 2.0])
def test_sample_beta_matches_numpy_beta(alpha):
    n = 20_000
    s = sample_beta(alpha, n, gen(123), "cpu")
    assert s.shape == (n,) and s.dtype == torch.float32
    assert torch.isfinite(s).all()
    assert (s >= 0).all() and (s <= 1).all()
    ref = np.random.default_rng(7).beta(alpha, alpha, n)
    d, crit = ks_two_sample(s.numpy(), ref)
    assert d < crit, f"KS D={d:.4f} >= {crit:.4f} for Beta({alpha}, {alpha})"
    # Moments: mean 1/2, variance 1 / (4 (2a + 1)); standard errors about 0.002-0.003 here.
    assert abs(s.mean().item() - 0.5) < 0.015
    assert abs(s.var().item() - 1 / (4 * (2 * alpha + 1))) < 0.01


def test_sample_beta_is_deterministic_and_uses_only_the_generator():
    state = torch.get_rng_state()
    a = sample_beta(0.4, 1000, gen(5), "cpu")
    b = sample_beta(0.4, 1000, gen(5), "cpu")
    c = sample_beta(0.4, 1000, gen(6), "cpu")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def test_sample_beta_small_alpha_has_no_nan():
    s = sample_beta(0.05, 200_000, gen(0), "cpu")
    assert torch.isfinite(s).all()
    assert (s >= 0).all() and (s <= 1).all()


# ----------------------------------------------------------------------------------------------------------
# mixup


def test_mixup_targets_for_known_perm_and_lambda():
    b, k = 8, 5
    x = torch.randn(b, 3, 4, 4)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    perm = torch.tensor([3, 0, 1, 2, 7, 6, 5, 4])
    yh = one_hot(y, k)
    assert yh.dtype == torch.float32
    xm, ym = mixup(x, yh, perm, 0.3)
    assert xm.shape == x.shape and xm.dtype == x.dtype
    assert ym.shape == (b, k) and ym.dtype == torch.float32
    assert torch.allclose(ym, 0.3 * yh + 0.7 * yh[perm], atol=1e-6)
    assert torch.allclose(xm, 0.3 * x + 0.7 * x[perm], atol=1e-6)
    assert torch.allclose(ym.sum(1), torch.ones(b), atol=1e-6)
    # One ratio per sample.
    lam = torch.linspace(0.1, 0.9, b)
    xm, ym = mixup(x, yh, perm, lam)
    assert torch.allclose(ym, lam[:, None] * yh + (1 - lam[:, None]) * yh[perm], atol=1e-6)
    assert torch.allclose(xm, lam.view(b, 1, 1, 1) * x + (1 - lam.view(b, 1, 1, 1)) * x[perm], atol=1e-6)
    assert torch.allclose(ym.sum(1), torch.ones(b), atol=1e-6)
    # Decoupled: labels mixed with their own ratio.
    xm, ym = mixup(x, yh, perm, 0.5, lam)
    assert torch.allclose(xm, 0.5 * (x + x[perm]), atol=1e-6)
    assert torch.allclose(ym, lam[:, None] * yh + (1 - lam[:, None]) * yh[perm], atol=1e-6)


def test_mixer_per_batch_vs_per_sample_lambda():
    b = 64
    x = torch.randn(b, 1, 1, 1, dtype=torch.float64) * 10
    y = torch.arange(b)
    for per_sample in (False, True):
        xm, ym = Mixer(b, mixup_alpha=1.0, per_sample=per_sample)(x, y, gen(3))
        partner, lam_y, lam_x = read_mixup(xm, ym, x)
        assert len(partner) >= b - 5
        assert torch.allclose(lam_x, lam_y, atol=1e-5)  # tied
        assert torch.allclose(ym.sum(1), torch.ones(b), atol=1e-6)
        if per_sample:
            assert lam_y.std() > 0.15 and len(torch.unique(lam_y.float())) > b // 2
        else:
            assert torch.allclose(lam_y, lam_y[0].expand_as(lam_y), atol=1e-6)


def test_mixer_uniform_ratio_per_sample_is_uniform():
    b = 2000
    x = torch.randn(b, 1, 1, 1, dtype=torch.float64) * 10
    y = torch.arange(b)
    mixer = Mixer(b, lam_x=("uniform", (0.3, 0.7)), per_sample=True)
    xm, ym = mixer(x, y, gen(11))
    partner, lam_y, lam_x = read_mixup(xm, ym, x)
    assert torch.allclose(lam_x, lam_y, atol=1e-5)
    assert lam_y.min() >= 0.3 - 1e-6 and lam_y.max() <= 0.7 + 1e-6
    d, crit = ks_uniform(lam_y.numpy(), 0.3, 0.7)
    assert d < crit, f"KS D={d:.4f} >= {crit:.4f} against Uniform(0.3, 0.7)"
    # The partner is a permutation (every sample is some other sample's partner exactly once).
    _, counts = torch.unique(partner, return_counts=True)
    assert (counts == 1).all()


def test_decoupled_fixed_image_ratio_uniform_label_ratio():
    b = 1000
    x = torch.randn(b, 1, 1, 1, dtype=torch.float64) * 10
    y = torch.arange(b)
    mixer = Mixer(b, lam_x=("fixed", 0.5), lam_y=("uniform", (0.0, 1.0)), per_sample=True)
    xm, ym = mixer(x, y, gen(12))
    partner, lam_y, lam_x = read_mixup(xm, ym, x)
    assert torch.allclose(lam_x, torch.full_like(lam_x, 0.5), atol=1e-6)
    assert len(partner) > 0.99 * b - 5
    # Images: exactly the average, for every sample (the partner read from the images themselves).
    avg = 0.5 * (x.flatten()[:, None] + x.flatten()[None, :])
    assert ((avg - xm.flatten()[:, None]).abs() < 1e-12).any(1).all()
    assert lam_y.std() > 0.2  # labels get per-sample ratios ...
    assert (lam_y - lam_x).abs().max() > 0.3  # ... different from the images' 0.5
    d, crit = ks_uniform(lam_y.numpy(), 0.0, 1.0)
    assert d < crit
    assert torch.allclose(ym.sum(1), torch.ones(b), atol=1e-6)


def test_tied_label_ratio_equals_image_ratio():
    b = 500
    x = torch.randn(b, 1, 1, 1, dtype=torch.float64) * 10
    y = torch.arange(b)
    xm, ym = Mixer(b, lam_x=("uniform", (0.0, 1.0)), lam_y=None, per_sample=True)(x, y, gen(13))
    _, lam_y, lam_x = read_mixup(xm, ym, x)
    assert lam_y.std() > 0.2
    assert torch.allclose(lam_x, lam_y, atol=1e-5)


def test_build_mixer_from_config():
    cfg = load_config(
        None,
        [
            "mix.lam_x=fixed",
            "mix.lam_x_range=[0.5,0.5]",
            "mix.lam_y=uniform",
            "mix.lam_y_range=[0.2,0.9]",
            "mix.per_sample=true",
        ],
    )
    m = build_mixer(cfg.mix, 10)
    assert m.lam_x == ("fixed", 0.5) and m.lam_y == ("uniform", (0.2, 0.9)) and m.per_sample
    m = build_mixer(load_config(None, ["mix.mixup_alpha=0.4"]).mix, 10)
    assert m.lam_x == ("beta", 0.4) and m.lam_y is None
    m = build_mixer(load_config(None, ["mix.mixup_alpha=0.4", "mix.lam_y=beta"]).mix, 10)
    assert m.lam_y == ("beta", 0.4)


# ----------------------------------------------------------------------------------------------------------
# CutMix


def constant_images(b: int, h: int = 32, w: int = 32) -> torch.Tensor:
    """Image i is the constant i + 1 in every channel and pixel."""
    return (torch.arange(b, dtype=torch.float32) + 1).view(b, 1, 1, 1).expand(b, 3, h, w).contiguous()


@pytest.mark.parametrize("h, w", [(32, 32), (24, 40)])
def test_cutmix_lambda_is_kept_area(h, w):
    b, k = 64, 64
    x = constant_images(b, h, w)
    y = torch.arange(b)
    g = gen(21)
    perm = torch.randperm(b, generator=g)
    lam0 = sample_beta(1.0, b, g, "cpu")
    boxes = sample_boxes(lam0, h, w, g)
    assert boxes.shape == (b, 4) and boxes.dtype == torch.int64
    y0, y1, x0, x1 = boxes.unbind(1)
    assert ((0 <= y0) & (y0 <= y1) & (y1 <= h) & (0 <= x0) & (x0 <= x1) & (x1 <= w)).all()
    # Unclipped boxes have side 2 * (floor(sqrt(1 - lam) * side) // 2), i.e. area ~ (1 - lam) * H * W.
    side_h = 2 * ((torch.sqrt(1 - lam0) * h).long() // 2)
    side_w = 2 * ((torch.sqrt(1 - lam0) * w).long() // 2)
    inside = (y0 > 0) & (y1 < h) & (x0 > 0) & (x1 < w)
    assert inside.sum() > 5
    assert torch.equal((y1 - y0)[inside], side_h[inside]) and torch.equal((x1 - x0)[inside], side_w[inside])

    xm, ym, lam = cutmix(x, one_hot(y, k), perm, boxes)
    area = ((y1 - y0) * (x1 - x0)).float()
    assert torch.allclose(lam, 1 - area / (h * w), atol=1e-6)
    own = (xm == x).float().mean((1, 2, 3))
    partner_px = (xm == x[perm]).float().mean((1, 2, 3))
    moved = perm != torch.arange(b)
    assert torch.allclose(own[moved], lam[moved], atol=1e-6)
    assert torch.allclose((own + partner_px)[moved], torch.ones(int(moved.sum())))  # nothing else in there
    # The pasted pixels are exactly the box.
    for i in torch.nonzero(moved).flatten()[:10].tolist():
        a0, a1, b0, b1 = boxes[i].tolist()
        assert (xm[i, :, a0:a1, b0:b1] == x[perm[i]][:, a0:a1, b0:b1]).all()
    yh = one_hot(y, k)
    assert torch.allclose(ym, lam[:, None] * yh + (1 - lam[:, None]) * yh[perm], atol=1e-6)
    assert torch.allclose(ym.sum(1), torch.ones(b), atol=1e-6)


def test_mixer_cutmix_targets_use_the_kept_area():
    b = 64
    x = constant_images(b)
    y = torch.arange(b)
    for per_sample in (False, True):
        xm, ym = Mixer(b, cutmix_alpha=1.0, per_sample=per_sample)(x, y, gen(22))
        own = (xm == x).float().mean((1, 2, 3))
        self_w = ym[torch.arange(b), y]  # a sample paired with itself keeps everything and weight 1
        assert (own < 1).sum() > b // 2
        assert torch.allclose(self_w, own, atol=1e-6)
        assert torch.allclose(ym.sum(1), torch.ones(b), atol=1e-6)
        if not per_sample:  # one box for the whole batch: the same area kept by every moved sample
            moved = own < 1
            assert torch.allclose(own[moved], own[moved][0].expand(int(moved.sum())), atol=1e-6)
        else:
            assert len(torch.unique(own)) > 10


# ----------------------------------------------------------------------------------------------------------
# Cross-checks against torchvision.transforms.v2.MixUp / CutMix


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_mixup_matches_torchvision(seed, alpha):
    b, k = 16, 10
    torch.manual_seed(100 + seed)
    x = torch.rand(b, 3, 32, 32)
    y = torch.randint(0, k, (b,))
    torch.manual_seed(seed)
    tx, ty = v2.MixUp(alpha=alpha, num_classes=k)(x, y)
    torch.manual_seed(seed)  # re-draw the same lambda the way torchvision does
    lam = float(torch.distributions.Beta(torch.tensor([alpha]), torch.tensor([alpha])).sample(()))
    perm = torch.arange(b).roll(1)  # x.roll(1, 0)[i] == x[perm[i]]
    assert torch.equal(x.roll(1, 0), x[perm])
    xm, ym = mixup(x, one_hot(y, k), perm, lam)
    assert torch.allclose(xm, tx, atol=1e-6)
    assert torch.allclose(ym, ty, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_cutmix_matches_torchvision(seed, monkeypatch):
    b, k, h, w = 16, 10, 32, 32
    torch.manual_seed(100 + seed)
    x = torch.rand(b, 3, h, w)
    y = torch.randint(0, k, (b,))
    torch.manual_seed(seed)
    tx, ty = v2.CutMix(alpha=1.0, num_classes=k)(x, y)
    # Re-draw torchvision's lambda and box centre.
    torch.manual_seed(seed)
    lam = float(torch.distributions.Beta(torch.tensor([1.0]), torch.tensor([1.0])).sample(()))
    r_x = torch.randint(w, size=(1,))
    r_y = torch.randint(h, size=(1,))
    r = 0.5 * math.sqrt(1.0 - lam)
    rw, rh = int(r * w), int(r * h)
    x1, y1 = int(torch.clamp(r_x - rw, min=0)), int(torch.clamp(r_y - rh, min=0))
    x2, y2 = int(torch.clamp(r_x + rw, max=w)), int(torch.clamp(r_y + rh, max=h))
    tv_lam = 1.0 - (x2 - x1) * (y2 - y1) / (w * h)
    perm = torch.arange(b).roll(1)
    boxes = torch.tensor([[y1, y2, x1, x2]])
    xm, ym, lam_c = cutmix(x, one_hot(y, k), perm, boxes)
    assert torch.equal(xm, tx)
    assert torch.allclose(ym, ty, atol=1e-6)
    assert lam_c.item() == pytest.approx(tv_lam, abs=1e-6)

    # reglab's box construction from the same lambda and centre gives torchvision's box.
    centres = [r_y.clone(), r_x.clone()]  # sample_boxes draws the row centre, then the column centre
    monkeypatch.setattr(torch, "randint", lambda *a, **kw: centres.pop(0))
    got = sample_boxes(torch.tensor([lam]), h, w, gen(0))
    monkeypatch.undo()
    assert got.tolist() == [[y1, y2, x1, x2]]


# ----------------------------------------------------------------------------------------------------------
# Mixer behaviour


def test_switch_prob_picks_one_method():
    b = 32
    x = constant_images(b, 16, 16)
    y = torch.arange(b)
    for seed in range(6):
        # switch_prob=0: always mixup -> each output image is constant (a blend of two constants).
        xm, _ = Mixer(b, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.0)(x, y, gen(seed))
        flat = xm.flatten(1)
        assert (flat == flat[:, :1]).all()
        # switch_prob=1: always cutmix -> each image holds its own constant and its partner's, never a blend,
        # and its label weight is the fraction of its own pixels.
        xm, ym = Mixer(b, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0)(x, y, gen(seed))
        partner = ym.masked_fill(torch.eye(b, dtype=torch.bool), -1).argmax(1)
        own_px, partner_px = xm == x, xm == x[partner]
        assert (own_px | partner_px).all()
        own = own_px.float().mean((1, 2, 3))
        assert torch.allclose(ym[torch.arange(b), y], own, atol=1e-6)
        assert (own < 1).any()


def test_prob_zero_returns_inputs_and_one_hot():
    b, k = 12, 7
    x = torch.randn(b, 3, 8, 8)
    y = torch.randint(0, k, (b,))
    for kw in (dict(mixup_alpha=1.0), dict(cutmix_alpha=1.0), dict(mixup_alpha=1.0, cutmix_alpha=1.0)):
        xm, ym = Mixer(k, prob=0.0, per_sample=True, **kw)(x, y, gen(1))
        assert torch.equal(xm, x)
        assert torch.equal(ym, F.one_hot(y, k).float())
    # No method enabled: inputs unchanged, targets one-hot.
    xm, ym = Mixer(k)(x, y, gen(1))
    assert torch.equal(xm, x) and torch.equal(ym, F.one_hot(y, k).float())


def test_prob_half_mixes_about_half_of_the_batches():
    b, k = 8, 8
    x = torch.randn(b, 3, 4, 4)
    y = torch.arange(b)
    g = gen(2)
    mixed = sum(not torch.equal(Mixer(k, mixup_alpha=1.0, prob=0.5)(x, y, g)[0], x) for _ in range(400))
    assert abs(mixed / 400 - 0.5) < 0.1


@pytest.mark.parametrize(
    "kw",
    [
        dict(mixup_alpha=1.0),
        dict(cutmix_alpha=1.0),
        dict(mixup_alpha=0.5, cutmix_alpha=1.0, switch_prob=0.5, prob=0.7, per_sample=True),
        dict(lam_x=("uniform", (0.2, 0.8)), lam_y=("beta", 0.5), per_sample=True),
    ],
)
def test_mixer_draws_only_from_the_generator(kw):
    b, k = 16, 10
    x = torch.randn(b, 3, 8, 8)
    y = torch.randint(0, k, (b,))
    state = torch.get_rng_state()
    m = Mixer(k, **kw)
    a = m(x, y, gen(9))
    c = m(x, y, gen(9))
    assert torch.equal(torch.get_rng_state(), state), "the global RNG was used"
    assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    outs = [m(x, y, gen(s)) for s in range(10, 14)]
    assert any(not torch.equal(o[1], a[1]) for o in outs)


@pytest.mark.parametrize("convention", ["torch", "others"])
def test_mixed_targets_with_label_smoothing(convention):
    b, k, eps = 32, 10, 0.1
    x = torch.randn(b, 3, 8, 8)
    y = torch.randint(0, k, (b,))
    _, ym = Mixer(k, mixup_alpha=1.0, cutmix_alpha=1.0, per_sample=True)(x, y, gen(4))
    soft = smooth_targets(ym, k, eps, convention)
    assert torch.allclose(soft.sum(1), torch.ones(b), atol=1e-6)
    off = eps / k if convention == "torch" else eps / (k - 1)
    assert soft.min() >= off - 1e-7 and soft.max() <= 1
    logits = torch.randn(b, k)
    crit = Criterion(k, "ce", eps, convention)
    expect = -(soft * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(crit(logits, ym), expect, atol=1e-6)
    # Hard labels through the same criterion: the smoothed one-hot target, same sum rule.
    hard = smooth_targets(y, k, eps, convention)
    assert torch.allclose(hard.sum(1), torch.ones(b), atol=1e-6)
    assert torch.allclose(crit(logits, y), -(hard * F.log_softmax(logits, 1)).sum(1).mean(), atol=1e-6)


def test_int32_labels_work_like_int64():
    b, k = 8, 5
    x = torch.randn(b, 3, 4, 4)
    y = torch.randint(0, k, (b,))
    m = Mixer(k, mixup_alpha=1.0)
    a = m(x, y, gen(0))
    c = m(x, y.to(torch.int32), gen(0))
    assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])


# ----------------------------------------------------------------------------------------------------------
# Property test


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    b=st.integers(2, 16),
    k=st.integers(2, 20),
    alpha=st.floats(0.2, 4.0),
    per_sample=st.booleans(),
    method=st.sampled_from(["mixup", "cutmix", "both", "decoupled"]),
    seed=st.integers(0, 2**31 - 1),
    hw=st.sampled_from([(8, 8), (32, 32), (5, 9)]),
)
def test_mixer_properties(b, k, alpha, per_sample, method, seed, hw):
    kw = {
        "mixup": dict(mixup_alpha=alpha),
        "cutmix": dict(cutmix_alpha=alpha),
        "both": dict(mixup_alpha=alpha, cutmix_alpha=alpha),
        "decoupled": dict(mixup_alpha=alpha, lam_y=("uniform", (0.0, 1.0))),
    }[method]
    g = gen(seed)
    x = torch.randn(b, 3, *hw, generator=g)
    y = torch.randint(0, k, (b,), generator=g)
    xm, ym = Mixer(k, per_sample=per_sample, **kw)(x, y, g)
    assert xm.shape == x.shape and xm.dtype == x.dtype
    assert ym.shape == (b, k) and ym.dtype == torch.float32
    assert torch.isfinite(xm).all() and torch.isfinite(ym).all()
    assert torch.allclose(ym.sum(1), torch.ones(b), atol=1e-6)
    assert (ym >= -1e-7).all() and (ym <= 1 + 1e-7).all()
    # Mixed images stay within the per-pixel range of the batch.
    assert (xm >= x.min(0).values - 1e-5).all() and (xm <= x.max(0).values + 1e-5).all()
