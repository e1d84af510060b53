"""A sweep's search space: one :class:`Param` per searched config key, parsed and checked from the ``space:``
mapping of a sweep file (:mod:`.spec`).

```yaml
space:
  optim.lr: {type: logfloat, low: 1.0e-3, high: 0.3}          # log-uniform float
  optim.weight_decay: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
  model.stem_width: {type: int, low: 16, high: 64, step: 16}
  train.batch_size: {choices: [64, 128, 256, 512]}            # categorical (also: a bare list)
  model.channels: {choices: [[16, 32, 64], [32, 64, 128]]}    # lists and mappings work as choices
```

A key is a dotted config key (``section.key``); keys that move the validation set or say where a trial runs
(:data:`FIXED_KEYS`) cannot be searched. ``grid: [...]`` lists the values the grid sampler visits. Whether each
value builds a valid config is checked by :mod:`.spec`, which knows the base recipe.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..typedyaml import suggest

PARAM_TYPES = ("float", "logfloat", "int", "categorical")
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


def as_number(value: Any, where: str, integer: bool = False) -> float | int:
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
    low, high = as_number(raw["low"], f"{where}.low", integer), as_number(raw["high"], f"{where}.high", integer)
    log = kind == "logfloat" or bool(raw.get("log", False))
    if not isinstance(raw.get("log", False), bool):
        raise UserError(f"{where}.log: expected true or false, got {raw['log']!r}.")
    step = as_number(raw["step"], f"{where}.step", integer) if raw.get("step") is not None else None
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
        grid = [as_number(v, f"{where}.grid", integer) for v in grid]
        if any(not low <= v <= high for v in grid):
            raise UserError(f"{where}.grid: every value must lie in [low, high] = [{low}, {high}].")
    return Param(key, "int" if integer else "float", low, high, log, step, grid=grid)
