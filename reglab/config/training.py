"""The training-side sections of a :class:`~reglab.config.Config`: ``train``, ``optim``, ``sched``, ``ema`` and
``run``, and the entries of ``optim.param_groups`` and ``train.freeze``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from ..errors import UserError
from ..typedyaml import require
from ..typedyaml import suggest as _suggest

# Kinds of parameter a selector (``match`` of optim.param_groups and train.freeze) names; reglab/train/params.py
# says which parameters each kind holds. Any other selector is a glob over parameter names (``whiten.*``).
PARAM_KINDS = ("norm", "bias", "conv", "linear")


def check_match(match: Union[str, list[str], None], key: str) -> list[str]:
    """A ``match`` value as a list of selectors, each a kind of :data:`PARAM_KINDS` or a parameter-name glob
    (one with a ``.``, ``*``, ``?`` or ``[``, as in ``head.weight`` or ``whiten.*``)."""
    selectors = [match] if isinstance(match, str) else list(match or [])
    if not selectors:
        raise UserError(
            f"{key} is missing: give a parameter kind ({', '.join(PARAM_KINDS)}) or a parameter-name glob "
            "(e.g. whiten.bias, head.*), or a list of them."
        )
    for sel in selectors:
        if sel not in PARAM_KINDS and not any(c in sel for c in ".*?["):
            raise UserError(
                f"{key}: {sel!r} is neither a parameter kind ({', '.join(PARAM_KINDS)}) nor a parameter-name "
                f"glob (it has no '.', '*', '?' or '[', e.g. whiten.bias, head.*){_suggest(sel, PARAM_KINDS)}."
            )
    return selectors


@dataclass
class ParamGroup:
    """One entry of ``optim.param_groups``: the trainable parameters ``match`` selects train at ``optim.lr *
    lr_scale`` with weight decay ``optim.weight_decay * wd_scale``. airbench's bias scaler is ``{match: norm,
    lr_scale: 64, wd_scale: 0.015625}`` (wd / 64: the same decay per step, lr * wd, as the other weights)."""

    match: Union[str, list[str], None] = None  # a kind (norm, bias, conv, linear), a name glob, or a list of them
    lr_scale: float = 1.0
    wd_scale: float = 1.0

    def validate(self, key: str) -> None:
        check_match(self.match, f"{key}.match")
        require(self.lr_scale > 0, f"{key}.lr_scale", self.lr_scale, "must be > 0")
        require(self.wd_scale >= 0, f"{key}.wd_scale", self.wd_scale, "must be >= 0")


@dataclass
class Freeze:
    """One entry of ``train.freeze``: the parameters ``match`` selects get no gradient (so no step, momentum or
    decay) in epochs ``start_epoch <= e < stop_epoch`` (0-based, as ``mix.*_epoch``) and train in the others.
    airbench's whitening bias, trained for 3 epochs: ``{match: whiten.bias, start_epoch: 3}``."""

    match: Union[str, list[str], None] = None  # as optim.param_groups' match
    start_epoch: int = 0
    stop_epoch: Optional[int] = None  # null: frozen to the end

    def frozen(self, epoch: int) -> bool:
        """Is the selection frozen in (0-based) ``epoch``?"""
        return self.start_epoch <= epoch and (self.stop_epoch is None or epoch < self.stop_epoch)

    def validate(self, key: str) -> None:
        check_match(self.match, f"{key}.match")
        require(self.start_epoch >= 0, f"{key}.start_epoch", self.start_epoch, "must be >= 0")
        if self.stop_epoch is not None:
            require(
                self.stop_epoch > self.start_epoch,
                f"{key}.stop_epoch",
                self.stop_epoch,
                f"must be > start_epoch ({self.start_epoch}), or null (frozen to the end)",
            )


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    loss: Literal["ce", "clamped_ce"] = "ce"  # clamped_ce: -sum t * log(clamp(softmax, 1e-5, 1))
    label_smoothing: float = 0.0
    smoothing_convention: Literal["torch", "others"] = "torch"  # eps/K on all, or 1-eps and eps/(K-1) elsewhere
    grad_clip: Optional[float] = None  # max global grad norm
    channels_last: bool = True
    amp: Literal["auto", "off", "bf16"] = (
        "auto"  # auto = bf16 on Ampere+ GPUs, CPUs with bf16 instructions; else fp32
    )
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"  # reduce-overhead: CUDA graphs
    # CUDA: replay forward+loss+backward as one CUDA graph, no compile (train/graph.py; tested on an H200)
    cuda_graph: bool = False
    cudnn_benchmark: bool = (
        False  # CUDA: time cuDNN's algorithms per shape and keep the fastest (not bit-reproducible)
    )
    tta: bool = False  # test-time augmentation: average each evaluated view with its mirror image
    # More views, each [dx, dy]: the image seen through a window moved by (dx, dy) px (reflect padding); the
    # unshifted view weighs 1/2, the shifted ones share the other 1/2. airbench's level 2: [[-1, -1], [1, 1]].
    tta_shifts: list[list[int]] = field(default_factory=list)
    init_images: int = 5000  # training images a model's data-dependent init sees (init_from_data: fastnet's stem)
    freeze: list[Freeze] = field(default_factory=list)  # parameters frozen for some epochs (see Freeze)
    sync_bn: bool = False  # multi-process (torchrun) only: batch-norm statistics over the global batch

    def validate(self) -> None:
        require(self.epochs >= 1, "train.epochs", self.epochs, "must be >= 1")
        require(self.batch_size >= 1, "train.batch_size", self.batch_size, "must be >= 1")
        require(self.eval_batch_size >= 1, "train.eval_batch_size", self.eval_batch_size, "must be >= 1")
        require(
            0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", self.label_smoothing, "must be in [0, 1)"
        )
        if self.grad_clip is not None:
            require(self.grad_clip > 0, "train.grad_clip", self.grad_clip, "must be > 0 or null")
        for i, shift in enumerate(self.tta_shifts):
            require(
                len(shift) == 2 and all(-4 <= d <= 4 for d in shift) and any(shift),
                f"train.tta_shifts[{i}]",
                shift,
                "must be [dx, dy], pixels in [-4, 4], not [0, 0] (the unshifted view is always there)",
            )
        require(
            len({tuple(s) for s in self.tta_shifts}) == len(self.tta_shifts),
            "train.tta_shifts",
            self.tta_shifts,
            "must not repeat a shift",
        )
        if self.cuda_graph and self.compile:
            raise UserError(
                "train.cuda_graph and train.compile are both true: add train.compile=false to graph the "
                "eager step, or train.cuda_graph=false (train.compile_mode=reduce-overhead is the "
                "compiled way to CUDA graphs)."
            )
        require(self.init_images >= 1, "train.init_images", self.init_images, "must be >= 1")
        for i, rule in enumerate(self.freeze):
            rule.validate(f"train.freeze[{i}]")


