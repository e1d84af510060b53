"""The training engine: losses, optimizers, schedules, EMA and the loop (on tiny synthetic runs).

Every training run here is a few seconds: synthetic data (500 train / 100 val / 200 test images), a
ResNet-20 shrunk to widths 8/16/32 and one block per stage, batch 50, one torch thread (the CPU is shared;
oversubscribed OpenMP threads are 10x slower than one thread).
"""

from __future__ import annotations

import csv
import json
import math
import platform
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from reglab.config import OptimConfig, SchedConfig, load_config
from reglab.errors import UserError
from reglab.models import create
from reglab.train import TrainingDiverged, run
from reglab.train import device as device_mod
from reglab.train import loop as loop_mod
from reglab.train import saving as saving_mod
from reglab.train.checkpoint import load_checkpoint
from reglab.train.ema import EMA
from reglab.train.losses import Criterion, clamped_cross_entropy, smooth_targets, soft_cross_entropy
from reglab.train.optim import build_optimizer, build_scheduler, cosine_cycles_decay, param_groups
from tests.helpers.configs import TINY

TIMING = {"epoch_s", "images_per_s", "wall_time_s"}


def tiny_model(num_classes: int = 10) -> nn.Module:
    return create("resnet20", num_classes, channels=[8, 16, 32], blocks=[1, 1, 1])


# ----------------------------------------------------------------------------------------------------------
# Criterion


def test_hard_labels_torch_convention_equals_f_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(16, 10, generator=g) * 3, torch.randint(0, 10, (16,), generator=g)
    for eps in (0.0, 0.1, 0.3):
        got = Criterion(10, "ce", eps, "torch")(logits, y)
        assert torch.allclose(got, F.cross_entropy(logits, y, label_smoothing=eps), atol=1e-6), eps
        # the soft-target path with torch-convention targets must agree with the fused path
        soft = smooth_targets(y, 10, eps, "torch")
        assert torch.allclose(soft_cross_entropy(logits, soft), got, atol=1e-6), eps


def test_others_convention_targets_and_loss():
    k, eps = 10, 0.1
    y = torch.tensor([3, 0, 9])
    t = smooth_targets(y, k, eps, "others")
    for i, c in enumerate(y.tolist()):
        assert t[i, c].item() == pytest.approx(1 - eps, abs=1e-7)
        others = torch.cat([t[i, :c], t[i, c + 1 :]])
        assert torch.allclose(others, torch.full((k - 1,), eps / (k - 1)), atol=1e-7)
    assert torch.allclose(t.sum(1), torch.ones(3), atol=1e-6)
    # torch convention differs: true class 1 - eps + eps/K, others eps/K
    tt = smooth_targets(y, k, eps, "torch")
    assert tt[0, 3].item() == pytest.approx(1 - eps + eps / k, abs=1e-7)
    assert tt[0, 0].item() == pytest.approx(eps / k, abs=1e-7)

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, k, generator=g) * 2
    logp = torch.log_softmax(logits.double(), 1)
    manual = 0.0
    for i, c in enumerate(y.tolist()):
        manual += -(1 - eps) * logp[i, c].item() - sum(
            eps / (k - 1) * logp[i, j].item() for j in range(k) if j != c
        )
    manual /= 3
    got = Criterion(k, "ce", eps, "others")(logits, y)
    assert got.item() == pytest.approx(manual, rel=1e-5)
    assert got.item() != pytest.approx(F.cross_entropy(logits, y, label_smoothing=eps).item(), rel=1e-5)


