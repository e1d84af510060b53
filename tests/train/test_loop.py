"""reglab.train.loop: the training loop on tiny synthetic runs (run directory, checkpoints, determinism, amp,
divergence, save policy). Losses, optimizers and schedules, EMA and device detection have their own files here.

Every training run here is a few seconds: synthetic data (500 train / 100 val / 200 test images), a
ResNet-20 shrunk to widths 8/16/32 and one block per stage, batch 50, one torch thread (the CPU is shared;
oversubscribed OpenMP threads are 10x slower than one thread).
"""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
import torch.nn as nn
import yaml

from reglab.config import load_config
from reglab.errors import UserError
from reglab.models import create
from reglab.train import TrainingDiverged, run
from reglab.train import device as device_mod
from reglab.train import loop as loop_mod
from reglab.train import saving as saving_mod
from reglab.train.checkpoint import load_checkpoint
from tests.helpers.configs import SYN, TINY

TIMING = {"epoch_s", "images_per_s", "wall_time_s"}


def tiny_model(num_classes: int = 10) -> nn.Module:
    return create("resnet20", num_classes, channels=[8, 16, 32], blocks=[1, 1, 1])


# ----------------------------------------------------------------------------------------------------------
# The loop


def _cfg(tmp, name, *extra):
    return load_config(None, [*TINY, f"run.dir={tmp / name}", *extra])


class StopAfter:
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, run, row):
        return run.epoch >= self.epoch


@pytest.fixture(scope="module")
def ema_runs(tmp_path_factory):
    """Run 1: 3 epochs with EMA and per-epoch checkpoints. Run 2: same config and seed, stopped after 2."""
    tmp = tmp_path_factory.mktemp("engine")
    extra = ["train.epochs=3", "ema.enabled=true", "ema.decay=0.9", "run.checkpoint_every=1"]
    r1 = run(_cfg(tmp, "a", *extra))
    r2 = run(_cfg(tmp, "b", *extra), callbacks=[StopAfter(2)])
    return r1, r2


def test_run_dir_files(ema_runs):
    r1, _ = ema_runs
    d = r1.run_dir
    for name in ("config.yaml", "metrics.csv", "metrics.jsonl", "summary.json"):
        assert (d / name).is_file(), name
    cfg_saved = load_config(None, base=yaml.safe_load((d / "config.yaml").read_text()))
    assert cfg_saved.train.epochs == 3 and cfg_saved.ema.enabled and cfg_saved.run.dir == str(d)

    with open(d / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0])
    want = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    assert header[:8] == want
    for col in ("ema_val_loss", "ema_val_acc", "ema_test_loss", "ema_test_acc", "epoch_s", "images_per_s"):
        assert col in header, col
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    jl = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert len(jl) == 3 and jl == r1.metrics
    assert float(rows[2]["val_acc"]) == jl[2]["val_acc"]

    summary = json.loads((d / "summary.json").read_text())
    for key in (
        "test_acc",
        "best_val_acc",
        "best_epoch",
        "final_val_acc",
        "params",
        "epochs",
        "wall_time_s",
        "hardware",
        "versions",
        "git_commit",
        "ema_test_acc",
    ):
        assert key in summary, key
    assert summary == r1.summary
    assert summary["epochs"] == 3 and summary["test_acc"] == jl[2]["test_acc"]
    assert summary["final_val_acc"] == jl[2]["val_acc"]
    best = max(jl, key=lambda r: r["val_acc"])
    assert summary["best_val_acc"] == best["val_acc"]
    assert jl[summary["best_epoch"] - 1]["val_acc"] == best["val_acc"]
    assert summary["params"] == sum(p.numel() for p in tiny_model().parameters())
    assert summary["versions"]["torch"] == torch.__version__
    assert summary["precision"] == ("bf16 autocast" if device_mod.bf16_is_native(torch.device("cpu")) else "fp32")


def test_run_without_ema_has_no_ema_columns(tmp_path):
    res = run(_cfg(tmp_path, "noema", "train.epochs=1", "data.synthetic_train=200"))
    header = (res.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:8] == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    assert not any(c.startswith("ema_") for c in header)
    assert "ema_test_acc" not in res.summary


