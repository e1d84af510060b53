"""Study files: a named set of runs (a list of overrides or a grid, n seeds each) over one base recipe.

```yaml
# header comment: the report, its section, the numbers it got
name: regularizers
recipe: quick                 # base recipe for every run (a name in recipes/ or a path)
budget: cpu                   # optional: the recipe budget every run uses (`budget=NAME` on the CLI wins)
overrides: [data.dataset=cifar10]   # applied to every run
seeds: 1                      # n (seeds 0..n-1) or a list of seeds
parallel: 1                   # runs at a time (`-j N` on the CLI wins)
runs:                         # name -> overrides: a list of key=value, or a mapping of dotted keys
  baseline: []
  cutout: {aug.cutout_holes: 1, aug.cutout_size: 16}
  lr001: {recipe: other_recipe, optim.lr: 0.01}     # a run may swap the recipe
grid:                         # optional: every combination (crossed with `runs` when both are given)
  optim.lr: [0.1, 0.01]
budgets:                      # optional: the study's own budgets, applied after the recipe's budget of the
  cpu: [model.name=resnet20]  # same name (if the recipe has one) and the study's overrides
reference: baseline           # optional: the group every other is compared with, paired by seed (default: first)
claims: [...]                 # optional: the claims the study tests (see reglab.track.claims)
launcher:                     # optional: where the runs go (`--launcher`, `--slurm KEY=VALUE` on the CLI win)
  type: slurm                 # local (default: processes on this machine) or slurm (one job array)
  partition: gpu              # and time, cpus_per_task, gpus_per_task, mem_gb, qos, account, constraint,
  time: "2:00:00"             # max_running, max_timeouts, setup, sbatch, python (see LAUNCHER_KEYS, docs/cluster.md)
```
Every run's config is built and validated when the file is loaded, so a typo fails before anything trains.
Order of overrides for a run: the recipe's budget -> study ``overrides`` -> the study's budget -> the run's
own -> the command line's.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, load_config, resolve_recipe
from ..errors import UserError
from ..track.claims import parse_claims
from ..typedyaml import named_yaml, read_yaml, suggest

STUDIES_DIR = Path(__file__).resolve().parents[2] / "studies"
KEYS = (
    "name",
    "recipe",
    "budget",
    "budgets",
    "overrides",
    "seeds",
    "parallel",
    "runs",
    "grid",
    "reference",
    "claims",
    "launcher",
)
LAUNCHERS = ("local", "slurm")
LAUNCHER_KEYS = {  # key -> what it takes (the messages quote it)
    "type": "local or slurm",
    "partition": "a partition name",
    "time": "minutes or a Slurm time like '2:00:00'",
    "cpus_per_task": "an integer >= 1",
    "gpus_per_task": "an integer >= 0",
    "mem_gb": "a number > 0 (GB)",
    "qos": "a QOS name",
    "account": "an account name",
    "constraint": "a node feature expression",
    "max_running": "an integer >= 1 (array tasks at a time)",
    "max_timeouts": "an integer >= 0 (requeues after the time limit)",
    "setup": "a list of shell lines run before each task",
    "sbatch": "a mapping of extra sbatch options, e.g. {mail-type: END}",
    "python": "the python command on the compute nodes",
}
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


@dataclass
class StudyRun:
    """One run of a study: group name (the technique), seed, and how to build its config."""

    group: str
    seed: int
    recipe: str
    overrides: list[str]
    config: Config

    @property
    def key(self) -> str:
        return f"{self.group}-s{self.seed}"


@dataclass
class Study:
    name: str
    path: Path
    runs: list[StudyRun] = field(default_factory=list)
    parallel: int = 1
    raw: dict[str, Any] = field(default_factory=dict)
    launcher: dict[str, Any] = field(default_factory=dict)  # the file's `launcher:` section, validated

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)


def resolve_study(study: str | Path) -> Path:
    """A path to a study file, or the name of one in ``studies/``."""
    path = Path(study)
    if path.is_file():
        return path
    return named_yaml(study, STUDIES_DIR, "study", "a study YAML file")


def _fmt(value: Any) -> str:
    """A value as the YAML text of a ``key=value`` override."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _overrides(value: Any, where: str) -> tuple[str | None, list[str]]:
    """A run entry -> (recipe or None, list of key=value)."""
    if value is None:
        return None, []
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise UserError(f"{where}: each override must be a 'key=value' string, got {item!r}.")
        return None, list(value)
    if isinstance(value, dict):
        recipe = value.get("recipe")
        items = [f"{k}={_fmt(v)}" for k, v in value.items() if k != "recipe"]
        for k in value:
            if k != "recipe" and (not isinstance(k, str) or "." not in k):
                raise UserError(f"{where}: key {k!r} must be dotted (e.g. optim.lr: 0.1) or 'recipe'.")
        return (str(recipe) if recipe is not None else None), items
    raise UserError(f"{where}: expected a list of key=value overrides or a mapping, got {value!r}.")


