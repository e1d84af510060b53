"""Property tests (hypothesis) for the config parser and the mixing functions.

Config: any ``key=value`` override of any known key either yields a validated Config holding exactly the
coerced value, which survives a YAML round trip, or is refused with a UserError naming the key; nothing
else ever escapes (no TypeError, no traceback). Unknown keys are always refused; the last override wins.

Mixing: for any batch, ratio and partner permutation, mixup and CutMix keep shapes and dtypes, their targets
are probability vectors (non-negative, summing to 1), the image is a convex combination of the pair, and
the ratios they draw (Beta, CutMix's kept area) lie in [0, 1]. ``tests/data/test_mixing.py`` holds the Mixer
end-to-end property; this file covers the pure functions and the samplers.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from reglab.config import Config, load_config
from reglab.data.augment import box_masks
from reglab.data.mixing import cutmix, mixup, one_hot, sample_beta, sample_boxes
from reglab.errors import UserError
from reglab.train.losses import smooth_targets
from reglab.typedyaml import parse_override

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _leaves(cls=Config, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaves(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hints[f.name]


KEYS = dict(_leaves())
SECTIONS = [f.name for f in dataclasses.fields(Config)]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
)
values = st.one_of(
    scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=4), scalars, max_size=2)
)


def _get(cfg: Config, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


@FAST
@given(key=st.sampled_from(sorted(KEYS)), value=values)
def test_any_override_is_applied_exactly_or_refused_by_name(key, value):
    text = f"{key}={yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()}"
    if text.endswith("\n..."):
        text = text[:-4].strip()
    try:
        cfg = load_config(None, [text])
    except UserError as exc:
        msg = str(exc)
        assert "\n" not in msg.strip() and key in msg, msg  # one line, naming the key
        return
    got = _get(cfg, key)
    parsed = parse_override(text)[1]
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        assert float(got) == float(parsed)  # numbers keep their value (an int may become a float)
    elif isinstance(got, (bool, list)) or got is None:
        assert got == parsed
    again = load_config(None, base=yaml.safe_load(cfg.to_yaml()))
    assert again == cfg  # what a run directory saves reloads to the same config
    assert (
        _get(load_config(None, [f"{key}={yaml.safe_dump(got, default_flow_style=True).splitlines()[0]}"]), key)
        == got
    )  # and the value written back as an override gives itself


@FAST
@given(section=st.sampled_from(SECTIONS), name=st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True), value=scalars)
def test_unknown_keys_are_always_refused(section, name, value):
    assume(f"{section}.{name}" not in KEYS and name not in SECTIONS)
    with pytest.raises(UserError) as exc:
        load_config(None, [f"{section}.{name}={yaml.safe_dump(value, default_flow_style=True).splitlines()[0]}"])
    assert f"{section}.{name}" in str(exc.value)


@FAST
@given(epochs=st.lists(st.integers(1, 500), min_size=1, max_size=5), lr=st.floats(1e-6, 10.0))
def test_last_override_wins(epochs, lr):
    cfg = load_config(None, [f"train.epochs={e}" for e in epochs] + [f"optim.lr={lr!r}"])
    assert cfg.train.epochs == epochs[-1] and cfg.optim.lr == lr


@FAST
@given(
    key=st.from_regex(r"[a-z]{1,8}\.[a-z_]{1,10}", fullmatch=True),
    raw=st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=20),
)
def test_parse_override_splits_at_the_first_equals(key, raw):
    try:
        k, _ = parse_override(f" {key} ={raw}")
    except UserError:
        return  # a value YAML cannot read
    assert k == key


# ----------------------------------------------------------------------------------------------------------
# Mixing


def _batch(data, b, k, hw):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(b, 3, *hw, generator=g)
    y = one_hot(torch.randint(0, k, (b,), generator=g), k)
    perm = torch.randperm(b, generator=g)
    return x, y, perm, g


shapes = dict(b=st.integers(1, 12), k=st.integers(2, 15), hw=st.sampled_from([(1, 1), (4, 4), (7, 5), (32, 32)]))


@FAST
@given(data=st.data(), per_sample=st.booleans(), decoupled=st.booleans(), **shapes)
def test_mixup_targets_are_distributions_and_images_convex(data, b, k, hw, per_sample, decoupled):
    x, y, perm, _ = _batch(data, b, k, hw)
    lam = st.floats(0.0, 1.0)
    lam_x = torch.tensor(data.draw(st.lists(lam, min_size=b, max_size=b))) if per_sample else data.draw(lam)
    lam_y = (
        (torch.tensor(data.draw(st.lists(lam, min_size=b, max_size=b))) if per_sample else data.draw(lam))
        if decoupled
        else None
    )
    xm, ym = mixup(x, y, perm, lam_x, lam_y)
    assert xm.shape == x.shape and xm.dtype == x.dtype and ym.shape == (b, k) and ym.dtype == y.dtype
    assert torch.allclose(ym.sum(1), torch.ones(b), atol=1e-6)
    assert (ym >= 0).all() and (ym <= 1 + 1e-6).all()
    lo, hi = torch.minimum(x, x[perm]), torch.maximum(x, x[perm])
    assert (xm >= lo - 1e-5).all() and (xm <= hi + 1e-5).all()


@FAST
@given(data=st.data(), per_box=st.booleans(), **shapes)
def test_cutmix_area_lambda_and_targets(data, b, k, hw, per_box):
    x, y, perm, _ = _batch(data, b, k, hw)
    h, w = hw
    n = b if per_box else 1
    boxes = []
    for _ in range(n):
        y0, y1 = sorted(data.draw(st.lists(st.integers(0, h), min_size=2, max_size=2)))
        x0, x1 = sorted(data.draw(st.lists(st.integers(0, w), min_size=2, max_size=2)))
        boxes.append([y0, y1, x0, x1])
    boxes = torch.tensor(boxes)
    xm, ym, lam = cutmix(x, y, perm, boxes)
    assert xm.shape == x.shape and ym.shape == (b, k)
    assert ((lam >= 0) & (lam <= 1)).all()
    assert torch.allclose(ym.sum(1), torch.ones(b), atol=1e-6) and (ym >= -1e-7).all()
    mask = box_masks(boxes, h, w).expand(b, 1, h, w)
    assert torch.equal(xm, torch.where(mask, x[perm], x))  # pasted pixels come from the partner, the rest stay
    kept = 1 - mask.float().mean((1, 2, 3))
    assert torch.allclose(kept, lam.expand(b).float(), atol=1e-6)  # lambda is the area actually kept


@FAST
@given(alpha=st.floats(1e-3, 100.0), n=st.integers(1, 64), seed=st.integers(0, 2**31 - 1))
def test_beta_samples_lie_in_the_unit_interval(alpha, n, seed):
    lam = sample_beta(alpha, n, torch.Generator().manual_seed(seed), "cpu")
    assert lam.shape == (n,) and torch.isfinite(lam).all() and ((lam >= 0) & (lam <= 1)).all()


@FAST
@given(
    lams=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=16),
    hw=st.sampled_from([(1, 1), (5, 9), (32, 32)]),
    seed=st.integers(0, 2**31 - 1),
)
def test_cutmix_boxes_stay_inside_and_never_exceed_the_cut_area(lams, hw, seed):
    h, w = hw
    lam = torch.tensor(lams)
    boxes = sample_boxes(lam, h, w, torch.Generator().manual_seed(seed))
    assert boxes.shape == (len(lams), 4)
    y0, y1, x0, x1 = boxes.unbind(1)
    assert ((0 <= y0) & (y0 <= y1) & (y1 <= h) & (0 <= x0) & (x0 <= x1) & (x1 <= w)).all()
    area = (y1 - y0) * (x1 - x0)
    assert (area <= (1 - lam) * h * w + 1e-6).all()


@FAST
@given(
    k=st.integers(2, 50), eps=st.floats(0.0, 0.99), convention=st.sampled_from(["torch", "others"]), data=st.data()
)
def test_smoothed_targets_are_distributions(k, eps, convention, data):
    b = data.draw(st.integers(1, 8))
    labels = torch.tensor(data.draw(st.lists(st.integers(0, k - 1), min_size=b, max_size=b)))
    t = smooth_targets(labels, k, eps, convention)
    assert t.shape == (b, k) and torch.allclose(t.sum(1), torch.ones(b), atol=1e-5) and (t >= 0).all()
    assert (t.argmax(1) == labels).all() or eps >= (k - 1) / k  # the label keeps the largest share