@dataclass
class OptimConfig:
    name: Literal["sgd", "muon", "adam", "adamw", "adadelta", "adagrad"] = (
        "sgd"  # muon: conv filters; SGD the rest
    )
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    wd_exempt_norm_bias: bool = False  # no weight decay on norm weights and biases
    # lr and weight-decay multipliers for the parameters each entry selects (see ParamGroup); the first entry
    # that selects a parameter sets its scales, the others keep optim.lr and optim.weight_decay.
    param_groups: list[ParamGroup] = field(default_factory=list)
    lookahead: bool = False  # Lookahead (Zhang et al. 2019) with airbench's slow-weight decay schedule, any model
    lookahead_every: int = 5  # steps between slow-weight updates
    lookahead_decay: float = 0.7738  # final slow-weight decay (0.95^5); d_t = decay * (t/T)^power
    lookahead_power: float = 3.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: Optional[float] = None  # optimizer default when null
    rho: float = 0.9  # Adadelta
    # Muon's own hyperparameters (optim.name=muon: Muon on every conv filter, SGD with lr/momentum/nesterov above
    # on the rest, param_groups' scales included; reglab/train/optim.py muon_groups)
    muon_lr: float = 0.02  # lr of the conv filters
    muon_momentum: float = 0.95  # Nesterov momentum of the Muon update
    muon_ns_steps: int = 5  # Newton-Schulz steps (airbench94_muon: 3)
    muon_normalize: bool = False  # filters rescaled to norm sqrt(out channels) each step (airbench94_muon)
    muon_weight_decay: float = 0.0  # decoupled: W <- W (1 - muon_lr * this)

    def validate(self) -> None:
        require(self.lr > 0, "optim.lr", self.lr, "must be > 0")
        require(0 <= self.momentum < 1, "optim.momentum", self.momentum, "must be in [0, 1)")
        require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "optim.betas",
            self.betas,
            "must be two numbers in [0, 1)",
        )
        for i, group in enumerate(self.param_groups):
            group.validate(f"optim.param_groups[{i}]")
        require(self.lookahead_every >= 1, "optim.lookahead_every", self.lookahead_every, "must be >= 1")
        require(0 <= self.lookahead_decay < 1, "optim.lookahead_decay", self.lookahead_decay, "must be in [0, 1)")
        require(self.lookahead_power >= 0, "optim.lookahead_power", self.lookahead_power, "must be >= 0")
        require(self.muon_lr > 0, "optim.muon_lr", self.muon_lr, "must be > 0")
        require(0 <= self.muon_momentum < 1, "optim.muon_momentum", self.muon_momentum, "must be in [0, 1)")
        require(1 <= self.muon_ns_steps <= 20, "optim.muon_ns_steps", self.muon_ns_steps, "must be in 1..20")
        require(self.muon_weight_decay >= 0, "optim.muon_weight_decay", self.muon_weight_decay, "must be >= 0")
        if self.nesterov and (self.name not in ("sgd", "muon") or self.momentum == 0):
            raise UserError("optim.nesterov=true needs optim.name=sgd (or muon) and optim.momentum > 0.")