def _grid_points(grid: Any, where: str) -> list[tuple[str, list[str]]]:
    if not isinstance(grid, dict) or not grid:
        raise UserError(f"{where}: grid must be a non-empty mapping of dotted key -> list of values.")
    axes = []
    for key, values in grid.items():
        if not isinstance(key, str) or "." not in key:
            raise UserError(f"{where}: grid key {key!r} must be dotted, e.g. optim.lr.")
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}: grid.{key} must be a non-empty list of values, got {values!r}.")
        axes.append([(key, v) for v in values])
    points = []
    for combo in itertools.product(*axes):
        name = "_".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v).replace(' ', '')}" for k, v in combo)
        points.append((name, [f"{k}={_fmt(v)}" for k, v in combo]))
    return points


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, bool):
        raise UserError(f"{where}: seeds must be a count (e.g. 3) or a list of integers, got {value!r}.")
    if isinstance(value, int):
        if value < 1:
            raise UserError(f"{where}: seeds={value} must be >= 1.")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise UserError(f"{where}: seeds {value} has duplicates.")
        return list(value)
    raise UserError(f"{where}: seeds must be a count (e.g. 3) or a list of integers, got {value!r}.")


def slurm_minutes(value: Any, where: str) -> int:
    """A time limit -> whole minutes: an integer (minutes) or Slurm's MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise UserError(f"{where}: time={value} must be >= 1 minute.")
        return value
    m = _SLURM_TIME.match(str(value).strip()) if isinstance(value, str) else None
    if m is None:
        raise UserError(
            f"{where}: time {value!r} is not a time limit; give minutes (90) or a Slurm time such "
            "as '1:30:00' (H:MM:SS) or '2-00:00:00' (days-H:MM:SS)."
        )
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        secs = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        secs = int(a) * 3600 + int(b) * 60 + int(c)
    else:  # MM or MM:SS
        secs = int(a) * 60 + int(b or 0)
    if secs < 60:
        raise UserError(f"{where}: time {value!r} is under a minute.")
    return -(-secs // 60)


def parse_launcher(value: Any, where: str, text: str = "") -> dict[str, Any]:
    """Validate a ``launcher:`` section (or the ``--slurm KEY=VALUE`` items as a mapping); return it with the
    time in minutes. ``text``: the study file's text, to read a ``time:`` written as an unquoted H:MM:SS (YAML
    1.1 turns ``1:30:00`` into the base-60 number 5400) the way it was written."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(
            f"{where}: launcher must be a mapping (type: slurm, partition: ..., time: ...), got {value!r}."
        )
    out: dict[str, Any] = {}
    for key, val in value.items():
        what = LAUNCHER_KEYS.get(key) if isinstance(key, str) else None
        if what is None:
            raise UserError(
                f"{where}: unknown launcher key {key!r}{suggest(str(key), LAUNCHER_KEYS)}; the keys are: "
                f"{', '.join(LAUNCHER_KEYS)}."
            )
        bad = UserError(f"{where}: launcher {key} must be {what}, got {val!r}.")
        if key == "type":
            if val not in LAUNCHERS:
                raise UserError(
                    f"{where}: launcher type {val!r} is not one of {', '.join(LAUNCHERS)}"
                    f"{suggest(str(val), LAUNCHERS)}."
                )
        elif key == "time":
            written = re.search(r"^\s+time:\s*([0-9]+(?::[0-9]+)+)\s*(?:#.*)?$", text, re.M) if text else None
            val = slurm_minutes(
                written.group(1) if written and isinstance(val, int) else val, f"{where}: launcher"
            )
        elif key in ("cpus_per_task", "gpus_per_task", "max_running", "max_timeouts"):
            low = 0 if key in ("gpus_per_task", "max_timeouts") else 1
            if not isinstance(val, int) or isinstance(val, bool) or val < low:
                raise bad
        elif key == "mem_gb":
            if not isinstance(val, (int, float)) or isinstance(val, bool) or not val > 0:
                raise bad
        elif key == "setup":
            if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
                raise bad
        elif key == "sbatch":
            if not isinstance(val, dict) or not all(
                isinstance(k, str)
                and re.fullmatch(r"[a-z][a-z0-9-]*", k)
                and isinstance(v, (str, int, float, bool))
                for k, v in val.items()
            ):
                raise UserError(
                    f"{where}: launcher sbatch must be {what} (long option names without the "
                    f"dashes, values text or numbers), got {val!r}."
                )
        elif not isinstance(val, str) or not val.strip() or any(ch in val for ch in "\n\r"):
            raise bad
        out[key] = val
    return out


