"""The data-side sections of a :class:`~reglab.config.Config`: ``data``, ``aug``, ``mix`` and ``model``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ..errors import UserError
from ..typedyaml import require
from ..typedyaml import suggest as _suggest


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
        require(
            self.val_size >= 0, "data.val_size", self.val_size, "must be >= 0 (0 disables the validation split)"
        )
        if self.train_subset is not None:
            require(self.train_subset > 0, "data.train_subset", self.train_subset, "must be > 0 or null")
        require(self.synthetic_train > 0, "data.synthetic_train", self.synthetic_train, "must be > 0")
        require(self.synthetic_test > 0, "data.synthetic_test", self.synthetic_test, "must be > 0")
        require(self.synthetic_classes >= 2, "data.synthetic_classes", self.synthetic_classes, "must be >= 2")


def _augmentations():
    """The batch-augmentation registry (:data:`reglab.data.augment.AUGMENTATIONS`). Imported on use, not at the
    top: data/ imports this module (a cycle otherwise), and `import reglab.config` stays free of torch."""
    from ..data.augment import AUGMENTATIONS

    return AUGMENTATIONS


@dataclass
class AugConfig:
    crop_pad: int = 4  # random crop after padding by this many pixels; 0 = off
    pad_mode: Literal["zero", "reflect"] = "reflect"
    flip: bool = True  # random horizontal flip, p = 0.5 per sample
    flip_mode: Literal["random", "alternating"] = "random"  # alternating: each image mirrored every other epoch
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
    # Progressive resizing (Howard's fast.ai DAWNBench entry, 2018; FFCV, Leclerc et al., 2023): the first
    # low_res_epochs epochs (never the last of train.epochs) train on the augmented images average-pooled down to
    # low_res x low_res, the cheaper steps of a smaller input; later epochs and every evaluation use the full
    # size. Either at 0 = off.
    low_res: int = 0
    low_res_epochs: int = 0
    # Order of application within each stage (raw pixels before normalization, normalized images after it);
    # names, stages and the default order: reglab.data.augment.AUGMENTATIONS.
    order: list[str] = field(default_factory=lambda: [a.name for a in _augmentations()])

    def validate(self) -> None:
        require(0 <= self.crop_pad <= 16, "aug.crop_pad", self.crop_pad, "must be in [0, 16]")
        require(0 <= self.rotation <= 180, "aug.rotation", self.rotation, "must be in [0, 180] degrees")
        require(self.ra_num_ops >= 1, "aug.ra_num_ops", self.ra_num_ops, "must be >= 1")
        require(0 <= self.ra_magnitude <= 30, "aug.ra_magnitude", self.ra_magnitude, "must be in [0, 30]")
        require(
            0 <= self.solarize_p <= 1,
            "aug.solarize_p",
            self.solarize_p,
            "must be a probability in [0, 1] (0 = off)",
        )
        require(
            0 <= self.solarize_threshold <= 255,
            "aug.solarize_threshold",
            self.solarize_threshold,
            "must be a pixel value in [0, 255] (values >= it are inverted)",
        )
        require(self.cutout_holes >= 0, "aug.cutout_holes", self.cutout_holes, "must be >= 0")
        require(1 <= self.cutout_size <= 32, "aug.cutout_size", self.cutout_size, "must be in [1, 32]")
        require(0 <= self.erasing_p <= 1, "aug.erasing_p", self.erasing_p, "must be a probability in [0, 1]")
        lo, hi = (self.erasing_scale + [0, 0])[:2]
        require(
            len(self.erasing_scale) == 2 and 0 < lo <= hi < 1,
            "aug.erasing_scale",
            self.erasing_scale,
            "must be [lo, hi] with 0 < lo <= hi < 1",
        )
        require(
            len(self.erasing_ratio) == 2 and 0 < self.erasing_ratio[0] <= self.erasing_ratio[1],
            "aug.erasing_ratio",
            self.erasing_ratio,
            "must be [lo, hi] with 0 < lo <= hi",
        )
        require(
            self.low_res == 0 or 8 <= self.low_res < 32,
            "aug.low_res",
            self.low_res,
            "must be a side in [8, 32) pixels (the early epochs' training size), or 0 for off",
        )
        require(self.low_res_epochs >= 0, "aug.low_res_epochs", self.low_res_epochs, "must be >= 0 (0 = off)")
        known = [a.name for a in _augmentations()]
        for name in self.order:
            if name not in known:
                raise UserError(
                    f"aug.order: unknown augmentation {name!r}{_suggest(name, known)}; "
                    f"use any of {', '.join(known)}."
                )
        require(len(set(self.order)) == len(self.order), "aug.order", self.order, "must not repeat an entry")
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
        require(self.mixup_alpha >= 0, "mix.mixup_alpha", self.mixup_alpha, "must be >= 0 (0 = off)")
        require(self.cutmix_alpha >= 0, "mix.cutmix_alpha", self.cutmix_alpha, "must be >= 0 (0 = off)")
        for key in ("switch_prob", "prob"):
            require(
                0 <= getattr(self, key) <= 1, f"mix.{key}", getattr(self, key), "must be a probability in [0, 1]"
            )
        for key in ("lam_x_range", "lam_y_range"):
            r = getattr(self, key)
            require(
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
        require(self.start_epoch >= 0, "mix.start_epoch", self.start_epoch, "must be >= 0")
        if self.stop_epoch is not None:
            require(
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
    pool_size: Optional[int] = None  # P: final average pool (at 32 px); null = global
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
        # model.name is checked against the presets by reglab.models.model_from_config (config sits below models).
        if self.blocks is not None and self.channels is not None and len(self.blocks) != len(self.channels):
            raise UserError(
                f"model.blocks has {len(self.blocks)} stages but model.channels has "
                f"{len(self.channels)}; give one channel count per stage."
            )
        for key in ("blocks", "channels"):
            val = getattr(self, key)
            if val is not None:
                require(
                    len(val) >= 1 and all(v >= 1 for v in val),
                    f"model.{key}",
                    val,
                    "must be a non-empty list of positive integers",
                )
        for key in ("drop_path", "dropout", "se_ratio"):
            val = getattr(self, key)
            if val is not None:
                require(
                    0 <= val < 1 if key != "se_ratio" else 0 < val <= 1,
                    f"model.{key}",
                    val,
                    "must be in [0, 1)" if key != "se_ratio" else "must be in (0, 1]",
                )
        if self.bn_dropout is not None:
            require(
                all(0 <= p < 1 for p in self.bn_dropout),
                "model.bn_dropout",
                self.bn_dropout,
                "must be a list of probabilities in [0, 1)",
            )
        for key in ("kernel_size", "skip_kernel"):
            val = getattr(self, key)
            if val is not None:
                require(val >= 1 and val % 2 == 1, f"model.{key}", val, "must be a positive odd integer")

    def overrides(self) -> dict[str, Any]:
        """Builder keyword arguments set explicitly (everything but ``name`` that is not None)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "name" and getattr(self, f.name) is not None
        }
