"""Reports over run directories: comparison tables (Markdown, CSV), overlaid curves, one offline HTML page.

``reglab report STUDY_OR_RUN_DIRS -o OUT`` writes::

    OUT/report.md      the tables (per group mean ± 95% CI over seeds, each group against the reference
                       paired by seed, the study's claims with verdicts, and per run) and links to the figures
    OUT/groups.csv     one row per group: n, params, mean, std and 95% CI of every metric
    OUT/comparison.csv one row per group: paired difference to the reference group, interval and verdict
    OUT/claims.csv     one row per claim of the study file (when it lists claims)
    OUT/runs.csv       one row per run (with the derived metrics of reglab.track.claims)
    OUT/curves.png     loss and accuracy vs epoch, one line per group (mean over seeds), overlaid
    OUT/gap.png        training loss, and train accuracy minus evaluation accuracy (the overfitting gap)
    OUT/report.html    all of it in one self-contained page, with each run's config

The evaluation curves use the test split when every run evaluated it at >= 2 epochs, else the validation
split (CPU budgets evaluate the test set once, at the end); the figure says which.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import yaml

from ..config import PLACEMENT_KEYS
from ..errors import UserError
from ..train.checkpoint import atomic_write_text
from ..typedyaml import flatten_tree
from . import html as H
from .claims import DERIVED
from .comparison import COMPARED, claim_rows, reference_rows, study_settings
from .records import METRICS, REGIME, RunRecord, by_group, group_rows, load_records


def _pm(mean: Any, std: Any, digits: int) -> str:
    if mean is None:
        return "—"
    if std is None and float(mean).is_integer() and digits <= 1:
        return str(int(mean))  # one run's best epoch or a whole number of seconds
    text = f"{mean:.{digits}f}"
    return f"{text} ± {std:.{digits}f}" if std is not None else text


def _digits(key: str) -> int:
    return 3 if key.endswith("loss") else (1 if key in ("best_epoch", "wall_time_s") else 2)


def _md(columns: list[str], rows: list[list[Any]], align: str = "---:") -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "| --- | " + " | ".join(align for _ in columns[1:]) + " |"]
    return out + ["| " + " | ".join("—" if c is None else str(c) for c in row) + " |" for row in rows]


def group_cells(g: dict[str, Any]) -> list[str]:
    """A group's cells: mean ± 95% CI half-width of every METRICS and REGIME column."""
    return [_pm(g[k], g[f"{k}_ci95"], _digits(k)) for k, _, _ in METRICS] + [
        _pm(g[k], g[f"{k}_ci95"], 1) for k, _ in REGIME
    ]


GROUP_TITLES = [t for _, t, _ in METRICS] + [t for _, t in REGIME]
REF_TITLES = ["group", "pairs"] + [c for _, t in COMPARED for c in (f"{t} Δ [95% CI]", "verdict")]
CLAIM_COLUMNS = ["claim", "source", "metric", "effect of", "expected", "n", "effect", "verdict"]


def reference_cells(row: dict[str, Any]) -> list[Any]:
    return [row["group"], row["pairs"]] + [c for k, _ in COMPARED for c in (row[f"{k}_diff"], row[f"{k}_verdict"])]


def markdown_tables(
    records: list[RunRecord],
    groups: list[dict[str, Any]],
    ref_rows: list[dict[str, Any]] | None = None,
    reference: str | None = None,
    claims: list[dict[str, Any]] | None = None,
) -> str:
    titles = [t for _, t, _ in METRICS]
    out = _md(
        ["group", "n", "params", *GROUP_TITLES],
        [
            [g["group"], g["n"], f"{g['params']:,}" if isinstance(g["params"], int) else "—", *group_cells(g)]
            for g in groups
        ],
    )
    if ref_rows:
        out += [
            "",
            f"Each group against **{reference}**, paired by seed: mean difference (group − {reference}) "
            "with its 95% Student-t interval; *better*/*worse* when the interval excludes zero.",
            "",
            *_md(REF_TITLES, [reference_cells(r) for r in ref_rows]),
        ]
    if claims:
        out += [
            "",
            "Claims tested (verdict: *reproduced* when the 95% interval of the effect excludes zero in "
            "the expected direction, *contradicted* when it excludes zero the other way):",
            "",
            *_md(CLAIM_COLUMNS, [[r[c] for c in CLAIM_COLUMNS] for r in claims], "---"),
        ]
    out += [
        "",
        "| run | seed | status | " + " | ".join(titles) + " |",
        "| --- | ---: | --- | " + " | ".join("---:" for _ in titles) + " |",
    ]
    for r in records:
        cells = [_pm(r.row.get(k), None, _digits(k)) for k, _, _ in METRICS]
        out.append(f"| {r.row['run']} | {r.seed} | {r.status} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return buf.getvalue()


BOOKKEEPING = PLACEMENT_KEYS | {"run.name"}


def config_differences(records: list[RunRecord]) -> list[str]:
    flat = [flatten_tree(r.config) for r in records]
    keys = sorted({k for f in flat for k in f} - BOOKKEEPING)
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]


