"""``reglab sweep report DIR``: what a sweep found and what it cost.

Writes into ``<sweep_dir>/report/`` (``-o OUT``: into OUT): ``report.md`` and ``report.html`` (summary, best trial, importance and
correlation, pruning savings, figures, the trial table), ``trials.csv``, ``best.yaml`` (the best trial's full
config as a recipe: ``reglab train <dir>/report/best.yaml``) and the PNGs of :mod:`reglab.sweep.plots`.

* Importance: PED-ANOVA (Watanabe et al., "PED-ANOVA: Efficiently Quantifying Hyperparameter Importance in
  Arbitrary Subspaces", IJCAI 2023) by default: how much the distribution of each parameter among the top
  trials differs from its distribution among all of them (Pearson divergence of Parzen estimates); fANOVA
  (Hutter et al., ICML 2014; needs scikit-learn) on request. Both over COMPLETE trials only (a pruned
  trial has no final objective), normalized to sum to 1 by Optuna.
* Correlation: Spearman's rank correlation of each parameter with the objective over COMPLETE trials (rank
  based, so log-scaled parameters need no transform); a categorical parameter becomes one 0/1 indicator per
  choice (``optim.name=sgd``).
* Savings: epochs trained by complete + pruned trials against every one of them trained to the end, and the
  same in seconds (each trial's seconds per epoch times the epochs it skipped).
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
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


def collect(study, spec: Sweep) -> list[dict[str, Any]]:
    """One dictionary per trial: number, state, value, decoded params, curve, epochs, failure, timing."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        params = {}
        for p in spec.space:
            if p.key in t.params:
                params[p.key] = p.decode(t.params[p.key])
        curve = sorted((int(k), float(v)) for k, v in t.intermediate_values.items())
        dur = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": params,
                "curve": curve,
                "epochs": len(curve),
                "train_s": a.get("train_s"),
                "duration_s": dur,
                "failure": a.get("failure"),
                "failure_kind": a.get("failure_kind"),
                "retry_of": a.get("retry_of"),
                "will_retry": a.get("will_retry"),
                "run_dir": a.get("run_dir"),
                "worker": a.get("worker"),
                "host": a.get("host"),
            }
        )
    return rows


def importance(study, method: str = "ped_anova") -> tuple[dict[str, float] | None, str]:
    """Normalized parameter importances over complete trials (None when there are too few)."""
    import optuna
    from optuna.trial import TrialState

    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < 3:
        return None, f"{n} complete trials (importance needs 3 or more)"
    if method == "fanova":
        import importlib.util

        if importlib.util.find_spec("sklearn") is None:
            raise UserError(
                "--importance fanova needs scikit-learn (pip install scikit-learn); the default "
                "ped_anova needs nothing extra."
            ) from None
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    else:
        # at least 3 trials in the top quantile, so a handful of complete trials still gives an answer
        q = min(0.5, max(0.1, 3.0 / n))
        evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=q)
        method = f"PED-ANOVA, top {q:.0%}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), method
        except (RuntimeError, ValueError) as exc:  # e.g. zero variance among the complete trials
            return None, f"not computable ({exc})"


def correlations(rows: list[dict], spec: Sweep) -> list[tuple[str, float, int]]:
    """(label, Spearman rho, n) per numeric parameter and per choice of a categorical one."""
    done = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    out = []
    for p in spec.space:
        have = [r for r in done if p.key in r["params"]]
        ys = [r["value"] for r in have]
        if p.type == "categorical":
            series = [
                (f"{p.key}={_text(c)}", [float(_text(r["params"][p.key]) == _text(c)) for r in have])
                for c in p.choices
            ]
        else:
            series = [(p.key, [float(r["params"][p.key]) for r in have])]
        for label, xs in series:
            rho = float("nan")
            if len(xs) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1:
                rho = spearman(xs, ys)
            out.append((label, rho, len(xs)))
    return out


def _average_ranks(values: list[float]):
    """1-based ranks, ties sharing their mean rank (``scipy.stats.rankdata``'s default)."""
    import numpy as np

    _, inverse, counts = np.unique(np.asarray(values, dtype=float), return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse.reshape(-1)]


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks, as ``scipy.stats.spearmanr`` computes it
    (numpy only: scipy is the optional ``sweep`` extra); nan when a value is nan or either side is constant."""

    if any(math.isnan(v) for v in (*xs, *ys)):
        return float("nan")
    rx, ry = _average_ranks(xs), _average_ranks(ys)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    return float((rx * ry).sum()) / denom if denom > 0 else float("nan")


def savings(rows: list[dict], max_epochs: int) -> dict[str, Any]:
    """Epochs (and estimated seconds) the pruner saved against training every trial to the end."""
    finished = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    ran = sum(r["epochs"] for r in finished)
    full = max_epochs * len(finished)
    sec_ran = sec_full = 0.0
    for r in finished:
        if r["train_s"] and r["epochs"]:
            sec_ran += r["train_s"]
            sec_full += r["train_s"] / r["epochs"] * max(max_epochs, r["epochs"])
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    at = {}
    for r in pruned:
        at[r["epochs"]] = at.get(r["epochs"], 0) + 1
    return {
        "trials": len(finished),
        "pruned": len(pruned),
        "pruned_at_epoch": dict(sorted(at.items())),
        "epochs_run": ran,
        "epochs_if_unpruned": full,
        "epochs_saved_frac": 1 - ran / full if full else 0.0,
        "seconds_run": round(sec_ran, 1),
        "seconds_if_unpruned_est": round(sec_full, 1),
        "seconds_saved_frac": 1 - sec_ran / sec_full if sec_full else 0.0,
    }


def best_config(study, spec: Sweep, sweep_dir: Path):
    """The best complete trial and its config (its run directory's config.yaml when present)."""
    from optuna.trial import TrialState

    from ..config import config_from_dict

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise UserError(f"{sweep_dir}: no trial has completed yet; run (or resume) the sweep first.")
    best = max(done, key=lambda t: t.value)
    saved = sweep_dir / str(best.user_attrs.get("run_dir", "")) / "config.yaml"
    if best.user_attrs.get("run_dir") and saved.is_file():
        cfg = config_from_dict(yaml.safe_load(saved.read_text()))
    else:  # the trial ran on another machine: rebuild its config from the sweep and its parameters
        cfg = spec.config({p.key: p.decode(best.params[p.key]) for p in spec.space if p.key in best.params})
    cfg.run.dir, cfg.run.budget, cfg.run.threads = None, None, None
    cfg.run.name = f"{spec.name}-best"
    return best, cfg


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return _text(v)


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


def _summary_lines(s: dict[str, Any]) -> list[str]:
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
        *_summary_lines(s),
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

    summary = "<ul>" + "".join(f"<li>{escape(line[2:])}</li>" for line in _summary_lines(s)) + "</ul>"
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
