"""A short training run on the real CIFAR-10 (skipped where ../shared/data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reglab.config import load_config
from reglab.train import run

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not (DATA / "cifar-10-batches-py").is_dir(), reason=f"real CIFAR-10 not found in {DATA}"
)


def test_small_model_learns_real_cifar10(tmp_path):
    cfg = load_config(
        None,
        [
            f"data.dir={DATA}",
            "data.val_size=1000",
            "data.train_subset=6000",
            "model.name=resnet20",
            "model.blocks=[1,1,1]",
            "model.channels=[16,32,64]",
            "train.epochs=2",
            "train.batch_size=128",
            "optim.lr=0.2",
            "sched.name=onecycle",
            "train.label_smoothing=0.1",
            "run.eval_test_every=2",
            f"run.dir={tmp_path / 'run'}",
        ],
    )
    result = run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test_acc"] == result.summary["test_acc"]
    # 10 classes: chance is 10%. Two epochs on 6,000 images reach well above it.
    assert summary["best_val_acc"] > 30.0, summary
    assert summary["test_acc"] > 30.0, summary
    rows = result.metrics
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["test_acc"] is None and rows[1]["test_acc"] is not None  # test only every 2nd epoch
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
