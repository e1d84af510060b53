"""``reglab sweep report DIR``: what a sweep found and what it cost, written as files.

Writes into ``<sweep_dir>/report/`` (``-o OUT``: into OUT): ``report.md`` and ``report.html`` (summary, best trial, importance and
correlation, pruning savings, figures, the trial table), ``trials.csv``, ``summary.json``, ``best.yaml`` (the best
trial's full config as a recipe: ``reglab train <dir>/report/best.yaml``) and the PNGs of :mod:`reglab.sweep.plots`.
The numbers (importance, correlation, savings, the best trial) come from :mod:`reglab.sweep.analysis`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from ..errors import UserError
from .analysis import best_config, collect, correlations, importance, savings, value_text
from .runner import counts
from .spec import Sweep
from .storage import load_optuna_study, read_sweep_dir

REPORT_DIR = "report"
FIGURES = {
    "params": "accuracy_vs_params.png",
    "curves": "val_acc_vs_epoch.png",
    "importance": "importance.png",
    "parallel": "parallel_coordinates.png",
}


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return value_text(v)


def write_sweep_report(sweep_dir: Path, method: str = "ped_anova", out_dir: Path | None = None) -> dict[str, Any]:
    """Analyse the sweep in ``sweep_dir``; write the report into ``out_dir`` (default ``sweep_dir/report/``);
    return the numbers (also in its summary.json)."""
    from . import plots

    sweep_dir = Path(sweep_dir)
    spec = read_sweep_dir(sweep_dir)
    study = load_optuna_study(spec, sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(study, spec)
    c = counts(study)
    imp, imp_method = importance(study, method)
    corr = correlations(rows, spec)
    max_epochs = spec.epochs()
    save = savings(rows, max_epochs)
    summary: dict[str, Any] = {
        "name": spec.name,
        "objective": spec.objective,
        "trials_target": spec.trials,
        "counts": c,
        "sampler": spec.sampler.name,
        "pruner": spec.pruner.name,
        "max_epochs": max_epochs,
        "cli_overrides": list(spec.cli_overrides or []),
        "savings": save,
        "importance": imp,
        "importance_method": imp_method,
        "correlation": {k: (None if math.isnan(r) else round(r, 4)) for k, r, _ in corr},
    }
    try:
        best, cfg = best_config(study, spec, sweep_dir)
    except UserError:
        best, cfg = None, None
    if best is not None:
        head = (
            f"# Best trial of sweep {spec.name}: trial {best.number}, {spec.objective} {best.value:.2f}%\n"
            f"# parameters: {json.dumps({p.key: p.decode(v) for p, v in _params(spec, best)})}\n"
            f"# Train it: reglab train {out / 'best.yaml'}\n"
            f"# Retrain on train+val and report test accuracy once: reglab sweep best {sweep_dir}\n"
        )
        (out / "best.yaml").write_text(head + cfg.to_yaml())
        summary["best"] = {
            "trial": best.number,
            "value": best.value,
            "params": {p.key: p.decode(v) for p, v in _params(spec, best)},
            "run_dir": best.user_attrs.get("run_dir"),
        }
    retrained = sweep_dir / "best" / "retrain.json"
    if retrained.is_file():
        summary["retrained_test_acc"] = json.loads(retrained.read_text()).get("test_acc")
    figs = {
        "params": plots.plot_params(rows, spec.space, out / FIGURES["params"], spec.objective),
        "curves": plots.plot_curves(rows, out / FIGURES["curves"]),
        "importance": plots.plot_importance(
            imp, imp_method, [(k, r) for k, r, _ in corr], c["complete"], out / FIGURES["importance"]
        ),
        "parallel": plots.plot_parallel(rows, spec.space, out / FIGURES["parallel"], spec.objective),
    }
    (out / "trials.csv").write_text(_csv(rows, spec))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(summary, rows, spec, corr))
    _html(out / "report.html", summary, rows, spec, corr, figs, out / "best.yaml")
    summary["files"] = {"dir": str(out), **{k: str(v) for k, v in figs.items()}}
    return summary


def _params(spec: Sweep, trial):
    return [(p, trial.params[p.key]) for p in spec.space if p.key in trial.params]


def _trial_table(rows: list[dict], spec: Sweep) -> tuple[list[str], list[list[str]]]:
    cols = ["trial", "state", "value", "epochs", *[p.key for p in spec.space], "train_s", "note"]
    out = []
    for r in rows:
        note = r["failure"] or (f"retry of {r['retry_of']}" if r["retry_of"] is not None else "")
        out.append(
            [
                str(r["number"]),
                r["state"],
                _fmt(r["value"]),
                str(r["epochs"]),
                *[_fmt(r["params"].get(p.key)) for p in spec.space],
                _fmt(r["train_s"]),
                note.replace("|", "/"),
            ]
        )
    return cols, out


def _csv(rows: list[dict], spec: Sweep) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "number",
            "state",
            "value",
            "epochs",
            *[p.key for p in spec.space],
            "train_s",
            "failure_kind",
            "failure",
            "retry_of",
            "run_dir",
            "worker",
            "host",
        ]
    )
    for r in rows:
        w.writerow(
            [
                r["number"],
                r["state"],
                r["value"],
                r["epochs"],
                *[_fmt(r["params"].get(p.key)) for p in spec.space],
                r["train_s"],
                r["failure_kind"],
                r["failure"],
                r["retry_of"],
                r["run_dir"],
                r["worker"],
                r["host"],
            ]
        )
    return buf.getvalue()


def summary_lines(s: dict[str, Any]) -> list[str]:
    c, v = s["counts"], s["savings"]
    lines = [
        f"- trials: {c['done']} of {s['trials_target']} finished: {c['complete']} complete, {c['pruned']} pruned, "
        f"{c['failed']} failed"
        + (f" (+{c['retried']} interrupted/killed and retried)" if c["retried"] else "")
        + (f"; {c['running']} running" if c["running"] else ""),
        f"- sampler {s['sampler']}, pruner {s['pruner']} (resource: epochs, at most {s['max_epochs']})",
        *([f"- command-line overrides: {' '.join(s['cli_overrides'])}"] if s.get("cli_overrides") else []),
        f"- pruning: {v['pruned']} trials stopped early (after epoch: count {v['pruned_at_epoch']}); "
        f"{v['epochs_run']} epochs trained instead of {v['epochs_if_unpruned']} "
        f"({v['epochs_saved_frac']:.0%} saved); {v['seconds_run']:.0f} s instead of an estimated "
        f"{v['seconds_if_unpruned_est']:.0f} s ({v['seconds_saved_frac']:.0%} saved)",
    ]
    if s.get("best"):
        b = s["best"]
        lines.append(
            f"- best: trial {b['trial']}, {s['objective']} {b['value']:.2f}%: "
            + ", ".join(f"{k}={_fmt(x)}" for k, x in b["params"].items())
        )
    if s.get("retrained_test_acc") is not None:
        lines.append(f"- best config retrained on train+val: test accuracy {s['retrained_test_acc']:.2f}%")
    return lines


def _importance_rows(s: dict[str, Any], corr, spec: Sweep) -> list[list[str]]:
    """One row per parameter (importance, and correlation for a numeric one), then a categorical parameter's
    choices (their correlations)."""
    imp = s["importance"] or {}
    rows = []
    for p in spec.space:
        mine = [(label, rho, n) for label, rho, n in corr if label == p.key or label.startswith(f"{p.key}=")]
        value = f"{imp[p.key]:.3f}" if p.key in imp else ""
        if p.type == "categorical":
            rows.append([p.key, value, "", str(mine[0][2]) if mine else ""])
            rows += [[f"  {label}", "", _fmt(rho), str(n)] for label, rho, n in mine]
        else:
            rows += [[label, value, _fmt(rho), str(n)] for label, rho, n in mine]
    return rows


def _markdown(s: dict[str, Any], rows: list[dict], spec: Sweep, corr) -> str:
    md = [
        f"# Sweep {spec.name}",
        "",
        *summary_lines(s),
        "",
        f"## Importance ({s['importance_method']}) and Spearman correlation with {spec.objective}",
        "",
        "| parameter | importance | correlation | n |",
        "| --- | --- | --- | --- |",
    ]
    md += [f"| {' | '.join(r)} |" for r in _importance_rows(s, corr, spec)]
    md += ["", "## Figures", ""] + [f"![{k}]({v})" for k, v in FIGURES.items()]
    cols, table = _trial_table(rows, spec)
    md += ["", "## Trials", "", f"| {' | '.join(cols)} |", "|" + " --- |" * len(cols)]
    md += [f"| {' | '.join(r)} |" for r in table]
    return "\n".join(md) + "\n"


def _html(
    path: Path, s: dict[str, Any], rows: list[dict], spec: Sweep, corr, figs: dict[str, Path], best_yaml: Path
) -> None:
    from ..track.html import details, embed_png, escape, html_table, pre, write_page

    summary = "<ul>" + "".join(f"<li>{escape(line[2:])}</li>" for line in summary_lines(s)) + "</ul>"
    if best_yaml.is_file():
        summary += details(f"best config as a recipe ({best_yaml.name})", pre(best_yaml.read_text()))
    cols, table = _trial_table(rows, spec)
    sections = [
        ("Summary", summary),
        (
            f"Importance ({s['importance_method']}) and correlation with {spec.objective}",
            html_table(["parameter", "importance", "Spearman correlation", "n"], _importance_rows(s, corr, spec))
            + embed_png(figs["importance"]),
        ),
        ("Accuracy against each hyperparameter", embed_png(figs["params"])),
        ("Validation accuracy per epoch", embed_png(figs["curves"])),
        ("Parallel coordinates", embed_png(figs["parallel"])),
        ("Trials", html_table(cols, table)),
    ]
    write_page(
        path,
        f"Sweep {spec.name}",
        sections,
        subtitle=f"objective {spec.objective} (validation accuracy, maximized); sampler {spec.sampler.name}, "
        f"pruner {spec.pruner.name}",
    )
