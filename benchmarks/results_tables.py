"""The tables of docs/performance.md as Markdown, one renderer per table (:data:`RENDER`), from the checked
records of benchmarks/results/records/ (results_schema.py); render_results.py puts them into the document."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Callable

from results_schema import TABLES


# ---------------------------------------------------------------------------------------------- formatting
def seconds(s: float) -> str:
    text = f"{s:.2f} s" if s < 10 else f"{s:,.1f} s"
    return text + (f" ({s / 60:.1f} min)" if s >= 120 else "")


def hardware(rec: dict) -> str:
    m = rec["machine"]
    return m["gpu"] if m["gpu"] else f"{m['cpu']}, {m['cores']} cores"


def link(rec: dict, doc: Path, folder: Path) -> str:
    target = os.path.relpath(folder.resolve() / f"{rec['id']}.json", doc.resolve().parent)
    return f"[{rec['id']}]({Path(target).as_posix()})"


def table(header: list[str], align: str, rows: list[list[str]]) -> str:
    """A Markdown table; ``align`` has one letter per column: l(eft) or r(ight)."""
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# ---------------------------------------------------------------------------------------------- the tables
def render_time_to_accuracy(recs: list[dict], ln: Callable[[dict], str]) -> str:
    def key(r: dict):
        return (r["machine"]["gpu"] is not None, r["recipe"], len(r["overrides"]), r["overrides"], r["id"])

    rows = []
    for r in sorted(recs, key=key):
        runs = r["runs"]
        accs = [x["test_acc"] for x in runs]
        acc = f"**{_mean(accs):.2f}**"
        if len(accs) > 1:
            acc = f"**{_mean(accs):.2f} ± {statistics.stdev(accs):.2f}** ({' / '.join(f'{a:.2f}' for a in accs)})"
        timed = [x for x in runs if x.get("quiet", True)]
        left_out = [x["seed"] for x in runs if not x.get("quiet", True)]
        if "wall_s_mean" in r:
            wall = seconds(r["wall_s_mean"])
        else:
            wall = seconds(_mean([x["wall_s"] for x in timed]))
        loop = seconds(_mean([x["train_s"] for x in timed])) if all("train_s" in x for x in timed) else "—"
        if left_out:
            seeds = ", ".join(str(s) for s in left_out)
            wall += f"; seed{'s' if len(left_out) > 1 else ''} {seeds} ran beside other work, not counted"
        recipe = " ".join([f"`{r['recipe']}`", *(f"`{o}`" for o in r["overrides"])])
        rows.append([recipe, hardware(r), r["precision"], str(len(runs)), acc, wall, loop, ln(r)])
    header = ["recipe", "hardware", "precision", "seeds", "test acc. (%)", "whole command", "training loop"]
    return table([*header, "record"], "lllrllll", rows)


def _ratios_cell(row: dict) -> str:
    """A row's per-pair ratios as the tables show them ("0.79, 0.36, 0.60"), or its note, or a dash."""
    ratios = row.get("pair_ratios", "—")
    return ", ".join(f"{v:.2f}" for v in ratios) if isinstance(ratios, list) else ratios


def render_speed_options(recs: list[dict], ln: Callable[[dict], str]) -> str:
    rows = []
    for r in recs:
        for x in r["rows"]:
            ratios = _ratios_cell(x)
            rows.append(
                [
                    f"`{r['option']}` vs `{r['baseline']}`",
                    f"`{x['recipe']}`: {x['model']}",
                    hardware(r),
                    f"{x['img_s']:,.0f}",
                    f"{x['baseline_img_s']:,.0f}",
                    f"**{x.get('ratio', x['img_s'] / x['baseline_img_s']):.2f}x**",
                    ratios,
                    ln(r),
                ]
            )
    header = ["option vs baseline", "recipe: model, batch", "hardware", "img/s", "baseline img/s", "speed-up"]
    return table([*header, "pair ratios", "record"], "lllrrrll", rows)


