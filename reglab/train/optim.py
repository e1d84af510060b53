"""Optimizers (torch.optim) with per-parameter-group lr and weight-decay scales, and learning-rate schedules.

Schedules are ``torch.optim.lr_scheduler`` objects stepped once per optimizer step; every epoch-valued
setting is converted to steps (``epochs * steps_per_epoch``), so step/multistep drops land exactly on epoch
boundaries -- the same lrs as stepping them per epoch -- while cosine, one-cycle and warm-up move smoothly
within an epoch. Linear warm-up (Goyal et al., 2017) is a ``LinearLR`` placed in front with ``SequentialLR``.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn
from torch.optim import lr_scheduler as lrs

from ..config import OptimConfig, ParamGroup, SchedConfig
from ..errors import UserError
from .muon import Muon
from .params import select


def param_groups(
    model: nn.Module,
    weight_decay: float,
    exempt_norm_bias: bool,
    lr: float | None = None,
    rules: list[ParamGroup] = (),
) -> list[dict]:
    """The optimizer's parameter groups (of the trainable parameters): one, or more when some are treated apart.

    * ``exempt_norm_bias``: no weight decay on the 1-D parameters (norm weights and shifts, conv/linear biases).
    * ``rules`` (``optim.param_groups``): the parameters a rule's ``match`` selects (:mod:`reglab.train.params`)
      and no earlier rule did train at ``lr * lr_scale`` with weight decay ``weight_decay * wd_scale`` (0 for
      exempt ones). airbench's "bias scaler" (Jordan 2024) is ``{match: norm, lr_scale: 64, wd_scale: 1/64}``:
      the BN shifts at 64x the lr with the same decay per step, ``lr * wd``, as the other weights.

    Groups, empty ones left out: the unselected parameters that decay, the unselected exempt ones, then per rule
    its decaying and its exempt parameters; each in ``model.parameters()`` order."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not (exempt_norm_bias and weight_decay != 0) and not rules:
        return [{"params": params, "weight_decay": weight_decay}]
    owner: dict[int, int] = {}  # id(param) -> index of the first rule that selects it
    for i, rule in enumerate(rules):
        for p in select(model, rule.match, f"optim.param_groups[{i}].match"):
            owner.setdefault(id(p), i)
    exempt = (lambda p: p.ndim <= 1) if exempt_norm_bias else (lambda p: False)

    def members(rule: int | None, exempted: bool) -> list[torch.Tensor]:
        return [p for p in params if owner.get(id(p)) == rule and exempt(p) == exempted]

    groups = [
        {"params": members(None, False), "weight_decay": weight_decay},
        {"params": members(None, True), "weight_decay": 0.0},
    ]
    for i, rule in enumerate(rules):
        scaled = {"lr": lr * rule.lr_scale}
        groups.append({"params": members(i, False), **scaled, "weight_decay": weight_decay * rule.wd_scale})
        groups.append({"params": members(i, True), **scaled, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def muon_groups(groups: list[dict], cfg: OptimConfig) -> list[dict]:
    """``groups`` without their conv filters (4-D), which go to one Muon group appended last, so group 0 (the
    lr the logs show) stays an SGD group. The linear head, norm shifts and biases stay with SGD, as in
    airbench94_muon and Jordan's advice (Muon for hidden layers)."""
    for g in groups:
        if any(p.ndim == 4 for p in g["params"]) and (
            g.get("lr", cfg.lr) != cfg.lr or g.get("weight_decay", cfg.weight_decay) != cfg.weight_decay
        ):
            raise UserError(
                "optim.param_groups scales conv filters, but optim.name=muon trains every conv filter with Muon "
                "(optim.muon_lr, optim.muon_weight_decay), so the scales would be ignored: match norm, bias or "
                "linear parameters only, or set optim.name=sgd."
            )
    filters = [p for g in groups for p in g["params"] if p.ndim == 4]
    rest = [{**g, "params": [p for p in g["params"] if p.ndim != 4]} for g in groups]
    muon = {
        "params": filters,
        "muon": True,
        "lr": cfg.muon_lr,
        "momentum": cfg.muon_momentum,
        "nesterov": True,
        "weight_decay": cfg.muon_weight_decay,
    }
    return [g for g in rest + [muon] if g["params"]]


def _fused(cls: type, cuda: bool) -> dict:
    """``fused=True`` on CUDA where this torch's optimizer class takes it (SGD from torch 2.3): one kernel per
    parameter group, as a GPU step is bound by launches (measured on an H100)."""
    return {"fused": True} if cuda and "fused" in inspect.signature(cls).parameters else {}


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.wd_exempt_norm_bias, cfg.lr, cfg.param_groups)
    eps = {} if cfg.eps is None else {"eps": cfg.eps}
    cuda = next(model.parameters()).is_cuda
    if cfg.name == "muon":
        return Muon(
            muon_groups(groups, cfg),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            ns_steps=cfg.muon_ns_steps,
            normalize=cfg.muon_normalize,
        )
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **_fused(torch.optim.SGD, cuda)
        )
    if cfg.name in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), **eps, **_fused(cls, cuda))
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.rho, **eps)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr, **eps)
    raise ValueError(cfg.name)