def test_soft_targets_equal_two_term_mixup_loss():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 10, generator=g)
    y1, y2 = torch.randint(0, 10, (8,), generator=g), torch.randint(0, 10, (8,), generator=g)
    for lam in (0.0, 0.3, 0.75, 1.0):
        mixed = lam * F.one_hot(y1, 10).float() + (1 - lam) * F.one_hot(y2, 10).float()
        got = Criterion(10, "ce")(logits, mixed)
        want = lam * F.cross_entropy(logits, y1) + (1 - lam) * F.cross_entropy(logits, y2)
        assert torch.allclose(got, want, atol=1e-6), lam
        # smoothing is linear in the target, so the two-term form holds with smoothing too
        got_ls = Criterion(10, "ce", 0.1, "torch")(logits, mixed)
        want_ls = lam * F.cross_entropy(logits, y1, label_smoothing=0.1) + (1 - lam) * F.cross_entropy(
            logits, y2, label_smoothing=0.1
        )
        assert torch.allclose(got_ls, want_ls, atol=1e-6), lam


def test_clamped_ce_formula_and_difference_from_ce():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 10, generator=g)
    logits[0, 0] = -30.0  # softmax(class 0) << 1e-5 for sample 0, whose label is 0
    logits[0, 1] = 10.0
    y = torch.tensor([0, 1, 2, 3])
    t = F.one_hot(y, 10).float()
    manual = -(t * torch.log(torch.clamp(torch.softmax(logits, 1), 1e-5, 1))).sum() / 4
    got = Criterion(10, "clamped_ce")(logits, y)
    assert torch.allclose(got, manual, atol=1e-6)
    assert torch.allclose(clamped_cross_entropy(logits, t), manual, atol=1e-6)
    assert torch.softmax(logits, 1)[0, 0] < 1e-5
    ce = F.cross_entropy(logits, y)
    assert ce.item() > got.item() + 1.0  # the clamp caps sample 0's loss at -log(1e-5)
    # where every probability is >= 1e-5 the two agree
    mild = torch.randn(4, 10, generator=g) * 0.5
    assert torch.allclose(Criterion(10, "clamped_ce")(mild, y), F.cross_entropy(mild, y), atol=1e-6)


def test_clamped_ce_with_smoothing_uses_smoothed_targets():
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(4))
    y = torch.arange(5)
    t = smooth_targets(y, 10, 0.2, "others")
    assert torch.allclose(Criterion(10, "clamped_ce", 0.2, "others")(logits, y), clamped_cross_entropy(logits, t))


# ----------------------------------------------------------------------------------------------------------
# Optimizers