@dataclass
class SchedConfig:
    name: Literal[
        "constant", "step", "multistep", "cosine", "cosine_restarts", "onecycle", "cosine_cycles_decay", "linear"
    ] = "cosine"
    warmup_epochs: float = 0.0  # linear warm-up in front of any schedule
    warmup_start: Optional[float] = None  # warm-up's first lr as a fraction of the peak; null = 1/(steps+1)
    step_size: int = 30  # step
    milestones: list[int] = field(default_factory=lambda: [100, 150])  # multistep
    gamma: float = 0.1  # step, multistep, cosine_cycles_decay
    t0: int = 50  # cosine_restarts / cosine_cycles_decay: cycle length in epochs
    t_mult: int = 1  # cosine_restarts
    decay_every: int = 80  # cosine_cycles_decay: peak lr times gamma every this many epochs
    min_lr: float = 0.0
    pct_start: float = 0.25  # onecycle

    def validate(self) -> None:
        require(self.warmup_epochs >= 0, "sched.warmup_epochs", self.warmup_epochs, "must be >= 0")
        if self.warmup_start is not None:
            require(
                0 < self.warmup_start <= 1, "sched.warmup_start", self.warmup_start, "must be in (0, 1] or null"
            )
        require(self.step_size >= 1, "sched.step_size", self.step_size, "must be >= 1")
        require(0 < self.gamma <= 1, "sched.gamma", self.gamma, "must be in (0, 1]")
        require(self.t0 >= 1, "sched.t0", self.t0, "must be >= 1")
        require(self.t_mult >= 1, "sched.t_mult", self.t_mult, "must be >= 1")
        require(self.decay_every >= 1, "sched.decay_every", self.decay_every, "must be >= 1")
        require(self.min_lr >= 0, "sched.min_lr", self.min_lr, "must be >= 0")
        require(0 < self.pct_start < 1, "sched.pct_start", self.pct_start, "must be in (0, 1)")


@dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = 0.999  # per optimizer step
    warmup_steps: int = 0  # effective decay min(decay, (1+t)/(10+t)) while t < warmup_steps
    every: int = 1  # update every this many steps

    def validate(self) -> None:
        require(0 < self.decay < 1, "ema.decay", self.decay, "must be in (0, 1)")
        require(self.warmup_steps >= 0, "ema.warmup_steps", self.warmup_steps, "must be >= 0")
        require(self.every >= 1, "ema.every", self.every, "must be >= 1")


@dataclass
class RunConfig:
    name: Optional[str] = None  # defaults to the recipe's file name
    dir: Optional[str] = None  # defaults to runs/<name>-<timestamp>
    seed: int = 0  # 0 .. 2^32 - 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None  # torch intra-op threads on CPU, >= 1; null = torch's default (all cores)
    checkpoint_every: int = 0  # also keep epoch_N checkpoints every N epochs; 0 = only last and best
    save_every_s: float = 0.0  # write last/best at most every N seconds (always at the end); 0 = every epoch
    eval_test_every: int = 1  # evaluate the test set every N epochs (and always at the end)
    budget: Optional[str] = None  # name of a budget from the recipe's `budgets:` section (e.g. cpu, smoke)
    loggers: list[Literal["tensorboard", "wandb"]] = field(default_factory=list)  # mirrors of the metrics
    wandb_project: str = "reglab"  # W&B project; offline unless WANDB_MODE=online is set

    def validate(self) -> None:
        require(0 <= self.seed < 2**32, "run.seed", self.seed, "must be in 0 .. 4294967295 (2^32 - 1)")
        if self.threads is not None:
            require(
                1 <= self.threads <= 1024,
                "run.threads",
                self.threads,
                "must be in 1 .. 1024, or null for torch's default (all cores)",
            )
        require(self.checkpoint_every >= 0, "run.checkpoint_every", self.checkpoint_every, "must be >= 0")
        require(self.save_every_s >= 0, "run.save_every_s", self.save_every_s, "must be >= 0 (0: every epoch)")
        require(self.eval_test_every >= 1, "run.eval_test_every", self.eval_test_every, "must be >= 1")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise UserError(f"run.device: {dev!r} is not a device; use auto, cpu, cuda or cuda:N.")
