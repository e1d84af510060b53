"""Lookahead (Zhang et al., 2019, "Lookahead Optimizer: k steps forward, 1 step back") with a decay schedule.

Every ``every`` optimizer steps the slow weights move toward the fast ones and the fast weights are reset onto
them: ``slow <- d_t * slow + (1 - d_t) * fast; fast <- slow``. The original uses a constant
``d = 1 - alpha``; reglab takes airbench's (Jordan, 2024) schedule ``d_t = decay * (t / T)^power`` over the
run's ``T`` steps, which starts as plain SGD (``d ~ 0``) and averages more and more as the learning rate
decays, ending at ``decay`` (0.95^5 = 0.774 by default: an EMA of 0.95 per step, applied every 5 steps). At the
last step the fast weights are set to the slow ones. Float buffers (batch-norm running statistics) are averaged
with the parameters, so the evaluated model's statistics match its weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _floats(model: nn.Module) -> list[torch.Tensor]:
    return [t for t in model.state_dict(keep_vars=True).values() if t.is_floating_point()]


class Lookahead:
    def __init__(
        self, model: nn.Module, total_steps: int, every: int = 5, decay: float = 0.95**5, power: float = 3.0
    ):
        self.total, self.every, self.decay, self.power = max(1, total_steps), every, decay, power
        self.fast = [t.detach() for t in _floats(model)]  # views of the model's tensors, made once
        self.slow = [t.clone() for t in self.fast]
        self._probe = next(model.parameters())
        self._ptr = self._probe.data_ptr()

    def decay_at(self, step: int) -> float:
        return self.decay * min(1.0, step / self.total) ** self.power

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Call after optimizer step ``step`` (1-based); a no-op except every ``every`` steps and at the end."""
        last = step >= self.total
        if not last and step % self.every:
            return
        if self._probe.data_ptr() != self._ptr:  # the model's tensors were replaced (e.g. by .to()): new views
            self.fast, self._ptr = [t.detach() for t in _floats(model)], self._probe.data_ptr()
        fast = self.fast
        if not last:
            torch._foreach_lerp_(self.slow, fast, 1.0 - self.decay_at(step))
        torch._foreach_copy_(fast, self.slow)  # at the end: the model becomes the slow weights

    def state_dict(self) -> dict:
        return {"slow": list(self.slow)}

    def load_state_dict(self, state: dict) -> None:
        for s, t in zip(self.slow, state["slow"]):
            s.copy_(t)
