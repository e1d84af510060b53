"""Study claims (reglab.track.claims): verdicts in each direction, malformed claims, derived metrics of a run."""

from __future__ import annotations

import pytest

from reglab.errors import UserError
from reglab.track.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    Claim,
    claim_effect,
    claim_verdict,
    derived_metrics,
    parse_claims,
)


def test_claim_verdicts_in_each_direction():
    groups = ["a", "b"]
    up = Claim("a beats b", "test_acc", groups, "higher")
    values = {"a": {0: 60.0, 1: 61.0, 2: 62.5}, "b": {0: 55.0, 1: 56.5, 2: 57.0}}
    effect = claim_effect(up, values)
    assert effect.mean == pytest.approx(5.0) and claim_verdict(up, effect) == REPRODUCED
    down = Claim("a below b", "test_acc", groups, "lower")
    assert claim_verdict(down, claim_effect(down, values)) == CONTRADICTED
    same = Claim("a = b", "test_acc", groups, "same", margin=1.0)
    assert claim_verdict(same, claim_effect(same, values)) == CONTRADICTED
    close = {"a": {0: 60.0, 1: 61.0, 2: 62.0}, "b": {0: 60.1, 1: 60.9, 2: 62.05}}
    assert claim_verdict(same, claim_effect(same, close)) == REPRODUCED
    assert claim_verdict(up, claim_effect(up, close)) == INCONCLUSIVE
    one = Claim("a above chance", "test_acc", ["a"], "higher", than=10.0)
    assert claim_effect(one, values).mean == pytest.approx(51.1666, abs=1e-3)
    assert claim_verdict(up, claim_effect(up, {"a": {0: 1.0}, "b": {0: 0.0}})) == INCONCLUSIVE
    assert claim_verdict(up, claim_effect(up, {"a": {0: 1.0}})) == "not run"  # b has no finished run yet


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"claim": "x", "metric": "test_acc", "compare": ["zzz"], "expect": "higher"}, "group 'zzz'"),
        ({"claim": "x", "metric": "tset_acc", "compare": ["a"], "expect": "higher"}, "metric 'tset_acc'"),
        ({"claim": "x", "metric": "test_acc", "compare": ["a"], "expect": "up"}, "expect must be"),
        ({"claim": "x", "metric": "test_acc", "compare": ["a", "b"], "expect": "same"}, "needs margin"),
        ({"claim": "x", "metric": "test_acc", "compare": "a", "expect": "higher"}, "compare must be"),
        ({"claim": "x", "metric": "test_acc", "expect": "higher"}, "missing 'compare'"),
        ({"claim": "x", "metric": "test_acc", "compare": ["a"], "expect": "higher", "sauce": 1}, "unknown key"),
    ],
)
def test_bad_claims_are_refused_with_a_clear_message(raw, message):
    with pytest.raises(UserError, match=message):
        parse_claims([raw], ["a", "b"], "s.yaml")


def test_derived_metrics_of_an_overfitting_run():
    epochs = [
        {"epoch": e, "train_acc": t, "val_loss": vl, "val_acc": va}
        for e, t, vl, va in [
            (1, 40, 1.6, 40),
            (2, 80, 1.4, 48),
            (3, 99.5, 1.5, 50),
            (4, 100, 1.9, 49),
            (5, 100, 2.1, 52),
        ]
    ]
    got = derived_metrics(epochs, {"train_acc": 100.0, "test_acc": 51.0})
    assert got["gap"] == 49.0 and got["test_minus_train_acc"] == -49.0
    assert got["val_loss_min_epoch"] == 2 and got["val_loss_rise"] == pytest.approx(0.7)
    assert got["train99_epoch"] == 3
    assert got["val_acc_roughness"] == pytest.approx((1 + 3) / 2)  # epochs 3-5: |49-50|, |52-49|
    assert derived_metrics([], {})["gap"] is None
    assert got["ema_or_test_acc"] == 51.0  # no EMA: the trained weights' accuracy


def test_ema_or_test_acc_takes_the_ema_weights_when_the_run_kept_them():
    epochs = [
        {"epoch": 1, "test_acc": 50.0, "ema_test_acc": None},
        {"epoch": 2, "test_acc": 51.0, "ema_test_acc": 53.5},
    ]
    assert derived_metrics(epochs, {"train_acc": 60.0, "test_acc": 51.0})["ema_or_test_acc"] == 53.5
