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


def _take(section: dict[str, Any], old: list[str], new: str, where: str) -> list[Any] | None:
    """The old keys' values, removed from ``section``; None if none of them is there."""
    if not any(k in section for k in old):
        return None
    if new in section:
        raise UserError(
            f"{where}.{old[0]} is the old spelling of {where}.{new}, and both are set; keep only {where}.{new}."
        )
    return [section.pop(k, None) for k in old]


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
            train["tta_shifts"] = [[-k, -k], [k, k]]
    return tree
