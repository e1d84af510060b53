"""Typed configuration: YAML recipes plus dotted ``key=value`` overrides, validated once.

A :class:`Config` is a tree of dataclasses, one per section (``data``, ``aug``, ``mix``, ``model``, ``train``,
``optim``, ``sched``, ``ema``, ``run``). :func:`load_config` reads a recipe, applies overrides such as
``optim.lr=0.05`` or ``model.channels=[32,64,128]`` (values are parsed as YAML), checks every key and
type, and runs each section's ``validate``. Every mistake becomes one :class:`UserError` that says what is
wrong and how to fix it. Code past this point may assume a valid config.

The sections live in :mod:`reglab.config.data` (data, aug, mix, model) and :mod:`reglab.config.training` (train,
optim, sched, ema, run); :mod:`reglab.config.legacy` reads keys renamed since as their replacements.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..typedyaml import dataclass_from_dict, named_yaml, parse_override, read_yaml, set_dotted
from ..typedyaml import suggest as _suggest
from .data import AugConfig, DataConfig, MixConfig, ModelConfig
from .legacy import migrate
from .training import PARAM_KINDS, EmaConfig, Freeze, OptimConfig, ParamGroup, RunConfig, SchedConfig, TrainConfig

RECIPES_DIR = Path(__file__).resolve().parent.parent.parent / "recipes"
# What `reglab train` and `make train` run when no recipe is named: the most accurate recipe whose whole `make train`
# fits 10 minutes on a 2-core CPU, one per precision `train.amp=auto` gives there (reglab.api.default_recipe picks):
# recipes/default.yaml where it is bf16 autocast (AVX512-BF16 / AMX CPUs, Ampere+ GPUs), default-fp32.yaml elsewhere.
DEFAULT_RECIPE = "default"
DEFAULT_FP32_RECIPE = "default-fp32"
# Keys that say where and how a run runs, not what it trains: two configs that differ only here train the same run
# (a study's saved runs match, reports don't list them as differences, a resume may change them).
PLACEMENT_KEYS = frozenset({"run.dir", "run.threads", "data.dir", "run.device"})
# Keys that say what a run writes, logs and evaluates on the side, not what it trains: a resume may change them, and
# a sweep neither records nor compares them (adding a logger or turning downloads off on an offline node is routine).
OUTPUT_KEYS = frozenset(
    {
        "run.name",
        "run.checkpoint_every",
        "run.save_every_s",
        "run.eval_test_every",
        "run.loggers",
        "run.wandb_project",
        "data.download",
    }
)

__all__ = [
    "DEFAULT_FP32_RECIPE",
    "DEFAULT_RECIPE",
    "PARAM_KINDS",
    "OUTPUT_KEYS",
    "PLACEMENT_KEYS",
    "RECIPES_DIR",
    "AugConfig",
    "Config",
    "DataConfig",
    "EmaConfig",
    "Freeze",
    "MixConfig",
    "ModelConfig",
    "OptimConfig",
    "ParamGroup",
    "RunConfig",
    "SchedConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "parse_override",
    "resolve_recipe",
]


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> "Config":
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        if self.sched.min_lr > self.optim.lr:
            raise UserError(
                f"sched.min_lr={self.sched.min_lr} is above optim.lr={self.optim.lr}: the schedule would "
                "raise the lr instead of lowering it; set sched.min_lr <= optim.lr (0 by default)."
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def resolve_recipe(recipe: str | Path) -> Path:
    """A path to a YAML file, or the name of a recipe in ``recipes/`` (``quick`` -> recipes/quick.yaml)."""
    path = Path(recipe)
    if path.is_file():
        return path
    if path.is_dir():
        yamls = sorted(p.name for p in path.glob("*.yaml"))[:5]
        raise UserError(
            f"recipe {str(recipe)!r} is a directory, not a YAML file"
            f"{'; it holds ' + ', '.join(yamls) if yamls else ''}. Give the file itself."
        )
    if path.exists():
        raise UserError(f"recipe {str(recipe)!r} is not a regular file (a FIFO or device); give a YAML file.")
    return named_yaml(recipe, RECIPES_DIR, "recipe", "a YAML file path", lister="reglab recipes")


def _budgets(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    """A recipe's ``budgets:`` section checked: name -> mapping of dotted keys (``train.epochs``) to values."""
    if not isinstance(raw, dict):
        raise UserError(
            f"{where}: budgets must be a mapping of name -> {{dotted.key: value}}, e.g. "
            f"budgets: {{cpu: {{train.epochs: 5, data.train_subset: 10000}}}}; got {raw!r}."
        )
    out: dict[str, dict[str, Any]] = {}
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise UserError(
                f"{where}: budgets.{name} must be a mapping of dotted keys to values, e.g. "
                f"{{train.epochs: 5, data.train_subset: 10000}}; got {values!r}."
            )
        for key in values:
            if not isinstance(key, str) or "." not in key:
                raise UserError(f"{where}: budgets.{name}: key {key!r} must be dotted, e.g. train.epochs: 5.")
            if key == "run.budget":
                raise UserError(f"{where}: budgets.{name} must not set run.budget.")
        sub: dict[str, Any] = {}
        try:  # keys and types of every budget, used or not, so a typo shows on the first load
            for key, value in values.items():
                set_dotted(sub, key, value)
            dataclass_from_dict(Config, migrate(sub), "")
        except UserError as exc:
            raise UserError(f"{where}: budgets.{name}: {exc}") from None
        out[str(name)] = values
    return out