def test_checkpoints_last_best_and_per_epoch(ema_runs):
    r1, _ = ema_runs
    ck = r1.run_dir / "checkpoints"
    names = sorted(p.name for p in ck.iterdir())
    assert names == [
        "best.safetensors",
        "epoch_1.safetensors",
        "epoch_2.safetensors",
        "epoch_3.safetensors",
        "last.safetensors",
    ], names
    last, e3 = load_checkpoint(ck / "last.safetensors"), load_checkpoint(ck / "epoch_3.safetensors")
    assert last["epoch"] == 3 and last["step"] == 30
    for k in last["model"]:
        assert torch.equal(last["model"][k], e3["model"][k]), k
    best = load_checkpoint(ck / "best.safetensors")
    assert best["epoch"] == r1.summary["best_epoch"]
    assert load_checkpoint(ck / "epoch_1.safetensors")["epoch"] == 1
    # the EMA (AveragedModel: keys "module.<name>") is saved and differs from the raw weights
    assert last["ema"] is not None and int(last["ema"]["n_averaged"]) == 30
    assert any(
        not torch.equal(last["ema"][f"module.{k}"], v) for k, v in last["model"].items() if v.is_floating_point()
    )
    assert not [p for p in r1.run_dir.rglob(".*tmp*")]


def test_model_learns_synthetic_data(ema_runs):
    r1, _ = ema_runs
    accs = [row["val_acc"] for row in r1.metrics]
    # 10 classes: chance is 10%. Observed 80-90% after 3 epochs at lr 0.2, batch 50.
    assert accs[-1] >= 40.0, accs
    assert r1.metrics[-1]["test_acc"] >= 40.0
    assert r1.metrics[-1]["train_loss"] < r1.metrics[0]["train_loss"]


def test_same_seed_same_metrics_and_weights(ema_runs):
    r1, r2 = ema_runs
    assert len(r2.metrics) == 2
    for a, b in zip(r1.metrics[:2], r2.metrics):
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
    s1 = load_checkpoint(r1.run_dir / "checkpoints" / "epoch_2.safetensors")
    s2 = load_checkpoint(r2.run_dir / "checkpoints" / "last.safetensors")
    for part in ("model", "ema"):
        assert s1[part].keys() == s2[part].keys()
        for k in s1[part]:
            assert torch.equal(s1[part][k], s2[part][k]), (part, k)
    assert s1["loader"]["generator"].equal(s2["loader"]["generator"])


def test_existing_run_dir_needs_overwrite_or_resume(ema_runs):
    r1, _ = ema_runs
    mtime = (r1.run_dir / "checkpoints" / "last.safetensors").stat().st_mtime_ns
    cfg = load_config(None, [*TINY, f"run.dir={r1.run_dir}", "train.epochs=3"])
    with pytest.raises(UserError, match="--resume") as exc:
        run(cfg)
    assert "--overwrite" in str(exc.value)
    assert (r1.run_dir / "checkpoints" / "last.safetensors").stat().st_mtime_ns == mtime


def test_cuda_device_on_cpu_machine_is_user_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = load_config(None, [*TINY, f"run.dir={tmp_path / 'c'}", "run.device=cuda"])
    with pytest.raises(UserError, match="CUDA"):
        run(cfg)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "flags, native",
    [
        ({"sse2", "avx2", "fma"}, False),
        ({"avx512f", "avx512_bf16"}, True),
        ({"avx512f", "amx_tile", "amx_bf16"}, True),
        (set(), False),
    ],
)
def test_amp_auto_is_bf16_only_on_cpus_with_bf16_instructions(tmp_path, monkeypatch, flags, native):
    """``train.amp=auto`` autocasts to bf16 on a CPU with bf16 instructions (2.15x faster training on a Zen 5)
    and stays fp32 where oneDNN would emulate bf16 (10-15x slower); ``off`` and ``bf16`` overrule the CPU."""
    monkeypatch.setattr(device_mod, "_cpu_flags", lambda: frozenset(flags))
    cpu = torch.device("cpu")
    assert device_mod.bf16_is_native(cpu) is native
    assert not device_mod.bf16_is_native(torch.device("mps"))
    assert (loop_mod.Run(_cfg(tmp_path, "a"), cpu).autocast is not None) is native
    assert loop_mod.Run(_cfg(tmp_path, "o", "train.amp=off"), cpu).autocast is None
    assert loop_mod.Run(_cfg(tmp_path, "b", "train.amp=bf16"), cpu).autocast is not None


