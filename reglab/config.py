"""Typed configuration: YAML recipes plus dotted ``key=value`` overrides, validated once.

A :class:`Config` is a tree of dataclasses, one per section (``data``, ``aug``, ``mix``, ``model``, ``train``,
``optim``, ``sched``, ``ema``, ``run``). :func:`load_config` reads a recipe, applies overrides such as
``optim.lr=0.05`` or ``model.channels=[32,64,128]`` (values are parsed as YAML), checks every key and
type, and runs each section's ``validate``. Every mistake becomes one :class:`UserError` that says what is
wrong and how to fix it. Code past this point may assume a valid config.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .errors import UserError
from .typedyaml import build, parse_override, read_yaml, set_dotted
from .typedyaml import check as _check
from .typedyaml import suggest as _suggest

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
# What `reglab train` and `make train` run when no recipe is named (recipes/default.yaml: the most accurate recipe
# whose whole `make train` fits 10 minutes on a 2-core CPU with bf16 instructions).
DEFAULT_RECIPE = "default"


@dataclass
class DataConfig:
    dataset: Literal["cifar10", "cifar100", "synthetic"] = "cifar10"
    dir: Optional[str] = None  # else $REGLAB_DATA, else ./data
    download: bool = True  # fetch the official archive when the files are missing
    val_size: int = 5000  # stratified hold-out carved from the training set; 0 = none
    split_seed: int = 0  # fixed seed of the validation split (independent of run.seed)
    train_subset: Optional[int] = None  # use only this many training images (stratified), for CPU budgets
    cifar100_labels: Literal["fine", "coarse"] = "fine"
    synthetic_train: int = 2000  # sizes of the synthetic dataset
    synthetic_test: int = 500
    synthetic_classes: int = 10

    def validate(self) -> None:
        _check(
            self.val_size >= 0, "data.val_size", self.val_size, "must be >= 0 (0 disables the validation split)"
        )
        if self.train_subset is not None:
            _check(self.train_subset > 0, "data.train_subset", self.train_subset, "must be > 0 or null")
        _check(self.synthetic_train > 0, "data.synthetic_train", self.synthetic_train, "must be > 0")
        _check(self.synthetic_test > 0, "data.synthetic_test", self.synthetic_test, "must be > 0")
        _check(self.synthetic_classes >= 2, "data.synthetic_classes", self.synthetic_classes, "must be >= 2")


def _augmentations():
    """The batch-augmentation registry (:data:`reglab.data.augment.AUGMENTATIONS`). Imported on use, not at the
    top: data/ imports this module (a cycle otherwise), and `import reglab.config` stays free of torch."""
    from .data.augment import AUGMENTATIONS

    return AUGMENTATIONS


@dataclass
class AugConfig:
    crop_pad: int = 4  # random crop after padding by this many pixels; 0 = off
    pad_mode: Literal["zero", "reflect"] = "reflect"
    flip: bool = True  # random horizontal flip, p = 0.5 per sample
    flip_mode: Literal["random", "alternating"] = "random"  # alternating: airbench's flip every other epoch
    rotation: float = 0.0  # random rotation by an angle uniform in [-deg, deg]; 0 = off
    policy: Optional[Literal["autoaugment", "randaugment", "trivialaugment"]] = None
    ra_num_ops: int = 2  # RandAugment N
    ra_magnitude: int = 9  # RandAugment M (of 31 bins)
    solarize_p: float = 0.0  # solarize (AutoAugment's operation on its own): probability per image; 0 = off
    solarize_threshold: int = 128  # solarize inverts pixel values >= this (PIL's default threshold)
    cutout_holes: int = 0  # cutout (DeVries & Taylor, 2017): square holes of side cutout_size; 0 = off
    cutout_size: int = 8
    erasing_p: float = 0.0  # random erasing (Zhong et al., 2020): probability per image; 0 = off
    erasing_scale: list[float] = field(default_factory=lambda: [0.02, 0.33])
    erasing_ratio: list[float] = field(default_factory=lambda: [0.3, 3.3])
    erasing_value: Literal["zero", "random"] = "zero"
    # Order of application within each stage (raw pixels before normalization, normalized images after it);
    # names, stages and the default order: reglab.data.augment.AUGMENTATIONS.
    order: list[str] = field(default_factory=lambda: [a.name for a in _augmentations()])

    def validate(self) -> None:
        _check(0 <= self.crop_pad <= 16, "aug.crop_pad", self.crop_pad, "must be in [0, 16]")
        _check(0 <= self.rotation <= 180, "aug.rotation", self.rotation, "must be in [0, 180] degrees")
        _check(self.ra_num_ops >= 1, "aug.ra_num_ops", self.ra_num_ops, "must be >= 1")
        _check(0 <= self.ra_magnitude <= 30, "aug.ra_magnitude", self.ra_magnitude, "must be in [0, 30]")
        _check(
            0 <= self.solarize_p <= 1,
            "aug.solarize_p",
            self.solarize_p,
            "must be a probability in [0, 1] (0 = off)",
        )
        _check(
            0 <= self.solarize_threshold <= 255,
            "aug.solarize_threshold",
            self.solarize_threshold,
            "must be a pixel value in [0, 255] (values >= it are inverted)",
        )
        _check(self.cutout_holes >= 0, "aug.cutout_holes", self.cutout_holes, "must be >= 0")
        _check(1 <= self.cutout_size <= 32, "aug.cutout_size", self.cutout_size, "must be in [1, 32]")
        _check(0 <= self.erasing_p <= 1, "aug.erasing_p", self.erasing_p, "must be a probability in [0, 1]")
        lo, hi = (self.erasing_scale + [0, 0])[:2]
        _check(
            len(self.erasing_scale) == 2 and 0 < lo <= hi < 1,
            "aug.erasing_scale",
            self.erasing_scale,
            "must be [lo, hi] with 0 < lo <= hi < 1",
        )
        _check(
            len(self.erasing_ratio) == 2 and 0 < self.erasing_ratio[0] <= self.erasing_ratio[1],
            "aug.erasing_ratio",
            self.erasing_ratio,
            "must be [lo, hi] with 0 < lo <= hi",
        )
        known = [a.name for a in _augmentations()]
        for name in self.order:
            if name not in known:
                raise UserError(
                    f"aug.order: unknown augmentation {name!r}{_suggest(name, known)}; "
                    f"use any of {', '.join(known)}."
                )
        _check(len(set(self.order)) == len(self.order), "aug.order", self.order, "must not repeat an entry")
        left_out = [name for name in self.enabled() if name not in self.order]
        if left_out:
            raise UserError(
                f"aug.order leaves out {', '.join(left_out)}, which is switched on, so it would never "
                f"run; add it to aug.order (e.g. aug.order=[{','.join([*self.order, *left_out])}]) "
                f"or switch it off."
            )

    def enabled(self) -> list[str]:
        """The augmentations this config switches on, by their aug.order names."""
        return [a.name for a in _augmentations() if a.enabled(self)]


@dataclass
class MixConfig:
    mixup_alpha: float = 0.0  # mixup, lambda ~ Beta(a, a); 0 = off
    cutmix_alpha: float = 0.0  # cutmix, lambda ~ Beta(a, a); 0 = off
    switch_prob: float = 0.5  # with both on: probability a batch uses cutmix
    prob: float = 1.0  # probability a batch is mixed at all
    per_sample: bool = False  # one lambda per sample instead of one per batch
    lam_x: Literal["beta", "uniform", "fixed"] = "beta"  # image ratio (decoupled: may differ from lam_y)
    lam_x_range: list[float] = field(default_factory=lambda: [0.0, 1.0])  # uniform [l1, l2]; fixed uses l1
    lam_y: Literal["tied", "beta", "uniform", "fixed"] = "tied"  # label ratio; tied = same as the image's
    lam_y_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    start_epoch: int = 0  # mixing active for epochs start_epoch <= e < stop_epoch (0-based)
    stop_epoch: Optional[int] = None

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0 or self.lam_x != "beta"

    def validate(self) -> None:
        _check(self.mixup_alpha >= 0, "mix.mixup_alpha", self.mixup_alpha, "must be >= 0 (0 = off)")
        _check(self.cutmix_alpha >= 0, "mix.cutmix_alpha", self.cutmix_alpha, "must be >= 0 (0 = off)")
        for key in ("switch_prob", "prob"):
            _check(
                0 <= getattr(self, key) <= 1, f"mix.{key}", getattr(self, key), "must be a probability in [0, 1]"
            )
        for key in ("lam_x_range", "lam_y_range"):
            r = getattr(self, key)
            _check(
                len(r) == 2 and 0 <= r[0] <= r[1] <= 1, f"mix.{key}", r, "must be [l1, l2] with 0 <= l1 <= l2 <= 1"
            )
        if self.lam_y == "beta" and self.mixup_alpha <= 0:
            raise UserError(
                "mix.lam_y=beta draws from Beta(mix.mixup_alpha, mix.mixup_alpha); set mix.mixup_alpha > 0."
            )
        if self.lam_x == "beta" and self.lam_y != "tied" and self.mixup_alpha <= 0:
            raise UserError(
                f"decoupled mixing (mix.lam_y={self.lam_y}) with mix.lam_x=beta needs mix.mixup_alpha > 0."
            )
        _check(self.start_epoch >= 0, "mix.start_epoch", self.start_epoch, "must be >= 0")
        if self.stop_epoch is not None:
            _check(
                self.stop_epoch > self.start_epoch, "mix.stop_epoch", self.stop_epoch, "must be > mix.start_epoch"
            )


@dataclass
class ModelConfig:
    name: str = "resnet18"  # a preset from `reglab models`; the fields below override it when set
    block: Optional[Literal["basic", "bottleneck"]] = None
    blocks: Optional[list[int]] = None  # B: blocks per stage
    channels: Optional[list[int]] = None  # C: channels per stage
    kernel_size: Optional[int] = None  # F
    skip_kernel: Optional[int] = None  # K (projection shortcut kernel)
    shortcut: Optional[Literal["conv", "pad"]] = None  # projection conv, or He et al.'s option A
    pool_size: Optional[int] = None  # P: final average pool; null = global
    preact: Optional[bool] = None
    act: Optional[Literal["relu", "gelu", "silu", "elu", "leaky_relu", "mish"]] = None
    stem_width: Optional[int] = None
    stem_stride: Optional[int] = None  # 1 (default) keeps 32x32; 2 halves the resolution at the stem
    zero_init_residual: Optional[bool] = None  # zero the last BN gamma of each residual branch
    resnet_d: Optional[bool] = None  # deep 3-conv stem + average-pool shortcuts (ResNet-D)
    se_ratio: Optional[float] = None  # squeeze-and-excitation reduction ratio (e.g. 0.25); null = off
    drop_path: Optional[float] = None  # stochastic depth: drop rate of the last block, linear from 0
    dropout: Optional[float] = None  # dropout before the classifier
    bn_dropout: Optional[list[float]] = None  # dropout rates in place of the blocks' batch norms, one per conv

    def validate(self) -> None:
        # model.name is checked against the presets by reglab.models.build (config sits below models).
        if self.blocks is not None and self.channels is not None and len(self.blocks) != len(self.channels):
            raise UserError(
                f"model.blocks has {len(self.blocks)} stages but model.channels has "
                f"{len(self.channels)}; give one channel count per stage."
            )
        for key in ("blocks", "channels"):
            val = getattr(self, key)
            if val is not None:
                _check(
                    len(val) >= 1 and all(v >= 1 for v in val),
                    f"model.{key}",
                    val,
                    "must be a non-empty list of positive integers",
                )
        for key in ("drop_path", "dropout", "se_ratio"):
            val = getattr(self, key)
            if val is not None:
                _check(
                    0 <= val < 1 if key != "se_ratio" else 0 < val <= 1,
                    f"model.{key}",
                    val,
                    "must be in [0, 1)" if key != "se_ratio" else "must be in (0, 1]",
                )
        if self.bn_dropout is not None:
            _check(
                all(0 <= p < 1 for p in self.bn_dropout),
                "model.bn_dropout",
                self.bn_dropout,
                "must be a list of probabilities in [0, 1)",
            )
        for key in ("kernel_size", "skip_kernel"):
            val = getattr(self, key)
            if val is not None:
                _check(val >= 1 and val % 2 == 1, f"model.{key}", val, "must be a positive odd integer")

    def overrides(self) -> dict[str, Any]:
        """Builder keyword arguments set explicitly (everything but ``name`` that is not None)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "name" and getattr(self, f.name) is not None
        }


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


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> "Config":
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        if self.sched.min_lr > self.optim.lr:
            raise UserError(
                f"sched.min_lr={self.sched.min_lr} is above optim.lr={self.optim.lr}: the schedule would "
                "raise the lr instead of lowering it; set sched.min_lr <= optim.lr (0 by default)."
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def resolve_recipe(recipe: str | Path) -> Path:
    """A path to a YAML file, or the name of a recipe in ``recipes/`` (``quick`` -> recipes/quick.yaml)."""
    path = Path(recipe)
    if path.is_file():
        return path
    if path.is_dir():
        yamls = sorted(p.name for p in path.glob("*.yaml"))[:5]
        raise UserError(
            f"recipe {str(recipe)!r} is a directory, not a YAML file"
            f"{'; it holds ' + ', '.join(yamls) if yamls else ''}. Give the file itself."
        )
    if path.exists():
        raise UserError(f"recipe {str(recipe)!r} is not a regular file (a FIFO or device); give a YAML file.")
    for cand in (RECIPES_DIR / f"{recipe}.yaml", RECIPES_DIR / f"{recipe}"):
        if cand.is_file():
            return cand
    known = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR.is_dir() else []
    raise UserError(
        f"recipe {str(recipe)!r} not found: give a YAML file path or one of: "
        f"{', '.join(known) or '(no recipes installed)'}{_suggest(str(recipe), known)}."
    )


def _budgets(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    """A recipe's ``budgets:`` section checked: name -> mapping of dotted keys (``train.epochs``) to values."""
    if not isinstance(raw, dict):
        raise UserError(
            f"{where}: budgets must be a mapping of name -> {{dotted.key: value}}, e.g. "
            f"budgets: {{cpu: {{train.epochs: 5, data.train_subset: 10000}}}}; got {raw!r}."
        )
    out: dict[str, dict[str, Any]] = {}
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise UserError(
                f"{where}: budgets.{name} must be a mapping of dotted keys to values, e.g. "
                f"{{train.epochs: 5, data.train_subset: 10000}}; got {values!r}."
            )
        for key in values:
            if not isinstance(key, str) or "." not in key:
                raise UserError(f"{where}: budgets.{name}: key {key!r} must be dotted, e.g. train.epochs: 5.")
            if key == "run.budget":
                raise UserError(f"{where}: budgets.{name} must not set run.budget.")
        sub: dict[str, Any] = {}
        try:  # keys and types of every budget, used or not, so a typo shows on the first load
            for key, value in values.items():
                set_dotted(sub, key, value)
            build(Config, sub, "")
        except UserError as exc:
            raise UserError(f"{where}: budgets.{name}: {exc}") from None
        out[str(name)] = values
    return out


def load_config(
    recipe: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> Config:
    """Recipe file (or name) + overrides -> validated :class:`Config`.

    A recipe may have a top-level ``budgets:`` section, name -> ``{dotted.key: value}``. ``run.budget=NAME``
    (among the overrides, or ``run: {budget: NAME}`` in the recipe) applies that budget between the recipe and
    the overrides: recipe tree -> budget -> overrides, so the command line wins. ``budgets`` itself is not part
    of the Config; ``run.budget`` is, so a run's config.yaml records which budget it ran. A base tree (a run's
    saved config) has the budget already applied: its ``run.budget`` is kept as a record only.

    ``base`` is a config tree (e.g. a run's saved config.yaml) used instead of a recipe; passing both is an
    error. Neither ``base`` nor the recipe's tree is modified."""
    if recipe is not None and base is not None:
        raise ValueError("give a recipe or a base tree, not both")
    tree: dict[str, Any] = copy.deepcopy(base or {})
    name = None
    where = "the config"
    if recipe is not None:
        path = resolve_recipe(recipe)
        tree = read_yaml(path)
        name = path.stem
        where = str(path)
    parsed = [parse_override(text) for text in overrides]
    budgets = _budgets(tree.pop("budgets"), where) if "budgets" in tree else None
    run_tree = tree.get("run")
    recorded = run_tree.get("budget") if isinstance(run_tree, dict) else None
    selected = recorded
    for key, value in parsed:
        if key == "run.budget":
            selected = value
    if selected is not None:
        selected = str(selected)
        if budgets is None:
            if base is None or str(recorded) != selected:  # a saved config keeps its (applied) budget
                raise UserError(
                    f"run.budget={selected}: {where} has no budgets: section; drop run.budget "
                    f"or add budgets: {{{selected}: {{train.epochs: ..., data.train_subset: ...}}}}."
                )
        elif selected not in budgets:
            raise UserError(
                f"run.budget: unknown budget {selected!r}{_suggest(selected, budgets)}; {where} "
                f"has: {', '.join(budgets) or '(none)'}."
            )
        else:
            for key, value in budgets[selected].items():
                set_dotted(tree, key, copy.deepcopy(value))
    for key, value in parsed:
        set_dotted(tree, key, value)
    cfg = build(Config, tree, "")
    if cfg.run.name is None and name is not None:
        cfg.run.name = name
    return cfg.validate()


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a config saved with :meth:`Config.to_dict` (e.g. from a run directory)."""
    return build(Config, tree, "").validate()
