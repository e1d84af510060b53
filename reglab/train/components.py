"""The parts a training run is made of, built from a validated :class:`~reglab.config.Config`.

:func:`build_components` turns a config into :class:`Components`: the data, the model and the callables that run
it (DDP wrapper, ``torch.compile``), the loaders with their augmentation, the mixer, optimizer, lr schedule,
lookahead, EMA, loss and precision. :class:`reglab.train.loop.Run` holds them as its attributes and trains;
nothing here trains.

Mistakes a config can only reveal once the data and model exist (a batch larger than the training set, an
option the model does not support) are :class:`~reglab.errors.UserError` raised here, before any run directory
is written. The order of construction is part of a run's result: the model's initial weights are drawn from the
global RNG after the data is loaded, and a model's data-dependent initialization (``init_from_data(images)``,
e.g. fastnet's whitening stem) runs after the optimizer and before lookahead and EMA copy the weights.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from ..config import Config, Freeze
from ..data import DataSplits, DeviceLoader, load_splits
from ..data.augment import training_loader, training_size
from ..data.mixing import Mixer, build_mixer
from ..errors import UserError
from ..models import count_params, forward_gflops, model_from_config
from . import distributed
from .device import autocast_for, precision_name, seed_everything
from .distributed import Dist, shard
from .ema import EMA
from .lookahead import Lookahead
from .losses import Criterion
from .optim import build_optimizer, build_scheduler
from .params import select


@dataclass
class Components:
    """What a run trains with; see the module docstring."""

    data: DataSplits
    model: nn.Module  # the trained module itself (SyncBN-converted under DDP with train.sync_bn)
    params: int
    gflops: float  # forward GFLOPs per image
    memory_format: torch.memory_format
    forward: Callable  # what a training step calls: the model, its DDP wrapper, or their compiled version
    eval_forward: Callable  # what evaluation calls (no DDP wrapper: ranks evaluate their own shard)
    train_loader: DeviceLoader
    val_loader: DeviceLoader | None  # None: no validation split (data.val_size=0)
    test_loader: DeviceLoader
    mixer: Mixer | None
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]  # each parameter group's lr before a scheduler changed it (a resume rebuilds from them)
    scheduler: Any
    lookahead: Lookahead | None
    ema: EMA | None
    criterion: Criterion
    autocast: Callable[[], Any] | None  # a factory of the bf16 autocast context; None: fp32
    precision: str
    freeze: list[tuple[Freeze, list[torch.Tensor]]]  # train.freeze's entries, each with the parameters it selects


def build_components(cfg: Config, device: torch.device, d: Dist) -> Components:
    """Seed the run, load its data and build everything :class:`Components` holds, in the order that fixes the
    run's random numbers (see the module docstring)."""
    seed_everything(cfg.run.seed)
    data = load_splits(cfg.data)
    _check_batch(cfg, len(data.train), d)
    model = model_from_config(cfg.model, data.num_classes).to(device)
    params = count_params(model)
    _model_train_options(cfg, model, d)
    gflops = forward_gflops(model)
    _check_low_res(cfg, model)
    if d.enabled and cfg.train.sync_bn:
        model = distributed.convert_sync_batchnorm(model, device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    forward, eval_forward = _forwards(cfg, model, d)
    train_loader, val_loader, test_loader = _loaders(cfg, data, device, d)
    mixer = build_mixer(cfg.mix, data.num_classes) if cfg.mix.enabled else None
    steps_per_epoch = len(train_loader)
    freeze = _freeze(cfg, model, d)
    optimizer = build_optimizer(model, cfg.optim)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    try:
        scheduler = build_scheduler(optimizer, cfg.sched, cfg.train.epochs, steps_per_epoch, cfg.optim.lr)
    except ValueError as exc:
        raise UserError(f"sched: {exc}.") from None
    _init_from_data(model, train_loader, cfg.train.init_images)
    o = cfg.optim
    lookahead = (
        Lookahead(
            model, cfg.train.epochs * steps_per_epoch, o.lookahead_every, o.lookahead_decay, o.lookahead_power
        )
        if o.lookahead
        else None
    )
    ema = EMA(model, cfg.ema.decay, cfg.ema.warmup_steps, cfg.ema.every) if cfg.ema.enabled else None
    criterion = Criterion(
        data.num_classes, cfg.train.loss, cfg.train.label_smoothing, cfg.train.smoothing_convention
    )
    autocast = autocast_for(cfg.train.amp, device, cache=not cfg.train.cuda_graph)
    if cfg.train.cuda_graph and device.type != "cuda" and d.main:
        print(
            f"warning: train.cuda_graph applies on CUDA only: this run on {device.type} trains eagerly.",
            file=sys.stderr,
            flush=True,
        )
    return Components(
        data=data,
        model=model,
        params=params,
        gflops=gflops,
        memory_format=memory_format,
        forward=forward,
        eval_forward=eval_forward,
        train_loader=train_loader,
        val_loader=val_loader,
        test_loader=test_loader,
        mixer=mixer,
        steps_per_epoch=steps_per_epoch,
        optimizer=optimizer,
        base_lrs=base_lrs,
        scheduler=scheduler,
        lookahead=lookahead,
        ema=ema,
        criterion=criterion,
        autocast=autocast,
        precision=precision_name(autocast),
        freeze=freeze,
    )


def _check_batch(cfg: Config, train_images: int, d: Dist) -> None:
    if cfg.train.batch_size > train_images:
        raise UserError(
            f"train.batch_size={cfg.train.batch_size} is larger than the {train_images} training images; lower it."
        )
    if cfg.train.batch_size % d.world:
        raise UserError(
            f"train.batch_size={cfg.train.batch_size} is the global batch and must be divisible by "
            f"the {d.world} processes; use a multiple of {d.world}."
        )


def _check_low_res(cfg: Config, model: nn.Module) -> None:
    """``aug.low_res`` needs a model that takes the smaller images (a stack of pools can shrink them to nothing):
    one forward of an empty image at that size, before any run directory is written."""
    n = training_size(cfg.aug, cfg.train.epochs, 0)
    if n is None:
        return
    try:
        forward_gflops(model, image_size=n)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"aug.low_res={n}: model {cfg.model.name} cannot take {n}x{n} images ({reason}); use a larger "
            f"aug.low_res or switch it off with aug.low_res=0."
        ) from None