def render_step_vs_plain(recs: list[dict], ln: Callable[[dict], str]) -> str:
    rows = []
    for r in recs:
        for x in r["rows"]:
            data = f"{x['data_path_pct']:.1f}%" if "data_path_pct" in x else "—"
            ratio = x.get("ratio", x["reglab_img_s"] / x["plain_img_s"])
            rows.append(
                [
                    x["setting"],
                    hardware(r),
                    r["precision"],
                    f"{x['reglab_img_s']:,.0f}",
                    f"{x['plain_img_s']:,.0f}",
                    f"**{ratio:.2f}x**",
                    data,
                    ln(r),
                ]
            )
    header = ["setting", "hardware", "precision", "reglab img/s", "plain img/s", "reglab / plain", "data path"]
    return table([*header, "record"], "lllrrrrl", rows)


def render_data_path(recs: list[dict], ln: Callable[[dict], str]) -> str:
    rows = []
    for r in recs:
        first = r["rows"][0]["img_s"]
        for x in r["rows"]:
            rows.append([x["pipeline"], hardware(r), f"{x['img_s']:,.0f}", f"{x['img_s'] / first:.1f}x", ln(r)])
    return table(["pipeline", "hardware", "images/s", "vs the first row", "record"], "llrrl", rows)


def render_augment_cost(recs: list[dict], ln: Callable[[dict], str]) -> str:
    rows = []
    for r in recs:
        n = r["images_per_epoch"]
        base = next(x["img_s"] for x in r["rows"] if x.get("baseline"))
        for x in r["rows"]:
            s, extra = n / x["img_s"], n / x["img_s"] - n / base
            rows.append(
                [
                    x["pipeline"],
                    f"{s:.2f}",
                    f"{x['img_s']:,.0f}",
                    f"{base / x['img_s']:.2f}",
                    f"{extra:+.2f}",
                    hardware(r),
                    ln(r),
                ]
            )
    header = ["pipeline", "s/epoch", "images/s", "x baseline", "extra s/epoch", "hardware", "record"]
    return table(header, "lrrrrll", rows)


def render_against_airbench(recs: list[dict], ln: Callable[[dict], str]) -> str:
    rows = []
    for r in sorted(recs, key=lambda r: (r["machine"]["gpu"] is None, r["id"])):
        for x in r["rows"]:
            rows.append(
                [
                    x["system"],
                    x["timer"],
                    hardware(r),
                    x.get("precision", r["precision"]),
                    str(x["runs"]),
                    f"{x['test_acc']:.2f}",
                    seconds(x["time_s"]),
                    ln(r),
                ]
            )
    header = ["system", "what the time covers", "hardware", "precision", "runs", "mean test acc. (%)", "mean time"]
    return table([*header, "record"], "llllrrrl", rows)


def render_default_recipe(recs: list[dict], ln: Callable[[dict], str]) -> str:
    rows = [
        [
            f"`{r['recipe']}`",
            hardware(r),
            r["precision"],
            seconds(r["make_train_s"]),
            seconds(r["train_s"]),
            f"{r['test_acc']:.2f}",
            _seeds_cell(r.get("seeds_test_acc")),
            f"{r['best_val_acc']:.2f} (epoch {r['best_epoch']})"
            if "best_val_acc" in r
            else "— (trains on all 50k)",
            ln(r),
        ]
        for r in recs
    ]
    header = ["recipe", "hardware", "precision", "`make train`, fresh clone", "training command", "test acc. (%)"]
    header += ["test acc., every seed (%)", "best val acc. (%)", "record"]
    return table(header, "llllrrlll", rows)


def render_analysis_rate(recs: list[dict], ln: Callable[[dict], str]) -> str:
    rows = []
    for r in recs:
        for x in r["rows"]:
            ratios = _ratios_cell(x)
            cpu = f"{x['cpu_time_ratio']:.2f}" if "cpu_time_ratio" in x else "—"
            rows.append(
                [
                    x["measurement"],
                    f"{r['model']}, batch {r['batch']}, {r['threads']} thread{'s' if r['threads'] > 1 else ''}",
                    hardware(r),
                    x["precision"],
                    f"{x['img_s']:,.0f}",
                    f"{x['loop_img_s']:,.0f}",
                    f"**{x['ratio']:.2f}**",
                    ratios,
                    cpu,
                    ln(r),
                ]
            )
    header = ["evaluation", "model", "hardware", "precision", "img/s", "loop img/s", "rate / loop's"]
    return table([*header, "pair ratios", "CPU-time ratio", "record"], "llllrrrlrl", rows)


