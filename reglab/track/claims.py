"""Claims a study tests, and the per-run metrics (beyond summary.json's) that claims and reports use.

A study file may list the claims of the report it reproduces; ``reglab report`` then prints each claim with
its measured effect (a paired difference over seeds, see :mod:`reglab.track.stats`) and a verdict::

    claims:
      - claim: crop + flip + random erasing gives a large gain
        source: "the reproduced report: 74.32% vs 57.28% test"   # shown next to the claim
        metric: test_acc
        compare: [augmentation, baseline]   # effect = augmentation - baseline, paired by seed
        expect: higher                      # higher | lower | same
      - claim: the unregularized baseline overfits
        metric: val_loss_rise
        compare: [baseline]                 # one group: its values against `than` (default 0)
        expect: higher
      - claim: dropout 0.2+0.5 and 0.5+0.5 end about equal
        metric: test_acc
        compare: [dropout_02_05, dropout_05_05]
        expect: same
        margin: 2.0                         # `same`: the interval must lie inside ±margin

Verdicts: *reproduced* when the 95% interval excludes zero in the expected direction (for ``same``: lies
inside ±margin), *contradicted* when it excludes zero the other way (``same``: lies wholly outside ±margin),
*inconclusive* otherwise, and with fewer than two seeds; *not run* while a group it needs has no finished run.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import UserError
from .stats import Interval, mean_interval, paired_difference

REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "reproduced", "contradicted", "inconclusive", "not run"

# Derived per-run metrics: name -> (description, higher is better?)
DERIVED = {
    "gap": ("final train accuracy minus test accuracy (points): the overfitting gap", False),
    "test_minus_train_acc": ("test accuracy minus final train accuracy (points)", True),
    "ema_or_test_acc": (
        "test accuracy of the weights the run keeps: the EMA average when ema.enabled, else the trained weights",
        True,
    ),
    "val_loss_rise": ("final validation loss minus its minimum over epochs (> 0: past its minimum)", False),
    "val_loss_min_epoch": ("epoch of the lowest validation loss", True),
    "train99_epoch": ("first epoch whose train accuracy reached 99% (empty: never)", False),
    "val_acc_roughness": (
        "mean |change| of validation accuracy between epochs over the second half of "
        "training (points): lower is smoother",
        False,
    ),
}
# Summary metrics a claim may name (the report's columns): name -> higher is better?
SUMMARY = {
    "train_loss": False,
    "train_acc": True,
    "best_val_acc": True,
    "final_val_acc": True,
    "test_loss": False,
    "test_acc": True,
    "best_epoch": True,
    "wall_time_s": False,
}
EXPECT = ("higher", "lower", "same")
CLAIM_KEYS = ("claim", "source", "metric", "compare", "expect", "than", "margin")


def derived_metrics(epochs: Sequence[Mapping[str, Any]], row: Mapping[str, Any]) -> dict[str, float | None]:
    """The :data:`DERIVED` metrics of one run from its per-epoch records and its summary row."""
    out: dict[str, float | None] = dict.fromkeys(DERIVED)
    train_acc, test_acc = row.get("train_acc"), row.get("test_acc")
    if train_acc is not None and test_acc is not None:
        out["gap"] = train_acc - test_acc
        out["test_minus_train_acc"] = test_acc - train_acc
    ema_test_acc = epochs[-1].get("ema_test_acc") if epochs else None
    out["ema_or_test_acc"] = ema_test_acc if ema_test_acc is not None else test_acc
    losses = [(r["epoch"], r["val_loss"]) for r in epochs if r.get("val_loss") is not None]
    if losses:
        best_epoch, best = min(losses, key=lambda el: el[1])
        out["val_loss_rise"] = losses[-1][1] - best
        out["val_loss_min_epoch"] = float(best_epoch)
    out["train99_epoch"] = next((float(r["epoch"]) for r in epochs if (r.get("train_acc") or 0) >= 99), None)
    accs = [r["val_acc"] for r in epochs if r.get("val_acc") is not None]
    half = accs[len(accs) // 2 :]
    if len(half) >= 2:
        out["val_acc_roughness"] = statistics.fmean(abs(b - a) for a, b in zip(half, half[1:]))
    return out


def higher_is_better(metric: str) -> bool:
    return SUMMARY[metric] if metric in SUMMARY else DERIVED[metric][1]


@dataclass
class Claim:
    claim: str
    metric: str
    groups: list[str]
    expect: str
    source: str = ""
    than: float = 0.0
    margin: float | None = None

    def label(self) -> str:
        if len(self.groups) == 2:
            return f"{self.groups[0]} − {self.groups[1]}"
        return f"{self.groups[0]} − {self.than:g}"


def parse_claims(raw: Any, groups: Sequence[str] | None, where: str) -> list[Claim]:
    """Validate a study file's ``claims:`` list against its run groups (``groups=None``: any names, for a
    report over a study that has run only some of its groups)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise UserError(f"{where}: claims must be a list of mappings (claim, metric, compare, expect).")
    metrics = sorted({*SUMMARY, *DERIVED})
    claims = []
    for i, item in enumerate(raw):
        at = f"{where}: claims[{i}]"
        if not isinstance(item, dict):
            raise UserError(f"{at}: expected a mapping with claim, metric, compare, expect; got {item!r}.")
        unknown = [k for k in item if k not in CLAIM_KEYS]
        if unknown:
            raise UserError(f"{at}: unknown key {unknown[0]!r}; a claim has: {', '.join(CLAIM_KEYS)}.")
        for key in ("claim", "metric", "compare", "expect"):
            if key not in item:
                raise UserError(f"{at}: missing {key!r}.")
        if item["metric"] not in metrics:
            raise UserError(f"{at}: metric {item['metric']!r} is not one of: {', '.join(metrics)}.")
        if item["expect"] not in EXPECT:
            raise UserError(f"{at}: expect must be one of {', '.join(EXPECT)}, got {item['expect']!r}.")
        compare = item["compare"]
        if not (isinstance(compare, list) and len(compare) in (1, 2) and all(isinstance(g, str) for g in compare)):
            raise UserError(f"{at}: compare must be [group] or [group, reference group], got {compare!r}.")
        for g in compare:
            if groups is not None and g not in groups:
                raise UserError(f"{at}: group {g!r} is not a run of the study (runs: {', '.join(groups)}).")
        margin = item.get("margin")
        if item["expect"] == "same" and not (isinstance(margin, (int, float)) and margin > 0):
            raise UserError(f"{at}: expect: same needs margin: a positive number (the equivalence bound).")
        than = item.get("than", 0.0)
        if not isinstance(than, (int, float)) or isinstance(than, bool):
            raise UserError(f"{at}: than must be a number, got {than!r}.")
        claims.append(
            Claim(
                str(item["claim"]),
                item["metric"],
                list(compare),
                item["expect"],
                str(item.get("source") or ""),
                float(than),
                margin,
            )
        )
    return claims


def claim_effect(claim: Claim, values: Mapping[str, Mapping[int, float | None]]) -> Interval | None:
    """The claim's effect over seeds: a paired difference of two groups, or one group against ``than``."""
    first = values.get(claim.groups[0], {})
    if len(claim.groups) == 2:
        return paired_difference(first, values.get(claim.groups[1], {}))
    return mean_interval(v - claim.than for v in first.values() if v is not None)


def claim_verdict(claim: Claim, effect: Interval | None) -> str:
    if effect is None:
        return NOT_RUN
    if effect.lo is None:
        return INCONCLUSIVE
    if claim.expect == "same":
        if -claim.margin <= effect.lo and effect.hi <= claim.margin:
            return REPRODUCED
        return CONTRADICTED if effect.lo > claim.margin or effect.hi < -claim.margin else INCONCLUSIVE
    sign = 1 if claim.expect == "higher" else -1
    if (effect.lo > 0 and sign > 0) or (effect.hi < 0 and sign < 0):
        return REPRODUCED
    if (effect.hi < 0 and sign > 0) or (effect.lo > 0 and sign < 0):
        return CONTRADICTED
    return INCONCLUSIVE