def _freeze(cfg: Config, model: nn.Module, d: Dist) -> list[tuple[Freeze, list[torch.Tensor]]]:
    """``train.freeze``'s entries with the trainable parameters each selects (before any is frozen); the loop
    sets their ``requires_grad`` at the start of every epoch."""
    if cfg.train.freeze and d.enabled:
        raise UserError(
            "train.freeze is not supported with several processes (DDP needs the same trained parameters "
            "every step); set train.freeze=[]."
        )
    return [
        (rule, select(model, rule.match, f"train.freeze[{i}].match")) for i, rule in enumerate(cfg.train.freeze)
    ]


def _model_train_options(cfg: Config, model: nn.Module, d: Dist) -> None:
    """Refuse train.* options this model or process count does not support."""
    if cfg.train.cuda_graph and d.enabled:
        raise UserError(
            "train.cuda_graph is not supported with several processes (DDP's gradient hooks are not "
            "captured); set it to false."
        )


def _forwards(cfg: Config, model: nn.Module, d: Dist) -> tuple[Callable, Callable]:
    """(training forward, evaluation forward): the model, wrapped for DDP when several processes train (only
    for training: each rank evaluates its own shard), compiled with ``train.compile``."""
    mode = None if cfg.train.compile_mode == "default" else cfg.train.compile_mode

    def compiled(m: Callable) -> Callable:
        return torch.compile(m, mode=mode) if cfg.train.compile else m

    forward = compiled(distributed.wrap(model, d) if d.enabled else model)
    return forward, (compiled(model) if d.enabled else forward)


def _loaders(
    cfg: Config, data: DataSplits, device: torch.device, d: Dist
) -> tuple[DeviceLoader, DeviceLoader | None, DeviceLoader]:
    """The training loader (shuffled, last short batch dropped, the configured augmentation; this rank's slice
    of every global batch) and the validation and test loaders (this rank's shard of each split)."""
    common = dict(device=device, channels_last=cfg.train.channels_last)
    train = training_loader(
        data, cfg.aug, cfg.train.batch_size, seed=cfg.run.seed, rank=d.rank, world_size=d.world, **common
    )
    eval_bs = cfg.train.eval_batch_size
    val, test = shard(data.val, d), shard(data.test, d)
    val_loader = DeviceLoader(val, eval_bs, data.mean, data.std, **common) if data.val else None
    return train, val_loader, DeviceLoader(test, eval_bs, data.mean, data.std, **common)


@torch.no_grad()
def _init_from_data(model: nn.Module, train_loader: DeviceLoader, init_images: int) -> None:
    """A model's data-dependent initialization, if it has one (``init_from_data(images)``, e.g. fastnet's
    whitening stem): the first ``init_images`` training images, normalized as training sees them (the same
    images on every rank and every run of a seed's split)."""
    init = getattr(model, "init_from_data", None)
    if init is not None:
        n = min(init_images, len(train_loader.images))
        init(train_loader.normalize(train_loader.images[:n]))
