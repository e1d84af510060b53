"""Exact resume: a run stopped after epoch 2 and resumed ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch

from reglab.config import load_config
from reglab.errors import UserError
from reglab.train import run
from reglab.train.checkpoint import load_checkpoint
from reglab.train.rundir import load_run_config
from tests.helpers.configs import BATCHES, SYNTHETIC_600, TINY_RESNET

# EMA, a fractional warm-up (5 of 10 steps per epoch), default crop + flip, label smoothing, momentum SGD:
# every piece of state a resume has to restore.
CFG = [
    *SYNTHETIC_600,
    *TINY_RESNET,
    *BATCHES,
    "train.epochs=3",
    "train.label_smoothing=0.1",
    "optim.lr=0.2",
    "sched.warmup_epochs=0.5",
    "ema.enabled=true",
    "ema.decay=0.9",
    "ema.warmup_steps=8",
    "run.device=cpu",
]
TIMING = {"epoch_s", "images_per_s", "wall_time_s"}


class StopAfter:
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, run, row):
        return run.epoch >= self.epoch


class Disturb:
    """Consume global RNG between the stop and the resume, as other work in the same process would."""

    def on_end(self, run, summary):
        torch.randn(1000)
        import random

        import numpy as np

        random.random()
        np.random.rand(10)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    a = run(load_config(None, [*CFG, f"run.dir={tmp / 'A'}"]))
    b_dir = tmp / "B"
    stopped = run(load_config(None, [*CFG, f"run.dir={b_dir}"]), callbacks=[StopAfter(2), Disturb()])
    assert stopped.summary["epochs"] == 2
    cfg = load_run_config(b_dir)
    cfg.run.dir = str(b_dir)  # as `reglab train --resume B` does
    b = run(cfg, resume=True)
    return a, b, stopped


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_resumed_metrics_equal_uninterrupted(runs):
    a, b, stopped = runs
    assert [r["epoch"] for r in b.metrics] == [1, 2, 3]
    assert _strip(b.metrics) == _strip(a.metrics)
    assert _strip(stopped.metrics) == _strip(a.metrics[:2])
    on_disk = [json.loads(line) for line in (b.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert _strip(on_disk) == _strip(a.metrics)
    keys = (
        "test_acc",
        "best_val_acc",
        "best_epoch",
        "final_val_acc",
        "epochs",
        "ema_test_acc",
        "final_train_loss",
    )
    assert {k: b.summary[k] for k in keys} == {k: a.summary[k] for k in keys}


def test_resumed_weights_ema_optimizer_bit_identical(runs):
    a, b, _ = runs
    sa = load_checkpoint(a.run_dir / "checkpoints" / "last.safetensors")
    sb = load_checkpoint(b.run_dir / "checkpoints" / "last.safetensors")
    assert sa["epoch"] == sb["epoch"] == 3 and sa["step"] == sb["step"] == 30
    for part in ("model", "ema"):
        assert sa[part].keys() == sb[part].keys()
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), (part, k)
    oa, ob = sa["optimizer"], sb["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for k in oa["state"][i]:
            assert torch.equal(oa["state"][i][k], ob["state"][i][k]), (i, k)
    assert sa["scheduler"] == sb["scheduler"]
    assert torch.equal(sa["loader"]["generator"], sb["loader"]["generator"])
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    assert sa["best"] == sb["best"]


def test_resume_extends_epochs_in_saved_config(runs):
    _, b, _ = runs
    saved = load_run_config(b.run_dir)
    assert saved.train.epochs == 3 and saved.run.dir == str(b.run_dir)


def test_resume_without_checkpoint_is_user_error(tmp_path):
    d = tmp_path / "empty"
    (d / "checkpoints").mkdir(parents=True)
    cfg = load_config(None, [*CFG, f"run.dir={d}"])
    (d / "config.yaml").write_text(cfg.to_yaml())
    # Metrics of two finished epochs but no checkpoint: it was moved or deleted. (With at most one row the run
    # was killed in its first epoch, and --resume starts it again: see tests/e2e/test_kill_resume.py.)
    (d / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    with pytest.raises(UserError, match="no checkpoints/last.safetensors"):
        run(load_run_config(d), resume=True)
    with pytest.raises(UserError, match="not a reglab run directory"):
        run(load_config(None, [*CFG, f"run.dir={tmp_path / 'nothing'}"]), resume=True)


def test_resume_finished_run_with_more_epochs_continues(runs, tmp_path):
    """A finished 3-epoch run resumed with train.epochs=4 trains exactly one more epoch."""
    _, b, _ = runs
    import shutil

    d = tmp_path / "C"
    shutil.copytree(b.run_dir, d)
    cfg = load_run_config(d, ["train.epochs=4"])
    cfg.run.dir = str(d)
    c = run(cfg, resume=True)
    assert [r["epoch"] for r in c.metrics] == [1, 2, 3, 4]
    assert _strip(c.metrics[:3]) == _strip(b.metrics)
    assert load_checkpoint(d / "checkpoints" / "last.safetensors")["step"] == 40
    assert load_run_config(d).train.epochs == 4


def test_resume_refuses_a_change_it_cannot_honour_and_writes_nothing(runs, tmp_path):
    """A resume restores the checkpoint's optimizer, schedule and data stream, so ``optim.lr=...`` (or any key
    outside RESUMABLE_KEYS) would train on as before under a config.yaml claiming the new value: refused, with
    every file of the run left as it was; train.epochs, run.threads and run.eval_test_every stay allowed."""
    _, b, _ = runs
    import shutil

    d = tmp_path / "D"
    shutil.copytree(b.run_dir, d)
    before = {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
    for overrides in (["optim.lr=0.1"], ["train.epochs=4", "aug.flip=false"], ["run.seed=3"]):
        cfg = load_run_config(d, overrides)
        cfg.run.dir = str(d)
        with pytest.raises(UserError, match="--resume continues .* it cannot change") as err:
            run(cfg, resume=True)
        changed = overrides[-1].split("=")[0]
        assert f"{changed}=" in str(err.value) and "(saved: " in str(err.value)
    after = {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
    assert after == before
    cfg = load_run_config(d, ["train.epochs=4", "run.threads=1", "run.eval_test_every=2"])
    cfg.run.dir = str(d)
    assert [r["epoch"] for r in run(cfg, resume=True).metrics] == [1, 2, 3, 4]