def test_onecycle_with_warmup_is_user_error(tmp_path):
    cfg = load_config(
        None,
        [
            *TINY,
            f"run.dir={tmp_path / 'o'}",
            "sched.name=onecycle",
            "sched.warmup_epochs=1",
            "data.synthetic_train=200",
        ],
    )
    with pytest.raises(UserError, match="warmup"):
        run(cfg)


class BlowUpAfter:
    """After epoch 1 (a good one) raise the lr to 1e6, so training diverges in epoch 2 or 3."""

    def on_epoch_end(self, run, row):
        if run.epoch == 1:
            for g in run.optimizer.param_groups:
                g["lr"] = 1e6


@pytest.fixture(scope="module")
def diverged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nan")
    cfg = _cfg(
        tmp,
        "d",
        "data.synthetic_train=300",
        "train.epochs=4",
        "sched.name=constant",
        "optim.lr=0.1",
        "ema.enabled=true",
    )
    with pytest.raises(TrainingDiverged) as exc:
        run(cfg, callbacks=[BlowUpAfter()])
    return exc.value, tmp / "d"


def test_divergence_raises_with_last_good_checkpoint(diverged):
    exc, d = diverged
    assert isinstance(exc, UserError)
    msg = str(exc)
    assert "diverged" in msg and "optim.lr" in msg
    assert str(d / "checkpoints" / "last.safetensors") in msg
    assert (d / "checkpoints" / "last.safetensors").is_file()


def _finite(state: dict) -> bool:
    return all(torch.isfinite(v).all().item() for v in state.values() if v.is_floating_point())


def test_divergence_leaves_no_nan_checkpoint(diverged):
    """Weights can turn NaN in an epoch whose mean training loss is still finite (e.g. 1e27); such an
    epoch must not be saved as ``last``/``best``, since the error message calls ``last`` the good one."""
    exc, d = diverged
    for path in sorted((d / "checkpoints").glob("*.safetensors")):
        state = load_checkpoint(path)
        assert _finite(state["model"]), f"{path.name} (epoch {state['epoch']}) has non-finite weights"
        assert _finite(state["ema"]), f"{path.name} (epoch {state['epoch']}) has non-finite EMA weights"
    named = re.search(r"\(epoch (\d+)\)", str(exc))
    assert named and int(named.group(1)) == load_checkpoint(d / "checkpoints" / "last.safetensors")["epoch"]


# -- run.save_every_s: fewer checkpoint writes, the same checkpoints ----------------------------------------------


def _scripted_val(monkeypatch, accs):
    """Make the runs' validation accuracies ``accs`` (epoch 1, 2, ...), so the best epoch is known."""
    seq = {"i": 0}
    orig = loop_mod.Run.evaluate_epoch

    def fake(self, with_test):
        row = orig(self, with_test)
        row["val_acc"] = accs[seq["i"] % len(accs)]
        seq["i"] += 1
        return row

    monkeypatch.setattr(loop_mod.Run, "evaluate_epoch", fake)


def _record_saves(monkeypatch):
    names = []
    orig = saving_mod.save_checkpoint

    def rec(path, state, **kwargs):
        names.append((path.stem, int(state["epoch"])))
        orig(path, state, **kwargs)

    monkeypatch.setattr(saving_mod, "save_checkpoint", rec)
    return names


def test_save_every_s_writes_best_and_last_once_and_they_equal_the_per_epoch_ones(tmp_path, monkeypatch):
    _scripted_val(monkeypatch, [50.0, 70.0, 60.0, 65.0])  # best: epoch 2, not the last
    saves = _record_saves(monkeypatch)
    every = run(_cfg(tmp_path, "every", "train.epochs=4"))
    assert saves == [("best", 1), ("last", 1), ("best", 2), ("last", 2), ("last", 3), ("last", 4)]
    saves.clear()
    rare = run(_cfg(tmp_path, "rare", "train.epochs=4", "run.save_every_s=1e6"))
    assert saves == [("best", 2), ("last", 4)]  # the held snapshot of epoch 2, then the end
    assert rare.summary["best_epoch"] == every.summary["best_epoch"] == 2
    assert every.summary["checkpoint_s"] > 0 and rare.summary["checkpoint_s"] > 0 and rare.summary["setup_s"] > 0
    for name in ("best", "last"):
        a = load_checkpoint(every.run_dir / "checkpoints" / f"{name}.safetensors")
        b = load_checkpoint(rare.run_dir / "checkpoints" / f"{name}.safetensors")
        assert a["epoch"] == b["epoch"] == (2 if name == "best" else 4)
        for k, t in a["model"].items():
            assert torch.equal(t, b["model"][k]), (name, k)


