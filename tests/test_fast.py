"""The time-to-accuracy parts (issue 8): fastnet, patch whitening, lookahead, norm lr scale, warm-up start,
translate TTA -- each against an independent computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reglab.config import Freeze, ParamGroup, config_from_dict, load_config
from reglab.errors import UserError
from reglab.models import build, create, forward_gflops
from reglab.models.fastnet import dirac_conv, patch_whitening
from reglab.train import run
from reglab.train.evaluate import predict_logits
from reglab.train.lookahead import Lookahead
from reglab.train.optim import build_optimizer, build_scheduler

SYN = [
    "data.dataset=synthetic",
    "data.synthetic_train=600",
    "data.synthetic_test=200",
    "data.val_size=100",
    "train.batch_size=50",
    "train.eval_batch_size=500",
    "run.device=cpu",
]


def correlated_images(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 32, 32, generator=g)
    smooth = F.avg_pool2d(F.pad(base, (1, 1, 1, 1), mode="reflect"), 3, 1)  # neighbouring pixels correlate
    mix = torch.tensor([[1.0, 0.2, 0.1], [0.9, 0.4, 0.0], [0.8, 0.1, 0.5]])
    return torch.einsum("ck,nkhw->nchw", mix[:, :1], smooth) + 0.1 * torch.randn(n, 3, 32, 32, generator=g)


def test_patch_whitening_makes_patch_covariance_the_identity():
    x = correlated_images()
    w = patch_whitening(x, 2, eps=1e-8)
    assert w.shape == (24, 3, 2, 2)
    assert torch.allclose(w[12:], -w[:12])
    out = F.conv2d(x, w[:12]).permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = out.T @ out / len(out)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=1e-3)
    # against numpy's eigendecomposition of the same covariance: the same whitening (up to each sign)
    import numpy as np

    p = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double().numpy()
    vals, vecs = np.linalg.eigh(p.T @ p / len(p))
    ref = vecs[:, ::-1].T / np.sqrt(vals[::-1] + 1e-8)[:, None]
    got = w[:12].reshape(12, 12).double().numpy()
    assert np.allclose(np.abs(got), np.abs(ref), rtol=1e-3, atol=1e-3)


def test_dirac_conv_passes_its_input_through():
    conv = dirac_conv(8, 16)
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(conv(x)[:, :8], x, atol=1e-6)


def test_fastnet_presets_shapes_and_flops():
    m = create("fastnet", 10)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert forward_gflops(m) == pytest.approx(0.236, abs=0.002)  # airbench94's 0.36 PFLOP / (50k * 10 * 3)
    assert forward_gflops(create("fastnet_half", 10)) == pytest.approx(0.066, abs=0.002)
    assert not m.whiten.weight.requires_grad and m.whiten.bias.requires_grad
    assert all(not bn.weight.requires_grad for bn in m.modules() if isinstance(bn, torch.nn.BatchNorm2d))
    narrow = build(load_config(None, ["model.name=fastnet", "model.channels=[8,16,16]"]).model, 100)
    assert narrow(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(UserError, match="model.blocks"):
        build(load_config(None, ["model.name=fastnet", "model.blocks=[1,1,1]"]).model, 10)


def test_training_sets_the_whitening_stem_from_the_training_images_and_keeps_it_frozen(tmp_path):
    cfg = load_config(
        None,
        [
            *SYN,
            "model.name=fastnet",
            "model.channels=[8,16,16]",
            "train.epochs=1",
            "train.init_images=300",
            f"run.dir={tmp_path / 'r'}",
        ],
    )
    from reglab.train.loop import Run

    r = Run(cfg, torch.device("cpu"))
    expected = patch_whitening(r.train_loader.normalize(r.train_loader.images[:300]), 2)
    assert r.model.whitened and torch.allclose(r.model.whiten.weight, expected)
    before = r.model.whiten.weight.clone(), r.model.whiten.bias.clone()
    r.train_epoch([])
    assert torch.equal(r.model.whiten.weight, before[0])  # frozen
    assert not torch.equal(r.model.whiten.bias, before[1])  # trained


def test_whiten_bias_trains_for_its_epochs_then_stays_put():
    cfg = load_config(
        None,
        [
            *SYN,
            "model.name=fastnet",
            "model.channels=[8,16,16]",
            "train.epochs=3",
            "train.freeze=[{match: whiten.bias, start_epoch: 1}]",
            "optim.weight_decay=0.01",
        ],
    )
    from reglab.train.loop import Run

    r = Run(cfg, torch.device("cpu"))
    start = r.model.whiten.bias.clone()
    r.train_epoch([])
    r.epoch = 1
    after_one = r.model.whiten.bias.clone()
    head = r.model.head.weight.clone()
    r.train_epoch([])
    assert not torch.equal(after_one, start)  # trained in epoch 1
    assert torch.equal(r.model.whiten.bias, after_one)  # frozen from epoch 2: no step, no momentum, no decay
    assert not torch.equal(r.model.head.weight, head)  # while the rest trains
    with pytest.raises(UserError, match=r"train.freeze\[0\].match: 'whiten.bias' selects no trainable parameter"):
        Run(load_config(None, [*SYN, "model.name=resnet8_s2", "train.whiten_bias_epochs=1"]), torch.device("cpu"))


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


def test_lookahead_follows_its_formula():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    la = Lookahead(model, total_steps=20, every=5, decay=0.8, power=2.0)
    slow = [t.clone() for t in la.slow]
    for step in range(1, 21):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
        fast = [t.detach().clone() for t in model.state_dict().values() if t.is_floating_point()]
        la.update(model, step)
        now = [t for t in model.state_dict().values() if t.is_floating_point()]
        if step == 20:
            assert all(torch.allclose(n, s, atol=1e-6) for n, s in zip(now, slow))  # the end: model = slow
        elif step % 5 == 0:
            d = 0.8 * (step / 20) ** 2
            slow = [d * s + (1 - d) * f for s, f in zip(slow, fast)]
            assert all(torch.allclose(n, s, atol=1e-6) for n, s in zip(now, slow))
        else:
            assert all(torch.equal(n, f) for n, f in zip(now, fast))


def test_norm_lr_scale_keeps_the_decay_per_step():
    model = create("fastnet", 10, channels=[8, 16, 16])
    cfg = load_config(
        None,
        [
            "optim.lr=0.5",
            "optim.weight_decay=1e-3",
            "optim.param_groups=[{match: norm, lr_scale: 64, wd_scale: 0.015625}]",
        ],
    ).optim
    opt = build_optimizer(model, cfg)
    conv, norm = opt.param_groups
    assert conv["lr"] == 0.5 and norm["lr"] == 32.0
    assert conv["lr"] * conv["weight_decay"] == pytest.approx(norm["lr"] * norm["weight_decay"])
    bn_shifts = {id(m.bias) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert {id(p) for p in norm["params"]} == bn_shifts and len(bn_shifts) == 6  # the BN scales are frozen
    assert id(model.whiten.bias) in {id(p) for p in conv["params"]}  # like airbench: a bias, not a norm param
    both = build_optimizer(
        model,
        load_config(None, ["optim.lr=0.5", "optim.param_groups=[{match: [norm, bias], lr_scale: 64}]"]).optim,
    )
    weights, scaled = both.param_groups
    assert {id(p) for p in scaled["params"]} == bn_shifts | {id(model.whiten.bias)} and scaled["lr"] == 32.0
    assert all(p.ndim > 1 for p in weights["params"])
    sched = build_scheduler(opt, load_config(None, ["sched.name=linear", "sched.min_lr=0.05"]).sched, 2, 10, 0.5)
    for _ in range(20):
        opt.step()
        sched.step()
    assert norm["lr"] / conv["lr"] == pytest.approx(64.0)  # the schedule scales both groups alike


def test_warmup_start_is_the_first_lr_fraction():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    cfg = load_config(
        None, ["sched.name=linear", "sched.warmup_epochs=1", "sched.warmup_start=0.2", "sched.min_lr=0.07"]
    ).sched
    sched = build_scheduler(opt, cfg, 3, 10, 1.0)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.2) and lrs[10] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(0.6)
    assert lrs[-1] == pytest.approx(1.0 - (1.0 - 0.07) * 19 / 20)


def test_translate_tta_averages_six_views():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.randn(2, 3, 8, 8)
    model(x)

    def m(v):
        return 0.5 * (model(v) + model(v.flip(3)))

    pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
    expected = 0.5 * m(x) + 0.25 * (m(pad[:, :, :8, :8]) + m(pad[:, :, 2:, 2:]))
    assert torch.allclose(predict_logits(model, x, tta=True, shifts=[[-1, -1], [1, 1]]), expected, atol=1e-6)
    assert torch.allclose(predict_logits(model, x, tta=True), m(x), atol=1e-6)


def test_tta_shifts_give_the_old_tta_translate_views_bit_for_bit():
    """train.tta_translate=k was six views computed as 0.5 * m(x) + 0.25 * (m(x @ -k) + m(x @ +k)); its
    replacement, tta_shifts [[-k, -k], [k, k]] (what the old key now reads as), must give the same bits."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.randn(3, 3, 12, 12)
    model(x)

    def m(v):
        return 0.5 * (model(v).float() + model(v.flip(3)).float())

    for k in (1, 2):
        pad = F.pad(x, (k, k, k, k), mode="reflect")
        old = 0.5 * m(x) + 0.25 * (m(pad[:, :, :12, :12]) + m(pad[:, :, 2 * k : 2 * k + 12, 2 * k : 2 * k + 12]))
        shifts = load_config(None, ["train.tta=true", f"train.tta_translate={k}"]).train.tta_shifts
        assert shifts == [[-k, -k], [k, k]]
        assert torch.equal(predict_logits(model, x, tta=True, shifts=shifts), old)
    # a shift view on its own (no flip): the window moved right by 2 px and up by 1 px
    pad = F.pad(x, (2, 2, 2, 2), mode="reflect")
    one = 0.5 * model(x) + 0.5 * model(pad[:, :, 1 : 1 + 12, 4 : 4 + 12])
    assert torch.allclose(predict_logits(model, x, shifts=[[2, -1]]), one, atol=1e-6)


