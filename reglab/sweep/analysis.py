"""What a sweep's trials say, as numbers: one row per trial, parameter importance, rank correlations, what the
pruner saved and the best trial's config. :mod:`.report` writes them into the report's files, :mod:`.plots`
draws them.

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

import json
import math
import warnings
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from .spec import Sweep


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
                (
                    f"{p.key}={value_text(c)}",
                    [float(value_text(r["params"][p.key]) == value_text(c)) for r in have],
                )
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


def value_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)
