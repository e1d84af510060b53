"""reglab.train.optim: every optimizer builds and steps, the weight-decay groups, and the lr schedules per step
(steps_per_epoch = 10), checked against their formulas and against torch.optim.lr_scheduler."""

from __future__ import annotations

import math
import typing

import pytest
import torch
import torch.nn as nn
from torch.optim import lr_scheduler as lrs

from reglab.config import OptimConfig, SchedConfig, load_config
from reglab.errors import UserError
from reglab.models import create
from reglab.train.optim import build_optimizer, build_scheduler, cosine_cycles_decay, param_groups


def tiny_model(num_classes: int = 10) -> nn.Module:
    return create("resnet20", num_classes, channels=[8, 16, 32], blocks=[1, 1, 1])


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
    return torch_trace(lambda opt: build_scheduler(opt, sched, epochs, spe, base), epochs, spe, base)


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


# ----------------------------------------------------------------------------------------------------------
# Every optimizer name of the config, and the schedules against torch.optim.lr_scheduler built by hand


@pytest.mark.parametrize("name", typing.get_args(typing.get_type_hints(OptimConfig)["name"]))
def test_every_optimizer_name_of_the_config_builds_and_steps(name):
    """Each ``optim.name`` the config accepts (a new one is picked up here) gives an optimizer whose step
    changes the weights and keeps them finite."""
    torch.manual_seed(0)
    model = tiny_model()
    opt = build_optimizer(model, OptimConfig(name=name, lr=0.01))
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    opt.step()
    after = list(model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, after))
    assert all(torch.isfinite(p).all() for p in after)


def torch_trace(make, epochs: int = 6, spe: int = SPE, base: float = BASE) -> list[float]:
    """The lr per step of ``make(optimizer)``, a torch.optim.lr_scheduler built directly, as lr_trace records it."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base, momentum=0.9)
    s = make(opt)
    out = []
    for _ in range(epochs * spe):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    out.append(opt.param_groups[0]["lr"])
    return out


TOTAL = 6 * SPE
REFERENCES = {
    "constant": (SchedConfig(name="constant"), lambda o: lrs.ConstantLR(o, factor=1.0, total_iters=0)),
    "step": (SchedConfig(name="step", step_size=2, gamma=0.5), lambda o: lrs.StepLR(o, 2 * SPE, gamma=0.5)),
    "multistep": (
        SchedConfig(name="multistep", milestones=[1, 4], gamma=0.1),
        lambda o: lrs.MultiStepLR(o, [1 * SPE, 4 * SPE], gamma=0.1),
    ),
    "cosine": (
        SchedConfig(name="cosine", min_lr=0.001),
        lambda o: lrs.CosineAnnealingLR(o, T_max=TOTAL, eta_min=0.001),
    ),
    "linear": (
        SchedConfig(name="linear", min_lr=0.01),
        lambda o: lrs.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=TOTAL),
    ),
    "cosine_restarts": (
        SchedConfig(name="cosine_restarts", t0=2, t_mult=2),
        lambda o: lrs.CosineAnnealingWarmRestarts(o, T_0=2 * SPE, T_mult=2),
    ),
    "onecycle": (
        SchedConfig(name="onecycle", pct_start=0.3),
        lambda o: lrs.OneCycleLR(o, max_lr=BASE, total_steps=TOTAL, pct_start=0.3),
    ),
    "cosine_with_warmup": (
        SchedConfig(name="cosine", warmup_epochs=1),
        lambda o: lrs.SequentialLR(
            o,
            [lrs.LinearLR(o, 1 / (SPE + 1), 1.0, total_iters=SPE), lrs.CosineAnnealingLR(o, T_max=TOTAL - SPE)],
            milestones=[SPE],
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(REFERENCES))
def test_schedule_lr_per_step_equals_torch_reference(case):
    sched, make = REFERENCES[case]
    assert lr_trace(sched) == pytest.approx(torch_trace(make), rel=1e-9, abs=1e-12)


def test_schedules_at_known_steps():
    """A few values by hand (base 0.1, 10 steps per epoch, 6 epochs)."""
    cosine = lr_trace(SchedConfig(name="cosine"))
    assert cosine[0] == pytest.approx(0.1) and cosine[30] == pytest.approx(0.05) and cosine[60] == pytest.approx(0)
    assert cosine[15] == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    linear = lr_trace(SchedConfig(name="linear", min_lr=0.01))
    assert linear[30] == pytest.approx(0.055) and linear[60] == pytest.approx(0.01)
    step = lr_trace(SchedConfig(name="step", step_size=2, gamma=0.5))
    assert (step[19], step[20], step[59]) == pytest.approx((0.1, 0.05, 0.025))


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


def test_muon_refuses_param_group_scales_on_conv_filters():
    """Muon trains every conv filter with its own lr and decay, so a param_groups rule that scales filters would
    be ignored: refused, naming the fix; rules on norm/bias parameters stay (the Muon recipes use them)."""
    model = create("fastnet", 10, channels=[8, 16, 16])
    with pytest.raises(UserError, match="optim.param_groups scales conv filters, but optim.name=muon"):
        build_optimizer(model, load_config("default", ["optim.param_groups=[{match: conv, lr_scale: 0.5}]"]).optim)
    opt = build_optimizer(model, load_config("default").optim)
    assert sum(p.ndim == 4 for g in opt.param_groups if g.get("muon") for p in g["params"]) > 0
