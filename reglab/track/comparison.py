"""The two comparison tables of a report: every group against the reference group, and the study's claims.

Both pair runs by ``run.seed`` (:func:`reglab.track.stats.paired_difference`), so a group's effect is the mean
over seeds of (group - reference) with its 95% Student-t interval, and a verdict word. The reference is the
study file's ``reference:`` (default: its first group), or ``reglab report --reference GROUP``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .claims import Claim, claim_effect, claim_verdict, higher_is_better, parse_claims
from .stats import Interval, paired_difference, verdict

# The metrics compared against the reference: (row key, column title).
COMPARED = [
    ("test_acc", "test acc"),
    ("test_loss", "test loss"),
    ("final_val_acc", "val acc (final)"),
    ("best_val_acc", "val acc (best)"),
]


def study_settings(run_dirs: Sequence[Path]) -> dict[str, Any]:
    """``reference`` and ``claims`` of the study a set of run directories belongs to (its study.yaml beside
    ``runs/``), or {} for loose runs. With runs of several studies, the first study's."""
    for run_dir in run_dirs:
        path = Path(run_dir).parent.parent / "study.yaml"
        if path.is_file():
            try:
                raw = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(raw, dict):
                return {k: raw[k] for k in ("reference", "claims") if k in raw}
    return {}


def seed_values(groups: Mapping[str, Sequence[Mapping[str, Any]]], key: str) -> dict[str, dict[int, Any]]:
    """group -> {seed: row[key]} from group -> rows (each row has ``seed``)."""
    return {g: {int(r["seed"]): r.get(key) for r in rows} for g, rows in groups.items()}


def _diff_cell(diff: Interval | None, digits: int) -> str:
    """``+1.23 [+0.40, +2.06]``: the mean difference and its 95% interval (the mean alone for one pair)."""
    if diff is None:
        return "—"
    if diff.lo is None:
        return f"{diff.mean:+.{digits}f}"
    return f"{diff.mean:+.{digits}f} [{diff.lo:+.{digits}f}, {diff.hi:+.{digits}f}]"


def reference_rows(groups: Mapping[str, Sequence[Mapping[str, Any]]], reference: str) -> list[dict[str, Any]]:
    """One row per group other than ``reference``: pairs, and per :data:`COMPARED` metric the paired
    difference (cell text, lo, hi) and its verdict (better/worse in the metric's own sense)."""
    rows = []
    values = {key: seed_values(groups, key) for key, _ in COMPARED}
    for name in groups:
        if name == reference:
            continue
        row: dict[str, Any] = {"group": name, "reference": reference}
        for key, _ in COMPARED:
            diff = paired_difference(values[key][name], values[key][reference])
            digits = 3 if key.endswith("loss") else 2
            row["pairs"] = max(row.get("pairs", 0), diff.n if diff else 0)
            row[f"{key}_diff"] = _diff_cell(diff, digits)
            row[f"{key}_mean"] = diff.mean if diff else None
            row[f"{key}_lo"], row[f"{key}_hi"] = (diff.lo, diff.hi) if diff else (None, None)
            row[f"{key}_verdict"] = verdict(diff, higher_is_better(key))
        rows.append(row)
    return rows


def claim_rows(groups: Mapping[str, Sequence[Mapping[str, Any]]], raw_claims: Any) -> list[dict[str, Any]]:
    """One row per claim: its text, source, what is compared, the measured effect with its interval, and the
    verdict (reproduced / contradicted / inconclusive)."""
    claims: list[Claim] = parse_claims(raw_claims, None, "study.yaml")
    rows = []
    for claim in claims:
        if any(g not in groups for g in claim.groups):
            continue  # a group the study did not run (`reglab study --only`): nothing to say about this claim
        values = seed_values(groups, claim.metric)
        effect = claim_effect(claim, values)
        digits = 3 if claim.metric.endswith("loss") else 2
        expect = claim.expect + (f" (±{claim.margin:g})" if claim.expect == "same" else "")
        rows.append(
            {
                "claim": claim.claim,
                "source": claim.source,
                "metric": claim.metric,
                "effect of": claim.label(),
                "expected": expect,
                "n": effect.n if effect else 0,
                "effect": _diff_cell(effect, digits),
                "lo": effect.lo if effect else None,
                "hi": effect.hi if effect else None,
                "verdict": claim_verdict(claim, effect),
            }
        )
    return rows
