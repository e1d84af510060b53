"""Old spellings of keys that became general mechanisms (issue 25), still read: recipes, overrides and the
config.yaml of runs saved before the change load as they did, with the same results (bit for bit; with an
``optim.norm_lr_scale`` other than a power of two, as no recipe had, the weight decay ``wd * (1/s)`` may differ
from the old ``wd / s`` in its last bit).

* ``optim.norm_lr_scale: s`` -> ``optim.param_groups: [{match: norm, lr_scale: s, wd_scale: 1/s}]``
  (with ``optim.norm_lr_scale_on: norm_and_bias``: ``match: [norm, bias]``); s = 1: no entry;
* ``train.whiten_bias_epochs: n`` -> ``train.freeze: [{match: whiten.bias, start_epoch: n}]``; null: no entry;
* ``train.tta_translate: k`` -> ``train.tta_shifts: [[-k, -k], [k, k]]``; 0: none.

:func:`migrate` rewrites a config tree's old keys into the new ones before the tree is checked; an old key given
together with its replacement is a :class:`~reglab.errors.UserError`.
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError

# Each old dotted key and the key it is rewritten into (what an override of the old key really sets).
ALIASES = {
    "optim.norm_lr_scale": "optim.param_groups",
    "optim.norm_lr_scale_on": "optim.param_groups",
    "train.whiten_bias_epochs": "train.freeze",
    "train.tta_translate": "train.tta_shifts",
}

# The old keys' values that meant "off": a saved config.yaml holds every key, so these are not a setting.
OFF = {
    "norm_lr_scale": (None, 1, 1.0),
    "norm_lr_scale_on": (None, "norm"),
    "whiten_bias_epochs": (None,),
    "tta_translate": (None, 0),
}


def _take(section: dict[str, Any], old: list[str], new: str, where: str) -> list[Any] | None:
    """The old keys' values, removed from ``section``; None if none of them is there. Both spellings set is an
    error only when both say something: an old key at its "off" value (every saved config.yaml of before the
    change has them) or an empty new list (every newer one has it) gives way to the other."""
    if not any(k in section for k in old):
        return None
    values = [section.pop(k, None) for k in old]
    if all(v in OFF[k] for k, v in zip(old, values)):
        return None
    if section.get(new):
        set_old = next(k for k, v in zip(old, values) if v not in OFF[k])
        raise UserError(
            f"{where}.{set_old} is the old spelling of {where}.{new}, and both are set; keep only {where}.{new}."
        )
    return values


def migrate(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with the old keys of the module docstring's table rewritten (in place; also returned)."""
    optim, train = tree.get("optim"), tree.get("train")
    if isinstance(optim, dict):
        old = _take(optim, ["norm_lr_scale", "norm_lr_scale_on"], "param_groups", "optim")
        if old is not None:
            scale, on = 1.0 if old[0] is None else old[0], old[1] or "norm"
            if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
                raise UserError(f"optim.norm_lr_scale={scale!r} must be a number > 0.")
            if on not in ("norm", "norm_and_bias"):
                raise UserError(f"optim.norm_lr_scale_on={on!r} must be norm or norm_and_bias.")
            if scale != 1:
                match = ["norm", "bias"] if on == "norm_and_bias" else "norm"
                optim["param_groups"] = [{"match": match, "lr_scale": scale, "wd_scale": 1 / scale}]
    if isinstance(train, dict):
        old = _take(train, ["whiten_bias_epochs"], "freeze", "train")
        if old is not None and old[0] is not None:
            train["freeze"] = [{"match": "whiten.bias", "start_epoch": old[0]}]
        old = _take(train, ["tta_translate"], "tta_shifts", "train")
        if old is not None and old[0]:
            k = old[0]
            if not train.get("tta"):
                raise UserError(
                    "train.tta_translate needs train.tta=true (the shifted views are flip-averaged too)."
                )
            train["tta_shifts"] = [[-k, -k], [k, k]]
    return tree