@pytest.mark.parametrize(
    "name,cls",
    [
        ("sgd", torch.optim.SGD),
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("adadelta", torch.optim.Adadelta),
        ("adagrad", torch.optim.Adagrad),
    ],
)
def test_every_optimizer_builds_and_steps(name, cls):
    model = tiny_model()
    cfg = OptimConfig(name=name, lr=0.01, weight_decay=1e-4, betas=[0.8, 0.99], eps=1e-7, rho=0.8)
    opt = build_optimizer(model, cfg)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 1e-4
    if name != "sgd":
        assert group["eps"] == 1e-7
    if name in ("adam", "adamw"):
        assert tuple(group["betas"]) == (0.8, 0.99)
    if name == "adadelta":
        assert group["rho"] == 0.8
    if name == "sgd":
        assert group["momentum"] == cfg.momentum and group["nesterov"] is False
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_wd_exemption_puts_norm_and_bias_params_in_a_zero_decay_group():
    model = tiny_model()
    opt = build_optimizer(model, OptimConfig(name="sgd", weight_decay=5e-4, wd_exempt_norm_bias=True))
    assert len(opt.param_groups) == 2
    decay = {id(p) for p in opt.param_groups[0]["params"]}
    no_decay = {id(p) for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 5e-4 and opt.param_groups[1]["weight_decay"] == 0.0
    n_conv = n_bn = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert id(m.weight) in decay
            n_conv += 1
            if m.bias is not None:
                assert id(m.bias) in no_decay
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert id(m.weight) in no_decay and id(m.bias) in no_decay
            n_bn += 1
    assert n_conv >= 5 and n_bn >= 4
    assert id(model.fc.bias) in no_decay and id(model.fc.weight) in decay
    assert decay | no_decay == {id(p) for p in model.parameters()} and not decay & no_decay
    # without the exemption: one group, all parameters decayed
    groups = param_groups(model, 5e-4, False)
    assert len(groups) == 1 and len(groups[0]["params"]) == len(list(model.parameters()))


def test_nesterov_reaches_sgd():
    opt = build_optimizer(tiny_model(), OptimConfig(name="sgd", momentum=0.9, nesterov=True))
    assert isinstance(opt, torch.optim.SGD)
    assert all(g["nesterov"] is True and g["momentum"] == 0.9 for g in opt.param_groups)


# ----------------------------------------------------------------------------------------------------------
# Schedules (steps_per_epoch = 10)

SPE = 10
BASE = 0.1


def lr_trace(sched: SchedConfig, epochs: int = 6, spe: int = SPE, base: float = BASE) -> list[float]:
    """lr used at each optimizer step 0 .. epochs*spe-1, plus the lr after the last step."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base, momentum=0.9)
    s = build_scheduler(opt, sched, epochs, spe, base)
    out = []
    for _ in range(epochs * spe):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    out.append(opt.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize(
    "name",
    ["constant", "step", "multistep", "cosine", "cosine_restarts", "onecycle", "cosine_cycles_decay", "linear"],
)
def test_every_schedule_runs(name):
    lrs = lr_trace(SchedConfig(name=name, step_size=2, milestones=[2, 4], t0=2, decay_every=3))
    assert len(lrs) == 61 and all(math.isfinite(v) and 0 <= v <= BASE + 1e-12 for v in lrs)
    if name == "constant":
        assert lrs == [BASE] * 61
    else:
        assert len({round(v, 12) for v in lrs}) > 1


def _drops(lrs: list[float]) -> list[int]:
    return [i for i in range(1, len(lrs)) if not math.isclose(lrs[i], lrs[i - 1], rel_tol=1e-9)]


def test_step_and_multistep_drop_exactly_at_epoch_boundaries():
    step = lr_trace(SchedConfig(name="step", step_size=2, gamma=0.5))
    assert _drops(step) == [20, 40, 60]
    assert step[19] == pytest.approx(BASE) and step[20] == pytest.approx(BASE * 0.5)
    assert step[40] == pytest.approx(BASE * 0.25) and step[60] == pytest.approx(BASE * 0.125)
    multi = lr_trace(SchedConfig(name="multistep", milestones=[1, 4], gamma=0.1))
    assert _drops(multi) == [10, 40]
    assert multi[10] == pytest.approx(BASE * 0.1) and multi[40] == pytest.approx(BASE * 0.01)


@pytest.mark.parametrize("name", ["step", "multistep"])
def test_step_drops_stay_on_epoch_boundaries_with_warmup(name):
    """The module promises drops on epoch boundaries, warm-up or not (multistep shifts its milestones)."""
    lrs = lr_trace(SchedConfig(name=name, step_size=2, milestones=[2, 4], gamma=0.5, warmup_epochs=0.5))
    after_warmup = [i for i in _drops(lrs) if i > 5]
    assert after_warmup == ([20, 40, 60] if name == "step" else [20, 40]), after_warmup
    assert lrs[20] == pytest.approx(BASE * 0.5)


def test_cosine_reaches_min_lr():
    lrs = lr_trace(SchedConfig(name="cosine", min_lr=0.001))
    assert lrs[0] == pytest.approx(BASE)
    assert lrs[-1] == pytest.approx(0.001, abs=1e-9)
    assert lrs[30] == pytest.approx(0.001 + (BASE - 0.001) * 0.5, rel=1e-6)  # half way
    assert all(a >= b - 1e-12 for a, b in zip(lrs, lrs[1:]))


def test_warmup_ramps_linearly_then_hands_over():
    lrs = lr_trace(SchedConfig(name="cosine", warmup_epochs=1))
    ramp = lrs[:11]
    for i, v in enumerate(ramp):
        assert v == pytest.approx(BASE * (i + 1) / 11, rel=1e-6), (i, v)
    assert lrs[10] == pytest.approx(BASE)  # the cosine starts at the base lr ...
    # ... and anneals over the remaining 50 steps
    assert lrs[35] == pytest.approx(BASE * 0.5 * (1 + math.cos(math.pi * 25 / 50)), rel=1e-6)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)
    const = lr_trace(SchedConfig(name="constant", warmup_epochs=1))
    assert const[:11] == pytest.approx([BASE * (i + 1) / 11 for i in range(11)]) and set(const[10:]) == {BASE}


def test_cosine_restarts_restart_every_t0_epochs():
    lrs = lr_trace(SchedConfig(name="cosine_restarts", t0=2))
    for restart in (0, 20, 40, 60):
        assert lrs[restart] == pytest.approx(BASE), restart
        if restart:
            assert lrs[restart - 1] < 0.01 * BASE
    assert lrs[10] == pytest.approx(BASE * 0.5, rel=1e-6)


def test_cosine_cycles_decay_formula():
    def f(e):
        return cosine_cycles_decay(e, t0=50, decay_every=80, gamma=0.1)

    assert f(0) == pytest.approx(1.0)
    assert f(25) == pytest.approx(0.5)
    assert f(50) == pytest.approx(1.0)  # new cycle, still before the first decay
    assert f(80) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 30 / 50)))
    assert f(100) == pytest.approx(0.1)  # cycle restart at peak 0.1
    assert f(160) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 10 / 50)))
    assert cosine_cycles_decay(25, 50, 80, 0.1, floor=0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    # the scheduler follows the formula per step (epoch = step / steps_per_epoch)
    lrs = lr_trace(SchedConfig(name="cosine_cycles_decay", t0=2, decay_every=3, gamma=0.1), epochs=6)
    for s in (0, 5, 15, 20, 30, 45, 60):
        assert lrs[s] == pytest.approx(BASE * cosine_cycles_decay(s / SPE, 2, 3, 0.1), rel=1e-6), s


def test_onecycle_peaks_at_pct_start_and_refuses_warmup():
    lrs = lr_trace(SchedConfig(name="onecycle", pct_start=0.25), epochs=4)
    peak = max(range(40), key=lambda i: lrs[i])
    assert peak in (9, 10)  # pct_start * total_steps (torch counts the peak at step pct*total - 1)
    assert lrs[peak] == pytest.approx(BASE)
    assert lrs[0] == pytest.approx(BASE / 25)
    assert lrs[39] < BASE / 1000
    with pytest.raises(ValueError, match="warmup"):
        lr_trace(SchedConfig(name="onecycle", warmup_epochs=1))


# ----------------------------------------------------------------------------------------------------------
# EMA


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def _perturb(model: nn.Module, g: torch.Generator) -> None:
    """A fake optimizer step: new parameters and, via a train-mode forward, new BN statistics."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    model.train()
    model(torch.randn(8, 3, 6, 6, generator=g) * 3 + 1)


def _ema_recursion(decay: float, warmup_steps: int, k: int, seed: int = 0):
    torch.manual_seed(seed)
    model = Tiny()
    g = torch.Generator().manual_seed(seed)
    ema = EMA(model, decay, warmup_steps)
    manual = None
    for t in range(k):
        _perturb(model, g)
        ema.update(model, step=t + 1)
        cur = {n: v.detach().clone() for n, v in model.state_dict().items()}
        if manual is None:
            manual = cur  # the first update copies the model
        else:
            d = min(decay, (1 + t) / (10 + t)) if t < warmup_steps else decay
            manual = {n: (d * manual[n] + (1 - d) * cur[n]) if cur[n].is_floating_point() else cur[n] for n in cur}
    return model, ema, manual


@pytest.mark.parametrize("decay,warmup", [(0.7, 0), (0.99, 6)])
def test_ema_matches_manual_recursion(decay, warmup):
    model, ema, manual = _ema_recursion(decay, warmup, k=8)
    got = ema.module.state_dict()
    assert set(got) == set(manual)
    for name, want in manual.items():
        assert torch.allclose(got[name].double(), want.double(), rtol=1e-5, atol=1e-6), name
    # BN running statistics are averaged, not copied from the model
    assert not torch.allclose(got["bn.running_mean"], model.bn.running_mean)
    # num_batches_tracked stays an integer (the model's count)
    assert got["bn.num_batches_tracked"].dtype == torch.int64
    assert int(got["bn.num_batches_tracked"]) == int(model.bn.num_batches_tracked) == 8


def test_ema_warmup_decay_differs_from_plain_decay():
    _, ema_w, _ = _ema_recursion(0.99, 6, k=5)
    _, ema_p, manual_p = _ema_recursion(0.99, 0, k=5)
    w, p = ema_w.module.state_dict()["fc.weight"], ema_p.module.state_dict()["fc.weight"]
    assert not torch.allclose(w, p)  # warm-up uses decays 1/5.., plain uses 0.99 from the start
    assert torch.allclose(p, manual_p["fc.weight"], atol=1e-6)


def test_ema_every_n_steps():
    torch.manual_seed(0)
    model = Tiny()
    ema = EMA(model, 0.5, every=2)
    g = torch.Generator().manual_seed(0)
    _perturb(model, g)
    ema.update(model, step=1)  # skipped
    assert int(ema.averaged.n_averaged) == 0
    ema.update(model, step=2)
    assert int(ema.averaged.n_averaged) == 1
    assert torch.equal(ema.module.fc.weight, model.fc.weight)


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


@pytest.mark.parametrize(
    "major, hip, native", [(8, None, True), (9, None, True), (7, None, False), (6, None, False), (7, "6.2", True)]
)
def test_amp_auto_is_bf16_only_on_gpus_with_bf16_tensor_cores(monkeypatch, major, hip, native):
    """On CUDA, ``auto`` takes bf16 from Ampere (compute capability 8.0) on, and on ROCm; a V100 (7.0) or T4 (7.5)
    emulates bf16, so it stays fp32 there. The device's own properties are read, not the current device's."""
    asked = []
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda d: asked.append(d) or SimpleNamespace(major=major)
    )
    monkeypatch.setattr(torch.version, "hip", hip)
    assert device_mod.bf16_is_native(torch.device("cuda", 1)) is native
    assert hip or asked == [torch.device("cuda", 1)]


