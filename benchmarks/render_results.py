"""Render the measurement tables of docs/performance.md from the records in benchmarks/results/records/.

A record is one JSON file per measurement (one benchmark invocation, or the seeds of one configuration):

* ``schema`` (1), ``id`` (the file name without ``.json``), ``date`` (YYYY-MM-DD), ``command`` (what was run),
  ``precision`` (``fp32``, ``bf16 autocast``, ...), ``machine`` (``cpu``: the CPU model and what sets its speed,
  ``cores``, ``gpu`` or null; optional ``memory_gib``, ``software``, ``notes``);
* ``status``: ``current`` (rendered), ``superseded`` (an earlier measurement of something measured again; needs
  ``superseded_by``) or ``experiment`` (a change that was tried and not kept); only current records are rendered;
* ``table``: the table it feeds (one of :data:`TABLES`), or null for a record kept only for the record;
* the table's own fields (:data:`TABLES`), optional ``raw`` (paths of the benchmark's raw outputs, relative to
  the repository root), ``goal`` (``{"text": ..., "met": true|false}``), ``figures`` (anything else measured)
  and ``notes`` (what the numbers need said beside them).

In the document a table lives between ``<!-- results:NAME ... -->`` and ``<!-- /results:NAME -->``; this script
rewrites what is between them::

    python benchmarks/render_results.py            # rewrite the tables of docs/performance.md in place
    python benchmarks/render_results.py --check    # exit 1 if a table differs from what the records give

A malformed record stops it with exit code 2 and one line naming the file, the field and what is wrong. For
time-to-accuracy records whose ``raw`` files are ``time_to_accuracy.py`` outputs, every seed's accuracy and times
must match them.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import math
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
RECORDS = REPO / "benchmarks" / "results" / "records"
DOC = REPO / "docs" / "performance.md"

STATUSES = ("current", "superseded", "experiment")
MARKER = re.compile(r"(<!-- results:([a-z0-9-]+)(?: [^>]*)? -->\n)(.*?)(<!-- /results:\2 -->)", re.S)
START = re.compile(r"<!-- results:([a-z0-9-]+)")


class RecordError(Exception):
    """A record or the document is malformed; the message says which file and field."""


# ---------------------------------------------------------------------------------------------- field checks
Check = Callable[[Any], bool]


def _str(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _pos(v: Any) -> bool:
    return _num(v) and v > 0


def _nonneg(v: Any) -> bool:
    return _num(v) and v >= 0


def _pct(v: Any) -> bool:
    return _num(v) and 0 <= v <= 100


def _pcts(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_pct(x) for x in v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _posint(v: Any) -> bool:
    return _int(v) and v >= 1


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _strs(v: Any) -> bool:
    return isinstance(v, list) and all(_str(s) for s in v)


def _ratios(v: Any) -> bool:
    return _str(v) or (isinstance(v, list) and len(v) > 0 and all(_pos(x) for x in v))


DESCRIBE = {
    _str: "a non-empty string",
    _num: "a number",
    _pos: "a number > 0",
    _nonneg: "a number >= 0",
    _pct: "a percentage in [0, 100]",
    _int: "an integer >= 0",
    _posint: "an integer >= 1",
    _bool: "true or false",
    _strs: "a list of strings",
    _ratios: "a list of numbers > 0 or a string",
}

# Per table: (record-level fields, the fields of each entry of `rows` or `runs`); a name ending in "?" is optional.
TABLES: dict[str, tuple[dict[str, Check], dict[str, Check]]] = {
    "time-to-accuracy": (
        {"recipe": _str, "overrides": _strs, "wall_s_mean?": _pos},
        {"seed": _int, "test_acc": _pct, "wall_s?": _pos, "train_s?": _pos, "quiet?": _bool, "note?": _str},
    ),
    "speed-options": (
        {"option": _str, "baseline": _str},
        {
            "recipe": _str,
            "model": _str,
            "img_s": _pos,
            "baseline_img_s": _pos,
            "ratio?": _pos,
            "pair_ratios?": _ratios,
        },
    ),
    "step-vs-plain": (
        {},
        {"setting": _str, "reglab_img_s": _pos, "plain_img_s": _pos, "ratio?": _pos, "data_path_pct?": _pct},
    ),
    "data-path": ({"images_per_epoch?": _posint}, {"pipeline": _str, "img_s": _pos}),
    "augment-cost": ({"images_per_epoch": _posint}, {"pipeline": _str, "img_s": _pos, "baseline?": _bool}),
    "against-airbench": (
        {},
        {"system": _str, "precision?": _str, "timer": _str, "runs": _posint, "test_acc": _pct, "time_s": _pos},
    ),
    "time-to-level-vs-airbench": (
        {"levels": None},
        {
            "system": _str,
            "config": _str,
            "seed": _int,
            "test_acc": _pct,
            "time_s": _pos,
            "train_loop_s?": _pos,
            "process_wall_s?": _pos,
        },
    ),
    "analysis-rate": (
        {"model": _str, "batch": _posint, "threads": _posint},
        {
            "measurement": _str,
            "precision": _str,
            "img_s": _pos,
            "loop_img_s": _pos,
            "ratio": _pos,
            "pair_ratios?": _ratios,
            "cpu_time_ratio?": _pos,
        },
    ),
    "peak-fraction": (
        {"matmul": _posint, "threads": _posint, "bf16_peak_gflop_s": _pos, "fp32_peak_gflop_s": _pos},
        {
            "recipe": _str,
            "model": _str,
            "precision": _str,
            "gflop_per_step": _pos,
            "img_s": _pos,
            "achieved_gflop_s": _pos,
            "peak_gflop_s": _pos,
            "fraction_pct": _nonneg,
        },
    ),
    "default-recipe": (
        {
            "recipe": _str,
            "make_train_s": _pos,
            "train_s": _pos,
            "test_acc": _pct,
            "seeds_test_acc?": _pcts,
            "best_val_acc?": _pct,
            "best_epoch?": _posint,
        },
        {},
    ),
}
COMMON = {
    "schema": None,  # checked by hand below
    "id": _str,
    "table": None,
    "status": None,
    "superseded_by?": _str,
    "date": _str,
    "machine": None,
    "precision": _str,
    "command": _str,
    "raw?": _strs,
    "goal?": None,
    "figures?": None,
    "notes?": _str,
}
MACHINE = {"cpu": _str, "cores": _posint, "gpu": None, "memory_gib?": _pos, "software?": _str, "notes?": _str}


def _fields(obj: Any, spec: dict[str, Check | None], where: str) -> None:
    """``obj`` is an object holding the required fields of ``spec``, each passing its check, and nothing else."""
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: must be a JSON object, got {type(obj).__name__}")
    names = {k.rstrip("?"): k for k in spec}
    for key in obj:
        if key not in names:
            raise RecordError(f"{where}: unknown field {key!r} (fields here: {', '.join(sorted(names))})")
    for name, key in names.items():
        if name not in obj:
            if not key.endswith("?"):
                raise RecordError(f"{where}: missing field {name!r}")
            continue
        check = spec[key]
        if check is not None and not check(obj[name]):
            raise RecordError(f"{where}.{name}: must be {DESCRIBE[check]}, got {json.dumps(obj[name])}")


# ---------------------------------------------------------------------------------------------- loading
def load_record(path: Path) -> dict:
    """One record, checked; raises :class:`RecordError` naming the file and the field."""
    where = _rel(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RecordError(f"{where}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    if not isinstance(rec, dict):
        raise RecordError(f"{where}: must be a JSON object, got {type(rec).__name__}")
    if rec.get("schema") != 1:
        raise RecordError(f"{where}: schema: must be 1, got {json.dumps(rec.get('schema'))}")
    table = rec.get("table", "missing")
    if table == "missing":
        raise RecordError(f"{where}: missing field 'table' (null for a record that no table shows)")
    if table is not None and (not isinstance(table, str) or table not in TABLES):
        raise RecordError(f"{where}: table: unknown table {table!r} (known: {', '.join(TABLES)}, or null)")
    head, entry = TABLES[table] if table else ({}, {})
    entries = "runs" if table in ("time-to-accuracy", "time-to-level-vs-airbench") else "rows"
    spec: dict[str, Check | None] = {**COMMON, **head}
    if entry:
        spec[entries] = None
    _fields(rec, spec, where)
    if rec["id"] != path.stem:
        raise RecordError(f"{where}: id: must be the file name without .json ({path.stem!r}), got {rec['id']!r}")
    if rec["status"] not in STATUSES:
        raise RecordError(
            f"{where}: status: must be one of {', '.join(STATUSES)}, got {json.dumps(rec['status'])}"
        )
    if rec["status"] == "superseded" and "superseded_by" not in rec:
        raise RecordError(f"{where}: superseded_by: a superseded record must name the record that replaces it")
    try:
        datetime.date.fromisoformat(rec["date"])
    except ValueError:
        raise RecordError(f"{where}: date: must be YYYY-MM-DD, got {rec['date']!r}") from None
    _fields(rec["machine"], MACHINE, f"{where}: machine")
    gpu = rec["machine"]["gpu"]
    if gpu is not None and not _str(gpu):
        raise RecordError(f"{where}: machine.gpu: must be a non-empty string or null, got {json.dumps(gpu)}")
    if "goal" in rec:
        _fields(rec["goal"], {"text": _str, "met": _bool}, f"{where}: goal")
    if "figures" in rec and not isinstance(rec["figures"], dict):
        raise RecordError(f"{where}: figures: must be a JSON object")
    for raw in rec.get("raw", []):
        if Path(raw).is_absolute() or not (REPO / raw).is_file():
            raise RecordError(f"{where}: raw: {raw!r} is not a file (paths are relative to the repository root)")
    if entry:
        items = rec[entries]
        if not isinstance(items, list) or not items:
            raise RecordError(f"{where}: {entries}: must be a non-empty list")
        for i, item in enumerate(items):
            _fields(item, entry, f"{where}: {entries}[{i}]")
    if table == "time-to-accuracy":
        _check_runs(rec, where)
    if table == "time-to-level-vs-airbench":
        levels = rec["levels"]
        if not isinstance(levels, list) or not levels or not all(_pct(v) for v in levels):
            raise RecordError(f"{where}: levels: must be a non-empty list of test accuracies (%)")
        if {r["system"] for r in rec["runs"]} != {"reglab", "airbench94"}:
            raise RecordError(f"{where}: runs: needs runs of both systems ('reglab' and 'airbench94')")
    for i, row in enumerate(rec.get("rows", [])):
        if "ratio" in row and table in RATIO_OF:
            _check_row_ratio(table, row, f"{where}: rows[{i}].ratio")
    if table == "augment-cost" and sum(bool(r.get("baseline")) for r in rec["rows"]) != 1:
        raise RecordError(f'{where}: rows: exactly one row must have "baseline": true')
    return rec


# What a row's "ratio" is, per table: the quotient of two of its rates. analysis-rate's is instead the median
# of its per-repeat pair ratios when it has them (analysis_eval_rate.py's "/ loop"), which the quotient of the
# two median rates need not match (201 / 425 = 0.47 against a median pair ratio of 0.54).
RATIO_OF = {
    "speed-options": ("img_s", "baseline_img_s"),
    "step-vs-plain": ("reglab_img_s", "plain_img_s"),
    "analysis-rate": ("img_s", "loop_img_s"),
}
MEDIAN_OF_PAIRS = {"analysis-rate"}


def _check_row_ratio(table: str, row: dict, where: str) -> None:
    pairs = row.get("pair_ratios")
    if table in MEDIAN_OF_PAIRS and isinstance(pairs, list):
        # each pair ratio rounded to 0.01: an even count's median (a mean of two) may move by up to 0.01
        median = statistics.median(pairs)
        if abs(row["ratio"] - median) > 0.01 + 1e-9:
            raise RecordError(
                f"{where}: {row['ratio']} does not agree with the median of its pair_ratios, {median:.3f}"
            )
        return
    a, b = RATIO_OF[table]
    _check_ratio(row["ratio"], row[a], row[b], where)


def _check_ratio(ratio: float, a: float, b: float, where: str) -> None:
    """``ratio`` (the benchmark's own, from unrounded throughputs, 2 decimals) agrees with ``a / b`` as rounded
    in the record: inside what rounding both to whole images/s (and the ratio to 0.01) allows."""
    lo, hi = (a - 0.5) / (b + 0.5) - 0.005, (a + 0.5) / max(b - 0.5, 1e-9) + 0.005
    if not lo <= ratio <= hi:
        raise RecordError(f"{where}: {ratio} does not agree with {a} / {b} = {a / b:.3f}")


def _check_runs(rec: dict, where: str) -> None:
    seeds = [r["seed"] for r in rec["runs"]]
    if len(set(seeds)) != len(seeds):
        raise RecordError(f"{where}: runs: a seed appears twice ({seeds})")
    if not any(r.get("quiet", True) for r in rec["runs"]):
        raise RecordError(f"{where}: runs: every run is marked quiet: false, so none can give the time")
    if "wall_s_mean" not in rec and not all("wall_s" in r for r in rec["runs"]):
        raise RecordError(f"{where}: runs: every run needs wall_s, or the record needs wall_s_mean")
    raw_runs: dict[int, dict] = {}
    for raw in rec.get("raw", []):
        if not raw.endswith(".json"):
            continue
        try:
            data = json.loads((REPO / raw).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RecordError(f"{where}: raw: {raw} is not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, dict) and isinstance(data.get("runs"), list):  # a time_to_accuracy.py output
            raw_runs.update({r["seed"]: r for r in data["runs"] if isinstance(r, dict) and "seed" in r})
    if not raw_runs:
        return
    if sorted(raw_runs) != sorted(seeds):
        raise RecordError(f"{where}: runs: seeds {sorted(seeds)}, but its raw files hold seeds {sorted(raw_runs)}")
    for run in rec["runs"]:
        for key in ("test_acc", "wall_s", "train_s"):
            got, raw_value = run.get(key), raw_runs[run["seed"]].get(key)
            if got is not None and raw_value is not None and abs(got - raw_value) > 0.01:
                raise RecordError(
                    f"{where}: runs (seed {run['seed']}).{key}: {got}, but its raw file says {raw_value}"
                )


def load_records(folder: Path) -> list[dict]:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise RecordError(f"{_rel(folder)}: no records (*.json)")
    records = [load_record(f) for f in files]
    ids = {r["id"] for r in records}
    for r in records:
        if "superseded_by" in r and r["superseded_by"] not in ids:
            raise RecordError(
                f"{_rel(folder / (r['id'] + '.json'))}: superseded_by: no record {r['superseded_by']!r}"
            )
    return records


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


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


# ---------------------------------------------------------------------------------------------- the document
def render_doc(text: str, records: list[dict], doc: Path, folder: Path) -> str:
    """``text`` with every marked table replaced by what the current records give."""
    named = START.findall(text)
    found = [m.group(2) for m in MARKER.finditer(text)]
    for name in named:
        if name not in RENDER:
            raise RecordError(f"{_rel(doc)}: marker results:{name}: unknown table (known: {', '.join(RENDER)})")
        if named.count(name) > 1:
            raise RecordError(f"{_rel(doc)}: marker results:{name} appears twice")
        if name not in found:
            raise RecordError(f"{_rel(doc)}: marker results:{name} has no closing <!-- /results:{name} -->")

    def replace(m: re.Match) -> str:
        name = m.group(2)
        recs = sorted(
            (r for r in records if r["table"] == name and r["status"] == "current"), key=lambda r: r["id"]
        )
        if not recs:
            raise RecordError(f"{_rel(doc)}: table {name}: no current record feeds it")
        return m.group(1) + RENDER[name](recs, lambda r: link(r, doc, folder)) + m.group(4)

    return MARKER.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the document's tables are out of date")
    ap.add_argument("--doc", type=Path, default=DOC, help="the Markdown file (default docs/performance.md)")
    ap.add_argument("--records", type=Path, default=RECORDS, help="the records folder")
    args = ap.parse_args(argv)
    try:
        records = load_records(args.records)
        text = args.doc.read_text(encoding="utf-8")
        new = render_doc(text, records, args.doc, args.records)
    except (RecordError, OSError) as e:
        print(f"render_results: {e}", file=sys.stderr)
        return 2
    shown = sum(r["status"] == "current" and r["table"] is not None for r in records)
    if new == text:
        print(f"{_rel(args.doc)}: up to date ({len(records)} records, {shown} in tables)")
        return 0
    if args.check:
        diff = difflib.unified_diff(text.splitlines(), new.splitlines(), "committed", "rendered", lineterm="", n=0)
        print("\n".join(list(diff)[:40]), file=sys.stderr)
        print(
            f"render_results: {_rel(args.doc)} is out of date with {_rel(args.records)}; "
            f"run python benchmarks/render_results.py and commit the result",
            file=sys.stderr,
        )
        return 1
    args.doc.write_text(new, encoding="utf-8")
    print(f"{_rel(args.doc)}: tables rewritten from {len(records)} records ({shown} in tables)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
