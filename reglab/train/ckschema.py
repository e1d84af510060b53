"""The schema of a reglab checkpoint: every field reglab reads from a checkpoint is checked here before use.

A checkpoint is data from outside (a file anyone can write), so nothing in it is trusted: types, bounds,
lengths against the tensors, and (before any real allocation) the model it describes, which is built on
PyTorch's ``meta`` device and must have exactly the checkpoint's tensor names and shapes. Only then is the
real model built, from the validated description. Every violation is one :class:`UserError`:
``<file> is not a valid reglab checkpoint: <field> <problem>. ...``.

:func:`inference_fields` is what ``eval``/``predict``/``export`` need; :func:`resume_fields` adds what
``train --resume`` reads (counters, schedule length; the optimizer, scheduler, loader and RNG states are checked
by the objects that load them, whose errors become the same kind of message).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import UserError
from ..typedyaml import dataclass_from_dict

MAX_CLASSES = 100_000
MAX_NAME = 200  # characters of a class name, dataset or optimizer name
MAX_WIDTH = 16_384  # channels of a stage / stem
MAX_STAGES = 8
MAX_BLOCKS = 256  # per stage
MAX_KERNEL = 15


@dataclasses.dataclass
class Inference:
    """What a checkpoint tells eval/predict/export, validated."""

    model: ModelConfig
    num_classes: int
    classes: list[str]
    mean: list[float]
    std: list[float]
    dataset: str | None
    epoch: int | None

    def meta(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "num_classes": self.num_classes,
            "mean": self.mean,
            "std": self.std,
            "model": {f.name: getattr(self.model, f.name) for f in dataclasses.fields(self.model)},
            "dataset": self.dataset,
        }


class Invalid(UserError):
    pass


def _fail(path: Path, field: str, problem: str) -> Invalid:
    return Invalid(
        f"{path} is not a valid reglab checkpoint: {field} {problem}. Use another checkpoint or "
        "retrain; reglab does not use a checkpoint it cannot check."
    )


def _short(value: Any) -> str:
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 2, 4, 4, 40, 40
    return r.repr(value)


def _int(path: Path, field: str, value: Any, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(path, field, f"must be an integer, not {_short(value)}")
    if not lo <= value <= hi:
        raise _fail(path, field, f"= {value} is outside [{lo}, {hi}]")
    return value


def _float(path: Path, field: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise _fail(path, field, f"must be a finite number, not {_short(value)}")
    return float(value)


def _name(path: Path, field: str, value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME or not value.isprintable():
        raise _fail(path, field, f"must be a printable name of 1 to {MAX_NAME} characters, not {_short(value)}")
    return value


def _model_config(path: Path, raw: Any) -> ModelConfig:
    if not isinstance(raw, dict):
        raise _fail(path, "meta.model", f"must be a mapping of model options, not {_short(raw)}")
    try:
        cfg = dataclass_from_dict(ModelConfig, raw, "meta.model.")
        cfg.validate()
    except UserError as exc:
        raise _fail(path, "meta.model:", str(exc).rstrip(".")) from None
    from ..models.zoo import is_known

    if not is_known(cfg.name):
        raise _fail(path, "meta.model.name", f"{_short(cfg.name)} is not a model reglab knows")
    for key, cap in (("channels", MAX_WIDTH), ("blocks", MAX_BLOCKS)):
        val = getattr(cfg, key)
        if val is not None and (len(val) > MAX_STAGES or max(val) > cap):
            raise _fail(
                path,
                f"meta.model.{key}",
                f"= {_short(val)} is out of bounds (at most {MAX_STAGES} stages of at most {cap})",
            )
    for key, cap in (
        ("stem_width", MAX_WIDTH),
        ("kernel_size", MAX_KERNEL),
        ("skip_kernel", MAX_KERNEL),
        ("pool_size", 32),
        ("stem_stride", 4),
    ):
        val = getattr(cfg, key)
        if val is not None and not 1 <= val <= cap:
            raise _fail(path, f"meta.model.{key}", f"= {val} is outside [1, {cap}]")
    if cfg.bn_dropout is not None and len(cfg.bn_dropout) > MAX_STAGES * MAX_BLOCKS * 4:
        raise _fail(path, "meta.model.bn_dropout", "is too long")
    return cfg


def check_model_tensors(path: Path, cfg: ModelConfig, num_classes: int, weights: Any) -> None:
    """The model ``cfg`` describes, built on the meta device (no memory), must have exactly the names and shapes
    of the checkpoint's model tensors."""
    from ..models import model_from_config
    from .checkpoint import state_mismatch

    if (
        not isinstance(weights, dict)
        or not weights
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items())
    ):
        raise _fail(path, "model", "must be a mapping of parameter names to tensors")
    try:
        with torch.device("meta"):
            skeleton = model_from_config(cfg, num_classes)
    except UserError as exc:
        raise _fail(path, "meta.model:", str(exc).rstrip(".")) from None
    except (ValueError, TypeError, RuntimeError, IndexError, ZeroDivisionError) as exc:
        raise _fail(
            path, "meta.model", f"describes no buildable model ({str(exc).splitlines()[0][:200]})"
        ) from None
    found = state_mismatch(skeleton.state_dict(), weights)
    if found:
        raise _fail(path, "model", f"weights do not fit the model its metadata describes ({found})")