def load_config(
    recipe: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> Config:
    """Recipe file (or name) + overrides -> validated :class:`Config`.

    A recipe may have a top-level ``budgets:`` section, name -> ``{dotted.key: value}``. ``run.budget=NAME``
    (among the overrides, or ``run: {budget: NAME}`` in the recipe) applies that budget between the recipe and
    the overrides: recipe tree -> budget -> overrides, so the command line wins. ``budgets`` itself is not part
    of the Config; ``run.budget`` is, so a run's config.yaml records which budget it ran. A base tree (a run's
    saved config) has the budget already applied: its ``run.budget`` is kept as a record only.

    ``base`` is a config tree (e.g. a run's saved config.yaml) used instead of a recipe; passing both is an
    error. Neither ``base`` nor the recipe's tree is modified."""
    if recipe is not None and base is not None:
        raise ValueError("give a recipe or a base tree, not both")
    tree: dict[str, Any] = copy.deepcopy(base or {})
    name = None
    where = "the config"
    if recipe is not None:
        path = resolve_recipe(recipe)
        tree = read_yaml(path)
        name = path.stem
        where = str(path)
    parsed = [parse_override(text) for text in overrides]
    budgets = _budgets(tree.pop("budgets"), where) if "budgets" in tree else None
    run_tree = tree.get("run")
    recorded = run_tree.get("budget") if isinstance(run_tree, dict) else None
    selected = recorded
    for key, value in parsed:
        if key == "run.budget":
            selected = value
    if selected is not None:
        selected = str(selected)
        if budgets is None:
            if base is None or str(recorded) != selected:  # a saved config keeps its (applied) budget
                raise UserError(
                    f"run.budget={selected}: {where} has no budgets: section; drop run.budget "
                    f"or add budgets: {{{selected}: {{train.epochs: ..., data.train_subset: ...}}}}."
                )
        elif selected not in budgets:
            raise UserError(
                f"run.budget: unknown budget {selected!r}{_suggest(selected, budgets)}; {where} "
                f"has: {', '.join(budgets) or '(none)'}."
            )
        else:
            for key, value in budgets[selected].items():
                set_dotted(tree, key, copy.deepcopy(value))
    for key, value in parsed:
        set_dotted(tree, key, value)
    cfg = dataclass_from_dict(Config, migrate(tree), "")
    if cfg.run.name is None and name is not None:
        cfg.run.name = name
    return cfg.validate()


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a config saved with :meth:`Config.to_dict` (e.g. from a run directory)."""
    return dataclass_from_dict(Config, migrate(copy.deepcopy(tree)), "").validate()


def current_form(tree: dict[str, Any]) -> dict[str, Any]:
    """A saved config tree (a run's config.yaml) as the current code reads it: old key spellings rewritten
    (:mod:`.legacy`), keys added since filled with their defaults. A tree the current code cannot read (a key that
    no longer exists) comes back merged over the defaults as it is, so comparing it still names the odd keys."""
    try:
        return config_from_dict(tree).to_dict()
    except UserError:
        return _merge(Config().to_dict(), copy.deepcopy(tree))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        base[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base