def test_cpu_flags_are_read_from_proc_cpuinfo():
    """The detection reads the real flags line of this machine (x86 Linux: it lists sse2), cached once."""
    if not Path("/proc/cpuinfo").is_file() or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 Linux only")
    assert "sse2" in device_mod._cpu_flags()
    assert device_mod.cpu_name().startswith(device_mod._cpuinfo()["model name"] + " (cpu family ")


def test_cpu_name_tells_apart_machines_with_the_same_model_name(monkeypatch):
    """Benchmarks record ``cpu_name()``: "AMD EPYC" alone is both an AVX2 machine and a Zen 5 twice as fast."""
    zen3 = {"model name": "AMD EPYC", "cpu family": "25", "model": "1", "flags": "fpu sse2 avx2"}
    zen5 = {**zen3, "cpu family": "26", "model": "2", "flags": "fpu sse2 avx2 avx512f avx512_bf16"}
    for info, expected in [
        (zen3, "AMD EPYC (cpu family 25, model 1, no bf16 instructions)"),
        (zen5, "AMD EPYC (cpu family 26, model 2, bf16 instructions)"),
    ]:
        monkeypatch.setattr(device_mod, "_cpuinfo", lambda info=info: info)
        assert device_mod.cpu_name() == expected
    monkeypatch.setattr(device_mod, "_cpuinfo", dict)  # no /proc/cpuinfo (macOS, Windows)
    assert device_mod.cpu_name().endswith("(no bf16 instructions)")


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
