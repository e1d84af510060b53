"""The training-side sections of a :class:`~reglab.config.Config`: ``train``, ``optim``, ``sched``, ``ema``, ``run``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..errors import UserError
from ..typedyaml import check as _check


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
    cuda_graph: bool = False  # CUDA: replay forward+loss+backward as one CUDA graph, no compile (train/graph.py)
    cudnn_benchmark: bool = (
        False  # CUDA: time cuDNN's algorithms per shape and keep the fastest (not bit-reproducible)
    )
    tta: bool = False  # evaluate with horizontal-flip test-time augmentation
    tta_translate: int = 0  # with tta: also average views shifted by +-k px (airbench's level 2); 0 = off
    init_images: int = 5000  # training images that set data-dependent inits (fastnet's whitening stem)
    whiten_bias_epochs: Optional[int] = (
        None  # fastnet: train the whitening stem's bias this many epochs, then freeze it
    )
    sync_bn: bool = False  # multi-process (torchrun) only: batch-norm statistics over the global batch

    def validate(self) -> None:
        _check(self.epochs >= 1, "train.epochs", self.epochs, "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, "must be >= 1")
        _check(self.eval_batch_size >= 1, "train.eval_batch_size", self.eval_batch_size, "must be >= 1")
        _check(
            0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", self.label_smoothing, "must be in [0, 1)"
        )
        if self.grad_clip is not None:
            _check(self.grad_clip > 0, "train.grad_clip", self.grad_clip, "must be > 0 or null")
        _check(0 <= self.tta_translate <= 4, "train.tta_translate", self.tta_translate, "must be in [0, 4] pixels")
        if self.tta_translate and not self.tta:
            raise UserError("train.tta_translate needs train.tta=true (the shifted views are flip-averaged too).")
        if self.cuda_graph and self.compile:
            raise UserError(
                "train.cuda_graph and train.compile are both true: add train.compile=false to graph the "
                "eager step, or train.cuda_graph=false (train.compile_mode=reduce-overhead is the "
                "compiled way to CUDA graphs)."
            )
        _check(self.init_images >= 1, "train.init_images", self.init_images, "must be >= 1")
        if self.whiten_bias_epochs is not None:
            _check(
                self.whiten_bias_epochs >= 0,
                "train.whiten_bias_epochs",
                self.whiten_bias_epochs,
                "must be >= 0 or null (train it throughout)",
            )


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
    norm_lr_scale: float = 1.0  # lr x this for norm-layer params (BN shifts), their decay / this (airbench)
    norm_lr_scale_on: Literal["norm", "norm_and_bias"] = "norm"  # norm_and_bias: every other bias too
    lookahead: bool = False  # Lookahead with airbench's schedule (reglab/train/lookahead.py)
    lookahead_every: int = 5  # steps between slow-weight updates
    lookahead_decay: float = 0.7738  # final slow-weight decay (0.95^5); d_t = decay * (t/T)^power
    lookahead_power: float = 3.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: Optional[float] = None  # optimizer default when null
    rho: float = 0.9  # Adadelta
    muon_lr: float = 0.02  # optim.name=muon: lr of the conv filters (Muon); lr/momentum/nesterov above: the rest
    muon_momentum: float = 0.95  # Nesterov momentum of the Muon update
    muon_ns_steps: int = 5  # Newton-Schulz steps (airbench94_muon: 3)
    muon_normalize: bool = False  # filters rescaled to norm sqrt(out channels) each step (airbench94_muon)
    muon_weight_decay: float = 0.0  # decoupled: W <- W (1 - muon_lr * this)

    def validate(self) -> None:
        _check(self.lr > 0, "optim.lr", self.lr, "must be > 0")
        _check(0 <= self.momentum < 1, "optim.momentum", self.momentum, "must be in [0, 1)")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        _check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "optim.betas",
            self.betas,
            "must be two numbers in [0, 1)",
        )
        _check(self.norm_lr_scale > 0, "optim.norm_lr_scale", self.norm_lr_scale, "must be > 0")
        _check(self.lookahead_every >= 1, "optim.lookahead_every", self.lookahead_every, "must be >= 1")
        _check(0 <= self.lookahead_decay < 1, "optim.lookahead_decay", self.lookahead_decay, "must be in [0, 1)")
        _check(self.lookahead_power >= 0, "optim.lookahead_power", self.lookahead_power, "must be >= 0")
        _check(self.muon_lr > 0, "optim.muon_lr", self.muon_lr, "must be > 0")
        _check(0 <= self.muon_momentum < 1, "optim.muon_momentum", self.muon_momentum, "must be in [0, 1)")
        _check(1 <= self.muon_ns_steps <= 20, "optim.muon_ns_steps", self.muon_ns_steps, "must be in 1..20")
        _check(self.muon_weight_decay >= 0, "optim.muon_weight_decay", self.muon_weight_decay, "must be >= 0")
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
        _check(self.warmup_epochs >= 0, "sched.warmup_epochs", self.warmup_epochs, "must be >= 0")
        if self.warmup_start is not None:
            _check(
                0 < self.warmup_start <= 1, "sched.warmup_start", self.warmup_start, "must be in (0, 1] or null"
            )
        _check(self.step_size >= 1, "sched.step_size", self.step_size, "must be >= 1")
        _check(0 < self.gamma <= 1, "sched.gamma", self.gamma, "must be in (0, 1]")
        _check(self.t0 >= 1, "sched.t0", self.t0, "must be >= 1")
        _check(self.t_mult >= 1, "sched.t_mult", self.t_mult, "must be >= 1")
        _check(self.decay_every >= 1, "sched.decay_every", self.decay_every, "must be >= 1")
        _check(self.min_lr >= 0, "sched.min_lr", self.min_lr, "must be >= 0")
        _check(0 < self.pct_start < 1, "sched.pct_start", self.pct_start, "must be in (0, 1)")


@dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = 0.999  # per optimizer step
    warmup_steps: int = 0  # effective decay min(decay, (1+t)/(10+t)) while t < warmup_steps
    every: int = 1  # update every this many steps

    def validate(self) -> None:
        _check(0 < self.decay < 1, "ema.decay", self.decay, "must be in (0, 1)")
        _check(self.warmup_steps >= 0, "ema.warmup_steps", self.warmup_steps, "must be >= 0")
        _check(self.every >= 1, "ema.every", self.every, "must be >= 1")


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
        _check(0 <= self.seed < 2**32, "run.seed", self.seed, "must be in 0 .. 4294967295 (2^32 - 1)")
        if self.threads is not None:
            _check(
                1 <= self.threads <= 1024,
                "run.threads",
                self.threads,
                "must be in 1 .. 1024, or null for torch's default (all cores)",
            )
        _check(self.checkpoint_every >= 0, "run.checkpoint_every", self.checkpoint_every, "must be >= 0")
        _check(self.save_every_s >= 0, "run.save_every_s", self.save_every_s, "must be >= 0 (0: every epoch)")
        _check(self.eval_test_every >= 1, "run.eval_test_every", self.eval_test_every, "must be >= 1")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise UserError(f"run.device: {dev!r} is not a device; use auto, cpu, cuda or cuda:N.")
