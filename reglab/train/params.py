"""Which parameters a selector names: the ``match`` of ``optim.param_groups`` and ``train.freeze``.

A selector is a kind (:data:`reglab.config.PARAM_KINDS`) or a glob over the names of ``model.named_parameters()``
(``fnmatch``: ``whiten.bias``, ``head.*``, ``groups.0.*``); a ``match`` list selects the union of its selectors.

* ``norm``: the parameters of normalization layers (batch, group, layer norm: their scale and shift);
* ``bias``: every parameter named ``bias`` (norm shifts, conv and linear biases);
* ``conv``: the weights (filters) of convolutions;
* ``linear``: the weights of linear layers.
"""

from __future__ import annotations

import fnmatch

import torch
import torch.nn as nn

from ..config import PARAM_KINDS, Freeze
from ..errors import UserError

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_OWNERS = {"norm": NORMS, "conv": nn.modules.conv._ConvNd, "linear": nn.Linear}


def _selected(model: nn.Module, selector: str) -> set[int]:
    if selector == "bias":
        return {id(p) for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "bias"}
    if selector in _OWNERS:
        owner = _OWNERS[selector]
        return {
            id(p)
            for m in model.modules()
            if isinstance(m, owner)
            for name, p in m.named_parameters(recurse=False)
            if selector == "norm" or name == "weight"
        }
    return {id(p) for name, p in model.named_parameters() if fnmatch.fnmatchcase(name, selector)}


def set_frozen(freeze: list[tuple[Freeze, list[torch.Tensor]]], epoch: int) -> None:
    """``train.freeze`` in (0-based) ``epoch``: each entry's parameters without gradient while any entry that
    selects them is active, with gradient otherwise (``freeze`` as :mod:`reglab.train.components` builds it)."""
    frozen = {id(p) for rule, params in freeze if rule.frozen(epoch) for p in params}
    for _, params in freeze:
        for p in params:
            p.requires_grad_(id(p) not in frozen)


def select(model: nn.Module, match: str | list[str], key: str) -> list[torch.Tensor]:
    """The trainable parameters ``match`` selects, in ``model.parameters()`` order; a selector that selects none
    of them is a :class:`~reglab.errors.UserError` naming ``key`` when it is a glob (a typo would otherwise do
    nothing); a kind may select none (``norm`` in a model without normalization layers)."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    chosen: set[int] = set()
    for selector in [match] if isinstance(match, str) else match:
        ids = _selected(model, selector) & {id(p) for _, p in trainable}
        if not ids and selector not in PARAM_KINDS:
            names = ", ".join(name for name, _ in trainable[:6])
            raise UserError(
                f"{key}: {selector!r} selects no trainable parameter of this model (its parameters are named "
                f"like {names}, ...); fix the selector or drop the entry."
            )
        chosen |= ids
    return [p for _, p in trainable if id(p) in chosen]
