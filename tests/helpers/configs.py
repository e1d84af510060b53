"""The override lists of the tiny synthetic trainings the tests run, and writers of tiny study and sweep files.

Compose a test's config from these instead of spelling the keys out again; a test whose config differs adds its
own keys after them (the last value of a key wins).
"""

from __future__ import annotations

from pathlib import Path

import yaml

# Synthetic data (reglab/data/synthetic.py): a few seconds per epoch on one CPU thread.
SYNTHETIC_600 = [
    "data.dataset=synthetic",
    "data.synthetic_train=600",
    "data.synthetic_test=200",
    "data.val_size=100",
]
SYNTHETIC_300 = [
    "data.dataset=synthetic",
    "data.synthetic_train=300",
    "data.synthetic_test=100",
    "data.val_size=100",
]
SYNTHETIC_150 = [
    "data.dataset=synthetic",
    "data.synthetic_train=150",
    "data.synthetic_test=50",
    "data.val_size=50",
]
# ResNet-20 shrunk to widths 8/16/32 and one block per stage.
TINY_RESNET = ["model.name=resnet20", "model.channels=[8,16,32]", "model.blocks=[1,1,1]"]
# fastnet (airbench's net) shrunk to widths 8/16/16.
TINY_FASTNET = ["model.name=fastnet", "model.channels=[8,16,16]"]
BATCHES = ["train.batch_size=50", "train.eval_batch_size=500"]

# Synthetic data and batches on the CPU, the model left to the test (fastnet, Muon, CUDA-graph tests).
SYN = [*SYNTHETIC_600, *BATCHES, "run.device=cpu"]
# The tiny ResNet on 600 synthetic images (the training-loop tests and those built on them).
TINY = [*SYNTHETIC_600, *TINY_RESNET, *BATCHES, "optim.lr=0.2", "run.device=cpu"]
# The same on 300 images with one torch thread (the CLI's bad-input and reliability cases).
TINY_300 = [*SYNTHETIC_300, *TINY_RESNET, *BATCHES, "optim.lr=0.2", "run.device=cpu", "run.threads=1"]
# One epoch of the tiny ResNet on 150 images: a trained run whose checkpoint the checkpoint tests rewrite or fuzz.
ONE_EPOCH_150 = [*SYNTHETIC_150, *TINY_RESNET, "train.batch_size=50", "train.epochs=1", "run.device=cpu"]

# Studies (reglab study): two tiny epochs per run.
STUDY_TINY = [*SYNTHETIC_600, *TINY_RESNET, *BATCHES, "run.device=cpu", "train.tta=false", "train.epochs=2"]

# Sweeps (reglab sweep): the batch size, lr and optimizer are the searched space.
SWEEP_TINY = [
    *SYNTHETIC_300,
    *TINY_RESNET,
    "train.eval_batch_size=500",
    "run.device=cpu",
    "run.threads=1",
    "train.tta=false",
    "optim.nesterov=false",
    "sched.warmup_epochs=0",
    "sched.name=cosine",
]


def write_study(path: Path, **fields) -> Path:
    """A study file: 2 groups (erm, mixup) x 2 seeds of the tiny config; ``fields`` replace top-level keys."""
    doc = {
        "name": "tiny",
        "recipe": "quick",
        "overrides": STUDY_TINY,
        "seeds": 2,
        "runs": {"erm": [], "mixup": {"mix.mixup_alpha": 1.0}},
    }
    doc.update(fields)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def sweep_dict(name: str = "tiny", epochs: int = 3, **kw) -> dict:
    """A sweep file's contents: 6 trials of the tiny config over lr, batch size and optimizer; ``kw`` replace
    top-level keys."""
    d = {
        "name": name,
        "recipe": "quick",
        "overrides": [*SWEEP_TINY, f"train.epochs={epochs}"],
        "trials": 6,
        "seed": 0,
        "space": {
            "optim.lr": {"type": "logfloat", "low": 1e-3, "high": 0.5},
            "train.batch_size": [25, 50],
            "optim.name": ["sgd", "adam"],
        },
    }
    d.update(kw)
    return d


def write_sweep(path: Path, **kw) -> Path:
    path.write_text(yaml.safe_dump(sweep_dict(**kw)))
    return path
