"""reglab.data.augment and reglab.data.loader: batched crop/flip on raw pixels and the device-resident loader.

The augmentation tests use images whose pixels spell out where they came from: channel 0 holds ``row + 1``,
channel 1 ``col + 1`` and channel 2 ``sample id + 1`` (0 is left for zero padding). From an output image alone
one can then recover the crop offsets, whether it was flipped and which sample it is, and compare it with
``torch.nn.functional.pad`` + slicing + ``flip``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reglab.config import AugConfig
from reglab.data import DeviceLoader, Split
from reglab.data.augment import AlternatingFlip, RandomCrop, RandomFlip, build_transforms

N_COORD = 255  # sample ids 1..255 fit in uint8
PAD = 4


def crop_flip(aug: AugConfig | None = None) -> list:
    """The raw-pixel stage built from an AugConfig that only crops and flips (no float stage)."""
    raw, normalized = build_transforms(aug or AugConfig())
    assert normalized == []
    return raw


def coord_images(n: int = N_COORD) -> torch.Tensor:
    rows = torch.arange(1, 33, dtype=torch.uint8).view(1, 32, 1).expand(n, 32, 32)
    cols = torch.arange(1, 33, dtype=torch.uint8).view(1, 1, 32).expand(n, 32, 32)
    ids = torch.arange(1, n + 1, dtype=torch.uint8).view(n, 1, 1).expand(n, 32, 32)
    return torch.stack([rows, cols, ids], dim=1).contiguous()


def coord_split(n: int = N_COORD) -> Split:
    return Split(coord_images(n), (torch.arange(n) * 7 + 3) % 10)


def recover(out: torch.Tensor):
    """(ids, dy, dx, flipped) of each output image, read from its centre pixels (never padding for pad <= 4)."""
    out = out.to(torch.int64)
    ids = out[:, 2, 16, 16] - 1
    flipped = (out[:, 1, 16, 17] - out[:, 1, 16, 16]) == -1
    assert torch.all((out[:, 1, 16, 17] - out[:, 1, 16, 16]).abs() == 1)
    dy = out[:, 0, 16, 16] - 1 - 16
    dx = out[:, 1, 16, 16] - 1 - torch.where(flipped, 15, 16)
    return ids, dy, dx, flipped


def expected_images(source: torch.Tensor, ids, dy, dx, flipped, mode: str) -> torch.Tensor:
    """Reference: pad with torch (float copies), slice at the recovered offsets, flip."""
    padded = F.pad(source.float(), (PAD,) * 4, mode="constant" if mode == "zero" else "reflect")
    out = []
    for i, y, x, f in zip(ids.tolist(), dy.tolist(), dx.tolist(), flipped.tolist()):
        crop = padded[i, :, PAD + y : PAD + y + 32, PAD + x : PAD + x + 32]
        out.append(crop.flip(-1) if f else crop)
    return torch.stack(out)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Loader output made with mean 0, std 1 back to integer pixel values."""
    raw = x.float() * 255
    assert torch.all((raw - raw.round()).abs() < 1e-3)
    return raw.round().to(torch.int64)


