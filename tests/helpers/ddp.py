"""What the DDP tests (tests/e2e/test_ddp.py, tests/e2e/test_ddp_multinode.py) share: ``TINY``, the tiny fp32
config their exact claims are made on (one epoch, no augmentation, no channels-last, no autocast), ``AUG``, the
augmented additions (crop, flip, mixup, EMA, 2 epochs) that exercise the per-rank random streams, and
:func:`ddp_env`, the environment of the torchrun processes they start."""

from __future__ import annotations

from tests.helpers import configs
from tests.helpers.processes import checkout_env

TINY = [
    *configs.TINY,
    "run.threads=1",
    "train.epochs=1",
    "aug.crop_pad=0",
    "aug.flip=false",
    "train.channels_last=false",
    "train.amp=off",
]  # fp32: exact claims
AUG = ["aug.crop_pad=4", "aug.flip=true", "mix.mixup_alpha=0.4", "train.epochs=2", "ema.enabled=true"]


def ddp_env() -> dict[str, str]:
    # PYTHONFAULTHANDLER: a rank killed by a signal (e.g. an abort in C++) prints its Python stacks
    return checkout_env(PYTHONFAULTHANDLER="1")
