"""Sweep files: a base recipe plus a typed search space, validated once into dataclasses.

```yaml
name: cpu_lr_bs_optim          # default: the file's name
recipe: quick                  # base recipe (name in recipes/ or a path)
budget: cpu                    # optional: one of the recipe's budgets
overrides: [data.train_subset=4000, train.epochs=4]
trials: 30                     # finished trials to reach (complete, pruned or failed)
objective: final_val_acc       # or best_val_acc; validation accuracy, maximized (the test set is never read)
sampler: tpe                   # tpe | gp | random | grid, or {name: tpe, n_startup_trials: 8, ...}
pruner: hyperband              # hyperband | successive_halving | median | none, or {name: ..., options}
seed: 0
storage: null                  # Optuna storage URL shared by workers; null = study.db in the sweep directory
space:
  optim.lr: {type: logfloat, low: 1.0e-3, high: 0.3}
  optim.weight_decay: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
  train.batch_size: {choices: [64, 128, 256, 512]}
  optim.name: {choices: [sgd, adam]}
  model.stem_width: {type: int, low: 16, high: 64, step: 16}
```

Every space key is checked against the config by building the base config with the key at its low and high
value (and every choice), so a typo or an out-of-range bound is reported before any training. Sampler and
pruner options are checked against the Optuna constructors' parameters.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import OUTPUT_KEYS, PLACEMENT_KEYS, Config, load_config
from ..errors import UserError
from ..typedyaml import changed_keys, flatten_tree, read_yaml, suggest

SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"
SAMPLERS = ("tpe", "gp", "random", "grid")
PRUNERS = ("hyperband", "successive_halving", "median", "none")
PARAM_TYPES = ("float", "logfloat", "int", "categorical")
OBJECTIVES = ("final_val_acc", "best_val_acc")
TOP_KEYS = (
    "name",
    "recipe",
    "budget",
    "overrides",
    "trials",
    "objective",
    "sampler",
    "pruner",
    "seed",
    "space",
    "storage",
    "max_retries",
    "max_failures_in_a_row",
    "heartbeat_s",
    "stale_after_s",
    "cli_overrides",
)
# Keys a space may not search: they move the validation set trials are compared on, or where a trial runs.
FIXED_KEYS = {
    "data.val_size": "it changes the validation set the trials are compared on",
    "data.split_seed": "it changes the validation set the trials are compared on",
    "data.dataset": "trials must be compared on one dataset",
    "data.dir": "it is not a hyperparameter",
    "run.dir": "each trial gets its own run directory",
    "run.name": "trials are named by number",
    "run.device": "it is not a hyperparameter",
    "run.threads": "set by --workers",
}
_PLAIN = (str, int, float, bool, type(None))


@dataclass
class Param:
    """One dimension of the search space. Choices that are lists or mappings (e.g. ``model.channels``) are
    stored in Optuna as their JSON text and decoded when a trial's config is built."""

    key: str
    type: str  # float | int | categorical ("logfloat" is float with log=True)
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    grid: list[Any] | None = None  # values the grid sampler visits (default: choices, or every int step)

    @property
    def encoded(self) -> bool:
        return self.type == "categorical" and any(not isinstance(c, _PLAIN) for c in self.choices)

    def optuna_choices(self) -> list[Any]:
        return [json.dumps(c) for c in self.choices] if self.encoded else list(self.choices)

    def decode(self, value: Any) -> Any:
        return json.loads(value) if self.encoded else value

    def suggest(self, trial) -> Any:
        if self.type == "categorical":
            return self.decode(trial.suggest_categorical(self.key, self.optuna_choices()))
        if self.type == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self) -> list[Any]:
        if self.grid is not None:
            return [json.dumps(v) for v in self.grid] if self.encoded else list(self.grid)
        if self.type == "categorical":
            return self.optuna_choices()
        if self.type == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise UserError(
            f"space.{self.key}: the grid sampler needs the values to visit for a {self.type} "
            f"parameter; add grid: [v1, v2, ...]."
        )

    def check_values(self) -> list[Any]:
        """Values to build a config with when validating: the bounds, every choice, every grid value."""
        vals = list(self.choices) if self.type == "categorical" else [self.low, self.high]
        return vals + [v for v in (self.grid or []) if v not in vals]