def chi_square(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def run_augmented_epochs(
    mode: str, epochs: int = 16, batch_size: int = 64, seed: int = 0, epoch_batched: bool = False
):
    split = coord_split()
    loader = plain_loader(
        split,
        batch_size,
        shuffle=True,
        seed=seed,
        uint8_transforms=crop_flip(AugConfig(crop_pad=PAD, pad_mode=mode, flip=True)),
        epoch_batched=epoch_batched,
    )
    batches = [(to_pixels(x), y) for _ in range(epochs) for x, y in loader]
    return split, batches


@pytest.fixture(
    scope="module",
    params=[("zero", False), ("reflect", False), ("zero", True), ("reflect", True)],
    ids=["zero", "reflect", "zero-epoch-batched", "reflect-epoch-batched"],
)
def augmented(request):
    mode, epoch_batched = request.param
    split, batches = run_augmented_epochs(mode, epoch_batched=epoch_batched)
    return mode, split, batches


def test_crop_and_flip_match_torch_reference(augmented):
    mode, split, batches = augmented
    for out, _y in batches:
        ids, dy, dx, flipped = recover(out)
        assert torch.equal(out.float(), expected_images(split.images, ids, dy, dx, flipped, mode))


def test_offsets_cover_range_uniformly(augmented):
    _, _, batches = augmented
    dys, dxs = [], []
    for out, _ in batches:
        _, dy, dx, _ = recover(out)
        dys.append(dy)
        dxs.append(dx)
        # Offsets are drawn per sample, not once per batch.
        assert len(set(dy.tolist())) >= 5 and len(set(dx.tolist())) >= 5
    dy, dx = torch.cat(dys).numpy(), torch.cat(dxs).numpy()
    assert len(dy) == 16 * N_COORD
    for d in (dy, dx):
        counts = np.bincount(d + PAD, minlength=2 * PAD + 1)
        assert len(counts) == 2 * PAD + 1 and np.all(counts > 0)  # all of -4..4, nothing outside
        assert chi_square(counts) < 26.12  # chi2(8 dof) at p = 0.001
    joint = np.bincount((dy + PAD) * 9 + (dx + PAD), minlength=81)
    assert np.all(joint > 0) and chi_square(joint) < 124.8  # dy and dx independent: chi2(80) at p = 0.001
    assert abs(np.mean(dy == dx) - 1 / 9) < 0.03


def test_flip_rate_is_one_half(augmented):
    _, _, batches = augmented
    per_batch = [recover(out)[3].float() for out, _ in batches]
    flips = torch.cat(per_batch)
    assert len(flips) >= 4000
    assert 0.45 < flips.mean().item() < 0.55  # ~6.3 binomial sigmas either side
    # Drawn per sample: every batch of 63+ images mixes flipped and unflipped ones (P(fail) < 1e-5 each).
    for f in per_batch:
        assert len(f) >= 63 and 0.2 < f.mean().item() < 0.8


def test_no_mixing_between_samples(augmented):
    mode, split, batches = augmented
    for out, y in batches:
        ids = recover(out)[0]
        ch2 = out[:, 2]
        valid = (out[:, 0] > 0) & (out[:, 1] > 0)  # not padding
        assert torch.all(torch.where(valid, ch2, ids[:, None, None] + 1) == ids[:, None, None] + 1)
        if mode == "zero":
            assert torch.all(out[~valid[:, None].expand_as(out)] == 0)  # padding is 0 in every channel
        else:
            assert torch.all(valid)  # reflection never leaves the image
        assert torch.equal(y, split.labels[ids])


def test_zero_padding_regions_are_zero():
    x = coord_images(64)
    out = RandomCrop(PAD, "zero")(x, torch.Generator().manual_seed(1)).to(torch.int64)
    ids, dy, dx, _ = recover(out)
    assert (dy < 0).any() and (dx > 0).any()
    for i in range(64):
        if dy[i] < 0:
            assert torch.all(out[i, :, : -dy[i]] == 0)
            assert torch.all(out[i, 0, -dy[i] :, 8:24] > 0)  # below the padding: real rows
        if dx[i] > 0:
            assert torch.all(out[i, :, :, 32 - dx[i] :] == 0)


def test_reflect_index_matches_torch_for_every_offset():
    x = coord_images(64)
    padded = F.pad(x.float(), (PAD,) * 4, mode="reflect")
    crop = RandomCrop(PAD, "reflect")
    seen = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        out = crop(x, gen).to(torch.int64)
        ids, dy, dx, flipped = recover(out)
        assert not flipped.any() and torch.equal(ids, torch.arange(64))
        for j, (y_, x_) in enumerate(zip(dy.tolist(), dx.tolist())):
            seen.add((y_, x_))
            assert torch.equal(out[j].float(), padded[j, :, PAD + y_ : PAD + y_ + 32, PAD + x_ : PAD + x_ + 32])
        if len(seen) == 81:
            break
    assert len(seen) == 81  # every (dy, dx) in [-4, 4]^2 was checked


def test_crop_output_dtype_and_shape():
    x = coord_images(8)
    for mode in ("zero", "reflect"):
        out = RandomCrop(PAD, mode)(x, torch.Generator().manual_seed(0))
        assert out.dtype == torch.uint8 and out.shape == x.shape


def test_identity_settings():
    x = coord_images(16)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(RandomCrop(0, "reflect")(x, gen), x)
    assert torch.equal(RandomFlip(0.0)(x, gen), x)
    assert torch.equal(RandomFlip(1.0)(x, gen), x.flip(3))
    assert build_transforms(AugConfig(crop_pad=0, flip=False)) == ([], [])
    raw = crop_flip(AugConfig())
    assert [type(t) for t in raw] == [RandomCrop, RandomFlip]
    assert (raw[0].pad, raw[0].mode, raw[1].p) == (4, "reflect", 0.5)
    with pytest.raises(ValueError):
        RandomCrop(4, "edge")


# ----------------------------------------------------------------------------------------------------------
# DeviceLoader


def id_split(n: int = 1000, seed: int = 0) -> Split:
    """Random images whose first two pixels encode the sample id; random labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    ids = torch.arange(n)
    images[:, 0, 0, 0] = (ids // 256).to(torch.uint8)
    images[:, 0, 0, 1] = (ids % 256).to(torch.uint8)
    return Split(images, torch.randint(0, 10, (n,), generator=g))


def batch_ids(x: torch.Tensor) -> torch.Tensor:
    p = to_pixels(x)
    return p[:, 0, 0, 0] * 256 + p[:, 0, 0, 1]


def plain_loader(split, batch_size=128, **kw):
    return DeviceLoader(split, batch_size, (0, 0, 0), (1, 1, 1), **kw)


def test_epoch_yields_every_sample_once():
    split = id_split()
    loader = plain_loader(split, shuffle=True, drop_last=False)
    assert len(loader) == 8 and loader.num_samples == 1000
    batches = list(loader)
    assert len(batches) == 8
    assert [len(y) for _, y in batches] == [128] * 7 + [104]
    ids = torch.cat([batch_ids(x) for x, _ in batches])
    assert sorted(ids.tolist()) == list(range(1000))
    assert not torch.equal(ids, torch.arange(1000))  # shuffled
    labels = torch.cat([y for _, y in batches])
    assert torch.equal(labels, split.labels[ids])
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and y.dtype == torch.int64


def test_drop_last():
    split = id_split()
    loader = plain_loader(split, shuffle=True, drop_last=True)
    assert len(loader) == 7 and loader.num_samples == 896
    batches = list(loader)
    assert [len(y) for _, y in batches] == [128] * 7
    ids = torch.cat([batch_ids(x) for x, _ in batches])
    assert len(set(ids.tolist())) == 896
    exact = plain_loader(id_split(256), shuffle=True, drop_last=True)
    assert len(exact) == 2 and sum(len(y) for _, y in exact) == 256
    assert len(plain_loader(id_split(100), shuffle=True, drop_last=True)) == 0
    assert len(plain_loader(id_split(100), shuffle=True, drop_last=False)) == 1


def test_no_shuffle_keeps_order():
    split = id_split(300)
    loader = plain_loader(split, batch_size=64)
    for _ in range(2):
        ids = torch.cat([batch_ids(x) for x, _ in loader])
        assert torch.equal(ids, torch.arange(300))
        assert torch.equal(torch.cat([to_pixels(x) for x, _ in loader]), split.images.to(torch.int64))


def test_order_differs_between_epochs_and_seeds_reproduce():
    split = id_split()
    aug = crop_flip()
    a = DeviceLoader(split, 100, (0.5,) * 3, (0.25,) * 3, shuffle=True, seed=3, uint8_transforms=aug)
    b = DeviceLoader(split, 100, (0.5,) * 3, (0.25,) * 3, shuffle=True, seed=3, uint8_transforms=aug)
    c = DeviceLoader(split, 100, (0.5,) * 3, (0.25,) * 3, shuffle=True, seed=4, uint8_transforms=aug)
    a1, a2 = [list(a) for _ in range(2)]
    b1, b2 = [list(b) for _ in range(2)]
    c1 = list(c)
    for (xa, ya), (xb, yb) in zip(a1 + a2, b1 + b2):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(torch.cat([y for _, y in a1]), torch.cat([y for _, y in a2]))
    assert not torch.equal(a1[0][0], a2[0][0])
    assert not torch.equal(a1[0][0], c1[0][0])


def test_state_dict_resumes_the_next_epoch_exactly():
    split = id_split()
    aug = crop_flip()
    a = DeviceLoader(split, 128, (0.5,) * 3, (0.25,) * 3, shuffle=True, seed=11, uint8_transforms=aug)
    list(a)  # epoch 1
    state = a.state_dict()
    epoch2 = list(a)
    b = DeviceLoader(split, 128, (0.5,) * 3, (0.25,) * 3, shuffle=True, seed=999, uint8_transforms=aug)
    b.load_state_dict(state)
    resumed = list(b)
    assert len(resumed) == len(epoch2)
    for (xa, ya), (xb, yb) in zip(epoch2, resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # The saved state is a snapshot: iterating afterwards did not change it.
    a.load_state_dict(state)
    assert torch.equal(list(a)[0][0], epoch2[0][0])
    # It survives torch.save / torch.load (how checkpoints store it).
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    c = DeviceLoader(split, 128, (0.5,) * 3, (0.25,) * 3, shuffle=True, seed=0, uint8_transforms=aug)
    c.load_state_dict(torch.load(buf))
    assert torch.equal(next(iter(c))[0], epoch2[0][0])


def test_normalization_values():
    split = id_split(64)
    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
    x, _ = next(iter(DeviceLoader(split, 64, mean, std)))
    ref = (split.images.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64
    ).view(1, 3, 1, 1)
    assert x.dtype == torch.float32
    assert torch.allclose(x.double(), ref, atol=1e-5, rtol=0)
    assert x[0, 0, 0, 0].item() == pytest.approx(
        (split.images[0, 0, 0, 0].item() / 255 - mean[0]) / std[0], abs=1e-5
    )
    x64, _ = next(iter(DeviceLoader(split, 64, mean, std, dtype=torch.float64)))
    assert x64.dtype == torch.float64 and torch.allclose(x64, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("with_aug", [False, True])
def test_channels_last_output(with_aug):
    split = id_split(200)
    aug = crop_flip() if with_aug else []
    kw = dict(shuffle=True, seed=5, uint8_transforms=aug)
    cl = DeviceLoader(split, 64, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4), channels_last=True, **kw)
    cf = DeviceLoader(split, 64, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4), channels_last=False, **kw)
    for (x1, y1), (x2, y2) in zip(cl, cf):
        assert x1.is_contiguous(memory_format=torch.channels_last) and not x1.is_contiguous()
        assert x2.is_contiguous()
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_float_transforms_see_normalized_images():
    split = id_split(32)
    seen = []

    def record(x, gen):
        assert isinstance(gen, torch.Generator)
        seen.append(x.clone())
        return x * 0 + 7.0

    loader = DeviceLoader(split, 32, (0.5,) * 3, (0.5,) * 3, float_transforms=[record])
    x, _ = next(iter(loader))
    assert seen[0].dtype == torch.float32 and seen[0].min() >= -1.0001 and seen[0].max() <= 1.0001
    assert seen[0].min() < -0.99 and seen[0].max() > 0.99
    assert torch.all(x == 7.0)


def test_loader_does_not_modify_the_split():
    split = id_split(100)
    before = split.images.clone()
    loader = DeviceLoader(
        split, 32, (0.5,) * 3, (0.5,) * 3, shuffle=True, uint8_transforms=crop_flip(AugConfig(pad_mode="zero"))
    )
    for _ in loader:
        pass
    assert torch.equal(split.images, before)


# -- epoch_batched (the GPU default): a whole epoch augmented up front, then sliced --------------------------------


def _epochs(loader, n=3):
    return [(x.clone(), y.clone()) for _ in range(n) for x, y in loader]


def test_epoch_batched_equals_batch_by_batch_when_no_random_numbers_differ():
    """Shuffle + alternating flip draw all their randomness before the first batch, so both modes must give
    identical batches, epoch after epoch (incl. a short last batch)."""
    split = coord_split()
    a, b = (
        plain_loader(split, 64, shuffle=True, seed=3, uint8_transforms=[AlternatingFlip()], epoch_batched=eb)
        for eb in (False, True)
    )
    for (xa, ya), (xb, yb) in zip(_epochs(a), _epochs(b), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_epoch_batched_ranks_take_their_slice_of_each_global_batch():
    split = coord_split(254)
    whole = plain_loader(split, 64, shuffle=True, drop_last=True, seed=5, epoch_batched=True)
    ranks = [
        plain_loader(split, 64, shuffle=True, drop_last=True, seed=5, rank=r, world_size=2, epoch_batched=True)
        for r in (0, 1)
    ]
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *ranks, strict=True):
        assert len(y0) == len(y1) == 32
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)


def test_epoch_batched_resumes_exactly_from_a_saved_state():
    split = coord_split()
    aug = crop_flip(AugConfig(crop_pad=PAD, flip=True))

    def make():
        return plain_loader(
            split, 50, shuffle=True, drop_last=True, seed=1, uint8_transforms=aug, epoch_batched=True
        )

    a = make()
    _epochs(a, 1)
    state = a.state_dict()
    b = make()
    b.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(_epochs(a, 2), _epochs(b, 2), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
