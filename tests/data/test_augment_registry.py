"""reglab.data.augment.AUGMENTATIONS, the one registry of batch augmentations, and what is derived from it.

The recipes' pipelines are pinned to what ``build_transforms`` built before the registry existed (computed on
the previous code by a scratch script): the same transforms in the same order, the same output for a fixed
input and generator, and the same generator state afterwards (the same random draws).
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from reglab.config import RECIPES_DIR, AugConfig, load_config
from reglab.data.augment import (
    AUGMENTATIONS,
    FLOAT,
    FLOAT_AUGS,
    UINT8,
    UINT8_AUGS,
    RandomCrop,
    RandomFlip,
    RandomSolarize,
    build_transforms,
)
from reglab.errors import UserError

EXTRA = {  # configs beyond the recipes: every transform on, a shuffled order, alternating flip
    "all_on": [
        "aug.policy=randaugment",
        "aug.rotation=10",
        "aug.cutout_holes=2",
        "aug.cutout_size=6",
        "aug.erasing_p=0.5",
        "aug.erasing_value=random",
        "aug.pad_mode=zero",
    ],
    "reordered": [
        "aug.policy=autoaugment",
        "aug.rotation=5",
        "aug.cutout_holes=1",
        "aug.erasing_p=0.3",
        "aug.order=[erasing,policy,cutout,flip,rotation,crop]",
    ],
    "trivial_alternating": [
        "aug.policy=trivialaugment",
        "aug.flip_mode=alternating",
        "aug.crop_pad=0",
        "aug.order=[policy,flip,crop]",
    ],
}

# (configs), raw-stage classes, float-stage classes, weighted sum of the uint8 output, sum and weighted sum of
# the float output, the generator's next draw afterwards.
REFERENCE = [
    (
        ("fast-cpu-85", "fast-cpu-93-muon", "fast-cpu-93-wide", "fast-cpu-93", "fast-gpu-94-muon", "fast-gpu-94"),
        ("AlternatingFlip", "RandomCrop"),
        (),
        30756943909,
        -232.53187465667725,
        -118.09842499073838,
        1901221627,
    ),
    (
        (
            "fast-gpu-resnet18",
            "seed000_preact50_gelu_erm",
            "seed000_preact50_gelu_mixup",
            "seed001_preact18_erm",
            "seed001_preact18_mixup",
            "seed003_ladder_00_baseline",
            "seed003_ladder_01_cosine",
            "seed003_ladder_02_more_epochs",
            "seed003_ladder_03_ema",
            "seed003_ladder_04_label_smoothing",
            "seed003_ladder_05_stochastic_depth",
            "seed004_mixup",
            "seed004_mixup_baseline",
        ),
        ("RandomCrop", "RandomFlip"),
        (),
        26722312917,
        -11925.912441253662,
        -6464.06555547919,
        1691282316,
    ),
    (
        ("quick",),
        ("RandomCrop", "RandomFlip"),
        (),
        30741096348,
        -413.8024671077728,
        -143.02464156603972,
        1691282316,
    ),
    (
        (
            "seed002_architectures",
            "seed002_aug_cutmix",
            "seed002_aug_mixup",
            "seed002_optim_adadelta",
            "seed002_optim_adadelta_clip",
            "seed002_optim_sgd",
        ),
        ("RandomCrop", "RandomFlip"),
        ("RandomRotation",),
        26722312917,
        -9237.535411522918,
        -5063.302804992889,
        174187351,
    ),
    (
        ("seed002_aug_cutout", "seed002_aug_cutout_mixup", "seed002_resnet24_final"),
        ("RandomCrop", "RandomFlip"),
        ("RandomRotation", "Cutout"),
        26722312917,
        -9181.508471580959,
        -5061.378607603224,
        1136151010,
    ),
    (
        (
            "seed003_ladder_06_randaugment",
            "seed003_ladder_07_fc_dropout",
            "seed003_ladder_08_lower_wd",
            "seed003_ladder_09_se",
            "seed003_ladder_10_resnet_d",
        ),
        ("RandomCrop", "RandomFlip", "BatchPolicy"),
        (),
        23820938810,
        -21100.532213687897,
        -11027.56214665595,
        292421642,
    ),
    (
        (
            "seed003_result1_stem32_multistep",
            "seed003_result2_stem128_multistep",
            "seed003_result3_restarts_150ep",
            "seed003_result4_final",
        ),
        ("RandomCrop", "RandomFlip", "BatchPolicy"),
        ("Cutout",),
        21653830261,
        -25488.689527750015,
        -13644.635507009058,
        309713895,
    ),
    (
        ("seed004_augmentation",),
        ("RandomCrop", "RandomFlip"),
        ("RandomErasing",),
        26722312917,
        -11632.147801756859,
        -6309.363428643064,
        1835214067,
    ),
    (
        (
            "seed004_baseline",
            "seed004_dropout_bn_02_05",
            "seed004_dropout_bn_05_05",
            "seed004_label_smoothing_01",
            "seed004_label_smoothing_02",
            "seed004_stochastic_depth",
            "seed004_stochastic_depth_wd_5e-4",
            "seed004_wd_1e-2",
            "seed004_wd_5e-4",
        ),
        (),
        (),
        30691383163,
        -426.5397219657898,
        -221.2172287839126,
        2137449171,
    ),
    (
        ("all_on",),
        ("RandomCrop", "RandomFlip", "BatchPolicy"),
        ("RandomRotation", "Cutout", "RandomErasing"),
        24005891518,
        -16693.816870082446,
        -8709.113333464295,
        1498390664,
    ),
    (
        ("reordered",),
        ("BatchPolicy", "RandomFlip", "RandomCrop"),
        ("RandomErasing", "Cutout", "RandomRotation"),
        31071533035,
        536.6538264966184,
        439.81350647645866,
        1879260702,
    ),
    (
        ("trivial_alternating",),
        ("AlternatingFlip", "BatchPolicy"),
        (),
        28558342412,
        -7036.720102906227,
        -3576.2219538642457,
        1691282316,
    ),
]


def pipeline_digest(aug) -> tuple:
    """Both stages on a fixed uint8 batch with a fixed generator, summarised as in REFERENCE."""
    raw, norm = build_transforms(aug)
    g = torch.Generator().manual_seed(1234)
    x = torch.randint(0, 256, (16, 3, 32, 32), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
    for t in raw:
        if not getattr(t, "indexed", False):  # the alternating flip (once applied by the loader): test_fast.py
            x = t(x, g)
    w = torch.arange(x.numel(), dtype=torch.long).remainder(9973).view_as(x) + 1  # position weights
    y = (x.float() / 255 - 0.5) / 0.25
    for t in norm:
        y = t(y, g)
    return (
        tuple(type(t).__name__ for t in raw),
        tuple(type(t).__name__ for t in norm),
        int((x.long() * w).sum()),
        float(y.double().sum()),
        float((y.double() * w.double() / 9973).sum()),
        int(torch.randint(0, 2**31, (1,), generator=g)),
    )


@pytest.mark.parametrize("row", REFERENCE, ids=lambda row: row[0][0])
def test_recipes_build_the_same_pipeline_as_before_the_registry(row):
    names, *expected = row
    for name in names:
        cfg = load_config(None, EXTRA[name]) if name in EXTRA else load_config(RECIPES_DIR / f"{name}.yaml")
        raw, norm, raw_sum, float_sum, float_wsum, nxt = pipeline_digest(cfg.aug)
        assert (raw, norm) == tuple(expected[:2]), name
        assert nxt == expected[5], f"{name}: the transforms drew different random numbers"
        # uint8 stage: integer sums, exact up to a stray rounding in torchvision's uint8 ops on another CPU;
        # a moved crop or flipped image shifts them by ~1e6 or more.
        assert raw_sum == pytest.approx(expected[2], rel=1e-7, abs=1e3), name
        assert (float_sum, float_wsum) == pytest.approx(tuple(expected[3:5]), rel=1e-5, abs=1e-3), name


def test_stage_lists_default_order_and_enabled_come_from_the_registry():
    names = [a.name for a in AUGMENTATIONS]
    assert len(set(names)) == len(names) and all(a.stage in (UINT8, FLOAT) for a in AUGMENTATIONS)
    assert list(UINT8_AUGS) + list(FLOAT_AUGS) == sorted(names, key=lambda n: n in FLOAT_AUGS)
    assert AugConfig().order == names
    assert AugConfig().enabled() == ["crop", "flip"]
    all_on = load_config(None, EXTRA["all_on"]).aug
    assert all_on.enabled() == [a.name for a in AUGMENTATIONS if a.enabled(all_on)]
    assert {"crop", "flip", "policy", "rotation", "cutout", "erasing"} <= set(all_on.enabled())
    off = AugConfig(crop_pad=0, flip=False)
    assert off.enabled() == [] and build_transforms(off) == ([], [])


def test_order_validation_uses_the_registry_names():
    with pytest.raises(UserError) as exc:
        load_config(None, ["aug.order=[crop,flip,cutuot]", "aug.cutout_holes=1"])
    msg = str(exc.value)
    assert "'cutuot'" in msg and "did you mean 'cutout'" in msg and all(a.name in msg for a in AUGMENTATIONS)
    with pytest.raises(UserError, match="must not repeat"):
        load_config(None, ["aug.order=[flip,crop,flip]"])
    with pytest.raises(UserError, match=r"leaves out rotation, erasing, which is switched on"):
        load_config(None, ["aug.order=[crop,flip]", "aug.rotation=5", "aug.erasing_p=0.1"])


def test_preview_title_is_built_from_the_registry_labels():
    from reglab.track.preview import _describe

    assert _describe(
        load_config(None, ["aug.policy=randaugment", "aug.rotation=10", "aug.cutout_holes=2", "aug.erasing_p=0.5"])
    ) == ("crop pad 4 (reflect), flip, randaugment N=2 M=9, rotation ±10°, cutout 2x8px, erasing p=0.5")
    assert _describe(load_config("seed003_result4_final")) == "crop pad 4 (zero), flip, autoaugment, cutout 4x4px"
    assert _describe(load_config(None, ["aug.flip=false", "aug.crop_pad=0"])) == "no augmentation"


def test_config_import_is_torch_free_and_validation_does_not_load_torchvision():
    """data/ imports reglab.config at module level, so config reaches the registry lazily (no cycle); the
    policies' module (torchvision) loads only when a policy is built."""
    code = (
        "import sys; import reglab.config as c; assert 'torch' not in sys.modules; "
        "c.load_config(None, ['aug.policy=autoaugment']); assert 'torchvision' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------------------------------------
# solarize: added through the registry (its entry and class in augment.py, its fields in config/data.py)


@pytest.mark.parametrize("threshold", [0, 77, 128, 255])
def test_solarize_equals_torchvision_on_the_samples_it_picks(threshold):
    x = torch.randint(0, 256, (64, 3, 8, 8), generator=torch.Generator().manual_seed(threshold), dtype=torch.uint8)
    pick = torch.rand(64, generator=torch.Generator().manual_seed(5)) < 0.5  # the transform's own draw, replayed
    out = RandomSolarize(0.5, threshold)(x, torch.Generator().manual_seed(5))
    assert out.dtype == torch.uint8 and 0 < int(pick.sum()) < 64
    assert torch.equal(out[pick], TF.solarize(x[pick], threshold))
    assert torch.equal(out[~pick], x[~pick])


def test_solarize_picks_each_sample_independently_with_probability_p():
    n = 4000
    x = torch.full((n, 3, 2, 2), 200, dtype=torch.uint8)  # every pixel above the threshold: picked -> 55
    outs = [RandomSolarize(0.5)(x, torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    picked = [(o == 55).all(dim=(1, 2, 3)) for o in outs]
    assert all(((o == 55) | (o == 200)).all() for o in outs)  # whole images, never part of one
    for pk in picked:
        assert abs(int(pk.sum()) / n - 0.5) <= 5 * math.sqrt(0.25 / n)
    agree = int((picked[0] == picked[1]).sum())  # two generators: independent picks agree half the time
    assert abs(agree / n - 0.5) <= 5 * math.sqrt(0.25 / n)


def test_solarize_off_is_not_built_and_p0_is_the_identity():
    assert "solarize" not in AugConfig().enabled()
    raw, norm = build_transforms(AugConfig())
    assert [type(t) for t in raw] == [RandomCrop, RandomFlip] and norm == []
    x = torch.randint(0, 256, (8, 3, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert torch.equal(RandomSolarize(0.0, 0)(x, torch.Generator().manual_seed(0)), x)
    cfg = load_config(None, ["aug.solarize_p=0.3", "aug.solarize_threshold=100"]).aug
    raw, norm = build_transforms(cfg)
    assert [type(t) for t in raw] == [RandomCrop, RandomFlip, RandomSolarize] and norm == []
    assert (raw[2].p, raw[2].threshold) == (0.3, 100) and "solarize" in cfg.enabled()
    cfg = load_config(None, ["aug.solarize_p=1", "aug.order=[solarize,cutout,flip,crop]"]).aug
    assert [type(t) for t in build_transforms(cfg)[0]] == [RandomSolarize, RandomFlip, RandomCrop]
    with pytest.raises(UserError, match=r"leaves out solarize.*aug.order=\[crop,flip,solarize\]"):
        load_config(None, ["aug.order=[crop,flip]", "aug.solarize_p=0.2"])


@pytest.mark.parametrize(
    "override, words",
    [
        ("aug.solarize_p=1.5", ["aug.solarize_p=1.5", "[0, 1]"]),
        ("aug.solarize_p=-0.1", ["aug.solarize_p=-0.1", "[0, 1]"]),
        ("aug.solarize_threshold=256", ["aug.solarize_threshold=256", "[0, 255]"]),
        ("aug.solarize_threshold=-1", ["aug.solarize_threshold=-1", "[0, 255]"]),
        ("aug.solarize_treshold=100", ["solarize_treshold", "solarize_threshold"]),
    ],
)
def test_solarize_settings_are_validated(override, words):
    with pytest.raises(UserError) as exc:
        load_config(None, [override])
    assert all(w in str(exc.value) for w in words), str(exc.value)