def load_study(
    study: str | Path,
    cli_overrides: list[str] | tuple[str, ...] = (),
    *,
    budget: str | None = None,
    seeds: int | list[int] | None = None,
    only: list[str] | None = None,
) -> Study:
    """Read, expand and validate a study file. ``budget``/``seeds`` replace the file's (``seeds``: a count n
    for seeds 0..n-1, or the list of seeds); ``only`` keeps the named groups."""
    path = resolve_study(study)
    raw = read_yaml(path)
    where = str(path)
    unknown = [k for k in raw if k not in KEYS]
    if unknown:
        raise UserError(
            f"{where}: unknown key {unknown[0]!r}{suggest(str(unknown[0]), KEYS)}; a study file has: "
            f"{', '.join(KEYS)}."
        )
    name = str(raw.get("name") or path.stem)
    if not _NAME.match(name):
        raise UserError(f"{where}: name {name!r} may hold only letters, digits and _ . = + -.")
    base_recipe = str(raw.get("recipe") or "quick")
    resolve_recipe(base_recipe)
    budget = budget if budget is not None else raw.get("budget")
    common = _overrides(raw.get("overrides"), f"{where}: overrides")[1]
    study_budgets = raw.get("budgets") or {}
    if not isinstance(study_budgets, dict):
        raise UserError(f"{where}: budgets must be a mapping of name -> overrides, e.g. cpu: [train.epochs=5].")
    budget_items = (
        _overrides(study_budgets[budget], f"{where}: budgets.{budget}")[1]
        if budget is not None and budget in study_budgets
        else []
    )
    seed_list = _seeds(seeds, "--seeds") if seeds is not None else _seeds(raw.get("seeds", 1), f"{where}: seeds")
    parallel = raw.get("parallel", 1)
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise UserError(f"{where}: parallel must be an integer >= 1, got {parallel!r}.")

    entries: list[tuple[str, str | None, list[str]]] = []
    runs = raw.get("runs")
    if runs is not None:
        if not isinstance(runs, dict) or not runs:
            raise UserError(f"{where}: runs must be a mapping of run name -> overrides.")
        for run_name, value in runs.items():
            recipe, items = _overrides(value, f"{where}: runs.{run_name}")
            entries.append((str(run_name), recipe, items))
    if "grid" in raw:
        points = _grid_points(raw["grid"], f"{where}")
        entries = (
            [(f"{n}_{p}", r, [*o, *po]) for n, r, o in entries for p, po in points]
            if entries
            else [(p, None, po) for p, po in points]
        )
    if not entries:
        raise UserError(f"{where}: a study needs runs: (name -> overrides) or grid: (key -> values).")
    for group, _, _ in entries:
        if not _NAME.match(group):
            raise UserError(f"{where}: run name {group!r} may hold only letters, digits and _ . = + -.")
    all_groups = [g for g, _, _ in entries]
    reference = raw.get("reference", all_groups[0])
    if reference not in all_groups:
        raise UserError(
            f"{where}: reference {reference!r} is not a run of the study{suggest(str(reference), all_groups)}"
            f"; runs: {', '.join(all_groups)}."
        )
    parse_claims(raw.get("claims"), all_groups, where)
    if only:
        missing = [o for o in only if o not in all_groups]
        if missing:
            raise UserError(f"--only {missing[0]!r} is not a run of {where}{suggest(missing[0], all_groups)}.")
        entries = [e for e in entries if e[0] in only]

    launcher = parse_launcher(raw.get("launcher"), where, path.read_text(errors="replace"))
    study = Study(name=name, path=path, parallel=parallel, raw=dict(raw), launcher=launcher)
    for group, recipe, items in entries:
        recipe = recipe or base_recipe
        recipe_budgets = read_yaml(resolve_recipe(recipe)).get("budgets") or {}
        if budget is not None and budget not in recipe_budgets and budget not in study_budgets:
            known = sorted({*recipe_budgets, *study_budgets})
            raise UserError(
                f"budget {budget!r}{suggest(str(budget), known)} is defined neither by {where} nor by "
                f"recipe {recipe}; known: {', '.join(known) or '(none)'}."
            )
        for seed in seed_list:
            overrides = [
                *([f"run.budget={budget}"] if budget in recipe_budgets else []),
                *common,
                *budget_items,
                *items,
                *cli_overrides,
                f"run.name={group}",
                f"run.seed={seed}",
            ]
            try:
                cfg = load_config(recipe, overrides)
            except UserError as exc:
                raise UserError(f"{where}: run {group!r}: {exc}") from None
            study.runs.append(StudyRun(group, seed, recipe, overrides, cfg))
    study.raw.update(
        name=name,
        budget=budget,
        seeds=seed_list,
        cli_overrides=list(cli_overrides),
        reference=reference,
        run_order=[r.key for r in study.runs],
    )
    return study