def render_peak_fraction(recs: list[dict], ln: Callable[[dict], str]) -> str:
    rows = []
    for r in recs:
        for x in r["rows"]:
            rows.append(
                [
                    f"`{x['recipe']}`: {x['model']}",
                    hardware(r),
                    x["precision"],
                    f"{x['gflop_per_step']:.1f}",
                    f"{x['img_s']:,.0f}",
                    f"{x['achieved_gflop_s']:.1f}",
                    f"{x['peak_gflop_s']:.0f} ({r['matmul']}², {r['threads']} thread{'s' if r['threads'] > 1 else ''})",
                    f"**{x['fraction_pct']:.0f}%**",
                    ln(r),
                ]
            )
    header = ["recipe: model, batch", "hardware", "precision", "GFLOP/step", "img/s (wall)", "achieved GFLOP/s"]
    return table([*header, "matmul peak GFLOP/s", "% of peak", "record"], "lllrrrrrl", rows)


def _seeds_cell(accs: list[float] | None) -> str:
    """Mean ± sample std over the seeds run, and each seed's value."""
    if not accs:
        return "—"
    sd = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
    return f"{statistics.fmean(accs):.2f}{sd} ({', '.join(f'{a:.2f}' for a in accs)}; n = {len(accs)})"


def _fastest_to(level: float, runs: list[dict]) -> tuple[str, int, float, float] | None:
    """(config, n, mean acc, mean time) of the fastest configuration whose mean test accuracy reaches ``level``."""
    configs: dict[str, list[dict]] = {}
    for r in runs:
        configs.setdefault(r["config"], []).append(r)
    means = [
        (c, len(rs), _mean([r["test_acc"] for r in rs]), _mean([r["time_s"] for r in rs]))
        for c, rs in configs.items()
    ]
    reached = [m for m in means if m[2] >= level]
    return min(reached, key=lambda m: m[3]) if reached else None


def render_time_to_level(recs: list[dict], ln: Callable[[dict], str]) -> str:
    """Per level: each system's fastest configuration reaching it (means over its runs) and reglab's time ratio."""
    rows = []
    for r in recs:
        systems = {name: [x for x in r["runs"] if x["system"] == name] for name in ("reglab", "airbench94")}
        for level in r["levels"]:
            best = {name: _fastest_to(level, runs) for name, runs in systems.items()}
            cells = []
            for name in ("reglab", "airbench94"):
                b = best[name]
                cells += [f"{b[0]} (n = {b[1]})", f"{b[2]:.2f}", seconds(b[3])] if b else ["not reached", "—", "—"]
            ratio = f"{best['reglab'][3] / best['airbench94'][3]:.2f}x" if all(best.values()) else "—"
            rows.append([f"≥ {level:g}%", *cells, ratio, hardware(r), r["precision"], ln(r)])
    header = ["test acc.", "reglab: fastest configuration", "acc. (%)", "whole command"]
    header += ["airbench94 (CPU copy): epochs", "acc. (%)", "its own timer", "reglab / airbench94"]
    return table([*header, "hardware", "precision", "record"], "lllrlrrrlll", rows)


RENDER: dict[str, Callable[[list[dict], Callable[[dict], str]], str]] = {
    "time-to-level-vs-airbench": render_time_to_level,
    "time-to-accuracy": render_time_to_accuracy,
    "speed-options": render_speed_options,
    "step-vs-plain": render_step_vs_plain,
    "data-path": render_data_path,
    "augment-cost": render_augment_cost,
    "against-airbench": render_against_airbench,
    "default-recipe": render_default_recipe,
    "analysis-rate": render_analysis_rate,
    "peak-fraction": render_peak_fraction,
}
assert set(RENDER) == set(TABLES)