def write_study_report(
    paths: list[Path], out: Path, title: str | None = None, reference: str | None = None
) -> dict[str, Path]:
    """Write the tables, figures and HTML page for the runs under ``paths`` into ``out``. ``reference`` (a
    group) defaults to the study file's ``reference:``, else the first group."""
    from .plots import plot_overlay

    records = load_records(paths)
    settings = study_settings([r.path for r in records])
    rows_by_group = {g: [{"seed": r.seed, **r.row} for r in recs] for g, recs in by_group(records).items()}
    if not reference and settings.get("reference") in rows_by_group:
        reference = settings["reference"]
    # A study run with --only may leave out its file's reference: compare with the first group that ran.
    reference = reference or next(iter(rows_by_group))
    if reference not in rows_by_group:
        raise UserError(
            f"reference group {reference!r} is not among the runs' groups: {', '.join(rows_by_group)}."
        )
    ref_rows = reference_rows(rows_by_group, reference) if len(rows_by_group) > 1 else []
    claims = claim_rows(rows_by_group, settings.get("claims")) if settings.get("claims") else []
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report folder {out}: {exc.strerror}.") from None
    groups = group_rows(records)
    files = {
        "markdown": out / "report.md",
        "groups_csv": out / "groups.csv",
        "runs_csv": out / "runs.csv",
        "comparison_csv": out / "comparison.csv",
        "curves": out / "curves.png",
        "gap": out / "gap.png",
        "html": out / "report.html",
    }
    if claims:
        files["claims_csv"] = out / "claims.csv"
        atomic_write_text(files["claims_csv"], _csv(claims, [*CLAIM_COLUMNS[:-1], "lo", "hi", "verdict"]))
    metric_cols = [k for k, _, _ in METRICS] + list(DERIVED)
    atomic_write_text(
        files["groups_csv"],
        _csv(groups, ["group", "n", "params"] + [c for k in metric_cols for c in (k, f"{k}_std", f"{k}_ci95")]),
    )
    atomic_write_text(
        files["comparison_csv"],
        _csv(
            ref_rows,
            ["group", "reference", "pairs"]
            + [c for k, _ in COMPARED for c in (f"{k}_mean", f"{k}_lo", f"{k}_hi", f"{k}_verdict")],
        ),
    )
    atomic_write_text(
        files["runs_csv"],
        _csv([r.row for r in records], ["run", "group", "seed", "status", "params", "epochs", *metric_cols]),
    )
    series = {}
    for rec in records:
        series.setdefault(rec.group, []).append(rec.metrics)
    split = plot_overlay(series, files["curves"], files["gap"])
    title = title or "reglab report: " + ", ".join(sorted({p.name for p in map(Path, paths)}))
    tables = markdown_tables(records, groups, ref_rows, reference, claims)
    diff = config_differences(records)
    md = [
        f"# {title}",
        "",
        f"{len(records)} runs in {len(groups)} groups; mean ± 95% confidence interval "
        f"(Student t over the n seeds; the mean alone for n = 1). Curves use the {split} split.",
        "",
        tables,
        "![curves](curves.png)",
        "",
        "![gap](gap.png)",
        "",
    ]
    atomic_write_text(files["markdown"], "\n".join(md))

    group_html = H.html_table(
        ["group", "n", "params", *GROUP_TITLES],
        [[g["group"], g["n"], g["params"], *group_cells(g)] for g in groups],
        cls="groups",
    )
    ref_html = (
        f"<p>Mean difference (group − {H.escape(reference)}) over seeds paired by run.seed, with its 95% "
        "Student-t interval; <em>better</em>/<em>worse</em> when the interval excludes zero.</p>"
        + H.html_table(REF_TITLES, [reference_cells(r) for r in ref_rows], cls="reference")
    )
    claims_html = (
        "<p>Verdict: <em>reproduced</em> when the 95% interval of the effect excludes zero in the "
        "expected direction (for <em>same</em>: lies inside ± the margin), <em>contradicted</em> when "
        "it excludes zero the other way, else <em>inconclusive</em>.</p>"
        + H.html_table(CLAIM_COLUMNS, [[r[c] for c in CLAIM_COLUMNS] for r in claims], cls="claims")
    )
    run_cols = ["run", "group", "seed", "status", "params"] + [t for _, t, _ in METRICS]
    run_html = H.html_table(
        run_cols,
        [
            [r.row["run"], r.group, r.seed, r.status, r.row.get("params")] + [r.row.get(k) for k, _, _ in METRICS]
            for r in records
        ],
        cls="runs",
    )
    diff_html = (
        H.html_table(
            ["run", *diff],
            [[r.row["run"]] + [flatten_tree(r.config).get(k) for k in diff] for r in records],
            cls="diff",
        )
        if diff
        else "<p>All runs share one config (apart from names and paths).</p>"
    )
    per_run = []
    for rec in records:
        inner = [f"<p class='muted'>{H.escape(rec.path)}</p>"]
        for png in ("curves.png", "confusion.png", "reliability.png"):
            if (rec.path / png).is_file():
                inner.append(H.embed_png(rec.path / png, f"{rec.row['run']} {png}"))
        inner.append(H.pre(yaml.safe_dump(rec.config, sort_keys=False)))
        per_run.append(H.details(f"{rec.row['run']} — {rec.status}", "".join(inner)))
    sections = [
        ("Groups (mean ± 95% CI over seeds)", group_html),
        *([(f"Against {reference} (paired by seed)", ref_html)] if ref_rows else []),
        *([("Claims tested", claims_html)] if claims else []),
        ("Runs", run_html),
        (f"Curves ({split} split)", H.embed_png(files["curves"], "curves") + H.embed_png(files["gap"], "gap")),
        ("What differs between runs", diff_html),
        ("Each run: curves and config", "".join(per_run)),
    ]
    H.write_page(
        files["html"],
        title,
        sections,
        subtitle=f"{len(records)} runs, {len(groups)} groups · written {time.strftime('%Y-%m-%d %H:%M')}",
    )
    return files
