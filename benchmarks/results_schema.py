"""The record schema of benchmarks/results/records/ (render_results.py's module docstring describes a record):
each table's fields (:data:`TABLES`) and their checks, and :func:`load_records`, which reads and checks every
record; a malformed one raises :class:`RecordError` naming the file and the field."""

from __future__ import annotations

import datetime
import json
import math
import statistics
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent

STATUSES = ("current", "superseded", "experiment")


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
        {"matmul": _posint, "threads": _posint, "bf16_peak_gflop_s?": _pos, "fp32_peak_gflop_s": _pos},
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
