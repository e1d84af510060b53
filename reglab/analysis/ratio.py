"""Mixing-ratio study (after Liang et al., *Understanding Mixup Training Methods*, 2018): collect a study's
runs trained with decoupled mixing and plot validation accuracy against the width of the mixing-ratio range.

Decoupled mixing (``reglab.data.mixing``): ``x = lam_x x_i + (1 - lam_x) x_j``, ``y = lam_y y_i +
(1 - lam_y) y_j``, each ratio ``Uniform(l1, l2)``, fixed, or tied (``lam_y = lam_x``). Every run is placed
by its saved config (never by its name):

* panel a -- ``lam_x = 0.5`` fixed, ``lam_y`` uniform (or fixed 0.5): x-axis = ``lam_y``'s range;
* panel b -- ``lam_y = 0.5`` fixed, ``lam_x`` uniform (or fixed 0.5): x-axis = ``lam_x``'s range;
* panel c -- tied, ``lam_x`` uniform (or fixed 0.5): x-axis = the range;
* panel d -- tied runs whose range ends at 1 (e.g. [0.5, 1] vs [0, 1]), next to ERM (no mixing); ERM is
  also drawn as a dashed line in panels a-c.

A run with both ratios 0.5 (fixed/fixed, or fixed 0.5 and tied) is the zero-width point of panels a, b and
c. The range is plotted as its width ``l2 - l1`` (labels show ``[l1, l2]``): with a random partner,
``Uniform(0.5 - w, 0.5)`` trains on the same distribution as ``Uniform(0.5, 0.5 + w)`` (swap i and j).
The y-axis is ``final_val_acc`` (or ``best_val_acc``) from each run's summary.json; with several seeds,
the mean and the standard deviation as an error bar.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import UserError

PANELS = {
    "a": "lam_x = 0.5, lam_y ~ U(range)",
    "b": "lam_y = 0.5, lam_x ~ U(range)",
    "c": "lam_x = lam_y ~ U(range)",
    "d": "tied ranges ending at 1 vs ERM",
}


def ratio_spec(mix: dict[str, Any]) -> tuple[str, tuple[float, float] | None, tuple[float, float] | None] | None:
    """``(kind, x_range, y_range)`` of a run's ``mix`` section: kind ``erm``, ``tied`` or ``decoupled``;
    ranges as (l1, l2) (fixed v -> (v, v)); None for runs this study does not cover (beta ratios, cutmix)."""
    if mix.get("cutmix_alpha", 0) > 0:
        return None
    lam_x, lam_y = mix.get("lam_x", "beta"), mix.get("lam_y", "tied")
    if lam_x == "beta":
        return ("erm", None, None) if mix.get("mixup_alpha", 0) <= 0 and lam_y == "tied" else None

    def rng(kind: str, r: list[float]) -> tuple[float, float]:
        return (float(r[0]), float(r[0])) if kind == "fixed" else (float(r[0]), float(r[1]))

    xr = rng(lam_x, mix.get("lam_x_range", [0.0, 1.0]))
    if lam_y == "tied":
        return "tied", xr, xr
    if lam_y == "beta":
        return None
    return "decoupled", xr, rng(lam_y, mix.get("lam_y_range", [0.0, 1.0]))


def panels_of(spec) -> list[tuple[str, tuple[float, float]]]:
    """The panels a run belongs to and its range on each."""
    kind, xr, yr = spec
    half = (0.5, 0.5)
    out = []
    if kind == "erm":
        return [("d", (0.0, 0.0))]
    if xr == half:
        out.append(("a", yr))
    if yr == half and (kind == "decoupled" or xr == half):
        out.append(("b", xr))
    if kind == "tied" or (xr == half and yr == half):
        out.append(("c", xr))
    if kind == "tied" and xr[1] == 1.0 and xr[0] < 1.0:
        out.append(("d", xr))
    return out


def collect(study_dir: Path | str, metric: str = "final_val_acc") -> list[dict[str, Any]]:
    """One record per finished run under ``study_dir/runs/`` (or ``study_dir`` itself holding run dirs):
    name, seed, spec, panels, and the metric from summary.json."""
    study_dir = Path(study_dir)
    root = study_dir / "runs" if (study_dir / "runs").is_dir() else study_dir
    if not root.is_dir():
        raise UserError(
            f"{study_dir} is not a study directory (no runs/ folder); run `reglab study FILE -o DIR` first."
        )
    records, finished, skipped = [], 0, 0
    for run_dir in sorted(p for p in root.iterdir() if (p / "config.yaml").is_file()):
        summary_path = run_dir / "summary.json"
        if not summary_path.is_file():
            continue
        finished += 1
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        summary = json.loads(summary_path.read_text())
        if summary.get(metric) is None:
            raise UserError(
                f"{summary_path} has no {metric}; use --metric best_val_acc or final_val_acc with a "
                "validation split."
            )
        spec = ratio_spec(cfg.get("mix", {}))
        if spec is None:
            skipped += 1
            continue
        records.append(
            {
                "run": run_dir.name,
                "name": cfg.get("run", {}).get("name") or run_dir.name,
                "seed": cfg.get("run", {}).get("seed", 0),
                "kind": spec[0],
                "x_range": spec[1],
                "y_range": spec[2],
                "panels": panels_of(spec),
                "value": float(summary[metric]),
                "test_acc": summary.get("test_acc"),
            }
        )
    if not finished:
        raise UserError(
            f"{root} holds no finished runs (run folders with summary.json); let the study finish first."
        )
    if not any(r["kind"] != "erm" for r in records):
        erm = len(records)
        raise UserError(
            f"{study_dir} is not a mixing-ratio study: expected runs with fixed or uniform mixing ratios "
            f"(mix.lam_x=fixed|uniform, as in studies/seed001_mixing_ratio.yaml), but its {finished} finished "
            f"run(s) are {erm} without mixing and {skipped} with Beta-ratio mixup or cutmix."
        )
    return records


def panel_points(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per panel, one point per distinct range: range, width, mean, std, seeds, run names."""
    groups: dict[tuple[str, tuple], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        for panel, rg in r["panels"]:
            groups[(panel, (r["kind"] == "erm", tuple(rg)))].append(r)
    out: dict[str, list[dict[str, Any]]] = {p: [] for p in PANELS}
    for (panel, (is_erm, rg)), rs in groups.items():
        vals = np.array([r["value"] for r in rs])
        out[panel].append(
            {
                "range": list(rg),
                "width": round(rg[1] - rg[0], 6),
                "erm": is_erm,
                "label": "ERM" if is_erm else f"[{rg[0]:g}, {rg[1]:g}]",
                "mean": float(vals.mean()),
                "std": float(vals.std()),
                "n": len(vals),
                "runs": sorted(r["run"] for r in rs),
            }
        )
    for panel in out:
        out[panel].sort(key=lambda p: (not p["erm"], p["width"], p["range"]))
    return out


def plot_panels(
    points: dict[str, list[dict[str, Any]]], path: Path | str, metric: str = "final_val_acc", title: str = ""
) -> Path:
    """Figure 1 a-d: accuracy against the range width (a-c, labelled with the ranges), categories in d."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    vals = [p["mean"] for pts in points.values() for p in pts]
    lo, hi = (min(vals), max(vals)) if vals else (0, 100)
    pad = max(1.0, 0.15 * (hi - lo))
    erm = next((p for p in points.get("d", []) if p["erm"]), None)
    for ax, (panel, desc) in zip(axes, PANELS.items()):
        pts = points.get(panel, [])
        ax.set_title(f"({panel}) {desc}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_ylabel(f"validation accuracy (%) [{metric}]" if panel == "a" else "")
        if not pts:
            ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
            continue
        ys, es = [p["mean"] for p in pts], [p["std"] for p in pts]
        if panel == "d":
            xs = np.arange(len(pts))
            for x, p in zip(xs, pts):
                ax.errorbar(
                    [x],
                    [p["mean"]],
                    yerr=[p["std"]] if p["std"] else None,
                    marker="s" if p["erm"] else "o",
                    color="gray" if p["erm"] else "tab:blue",
                    capsize=3,
                    markersize=8,
                )
            ax.set_xticks(xs, [p["label"] for p in pts])
            ax.set_xlim(-0.6, len(pts) - 0.4)
            ax.set_xlabel("lam_x = lam_y range")
        else:
            if erm:
                ax.axhline(erm["mean"], color="gray", linestyle="--", linewidth=1)
                ax.text(0.02, erm["mean"], " ERM", color="gray", va="bottom", transform=ax.get_yaxis_transform())
            xs = [p["width"] for p in pts]
            # one line through the ranges sharing the most common lower end (the study's family, e.g.
            # [0.5, 0.5 + w]); other ranges (e.g. [0, 1]) as separate open markers
            starts = [p["range"][0] for p in pts]
            family = [i for i, v in enumerate(starts) if v == max(set(starts), key=starts.count)]
            ax.errorbar(
                [xs[i] for i in family],
                [ys[i] for i in family],
                yerr=[es[i] for i in family] if any(es) else None,
                marker="o",
                capsize=3,
            )
            others = [i for i in range(len(pts)) if i not in family]
            if others:
                ax.errorbar(
                    [xs[i] for i in others],
                    [ys[i] for i in others],
                    yerr=[es[i] for i in others] if any(es) else None,
                    marker="o",
                    mfc="white",
                    linestyle="none",
                    capsize=3,
                    color="tab:blue",
                )
            ax.set_xticks(xs, [p["label"] for p in pts], rotation=30, ha="right", fontsize=8)
            ax.set_xlabel("range of " + {"a": "lam_y", "b": "lam_x", "c": "lam_x = lam_y"}[panel])
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
