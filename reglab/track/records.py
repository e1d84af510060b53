"""Run directories read for reports: each run's config, metrics and summary as a :class:`RunRecord` with one
flat row of its final numbers (and the derived metrics of :mod:`reglab.track.claims`), and per-group means,
standard deviations and 95% t-intervals over seeds. :mod:`reglab.track.report` renders them."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import current_form
from ..errors import UserError
from .claims import DERIVED, derived_metrics
from .stats import mean_interval

# (key in the row, column title, summary.json key or callable)
METRICS = [
    ("train_loss", "train loss", "final_train_loss"),
    ("train_acc", "train acc", "final_train_acc"),
    ("best_val_acc", "val acc (best)", "best_val_acc"),
    ("final_val_acc", "val acc (final)", "final_val_acc"),
    ("test_loss", "test loss", "test_loss"),
    ("test_acc", "test acc", "test_acc"),
    ("best_epoch", "best epoch", "best_epoch"),
    ("wall_time_s", "time (s)", "wall_time_s"),
]
# Derived metrics shown in the group table: the regime evidence (when the baseline overfit) and the gap.
REGIME = [
    ("train99_epoch", "train ≥99% at epoch"),
    ("val_loss_min_epoch", "val-loss min epoch"),
    ("gap", "train−test gap"),
]


@dataclass
class RunRecord:
    path: Path
    group: str
    seed: int
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    row: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.summary is not None:
            return "done"
        return f"incomplete ({len(self.metrics)} epochs)" if self.metrics else "not started"


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories in ``paths``: each path is a run directory, a study directory or any folder holding
    run directories (searched recursively)."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UserError(f"{p} does not exist; give run directories or study directories.")
        if _is_run(p):
            found.append(p)
            continue
        inner = sorted(
            {c.parent for c in p.rglob("config.yaml") if "checkpoints" not in c.parts and c.parent != p}
        )
        if not inner:
            raise UserError(f"{p} holds no reglab run directories (no config.yaml found under it).")
        found += inner
    seen, unique = set(), []
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def load_record(path: Path) -> RunRecord:
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path / 'config.yaml'} cannot be read: {exc}.") from None
    if not isinstance(config, dict):
        raise UserError(
            f"{path / 'config.yaml'} does not hold a config mapping (it holds a {type(config).__name__}); "
            "restore it, or leave that run out of the report."
        )
    config = current_form(config)  # old key spellings as their replacements, so old and new runs compare
    metrics: list[dict[str, Any]] = []
    mpath = path / "metrics.jsonl"
    if mpath.is_file():
        for line in mpath.read_text().splitlines():
            try:
                metrics.append(json.loads(line))
            except ValueError:
                break  # a torn last line (the file is written atomically, so only by hand)
    summary = None
    if (path / "summary.json").is_file():
        try:
            summary = json.loads((path / "summary.json").read_text())
        except ValueError:
            summary = None
    run_cfg = config.get("run", {}) if isinstance(config, dict) else {}
    rec = RunRecord(
        path, str(run_cfg.get("name") or path.name), int(run_cfg.get("seed") or 0), config, metrics, summary
    )
    rec.row = _row(rec)
    return rec


def _row(rec: RunRecord) -> dict[str, Any]:
    s, last = rec.summary or {}, (rec.metrics[-1] if rec.metrics else {})
    fallback = {
        "final_train_loss": last.get("train_loss"),
        "final_train_acc": last.get("train_acc"),
        "final_val_acc": last.get("val_acc"),
        "test_loss": last.get("test_loss"),
        "test_acc": last.get("test_acc"),
        "wall_time_s": last.get("wall_time_s"),
    }
    vals = [r["val_acc"] for r in rec.metrics if r.get("val_acc") is not None]
    if vals:
        fallback["best_val_acc"] = max(vals)
        fallback["best_epoch"] = next(r["epoch"] for r in rec.metrics if r.get("val_acc") == max(vals))
    row: dict[str, Any] = {
        "run": rec.path.name,
        "group": rec.group,
        "seed": rec.seed,
        "status": rec.status,
        "params": s.get("params"),
        "epochs": s.get("epochs", last.get("epoch")),
    }
    for key, _, skey in METRICS:
        value = s.get(skey, fallback.get(skey))
        row[key] = None if value is None or (key == "best_val_acc" and value < 0) else value
    row.update(derived_metrics(rec.metrics, row))
    return row


def _study_order(run_dir: Path) -> int:
    """Position of a run in its study's ``run_order`` (study.yaml beside ``runs/``), else a large number."""
    study_file = run_dir.parent.parent / "study.yaml"
    try:
        order = (yaml.safe_load(study_file.read_text()) or {}).get("run_order") or []
    except (OSError, yaml.YAMLError, AttributeError):
        order = []
    return order.index(run_dir.name) if run_dir.name in order else 1 << 30


def load_records(paths: list[Path]) -> list[RunRecord]:
    """Records of the runs under ``paths``: a study's runs in the study file's order, others by name."""
    dirs = find_run_dirs(paths)
    first: dict[Path, int] = {}
    for i, d in enumerate(dirs):  # each study (or lone run) keeps the place where it first appears
        first.setdefault(d.parent.parent, i)
    original = {d: i for i, d in enumerate(dirs)}
    dirs.sort(key=lambda d: (first[d.parent.parent], _study_order(d), original[d]))
    records = [load_record(p) for p in dirs]
    seen: dict[tuple[str, int], int] = {}
    for rec in records:  # same name and seed twice (e.g. two runs of one recipe): keep them apart
        key = (rec.group, rec.seed)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            rec.group = rec.row["group"] = f"{rec.group} ({rec.path.name})"
    return records


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def by_group(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = {}
    for rec in records:
        groups.setdefault(rec.group, []).append(rec)
    return groups


def group_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per group (in first-seen order): n, and per metric the mean, std and 95% t-interval
    half-width (``KEY_ci95``; empty for one seed) over its seeds."""
    rows = []
    for name, recs in by_group(records).items():
        row: dict[str, Any] = {"group": name, "n": len(recs), "params": recs[0].row.get("params")}
        for key in [k for k, _, _ in METRICS] + list(DERIVED):
            values = [r.row.get(key) for r in recs]
            row[key], row[f"{key}_std"] = _mean_std(values)
            interval = mean_interval(values)
            row[f"{key}_ci95"] = interval.half_width if interval else None
        rows.append(row)
    return rows