def inference_fields(state: dict[str, Any], path: Path) -> Inference:
    meta = state.get("meta")
    if not isinstance(meta, dict) or "model" not in meta:
        raise _fail(
            path, "meta", "is missing or lacks the model description (it was not written by `reglab train`)"
        )
    cfg = _model_config(path, meta.get("model"))
    n = _int(path, "meta.num_classes", meta.get("num_classes"), 2, MAX_CLASSES)
    classes = meta.get("classes")
    if not isinstance(classes, list):
        raise _fail(path, "meta.classes", f"must be a list of class names, not {_short(classes)}")
    if len(classes) != n:
        raise _fail(path, "meta.classes", f"has {len(classes)} names for {n} classes (meta.num_classes)")
    names = [_name(path, f"meta.classes[{i}]", c) for i, c in enumerate(classes)]
    stats = {}
    for key in ("mean", "std"):
        val = meta.get(key)
        if not isinstance(val, list) or len(val) != 3:
            raise _fail(path, f"meta.{key}", f"must be 3 numbers (one per RGB channel), not {_short(val)}")
        stats[key] = [_float(path, f"meta.{key}[{i}]", v) for i, v in enumerate(val)]
    if not all(0 < s <= 1e3 for s in stats["std"]) or not all(abs(m) <= 1e3 for m in stats["mean"]):
        raise _fail(path, "meta.std", f"= {stats['std']} must be positive (and mean/std at most 1000 in size)")
    dataset = meta.get("dataset")
    dataset = None if dataset is None else _name(path, "meta.dataset", dataset)
    epoch = state.get("epoch")
    epoch = None if epoch is None else _int(path, "epoch", epoch, 0, 10**9)
    check_model_tensors(path, cfg, n, state.get("model"))
    return Inference(cfg, n, names, stats["mean"], stats["std"], dataset, epoch)


def resume_fields(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The counters and parts ``train --resume`` reads, validated; the model description as for inference."""
    inference_fields(state, path)
    out = {
        "epoch": _int(path, "epoch", state.get("epoch"), 0, 10**9),
        "step": _int(path, "step", state.get("step"), 0, 10**15),
        "elapsed": _float(path, "elapsed", state.get("elapsed")),
    }
    best = state.get("best")
    if not isinstance(best, dict):
        raise _fail(path, "best", f"must be a mapping {{val_acc, epoch}}, not {_short(best)}")
    out["best"] = {
        "val_acc": _float(path, "best.val_acc", best.get("val_acc")),
        "epoch": _int(path, "best.epoch", best.get("epoch"), 0, out["epoch"]),
    }
    for key in ("optimizer", "scheduler", "loader", "rng"):
        if not isinstance(state.get(key), dict):
            raise _fail(path, key, f"must be a mapping, not {_short(state.get(key))}")
    schedule = state.get("schedule")
    out["schedule_epochs"] = None
    if schedule is not None:
        if not isinstance(schedule, dict):
            raise _fail(path, "schedule", f"must be a mapping, not {_short(schedule)}")
        out["schedule_epochs"] = _int(path, "schedule.epochs", schedule.get("epochs"), 1, 10**9)
    meta = state["meta"]
    if "optimizer" in meta:
        _name(path, "meta.optimizer", meta["optimizer"])
    return out