def _number(value: Any, where: str, integer: bool = False) -> float | int:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: expected a {'whole ' if integer else ''}number, got {value!r}.")
    if integer:
        if not float(value).is_integer():
            raise UserError(f"{where}: expected a whole number, got {value!r}.")
        return int(value)
    return float(value)


def parse_param(key: str, raw: Any) -> Param:
    where = f"space.{key}"
    if not isinstance(key, str) or key.count(".") != 1:
        raise UserError(f"space: key {key!r} must be a dotted config key such as optim.lr.")
    if key in FIXED_KEYS:
        raise UserError(f"{where} cannot be searched: {FIXED_KEYS[key]}.")
    if isinstance(raw, list):
        raw = {"choices": raw}
    if not isinstance(raw, dict):
        raise UserError(
            f"{where}: expected a mapping such as {{type: logfloat, low: 1.0e-3, high: 0.3}} or "
            f"{{choices: [a, b]}}, got {raw!r}."
        )
    known = ("type", "low", "high", "log", "step", "choices", "grid")
    for k in raw:
        if k not in known:
            raise UserError(f"{where}: unknown field {k!r}{suggest(str(k), known)}; use {', '.join(known)}.")
    kind = raw.get("type", "categorical" if "choices" in raw else None)
    if kind is None:
        raise UserError(f"{where}: give type: ({', '.join(PARAM_TYPES)}) with low/high, or choices: [...].")
    kind = str(kind).replace("-", "").replace("_", "")
    if kind not in PARAM_TYPES:
        raise UserError(
            f"{where}: unknown type {raw['type']!r}{suggest(kind, PARAM_TYPES)}; "
            f"use one of {', '.join(PARAM_TYPES)}."
        )
    grid = raw.get("grid")
    if grid is not None and (not isinstance(grid, list) or not grid):
        raise UserError(f"{where}.grid: expected a non-empty list of values, got {grid!r}.")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: a categorical parameter needs choices: [a, b, ...] (a non-empty list).")
        extra = [k for k in ("low", "high", "log", "step") if k in raw]
        if extra:
            raise UserError(f"{where}: {', '.join(extra)} do not apply to choices; drop them.")
        if len({json.dumps(c, sort_keys=True) for c in choices}) != len(choices):
            raise UserError(f"{where}: choices {choices!r} repeat a value.")
        p = Param(key, "categorical", choices=list(choices), grid=grid)
        if grid is not None and any(v not in choices for v in grid):
            raise UserError(f"{where}.grid: every value must be one of the choices {choices!r}.")
        return p
    if "choices" in raw:
        raise UserError(f"{where}: choices only go with type: categorical; give low/high for a {kind}.")
    if "low" not in raw or "high" not in raw:
        raise UserError(f"{where}: a {kind} parameter needs low: and high:.")
    integer = kind == "int"
    low, high = _number(raw["low"], f"{where}.low", integer), _number(raw["high"], f"{where}.high", integer)
    log = kind == "logfloat" or bool(raw.get("log", False))
    if not isinstance(raw.get("log", False), bool):
        raise UserError(f"{where}.log: expected true or false, got {raw['log']!r}.")
    step = _number(raw["step"], f"{where}.step", integer) if raw.get("step") is not None else None
    if not low < high:
        raise UserError(f"{where}: low={low!r} must be smaller than high={high!r}.")
    if log and low <= 0:
        raise UserError(
            f"{where}: a log-scale range needs low > 0, got low={low!r}; use a small positive low "
            "(e.g. 1.0e-5) or type: float without log."
        )
    if step is not None and (step <= 0 or log):
        raise UserError(f"{where}.step: must be > 0 and cannot be combined with a log scale, got {step!r}.")
    if grid is not None:
        grid = [_number(v, f"{where}.grid", integer) for v in grid]
        if any(not low <= v <= high for v in grid):
            raise UserError(f"{where}.grid: every value must lie in [low, high] = [{low}, {high}].")
    return Param(key, "int" if integer else "float", low, high, log, step, grid=grid)


