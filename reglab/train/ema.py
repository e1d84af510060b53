"""Exponential moving average of weights (Polyak & Juditsky, 1992), on ``torch.optim.swa_utils.AveragedModel``.

``theta_ema <- d * theta_ema + (1 - d) * theta`` after every ``every``-th optimizer step, with the decay warmed
up as ``d_t = min(decay, (1 + t) / (10 + t))`` during the first ``warmup_steps`` updates (t = updates so far),
so early averages are not dominated by the random initialization. Batch-norm running statistics are
averaged too (``use_buffers=True``, as timm's ModelEma does), so the EMA model is evaluated with statistics
that match its weights; the integer ``num_batches_tracked`` is copied.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel


def ema_avg_fn(decay: float, warmup_steps: int):
    def multi_avg(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        t = int(num_averaged)
        d = min(decay, (1 + t) / (10 + t)) if t < warmup_steps else decay
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1 - d)
        else:
            for e, p in zip(ema_params, params):
                e.copy_(p)

    return multi_avg


class EMA:
    """Holds the averaged copy; ``update(model, step)`` after optimizer steps, ``module`` to evaluate."""

    def __init__(self, model: nn.Module, decay: float, warmup_steps: int = 0, every: int = 1):
        self.averaged = AveragedModel(model, multi_avg_fn=ema_avg_fn(decay, warmup_steps), use_buffers=True)
        self.every = every

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        if step % self.every == 0:
            self.averaged.update_parameters(model)

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)
