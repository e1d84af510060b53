"""reglab.data.augment (Cutout, RandomErasing, RandomRotation, build_transforms) and reglab.data.policies
(per-sample AutoAugment / RandAugment / TrivialAugment), checked against their definitions and torchvision.

Statistical checks use fixed seeds and bounds of about five standard errors, so they are deterministic.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from reglab.config import AugConfig, load_config
from reglab.data.augment import (
    Cutout,
    RandomCrop,
    RandomErasing,
    RandomFlip,
    RandomRotation,
    box_masks,
    build_transforms,
    training_loader,
)
from reglab.data.loader import DeviceLoader
from reglab.data.policies import BatchPolicy
from reglab.errors import UserError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def binomial_ok(k: int, n: int, p: float, z: float = 5.0) -> bool:
    return abs(k / n - p) <= z * math.sqrt(p * (1 - p) / n) + 1e-12


@pytest.fixture
def force_rand(monkeypatch):
    """``force_rand(u)``: make every ``torch.rand`` call return ``u`` (to pin RandomRotation's angles)."""
    real = torch.rand

    def install(u: float):
        def fake(*size, generator=None, device=None, dtype=None, **kw):
            return torch.full(real(*size).shape, u, device=device, dtype=dtype or torch.float32)

        monkeypatch.setattr(torch, "rand", fake)

    return install


# ----------------------------------------------------------------------------------------------------------
# box_masks


def test_box_masks_are_half_open_boxes():
    boxes = torch.tensor([[0, 3, 1, 2], [-2, 2, 30, 40], [5, 5, 0, 32]])
    m = box_masks(boxes, 32, 32)
    assert m.shape == (3, 1, 32, 32) and m.dtype == torch.bool
    assert m[0].sum() == 3 and m[0, 0, :3, 1].all()
    assert m[1].sum() == 2 * 2 and m[1, 0, :2, 30:].all()  # clipped at the borders
    assert m[2].sum() == 0  # empty


# ----------------------------------------------------------------------------------------------------------
# Cutout


def test_cutout_single_hole_area_and_centre_distribution():
    b, s = 4000, 8
    x = torch.ones(b, 3, 32, 32)
    out = Cutout(holes=1, size=s)(x, gen(0))
    zero = out == 0
    assert (zero.all(1) | ~zero.any(1)).all()  # the same pixels in every channel
    assert ((out == 0) | (out == 1)).all()  # zero fill, the rest untouched
    counts = zero[:, 0].sum((1, 2))
    assert counts.max() == s * s and counts.min() > 0
    assert Counter(counts.tolist()).most_common(1)[0][0] == s * s
    # Centres uniform over the 32x32 image: the hole is fully inside iff the centre is in [4, 28] on both axes.
    full = int((counts == s * s).sum())
    assert binomial_ok(full, b, (25 / 32) ** 2)
    # Each hole is an axis-aligned rectangle (a square clipped by the border).
    rows, cols = zero[:, 0].any(2), zero[:, 0].any(1)
    assert torch.equal(rows.sum(1) * cols.sum(1), counts)
    # Centre c ~ U{0..31}, hole rows [c - 4, c + 4): row r is hit iff c in [r - 3, r + 4] (clipped to the image).
    r = torch.arange(32)
    expect = ((r + 4).clamp(max=31) - (r - 3).clamp(min=0) + 1) / 32
    for hit in (rows.float().mean(0), cols.float().mean(0)):
        assert torch.allclose(hit, expect.float(), atol=0.035), hit


def test_cutout_matches_redrawn_centres():
    b, holes, s = 64, 3, 5
    x = torch.randn(b, 3, 16, 16)
    g = gen(3)
    g2 = torch.Generator().manual_seed(0)
    g2.set_state(g.get_state())
    out = Cutout(holes=holes, size=s, value=-7.0)(x, g)
    cy = torch.randint(0, 16, (holes, b), generator=g2)
    cx = torch.randint(0, 16, (holes, b), generator=g2)
    expect = torch.zeros(b, 16, 16, dtype=torch.bool)
    for i in range(b):
        for k in range(holes):
            y0, x0 = int(cy[k, i]) - s // 2, int(cx[k, i]) - s // 2
            expect[i, max(y0, 0) : max(y0 + s, 0), max(x0, 0) : max(x0 + s, 0)] = True
    got = out == -7.0
    assert torch.equal(got[:, 0], expect) and torch.equal(got[:, 2], expect)
    assert torch.equal(out[~got], x[~got])


def test_cutout_several_holes_bound_and_probability():
    b, n, s = 2000, 4, 4
    x = torch.ones(b, 3, 32, 32)
    counts = (Cutout(holes=n, size=s)(x, gen(1))[:, 0] == 0).sum((1, 2))
    assert counts.max() <= n * s * s
    assert (counts == n * s * s).float().mean() > 0.3  # four disjoint, fully inside holes is common
    assert counts.min() >= 4  # a clipped hole keeps at least its centre quarter
    # p < 1: the fraction of images with a hole.
    out = Cutout(holes=1, size=8, p=0.3)(x, gen(2))
    cut = int((out == 0).flatten(1).any(1).sum())
    assert binomial_ok(cut, b, 0.3)


# ----------------------------------------------------------------------------------------------------------
# RandomErasing


def erased_boxes(out: torch.Tensor, fill: float = 0.0):
    """Per image: (erased?, height, width, pixel count) of the erased region (value ``fill`` in channel 0)."""
    z = out[:, 0] == fill
    rows, cols = z.any(2), z.any(1)
    return z.flatten(1).any(1), rows.sum(1), cols.sum(1), z.sum((1, 2))


def test_erasing_probability():
    b = 4000
    x = torch.ones(b, 3, 32, 32)
    for p in (0.25, 0.5, 1.0):
        erased, *_ = erased_boxes(RandomErasing(p=p)(x, gen(int(p * 8))))
        if p == 1.0:
            assert erased.float().mean() > 0.99  # default scale/ratio nearly always fits within 10 tries
        else:
            assert binomial_ok(int(erased.sum()), b, p)
    assert torch.equal(RandomErasing(p=0.0)(x, gen(0)), x)


@pytest.mark.parametrize(
    "scale, ratio", [((0.02, 0.33), (0.3, 3.3)), ((0.1, 0.2), (1.0, 1.0)), ((0.05, 0.4), (0.5, 2.0))]
)
def test_erasing_area_and_aspect_within_bounds(scale, ratio):
    b, h, w = 3000, 32, 32
    x = torch.ones(b, 3, h, w)
    out = RandomErasing(p=1.0, scale=scale, ratio=ratio)(x, gen(5))
    erased, eh, ew, count = erased_boxes(out)
    assert erased.float().mean() > 0.95
    eh, ew, count = eh[erased].double(), ew[erased].double(), count[erased].double()
    assert torch.equal(eh * ew, count)  # one solid rectangle
    assert (eh < h).all() and (ew < w).all()
    # eh = round(sqrt(A r)), ew = round(sqrt(A / r)): the unrounded area and ratio lie in these intervals,
    # which must meet scale * H * W and ratio.
    a_lo, a_hi = (eh - 0.5) * (ew - 0.5), (eh + 0.5) * (ew + 0.5)
    r_lo, r_hi = (eh - 0.5) / (ew + 0.5), (eh + 0.5) / (ew - 0.5).clamp_min(1e-9)
    assert (a_hi >= scale[0] * h * w).all() and (a_lo <= scale[1] * h * w).all()
    assert (r_hi >= ratio[0]).all() and (r_lo <= ratio[1]).all()
    # Position: uniform over the valid offsets, so both borders get touched.
    z = out[:, 0] == 0
    assert z[:, 0, :].any() and z[:, -1, :].any() and z[:, :, 0].any() and z[:, :, -1].any()


def test_erasing_random_value_is_standard_normal_noise():
    b = 500
    x = torch.full((b, 3, 32, 32), 5.0)
    out = RandomErasing(p=1.0, value="random")(x, gen(7))
    changed = out != 5.0
    assert changed.flatten(1).any(1).float().mean() > 0.95
    noise = out[changed]
    assert abs(noise.mean().item()) < 0.02 and abs(noise.std().item() - 1) < 0.02
    assert (changed.all(1) | ~changed.any(1)).all()  # the same region in all channels
    # Different noise in different channels and images.
    i = int(torch.nonzero(changed[:, 0].flatten(1).any(1))[0])
    assert not torch.equal(out[i, 0][changed[i, 0]], out[i, 1][changed[i, 1]])


def test_erasing_distribution_matches_torchvision():
    n = 600
    img = torch.ones(3, 32, 32)
    torch.manual_seed(0)
    tv = v2.RandomErasing(p=1.0, value=0)
    tv_out = torch.stack([tv(img) for _ in range(n)])
    ours = RandomErasing(p=1.0)(torch.ones(n, 3, 32, 32), gen(0))
    stats = {}
    for name, out in (("tv", tv_out), ("ours", ours)):
        erased, eh, ew, count = erased_boxes(out)
        stats[name] = (erased.float(), eh.double(), ew.double(), count.double())
    for k, what in enumerate(("erased", "height", "width", "area")):
        a, b = stats["tv"][k], stats["ours"][k]
        se = math.sqrt(a.var().item() / n + b.var().item() / n) + 1e-3
        assert abs(a.mean().item() - b.mean().item()) < 5 * se, (what, a.mean().item(), b.mean().item())


# ----------------------------------------------------------------------------------------------------------
# RandomRotation


def test_rotation_zero_degrees_is_identity():
    x = torch.randn(8, 3, 32, 32)
    assert torch.allclose(RandomRotation(0)(x, gen(0)), x, atol=1e-5)


def test_rotation_by_90_degrees_is_rot90(force_rand):
    x = torch.randn(4, 3, 32, 32)
    force_rand(1.0)  # theta = (2u - 1) * degrees = +90
    out = RandomRotation(90)(x, gen(0))
    assert torch.allclose(out, torch.rot90(x, 1, (2, 3)), atol=1e-5)  # counter-clockwise, like torchvision
    assert torch.allclose(out, TF.rotate(x, 90.0, interpolation=InterpolationMode.BILINEAR), atol=1e-5)
    force_rand(0.0)  # -90
    assert torch.allclose(RandomRotation(90)(x, gen(0)), torch.rot90(x, -1, (2, 3)), atol=1e-5)


@pytest.mark.parametrize("u, degrees", [(1.0, 30.0), (0.25, 30.0), (0.9, 15.0), (0.0, 45.0)])
def test_rotation_matches_torchvision_rotate(force_rand, u, degrees):
    x = torch.rand(4, 3, 32, 32)
    force_rand(u)
    out = RandomRotation(degrees)(x, gen(0))
    angle = (2 * u - 1) * degrees
    ref = TF.rotate(x, angle, interpolation=InterpolationMode.BILINEAR)
    diff = (out - ref).abs()
    assert diff[..., 4:28, 4:28].max() < 1e-4  # interior: the same bilinear interpolation
    assert diff.mean() < 1e-3  # borders: at most small differences in the zero fill


def test_rotation_angles_are_per_sample_and_seeded():
    x = torch.rand(1, 3, 32, 32).expand(32, 3, 32, 32).contiguous()
    rot = RandomRotation(30)
    a, b, c = rot(x, gen(4)), rot(x, gen(4)), rot(x, gen(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(torch.unique(a.flatten(1), dim=0)) == 32  # every image its own angle
    # Angles within [-30, 30]: each output equals torchvision's rotation by some angle in that range.
    angles = torch.linspace(-30, 30, 601)
    refs = torch.stack([TF.rotate(x[0], float(t), interpolation=InterpolationMode.BILINEAR) for t in angles])
    err = (a[:, None, :, 4:28, 4:28] - refs[None, :, :, 4:28, 4:28]).abs().mean((2, 3, 4))
    best = angles[err.argmin(1)]
    assert err.min(1).values.max() < 0.01
    assert best.min() < -10 and best.max() > 10  # spread over the range, both signs


# ----------------------------------------------------------------------------------------------------------
# BatchPolicy


POLICIES = ["autoaugment", "randaugment", "trivialaugment"]


def uint8_batch(n: int = 16, seed: int = 0) -> torch.Tensor:
    g = gen(seed)
    base = torch.rand(n, 3, 4, 4, generator=g) * 255
    x = torch.nn.functional.interpolate(base, size=(32, 32), mode="bilinear", align_corners=False)
    return (x + 20 * torch.randn(x.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)


@pytest.mark.parametrize("name", POLICIES)
def test_policy_shape_dtype_and_determinism(name):
    x = uint8_batch(32)
    p = BatchPolicy(name)
    a, b, c = p(x, gen(1)), p(x, gen(1)), p(x, gen(2))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, uint8_batch(32))  # input untouched


@pytest.mark.parametrize("name, min_distinct", [("autoaugment", 15), ("randaugment", 40), ("trivialaugment", 40)])
def test_policy_randomness_is_per_sample(name, min_distinct):
    x = uint8_batch(1).expand(64, 3, 32, 32).contiguous()
    out = BatchPolicy(name)(x, gen(0))
    assert len(torch.unique(out.flatten(1), dim=0)) >= min_distinct


@pytest.mark.parametrize("name", POLICIES)
def test_policy_equals_torchvision_op_per_image(name):
    x = uint8_batch(48, seed=1)
    p = BatchPolicy(name)
    codes = p.sample_codes(len(x), gen(3), x.device)
    out = p.apply_codes(x, codes)
    for i in range(len(x)):
        ref = x[i : i + 1]
        for step in codes[:, i].tolist():
            op, mag = p.table[step]
            ref = p.tv._apply_image_or_video_transform(
                ref, op, mag, interpolation=p.tv.interpolation, fill=p.tv._fill
            )
        assert torch.equal(out[i : i + 1], ref), (i, [p.table[c] for c in codes[:, i].tolist()])


@pytest.mark.parametrize("name", POLICIES)
def test_policy_uniform_code_equals_torchvision_on_whole_batch(name):
    x = uint8_batch(8, seed=2)
    p = BatchPolicy(name)
    p.sample_codes(4, gen(0), x.device)  # fills the code table
    codes = range(len(p.table)) if name == "autoaugment" else range(0, len(p.table), 7)
    for code in codes:
        op, mag = p.table[code]
        out = p.apply_codes(x, torch.full((1, len(x)), code))
        ref = p.tv._apply_image_or_video_transform(x, op, mag, interpolation=p.tv.interpolation, fill=p.tv._fill)
        assert torch.equal(out, ref), (op, mag)


def test_randaugment_table_and_magnitude():
    p = BatchPolicy("randaugment", num_ops=1, magnitude=13)
    codes = p.sample_codes(6000, gen(0), "cpu")
    assert codes.shape == (1, 6000)
    space = v2.RandAugment._AUGMENTATION_SPACE
    assert {op for op, _ in p.table} == set(space)
    assert p.ops == list(space)
    seen = Counter()
    for code, count in zip(*torch.unique(codes, return_counts=True)):
        op, mag = p.table[int(code)]
        seen[op] += int(count)
        fn, signed = space[op]
        mags = fn(31, 32, 32)
        expect = 0.0 if mags is None else float(mags[13])
        assert abs(mag) == pytest.approx(abs(expect)), (op, mag)
        if not signed:
            assert mag == expect
    # Every op of the space is drawn with probability 1/14.
    assert set(seen) == set(space)
    for op, count in seen.items():
        assert binomial_ok(count, 6000, 1 / len(space)), op
    # Signed ops get both signs about equally often.
    signs = Counter()
    for code in codes.flatten().tolist():
        op, mag = p.table[code]
        if space[op][1] and mag != 0:
            signs[mag > 0] += 1
    assert binomial_ok(signs[True], signs[True] + signs[False], 0.5)


def test_randaugment_num_ops_steps():
    p = BatchPolicy("randaugment", num_ops=3, magnitude=9)
    codes = p.sample_codes(50, gen(0), "cpu")
    assert codes.shape == (3, 50)
    assert len({tuple(c) for c in codes.T.tolist()}) > 40


def test_trivialaugment_ops_and_bins():
    p = BatchPolicy("trivialaugment")
    n = 8000
    codes = p.sample_codes(n, gen(1), "cpu")
    assert codes.shape == (1, n)
    space = v2.TrivialAugmentWide._AUGMENTATION_SPACE
    assert {op for op, _ in p.table} == set(space)
    ops = Counter(p.table[c][0] for c in codes[0].tolist())
    for op in space:
        assert binomial_ok(ops[op], n, 1 / len(space)), op
    # Rotate: magnitudes from the 31-bin table with random sign, bins uniform.
    rot = torch.tensor([p.table[c][1] for c in codes[0].tolist() if p.table[c][0] == "Rotate"])
    table = space["Rotate"][0](31, 32, 32)
    assert all(torch.isclose(table, torch.tensor(abs(float(m)))).any() for m in rot)
    assert (rot < 0).any() and (rot > 0).any()
    assert abs(rot.abs().mean().item() - 67.5) < 8


def test_autoaugment_codes_follow_the_cifar10_policies():
    p = BatchPolicy("autoaugment")
    tv = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    n = 20_000
    codes = p.sample_codes(n, gen(2), "cpu")
    assert codes.shape == (2, n)
    space = tv._AUGMENTATION_SPACE

    def mag(op, idx):
        m = space[op][0](10, 32, 32)
        return 0.0 if m is None else abs(float(m[idx]))

    allowed = [[(op, mag(op, idx)) for op, _, idx in pol] for pol in tv._policies]
    for c0, c1 in set(map(tuple, codes.T.tolist())):
        (o0, m0), (o1, m1) = p.table[c0], p.table[c1]
        assert any(
            (c0 == 0 or (o0, abs(m0)) == pol[0]) and (c1 == 0 or (o1, abs(m1)) == pol[1]) for pol in allowed
        ), ((o0, m0), (o1, m1))
    # Each step is skipped with the sub-policies' average probability 1 - p.
    for j in range(2):
        expect = sum(1 - pol[j][1] for pol in tv._policies) / len(tv._policies)
        assert binomial_ok(int((codes[j] == 0).sum()), n, expect), j


# ----------------------------------------------------------------------------------------------------------
# build_transforms


def types(ts) -> list[type]:
    return [type(t) for t in ts]


def test_build_transforms_default_and_all_on():
    raw, norm = build_transforms(AugConfig())
    assert types(raw) == [RandomCrop, RandomFlip] and norm == []
    aug = AugConfig(
        policy="randaugment",
        rotation=10,
        cutout_holes=2,
        cutout_size=6,
        erasing_p=0.5,
        erasing_value="random",
        ra_num_ops=3,
        ra_magnitude=5,
    )
    raw, norm = build_transforms(aug)
    assert types(raw) == [RandomCrop, RandomFlip, BatchPolicy]
    assert types(norm) == [RandomRotation, Cutout, RandomErasing]
    assert raw[2].name == "randaugment" and raw[2].num_ops == 3 and raw[2].magnitude == 5
    assert norm[0].degrees == 10 and (norm[1].holes, norm[1].size) == (2, 6)
    assert norm[2].p == 0.5 and norm[2].value == "random"


@pytest.mark.parametrize(
    "aug, raw_types, norm_types",
    [
        pytest.param(
            AugConfig(
                policy="autoaugment",
                rotation=5,
                cutout_holes=1,
                erasing_p=0.3,
                order=["erasing", "policy", "cutout", "flip", "rotation", "crop"],
            ),
            [BatchPolicy, RandomFlip, RandomCrop],
            [RandomErasing, Cutout, RandomRotation],
            id="order",
        ),
        # Switched off: crop_pad=0, flip=False, rotation=0 -> left out, the rest keep their order.
        pytest.param(
            AugConfig(
                crop_pad=0,
                flip=False,
                policy="trivialaugment",
                rotation=0,
                cutout_holes=1,
                erasing_p=0.3,
                order=["cutout", "crop", "erasing", "flip", "policy", "rotation"],
            ),
            [BatchPolicy],
            [Cutout, RandomErasing],
            id="disabled-left-out",
        ),
        # Entries missing from the order are not built (a validated config refuses such an order, see below).
        pytest.param(
            AugConfig(rotation=10, cutout_holes=1, order=["flip", "cutout"]),
            [RandomFlip],
            [Cutout],
            id="missing-from-order",
        ),
    ],
)
def test_build_transforms_respects_order_and_leaves_out_disabled(aug, raw_types, norm_types):
    raw, norm = build_transforms(aug)
    assert types(raw) == raw_types and types(norm) == norm_types


def test_an_order_that_leaves_out_an_enabled_augmentation_is_refused():
    with pytest.raises(UserError) as exc:
        load_config(None, ["aug.order=[crop,flip]", "aug.cutout_holes=1"])
    msg = str(exc.value)
    assert "leaves out cutout" in msg and "aug.order=[crop,flip,cutout]" in msg
    # switched off, it may be left out
    assert load_config(None, ["aug.order=[crop,flip]"]).aug.order == ["crop", "flip"]


def test_build_transforms_through_config_overrides():
    cfg = load_config(
        None,
        [
            "aug.order=[cutout,flip,crop,rotation]",
            "aug.cutout_holes=1",
            "aug.rotation=3",
            "aug.pad_mode=zero",
            "aug.crop_pad=2",
        ],
    )
    raw, norm = build_transforms(cfg.aug)
    assert types(raw) == [RandomFlip, RandomCrop] and types(norm) == [Cutout, RandomRotation]
    assert raw[1].pad == 2 and raw[1].mode == "zero"


def test_invalid_order_entry_suggests_a_fix():
    with pytest.raises(UserError) as exc:
        load_config(None, ["aug.order=[crop,flop]"])
    msg = str(exc.value)
    assert "aug.order" in msg and "'flop'" in msg and "did you mean 'flip'" in msg
    with pytest.raises(UserError, match="must not repeat"):
        load_config(None, ["aug.order=[crop,flip,crop]"])


def test_alternating_flip_mirrors_each_image_in_exactly_one_of_two_epochs():
    from reglab.data.augment import AlternatingFlip
    from reglab.data.datasets import Split
    from reglab.data.loader import DeviceLoader

    n = 64
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(n)  # label = image index, to find each image again
    split = Split(images, labels)
    flip = [AlternatingFlip()]
    loader = DeviceLoader(split, 16, [0.0] * 3, [1 / 255] * 3, shuffle=True, uint8_transforms=flip, seed=3)

    def flipped_per_image():
        out = torch.zeros(n, dtype=torch.bool)
        for x, y in loader:
            raw = x.round().to(torch.uint8)
            is_flip = (raw == images[y].flip(3)).flatten(1).all(1)
            assert bool((is_flip | (raw == images[y]).flatten(1).all(1)).all())
            out[y] = is_flip
        return out

    e0, e1, e2 = flipped_per_image(), flipped_per_image(), flipped_per_image()
    assert torch.equal(e0, ~e1) and torch.equal(e0, e2)
    assert 16 < int(e0.sum()) < 48  # random bits, not all-or-nothing
    state = loader.state_dict()
    again = DeviceLoader(split, 16, [0.0] * 3, [1 / 255] * 3, shuffle=True, uint8_transforms=flip, seed=3)
    again.load_state_dict(state)
    bits = [ld.uint8_transforms[0].bits for ld in (loader, again)]
    assert again.epoch == 3 and torch.equal(*bits)
    assert flip[0].bits is None  # each loader binds its own copy


def test_training_loader_is_the_training_split_with_the_configured_pipeline():
    """What the training loop, ``reglab augment preview`` and benchmarks/augment_cost.py all iterate."""
    from reglab.data import load_splits
    from tests.helpers.configs import SYNTHETIC_300

    cfg = load_config(None, [*SYNTHETIC_300, "aug.cutout_holes=1", "aug.erasing_p=0.5"])
    data = load_splits(cfg.data)
    loader = training_loader(data, cfg.aug, 32, seed=3, channels_last=True)
    raw, normalized = build_transforms(cfg.aug)
    assert loader.shuffle and loader.drop_last and loader.seed == 3 and len(loader.images) == len(data.train)
    assert loader.memory_format == torch.channels_last and loader.batch_size == 32
    assert [type(t) for t in loader.uint8_transforms] == [type(t) for t in raw]
    assert [type(t) for t in loader.float_transforms] == [type(t) for t in normalized] and normalized
    by_hand = DeviceLoader(
        data.train, 32, data.mean, data.std, shuffle=True, drop_last=True, uint8_transforms=raw,
        float_transforms=normalized, seed=3, channels_last=True,
    )  # fmt: skip
    loader.set_epoch(1), by_hand.set_epoch(1)
    for (x, y), (x2, y2) in zip(loader, by_hand):  # the same batches as the pipeline built by hand
        assert torch.equal(y, y2) and torch.equal(x, x2)