def test_save_every_s_still_writes_last_when_a_callback_stops_the_run(tmp_path, monkeypatch):
    saves = _record_saves(monkeypatch)
    res = run(_cfg(tmp_path, "stop", "train.epochs=5", "run.save_every_s=1e6"), callbacks=[StopAfter(2)])
    assert [m["epoch"] for m in res.metrics] == [1, 2]
    assert saves[-1] == ("last", 2)
    assert load_checkpoint(res.run_dir / "checkpoints" / "last.safetensors")["epoch"] == 2


def test_resume_keeps_this_devices_optimizer_kernels(tmp_path):
    """A checkpoint written on a GPU stores ``fused=True`` in its parameter groups; resuming it on a CPU (or the
    other way round) must keep the optimizer this device built, not the saved flag."""
    cfg = _cfg(tmp_path, "f", "train.epochs=2")
    first = run(cfg, callbacks=[StopAfter(1)])
    ck = first.run_dir / "checkpoints" / "last.safetensors"
    state = load_checkpoint(ck)
    for g in state["optimizer"]["param_groups"]:
        g["fused"] = True  # as a CUDA run writes it
    r = loop_mod.Run(cfg, torch.device("cpu"))
    r.load_state_dict(state)
    assert all(g["fused"] == r.optimizer.defaults.get("fused") for g in r.optimizer.param_groups)
    assert not any(g["fused"] for g in r.optimizer.param_groups)


def test_overwrite_replaces_every_file_of_the_old_run(tmp_path):
    d = tmp_path / "r"
    (d / "checkpoints").mkdir(parents=True)
    for name in ("metrics.jsonl", "metrics.csv", "summary.json", "checkpoints/epoch_7.safetensors"):
        (d / name).write_text("old run\n")  # without config.yaml: refused unless --overwrite
    cfg = load_config(None, [*TINY, f"run.dir={d}", "train.epochs=1"])
    with pytest.raises(UserError, match="holds files of a run"):
        run(cfg)
    assert (d / "summary.json").read_text() == "old run\n"
    run(cfg, overwrite=True)
    assert not (d / "checkpoints" / "epoch_7.safetensors").exists()
    assert len((d / "metrics.jsonl").read_text().splitlines()) == 1
    assert "old run" not in (d / "metrics.csv").read_text() + (d / "summary.json").read_text()


def test_freeze_schedule_freezes_and_unfreezes_at_its_epochs():
    """train.freeze: frozen for start_epoch <= e < stop_epoch, trained before and after; any model, any kind."""
    from reglab.train.loop import Run

    cfg = load_config(
        None,
        [
            *SYN,
            "model.name=resnet8_s2",
            "train.epochs=4",
            "train.freeze=[{match: [norm, fc.*], start_epoch: 1, stop_epoch: 3}]",
        ],
    )
    r = Run(cfg, torch.device("cpu"))
    frozen = [p for _, params in r.freeze for p in params]
    norms = [p for m in r.model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert {id(p) for p in frozen} == {id(p) for p in norms} | {id(r.model.fc.weight), id(r.model.fc.bias)}
    seen = []
    for epoch in range(4):
        r.epoch = epoch
        before = [p.detach().clone() for p in frozen]
        r.train_epoch([])
        seen.append([torch.equal(b, p) for b, p in zip(before, frozen)])
    assert [all(s) for s in seen] == [False, True, True, False] and not any(seen[0]) and not any(seen[3])
    with pytest.raises(UserError, match=r"train.freeze\[0\].stop_epoch=1 must be > start_epoch \(2\)"):
        load_config(None, ["train.freeze=[{match: norm, start_epoch: 2, stop_epoch: 1}]"])
    with pytest.raises(UserError, match=r"train.freeze\[0\].match is missing"):
        load_config(None, ["train.freeze=[{start_epoch: 2}]"])
