"""Muon (Jordan et al., 2024, "Muon: an optimizer for hidden layers"), with SGD for every other parameter.

For each weight ``W`` of a group marked ``muon=True`` (reglab puts every trainable conv filter there), with
momentum ``mu`` and Nesterov::

    B <- mu B + (1 - mu) g                      # momentum buffer (torch.optim.Muon's form)
    U  = (1 - mu) g + mu B                      # Nesterov
    O  = NS_k(U.reshape(out, -1))               # ~ orthogonalize: k quintic Newton-Schulz steps, (a,b,c) =
                                                #   (3.4445, -4.7750, 2.0315), on U / ||U||_F
    W <- W (1 - lr wd) - lr sqrt(max(1, out/in)) O

``normalize`` (airbench94_muon) first rescales each filter bank to ``||W||_F = sqrt(out)`` at every step, so
the weights' scale is fixed and the lr sets the angle each step turns them by; weight decay is then moot.
The other groups (norm shifts, biases, the linear head) take torch's SGD with momentum, Nesterov and weight
decay (``torch.optim.sgd.sgd``), so one optimizer, one lr scheduler and one state dict cover both.

``torch.optim.Muon`` (torch >= 2.9) implements the same update for 2-D weights only, always in bf16; this one
takes conv filters (as airbench94_muon does by reshaping) and runs the iteration in fp32 on the CPU, where bf16
matmuls are 10-15x slower, and in bf16 on CUDA. ``tests/train/test_muon.py`` checks it against ``torch.optim.Muon``.
"""

from __future__ import annotations

import math

import torch
from torch.optim.sgd import sgd

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int, dtype: torch.dtype, eps: float = 1e-7) -> torch.Tensor:
    """``U S' V^T`` with ``S'`` near 1 for a 2-D ``g = U S V^T``: quintic Newton-Schulz on the wide side."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon on the groups with ``muon=True``, SGD (momentum, Nesterov, weight decay) on the rest."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        normalize: bool = False,
        ns_dtype: torch.dtype | None = None,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            muon=False,
            ns_steps=ns_steps,
            normalize=normalize,
        )
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ValueError("Muon groups take weights of 2 or more dimensions")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["muon"]:
                self._muon(group, params)
                continue
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            sgd(
                params,
                [p.grad for p in params],
                bufs,
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                lr=group["lr"],
                dampening=0.0,
                nesterov=group["nesterov"],
                maximize=False,
            )
            if group["momentum"] != 0:
                for p, buf in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = buf
        return loss

    def _muon(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        for p in params:
            g = p.grad
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(g)
            buf = state["momentum_buffer"]
            buf.lerp_(g, 1 - mu)
            update = g.lerp(buf, mu) if group["nesterov"] else buf
            if group["normalize"]:
                p.mul_(math.sqrt(p.size(0)) / p.norm().clamp(min=1e-12))
            dtype = self.ns_dtype or (torch.bfloat16 if p.is_cuda else torch.float32)
            o = newton_schulz(update.reshape(len(update), -1), group["ns_steps"], dtype)
            rows, cols = o.shape
            if wd:
                p.mul_(1 - lr * wd)
            p.add_(o.reshape(p.shape).to(p.dtype), alpha=-lr * math.sqrt(max(1.0, rows / cols)))