def test_bad_fast_options_are_user_errors():
    with pytest.raises(UserError, match=r"train.tta_shifts\[1\]=\[0, 0\] must be \[dx, dy\]"):
        load_config(None, ["train.tta_shifts=[[1, 1], [0, 0]]"])
    with pytest.raises(UserError, match=r"train.tta_shifts\[0\]=\[5, 0\] must be \[dx, dy\], pixels in \[-4, 4\]"):
        load_config(None, ["train.tta_shifts=[[5, 0]]"])
    with pytest.raises(UserError, match="train.tta_shifts=.* must not repeat a shift"):
        load_config(None, ["train.tta_shifts=[[1, 1], [1, 1]]"])
    with pytest.raises(UserError, match="optim.norm_lr_scale"):
        load_config(None, ["optim.norm_lr_scale=0"])
    with pytest.raises(UserError, match=r"optim.param_groups\[0\].lr_scale=0.0 must be > 0"):
        load_config(None, ["optim.param_groups=[{match: norm, lr_scale: 0}]"])
    with pytest.raises(UserError, match=r"optim.param_groups\[0\].wd_scale=-1.0 must be >= 0"):
        load_config(None, ["optim.param_groups=[{match: norm, wd_scale: -1}]"])
    with pytest.raises(
        UserError,
        match=r"param_groups\[0\].match: 'nrom' is neither a parameter kind .* \(did you mean 'norm'\?\)",
    ):
        load_config(None, ["optim.param_groups=[{match: nrom, lr_scale: 2}]"])
    with pytest.raises(
        UserError, match=r"unknown config key 'optim.param_groups\[0\].lr_scael' \(did you mean 'lr_scale'\?\)"
    ):
        load_config(None, ["optim.param_groups=[{match: norm, lr_scael: 2}]"])
    with pytest.raises(
        UserError, match=r"optim.param_groups\[0\]: expected a mapping of keys \(match, lr_scale, wd_scale\)"
    ):
        load_config(None, ["optim.param_groups=[norm]"])
    with pytest.raises(
        UserError, match="optim.norm_lr_scale is the old spelling of optim.param_groups, and both are set"
    ):
        load_config("fast-cpu-85", ["optim.norm_lr_scale=16"])
    with pytest.raises(UserError, match="sched.warmup_start"):
        load_config(None, ["sched.warmup_start=1.5"])
    with pytest.raises(UserError, match=r"train.freeze\[0\].start_epoch=-1 must be >= 0"):
        load_config(None, ["train.whiten_bias_epochs=-1"])