def cosine_cycles_decay(epoch: float, t0: int, decay_every: int, gamma: float, floor: float = 0.0) -> float:
    """Seed 002's schedule as a multiplier of the base lr: cosine cycles of ``t0`` epochs whose peak is
    multiplied by ``gamma`` every ``decay_every`` epochs: ``gamma^floor(e/d) * (f + (1-f)(1+cos(pi*(e mod t0)/t0))/2)``."""
    peak = gamma ** math.floor(epoch / decay_every)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (epoch % t0) / t0)))


def build_scheduler(
    opt: torch.optim.Optimizer, cfg: SchedConfig, epochs: int, steps_per_epoch: int, base_lr: float
) -> lrs.LRScheduler:
    spe = steps_per_epoch
    warm = int(round(cfg.warmup_epochs * spe))
    total = epochs * spe
    main_steps = max(1, total - warm)
    floor = cfg.min_lr / base_lr
    if cfg.name == "constant":
        main = lrs.ConstantLR(opt, factor=1.0, total_iters=0)
    elif cfg.name == "step":
        # counted from step 0 (not from the end of warm-up), so drops land on multiples of step_size epochs
        main = lrs.LambdaLR(opt, lambda s: cfg.gamma ** ((s + warm) // (cfg.step_size * spe)))
    elif cfg.name == "multistep":
        main = lrs.MultiStepLR(opt, milestones=[m * spe - warm for m in cfg.milestones], gamma=cfg.gamma)
    elif cfg.name == "cosine":
        main = lrs.CosineAnnealingLR(opt, T_max=main_steps, eta_min=cfg.min_lr)
    elif cfg.name == "linear":
        main = lrs.LinearLR(opt, start_factor=1.0, end_factor=max(floor, 1e-8), total_iters=main_steps)
    elif cfg.name == "cosine_restarts":
        main = lrs.CosineAnnealingWarmRestarts(opt, T_0=cfg.t0 * spe, T_mult=cfg.t_mult, eta_min=cfg.min_lr)
    elif cfg.name == "cosine_cycles_decay":
        main = lrs.LambdaLR(
            opt, lambda s: cosine_cycles_decay((s + warm) / spe, cfg.t0, cfg.decay_every, cfg.gamma, floor)
        )
    elif cfg.name == "onecycle":
        if warm:
            raise ValueError("onecycle has its own warm-up (sched.pct_start); set sched.warmup_epochs=0")
        return lrs.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total, pct_start=cfg.pct_start
        )
    else:
        raise ValueError(cfg.name)
    if not warm:
        return main
    start = cfg.warmup_start if cfg.warmup_start is not None else 1.0 / (warm + 1)
    warmup = lrs.LinearLR(opt, start_factor=start, end_factor=1.0, total_iters=warm)
    return lrs.SequentialLR(opt, [warmup, main], milestones=[warm])
