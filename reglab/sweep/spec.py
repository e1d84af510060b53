"""Sweep files: a base recipe plus a typed search space (:mod:`.space`), validated once into dataclasses.

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

The ``space:`` entries are parsed by :mod:`.space`; this module checks the rest of the file and the whole: every
space key is checked against the config by building the base config with the key at its low and high value (and
every choice), so a typo or an out-of-range bound is reported before any training; ``overrides`` may not set a
key the space searches (nor a key above or under one); sampler and pruner options are checked against the Optuna
constructors' parameters. ``cli_overrides`` is not written by hand: ``reglab sweep`` records in it, in the
sweep directory's own ``sweep.yaml``, the command-line overrides the sweep started with.
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
from ..config.legacy import ALIASES as LEGACY_ALIASES
from ..errors import UserError
from ..typedyaml import changed_keys, flatten_tree, read_yaml, suggest
from .space import Param, as_number, parse_param

SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"
SAMPLERS = ("tpe", "gp", "random", "grid")
PRUNERS = ("hyperband", "successive_halving", "median", "none")
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
    clash = [o for o in overrides if overlapping(override_key(o), space)]
    if clash:
        hit = sorted({k for o in clash for k in overlapping(override_key(o), space)})
        raise UserError(
            f"overrides {clash} set keys the space searches, or keys above or under them ({', '.join(hit)}); "
            "drop them from overrides."
        )
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
            setattr(sweep, key, as_number(raw[key], key))
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


def overlapping(key: str, space: list[Param]) -> list[str]:
    """The searched keys of ``space`` that an override of ``key`` would set or clobber: the key itself, one under
    it (``optim`` over ``optim.lr``) or one above it (``model.channels.0`` under ``model.channels``), compared on
    dotted-key boundaries (``mix.lam_y_range`` does not overlap ``mix.lam_y``). An old spelling counts as the key
    it is rewritten into (``optim.norm_lr_scale`` sets ``optim.param_groups``)."""
    key = LEGACY_ALIASES.get(key, key)
    return [p.key for p in space if key == p.key or p.key.startswith(f"{key}.") or key.startswith(f"{p.key}.")]


def searched_override_error(items: list[str] | tuple[str, ...], space: list[Param], source: str) -> str | None:
    """The one-line refusal of command-line ``items`` that set a key the space searches (or a key above or under
    one): each would replace or clobber every trial's sampled value, a search that searches nothing. None: none
    does."""
    shown = []
    for key in dict.fromkeys(override_key(o) for o in items):
        hit = overlapping(key, space)
        if hit:
            shown.append(key if hit == [key] else f"{key} (overlaps the searched {', '.join(hit)})")
    if not shown:
        return None
    return (
        f"{', '.join(shown)}: searched by {source} (its space), so a command-line value would replace every "
        "trial's sampled one (or part of it); drop it from the command line, or from the sweep's space to fix it."
    )


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