def test_old_keys_read_as_their_replacements():
    """Recipes, overrides and saved run configs that use the keys before issue 25 load as the new mechanisms."""
    old = load_config(
        None,
        [
            "optim.norm_lr_scale=64",
            "optim.norm_lr_scale_on=norm_and_bias",
            "train.whiten_bias_epochs=3",
            "train.tta=true",
            "train.tta_translate=1",
        ],
    )
    assert old.optim.param_groups == [ParamGroup(match=["norm", "bias"], lr_scale=64.0, wd_scale=1 / 64)]
    assert old.train.freeze == [Freeze(match="whiten.bias", start_epoch=3)]
    assert old.train.tta_shifts == [[-1, -1], [1, 1]]
    saved = load_config("fast-gpu-94").to_dict()
    saved["optim"].pop("param_groups")
    saved["optim"]["norm_lr_scale"], saved["optim"]["norm_lr_scale_on"] = 64.0, "norm"
    assert config_from_dict(saved) == load_config("fast-gpu-94")
    assert load_config(None, ["optim.norm_lr_scale=1", "train.whiten_bias_epochs=null"]) == load_config(None)


def test_param_groups_assign_lr_and_weight_decay_by_first_match():
    """optim.param_groups on a ResNet: each parameter takes the first entry that selects it; the rest keep
    optim.lr / optim.weight_decay; wd_exempt_norm_bias zeroes the decay of 1-D parameters in every group."""
    model = create("resnet8_s2", 10)
    rules = (
        "[{match: fc.*, lr_scale: 0.5}, {match: [norm, bias], lr_scale: 4, wd_scale: 0.25}, "
        "{match: conv, wd_scale: 0}]"
    )
    cfg = load_config(None, ["optim.lr=0.1", "optim.weight_decay=1e-3", f"optim.param_groups={rules}"]).optim
    opt = build_optimizer(model, cfg)
    got = {id(p): (g.get("lr", 0.1), g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    for name, p in model.named_parameters():
        if name.startswith("fc."):
            assert got[id(p)] == (0.05, 1e-3), name
        elif id(p) in norms or name.endswith("bias"):
            assert got[id(p)] == (0.4, 1e-3 * 0.25), name
        else:
            assert p.ndim == 4 and got[id(p)] == (0.1, 0.0), name
    assert len(got) == len(list(model.parameters()))
    exempt = build_optimizer(
        model, load_config(None, ["optim.wd_exempt_norm_bias=true", f"optim.param_groups={rules}"]).optim
    )
    assert all(g["weight_decay"] == 0 for g in exempt.param_groups for p in g["params"] if p.ndim <= 1)
    with pytest.raises(
        UserError, match=r"optim.param_groups\[0\].match: 'head.\*' selects no trainable parameter"
    ):
        build_optimizer(model, load_config(None, ["optim.param_groups=[{match: head.*, lr_scale: 2}]"]).optim)


def test_lookahead_follows_the_model_when_its_tensors_are_replaced():
    """Lookahead keeps views of the model's tensors; after ``.to(memory_format=...)`` gives the conv weight new
    storage it must update the new tensor, not the old one."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    la = Lookahead(model, total_steps=10, every=1, decay=0.5, power=0.0)
    before = model[0].weight.data_ptr()
    model.to(memory_format=torch.channels_last)
    assert model[0].weight.data_ptr() != before
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    la.update(model, 1)  # d = 0.5: slow <- (slow + fast) / 2 = start + 0.5; fast <- slow
    torch.testing.assert_close(model[0].weight.detach(), start + 0.5)
    torch.testing.assert_close(la.slow[0], start + 0.5)


def test_lookahead_run_resumes_bit_identical(resumes_bit_identical):
    a = resumes_bit_identical(
        [
            *SYN,
            "model.name=fastnet",
            "model.channels=[8,16,16]",
            "train.epochs=3",
            "optim.lookahead=true",
            "optim.lookahead_every=2",
            "optim.param_groups=[{match: norm, lr_scale: 16, wd_scale: 0.0625}]",
            "train.tta=true",
            "train.tta_shifts=[[-1, -1], [1, 1]]",
            "train.freeze=[{match: whiten.bias, start_epoch: 2}]",
        ]
    )  # the resumed third epoch must freeze the bias again
    assert math.isfinite(a.summary["test_acc"])


def test_alternating_flip_mirrors_each_image_in_exactly_one_of_two_epochs():
    from reglab.data.augment import AlternatingFlip
    from reglab.data.datasets import Split
    from reglab.data.loader import DeviceLoader

    n = 64
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(n)  # label = image index, to find each image again
    split = Split(images, labels)
    flip = [AlternatingFlip()]
    loader = DeviceLoader(split, 16, [0.0] * 3, [1 / 255] * 3, shuffle=True, uint8_transforms=flip, seed=3)

    def flipped_per_image():
        out = torch.zeros(n, dtype=torch.bool)
        for x, y in loader:
            raw = x.round().to(torch.uint8)
            is_flip = (raw == images[y].flip(3)).flatten(1).all(1)
            assert bool((is_flip | (raw == images[y]).flatten(1).all(1)).all())
            out[y] = is_flip
        return out

    e0, e1, e2 = flipped_per_image(), flipped_per_image(), flipped_per_image()
    assert torch.equal(e0, ~e1) and torch.equal(e0, e2)
    assert 16 < int(e0.sum()) < 48  # random bits, not all-or-nothing
    state = loader.state_dict()
    again = DeviceLoader(split, 16, [0.0] * 3, [1 / 255] * 3, shuffle=True, uint8_transforms=flip, seed=3)
    again.load_state_dict(state)
    bits = [ld.uint8_transforms[0].bits for ld in (loader, again)]
    assert again.epoch == 3 and torch.equal(*bits)
    assert flip[0].bits is None  # each loader binds its own copy


def test_time_to_accuracy_benchmark_runs_real_processes(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "tta.json"
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/time_to_accuracy.py",
            "fast-cpu-85",
            "data.dataset=synthetic",
            "data.synthetic_train=400",
            "data.synthetic_test=100",
            "data.val_size=0",
            "train.epochs=1",
            "train.batch_size=100",
            "model.channels=[8,16,16]",
            "--seeds",
            "2",
            "--target",
            "101",
            "--budget",
            "600",
            "--runs",
            str(tmp_path / "runs"),
            "-o",
            str(out),
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    assert result["goal_met"] is False  # 101% cannot be reached
    assert all(r["wall_s"] > r["train_s"] > 0 for r in result["runs"])  # the whole command includes the loop
    summary = json.loads((tmp_path / "runs" / "fast-cpu-85-s1" / "summary.json").read_text())
    assert summary["test_acc"] == result["runs"][1]["test_acc"]
    assert result["runs"][1]["precision"] == summary["precision"] in ("fp32", "bf16 autocast")
    assert "bf16 instructions" in result["machine"]  # cpu_name(): which of the "AMD EPYC"s it was
    assert "NOT met" in proc.stdout


def test_throughput_benchmark_measures_a_recipe_and_its_data_path():
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/train_throughput.py",
            "--recipe",
            "fast-cpu-85",
            "--seconds",
            "0.1",
            "--repeats",
            "1",
            "--max-steps",
            "2",
            "--matmul",
            "64",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| fastnet "))
    share = float(row.strip("| \n").split("|")[-1].strip().rstrip("%"))
    assert 0 < share < 100


def test_throughput_benchmark_measures_the_model_set_on_the_command_line():
    """``--set model.channels=...`` changes the model of both sides and of the GFLOPs / % of peak columns (they
    used to be the recipe's own model, so the plain loop trained a different network than reglab)."""
    import subprocess
    import sys
    from pathlib import Path

    from reglab.config import load_config
    from reglab.models import build, count_params, forward_gflops

    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/train_throughput.py",
            "--recipe",
            "fast-cpu-85",
            "--seconds",
            "0.1",
            "--repeats",
            "1",
            "--max-steps",
            "2",
            "--matmul",
            "64",
            "--set",
            "model.channels=[8,24,16]",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| fastnet ")).strip("| \n").split("|")
    model = build(load_config("fast-cpu-85", ["model.channels=[8,24,16]"]).model, 10)
    assert int(row[1].replace(",", "")) == count_params(model)
    assert float(row[2]) == pytest.approx(forward_gflops(model), abs=5e-4)
    assert forward_gflops(model) < 0.5 * forward_gflops(build(load_config("fast-cpu-85").model, 10))


def test_throughput_benchmark_compares_two_configs_of_a_recipe():
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    cmd = [
        sys.executable,
        "benchmarks/train_throughput.py",
        "--recipe",
        "fast-cpu-85",
        "--seconds",
        "0.1",
        "--repeats",
        "2",
        "--max-steps",
        "2",
        "--matmul",
        "64",
    ]
    proc = subprocess.run(
        [*cmd, "--set", "train.label_smoothing=0.0", "--against", "train.label_smoothing=0.2"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "| reglab train.label_smoothing=0.0 img/s | reglab train.label_smoothing=0.2 img/s | ratio |"
        in proc.stdout
    )
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| fastnet "))
    assert float(row.strip("| \n").split("|")[6]) > 0
    assert "pair ratios" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "benchmarks/train_throughput.py", "--against", "train.compile=false"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--against needs --recipe" in bad.stderr and "Traceback" not in bad.stderr
    typo = subprocess.run(
        [*cmd, "--against", "train.nosuch=1"], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert typo.returncode == 2 and "unknown config key 'train.nosuch'" in typo.stderr
    assert "Traceback" not in typo.stderr and "| fastnet " not in typo.stdout


def test_train_without_a_validation_split_reports_the_test_accuracy(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reglab",
            "train",
            "fast-cpu-85",
            "data.dataset=synthetic",
            "data.synthetic_train=300",
            "data.synthetic_test=100",
            "data.val_size=0",
            "train.epochs=1",
            "train.batch_size=100",
            "model.channels=[8,16,16]",
            f"run.dir={tmp_path / 'r'}",
            "--quiet",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "test accuracy" in proc.stdout and "no validation split" in proc.stdout


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_eval_of_a_translate_tta_run_reproduces_its_test_accuracy(tmp_path, amp):
    """``reglab eval`` evaluates as the run did (its TTA views and its precision), so it reproduces the test
    accuracy the run reported; in bf16 an fp32 evaluation gave another accuracy."""
    import json

    from reglab.track.inference import evaluate_command

    cfg = load_config(
        None,
        [
            *SYN,
            "model.name=fastnet",
            "model.channels=[8,16,16]",
            "train.epochs=1",
            "train.tta=true",
            "train.tta_shifts=[[-1, -1], [1, 1]]",
            "data.val_size=0",
            f"train.amp={amp}",
            f"run.dir={tmp_path / 'r'}",
        ],
    )
    result = run(cfg)
    out = evaluate_command(tmp_path / "r", checkpoint="last")
    saved = json.loads((tmp_path / "r" / "eval_test.json").read_text())
    assert saved["tta_shifts"] == [[-1, -1], [1, 1]] and "6 views" in out["_text"]
    assert saved["precision"] == result.summary["precision"] == ("fp32" if amp == "off" else "bf16 autocast")
    assert saved["acc"] == pytest.approx(result.summary["test_acc"], abs=1e-3)


def test_vs_airbench_cpu_copy_changes_only_device_lines_and_leaves_the_checkout_alone(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from vs_airbench import CPU_PATCH, cpu_copy

    src = tmp_path / "airbench94.py"
    original = "\n".join(["import torch", *[old for old, _ in CPU_PATCH], "x = 1", "for run in range(25)"]) + "\n"
    src.write_text(original)
    work = tmp_path / "work"
    work.mkdir()
    out = cpu_copy(src, work, runs=2)
    assert out.parent == work and src.read_text() == original
    patched = out.read_text()
    assert "for run in range(2)" in patched and "x = 1" in patched
    assert ".cuda()" not in patched and ".half()" not in patched and "torch.cuda" not in patched
    src.write_text("import torch\nnet = net.half().cuda()\n")  # another airbench version: a clear exit
    with pytest.raises(SystemExit, match="not the one --cpu knows"):
        cpu_copy(src, work, runs=1)


def test_curves_redraw_keeps_to_its_share_of_the_run_and_ends_current(tmp_path, monkeypatch):
    """A fake clock: 200 epochs of 0.7 s (fast-gpu-resnet18) with 0.3-s drawings; then slow epochs (a CPU)."""
    from types import SimpleNamespace

    from reglab.track import plots

    clock, drawn = [0.0], []

    def fake_plot(rows, path, title=""):
        clock[0] += 0.3
        drawn.append(len(rows))

    monkeypatch.setattr(plots, "plot_curves", fake_plot)
    for epoch_s, epochs in ((0.7, 200), (20.0, 5)):
        clock[0], drawn[:] = 0.0, []
        cb = plots.CurvesCallback(share=0.05, clock=lambda: clock[0])
        r = SimpleNamespace(
            metrics=[], dir=SimpleNamespace(path=tmp_path), cfg=SimpleNamespace(run=SimpleNamespace(name=""))
        )
        for e in range(epochs):
            clock[0] += epoch_s
            r.metrics.append({"epoch": e + 1})
            cb.on_epoch_end(r, r.metrics[-1])
        cb.on_end(r, {})
        assert drawn[0] == 1 and drawn[-1] == epochs  # the first epoch at once, the whole run at the end
        if epoch_s < 1:
            assert 10 <= len(drawn) <= 30  # every ~9 epochs, not 200 times
            assert 0.3 * len(drawn) <= 0.05 * clock[0] + 0.6  # <= 5% of the run, plus the final drawing
        else:
            assert drawn == list(range(1, epochs + 1))  # slow epochs: every one drawn


def test_a_run_ends_with_current_curves(tmp_path):
    from reglab.track import CurvesCallback

    cb = CurvesCallback(share=1e-9)  # only the first epoch and the end
    result = run(
        load_config(
            None,
            [
                *SYN,
                "model.name=fastnet",
                "model.channels=[8,16,16]",
                "train.epochs=3",
                f"run.dir={tmp_path / 'r'}",
            ],
        ),
        callbacks=[cb],
    )
    assert cb.drawn == 3 and (result.run_dir / "curves.png").stat().st_size > 10_000


def test_first_epoch_excess_is_the_start_up_inside_the_loop(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "time_to_accuracy.py"
    spec = importlib.util.spec_from_file_location("tta_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    write = lambda times: (tmp_path / "metrics.jsonl").write_text(  # noqa: E731
        "".join(json.dumps({"epoch": i + 1, "epoch_s": t}) + "\n" for i, t in enumerate(times))
    )
    write([5.0, 1.0, 1.2, 0.9, 3.0])  # the last epoch holds the final test evaluation: left out of the median
    assert bench.first_epoch_excess(tmp_path) == {"first_epoch_s": 5.0, "first_epoch_excess_s": 4.0}
    write([0.8, 1.0, 1.2])  # a first epoch faster than the rest: no excess
    assert bench.first_epoch_excess(tmp_path)["first_epoch_excess_s"] == 0.0
    write([5.0, 1.0])
    assert bench.first_epoch_excess(tmp_path)["first_epoch_excess_s"] is None