@dataclass
class Component:
    """A sampler or pruner: its name and keyword options for the Optuna constructor."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def _component(raw: Any, kind: str, names: tuple[str, ...], default: str) -> Component:
    if raw is None:
        raw = default
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        raise UserError(
            f"{kind}: expected a name ({', '.join(names)}) or a mapping {{name: ..., option: value}}, got {raw!r}."
        )
    name = str(raw["name"]).lower().replace("-", "_")
    if name not in names:
        raise UserError(
            f"{kind}: unknown {kind} {raw['name']!r}{suggest(name, names)}; use one of {', '.join(names)}."
        )
    return Component(name, {k: v for k, v in raw.items() if k != "name"})


@dataclass
class Sweep:
    name: str
    recipe: str
    space: list[Param]
    budget: str | None = None
    overrides: list[str] = field(default_factory=list)
    trials: int = 30
    objective: str = "final_val_acc"
    sampler: Component = field(default_factory=lambda: Component("tpe"))
    pruner: Component = field(default_factory=lambda: Component("hyperband"))
    seed: int = 0
    storage: str | None = None  # Optuna storage URL; None = SQLite file study.db in the sweep directory
    max_retries: int = 1  # re-runs (same parameters) of a trial whose worker was interrupted or killed
    max_failures_in_a_row: int = 5  # a worker stops when this many of its trials fail one after another
    heartbeat_s: float = 30.0  # a running trial records a heartbeat this often
    stale_after_s: float = 600.0  # a RUNNING trial without a heartbeat for this long is failed (other machines)
    # The KEY=VALUE arguments the sweep was started with (placement and output keys left out), recorded in the sweep
    # directory's sweep.yaml so a resume can refuse other ones; None: a sweep file, or a directory from before
    # they were recorded.
    cli_overrides: list[str] | None = None
    source: str = ""  # where the sweep was read from

    # -- configs ----------------------------------------------------------------------------------------
    def base_overrides(self) -> list[str]:
        return ([f"run.budget={self.budget}"] if self.budget else []) + list(self.overrides)

    def config(self, params: dict[str, Any], extra: list[str] | tuple[str, ...] = ()) -> Config:
        """The config of a trial: recipe -> budget -> overrides -> parameters -> command line -> extra."""
        sets = [f"{k}={json.dumps(v)}" for k, v in params.items()]
        return load_config(self.recipe, [*self.base_overrides(), *sets, *(self.cli_overrides or []), *extra])

    def base_config(self, extra: list[str] | tuple[str, ...] = ()) -> Config:
        return load_config(self.recipe, [*self.base_overrides(), *(self.cli_overrides or []), *extra])

    def override_changes(self, saved: list[str], given: list[str]) -> list[str]:
        """``key=new (saved: old)`` for every config key where the command-line overrides ``given`` build another
        base config than ``saved`` did (compared as configs, so ``train.epochs=2`` and ``train.epochs=2.0``
        agree); placement and output keys (data.dir, run.device, run.loggers, data.download, ...) may change."""
        before = flatten_tree(load_config(self.recipe, [*self.base_overrides(), *saved]).to_dict())
        after = flatten_tree(load_config(self.recipe, [*self.base_overrides(), *given]).to_dict())
        keys = changed_keys(before, after, UNRECORDED_KEYS)
        return [f"{k}={json.dumps(after.get(k))} (saved: {json.dumps(before.get(k))})" for k in keys]

    def epochs(self) -> int:
        """Most epochs a trial can train (the pruners' resource unit)."""
        for p in self.space:
            if p.key == "train.epochs":
                return int(max(p.check_values()))
        return self.base_config().train.epochs

    def param(self, key: str) -> Param:
        return next(p for p in self.space if p.key == key)

    # -- Optuna objects ---------------------------------------------------------------------------------
    def make_sampler(self, seed: int | None):
        import optuna

        opts = dict(self.sampler.options)
        if self.sampler.name == "gp":
            import importlib.util

            if importlib.util.find_spec("scipy") is None:  # the sweep extra, not part of `make train`'s set-up
                raise UserError(
                    "sampler gp (Optuna's GPSampler) needs scipy; pip install 'reglab[sweep]' (or "
                    "scipy), or use sampler tpe."
                )
        cls = {
            "tpe": optuna.samplers.TPESampler,
            "gp": optuna.samplers.GPSampler,
            "random": optuna.samplers.RandomSampler,
            "grid": optuna.samplers.GridSampler,
        }[self.sampler.name]
        if self.sampler.name == "grid":
            opts["search_space"] = {p.key: p.grid_values() for p in self.space}
        opts.setdefault("seed", seed)
        return _construct(cls, opts, f"sampler {self.sampler.name}")

    def make_pruner(self):
        import optuna

        opts = dict(self.pruner.options)
        name = self.pruner.name
        if name == "none":
            return _construct(optuna.pruners.NopPruner, opts, "pruner none")
        if name == "hyperband":
            opts.setdefault("min_resource", 1)
            opts.setdefault("max_resource", self.epochs())
            opts.setdefault("reduction_factor", 3)
            return _construct(optuna.pruners.HyperbandPruner, opts, "pruner hyperband")
        if name == "successive_halving":
            opts.setdefault("min_resource", 1)
            return _construct(optuna.pruners.SuccessiveHalvingPruner, opts, "pruner successive_halving")
        return _construct(optuna.pruners.MedianPruner, opts, "pruner median")

    def grid_size(self) -> int:
        return math.prod(len(p.grid_values()) for p in self.space)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        d["space"] = {
            p.key: {
                k: v for k, v in dataclasses.asdict(p).items() if k != "key" and v is not None and v is not False
            }
            for p in self.space
        }
        d["sampler"] = {"name": self.sampler.name, **self.sampler.options}
        d["pruner"] = {"name": self.pruner.name, **self.pruner.options}
        return d

    def identity(self) -> dict[str, Any]:
        """What a study is: rerunning with any of these changed would mix incomparable trials."""
        d = self.to_dict()
        return {k: d[k] for k in ("recipe", "budget", "overrides", "objective", "space")}


def _construct(cls, opts: dict[str, Any], what: str):
    allowed = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    for k in opts:
        if k not in allowed:
            raise UserError(
                f"{what}: unknown option {k!r}{suggest(str(k), allowed)}; options: "
                f"{', '.join(a for a in allowed if a != 'search_space') or '(none)'}."
            )
    try:
        return cls(**opts)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{what}: {exc}") from None


def _int(raw: dict, key: str, default: int, minimum: int) -> int:
    value = raw.get(key)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{key}: expected a whole number >= {minimum}, got {value!r}.")
    return value


def parse_sweep(raw: dict[str, Any], name: str, source: str = "the sweep") -> Sweep:
    """A sweep mapping -> validated :class:`Sweep` (every mistake is one UserError naming the file)."""
    try:
        return _parse(raw, name)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


def _parse(raw: dict[str, Any], name: str) -> Sweep:
    for k in raw:
        if k not in TOP_KEYS:
            raise UserError(
                f"unknown key {k!r}{suggest(str(k), TOP_KEYS)}; sweep files have {', '.join(TOP_KEYS)}."
            )
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise UserError(
            "space: expected a mapping of config keys to ranges, e.g. "
            "space: {optim.lr: {type: logfloat, low: 1.0e-3, high: 0.3}}."
        )
    space = [parse_param(k, v) for k, v in space_raw.items()]
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise UserError(f"overrides: expected a list of key=value strings, got {overrides!r}.")
    for o in overrides:
        if override_key(o) in ("run.dir", "run.name"):
            raise UserError(f"overrides: {o!r}: trials get their own run.dir and run.name; drop it.")
    searched = {p.key for p in space}
    clash = [o for o in overrides if override_key(o) in searched]
    if clash:
        raise UserError(f"overrides {clash} set keys the space searches; drop them from overrides.")
    objective = str(raw.get("objective", "final_val_acc"))
    if objective not in OBJECTIVES:
        raise UserError(
            f"objective: {objective!r} is not available{suggest(objective, OBJECTIVES)}; use "
            f"{' or '.join(OBJECTIVES)} (validation accuracy, maximized; the test set is never used)."
        )
    sweep = Sweep(
        name=str(raw.get("name") or name),
        recipe=str(raw.get("recipe") or "quick"),
        space=space,
        budget=str(raw["budget"]) if raw.get("budget") is not None else None,
        overrides=list(overrides),
        trials=_int(raw, "trials", 30, 1),
        objective=objective,
        sampler=_component(raw.get("sampler"), "sampler", SAMPLERS, "tpe"),
        pruner=_component(raw.get("pruner"), "pruner", PRUNERS, "hyperband"),
        seed=_int(raw, "seed", 0, 0),
        storage=str(raw["storage"]) if raw.get("storage") else None,
        max_retries=_int(raw, "max_retries", 1, 0),
        max_failures_in_a_row=_int(raw, "max_failures_in_a_row", 5, 1),
        cli_overrides=_cli_overrides(raw.get("cli_overrides", None)),
    )
    for key in ("heartbeat_s", "stale_after_s"):
        if key in raw:
            setattr(sweep, key, _number(raw[key], key))
            if getattr(sweep, key) <= 0:
                raise UserError(f"{key}: must be > 0, got {raw[key]!r}.")
    if sweep.stale_after_s < 2 * sweep.heartbeat_s:
        raise UserError(
            f"stale_after_s={sweep.stale_after_s} must be at least twice heartbeat_s={sweep.heartbeat_s}."
        )
    _check_configs(sweep)
    if sweep.sampler.name == "grid":
        size = sweep.grid_size()
        if raw.get("trials") is None:
            sweep.trials = size
        elif sweep.trials > size:
            raise UserError(f"trials: {sweep.trials} is more than the grid's {size} points; lower it or drop it.")
    sweep.make_sampler(0)  # options checked now rather than in the first trial
    sweep.make_pruner()
    return sweep


# Command-line keys a sweep neither records nor compares on resume: where trials run and what they write.
UNRECORDED_KEYS = PLACEMENT_KEYS | OUTPUT_KEYS


def override_key(item: str) -> str:
    """``KEY`` of a ``KEY=VALUE`` override."""
    return item.split("=", 1)[0].strip()


def recorded_overrides(items: list[str] | tuple[str, ...]) -> list[str]:
    """The command-line KEY=VALUE overrides that change what trials train: all but placement and output keys."""
    return [o for o in items if override_key(o) not in UNRECORDED_KEYS]


def _cli_overrides(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(o, str) and "=" in o for o in raw):
        raise UserError(
            f"cli_overrides: expected a list of key=value strings (written by reglab sweep), got {raw!r}."
        )
    return list(raw)


def _check_configs(sweep: Sweep) -> None:
    try:
        base = sweep.base_config()
    except UserError as exc:
        raise UserError(f"recipe {sweep.recipe!r} with the sweep's budget/overrides: {exc}") from None
    if base.data.val_size <= 0:
        raise UserError(
            "sweeps choose on validation accuracy: data.val_size must be > 0 (the test set is never "
            "used to choose); drop data.val_size=0 from the overrides."
        )
    for p in sweep.space:
        for value in p.check_values():
            try:
                sweep.config({p.key: value})
            except UserError as exc:
                raise UserError(f"space.{p.key}={value!r}: {exc}") from None


def resolve_sweep(sweep: str | Path) -> Path:
    """A path to a sweep file, or the name of one in ``sweeps/`` (``cpu_quick`` -> sweeps/cpu_quick.yaml)."""
    path = Path(sweep)
    if path.is_file():
        return path
    cand = SWEEPS_DIR / f"{sweep}.yaml"
    if "/" not in str(sweep) and cand.is_file():
        return cand
    known = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")) if SWEEPS_DIR.is_dir() else []
    raise UserError(
        f"sweep file {str(sweep)!r} not found; give a sweep YAML path or one of: "
        f"{', '.join(known) or '(none)'}{suggest(str(sweep), known)} (see docs/sweeps.md)."
    )


def load_sweep(sweep: str | Path) -> Sweep:
    path = resolve_sweep(sweep)
    return parse_sweep(read_yaml(path), path.stem, str(path))
