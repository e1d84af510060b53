"""The sweep file (reglab/sweep/spec.py, its space: reglab/sweep/space.py): validation with one clear error per
mistake, the search space's types and the trial configs, overrides that overlap a searched key, a saved sweep read
back, the pruner's resource, the GP sampler's missing extra."""

from __future__ import annotations

import optuna
import pytest
import yaml

from reglab.errors import UserError
from reglab.sweep import Param, parse_sweep
from reglab.sweep.spec import overlapping, searched_override_error
from tests.helpers.configs import SWEEP_TINY, sweep_dict

TINY = SWEEP_TINY


@pytest.mark.parametrize(
    "change, words",
    [
        ({"sampler": "tpee"}, ["unknown sampler", "did you mean 'tpe'"]),
        ({"pruner": "hyperbnd"}, ["unknown pruner", "did you mean 'hyperband'"]),
        ({"pruner": {"name": "median", "n_startup": 2}}, ["unknown option", "n_startup_trials"]),
        ({"space": {"optim.lr": {"type": "logfloat", "low": 0, "high": 0.3}}}, ["space.optim.lr", "low > 0"]),
        ({"space": {"optim.lr": {"type": "float", "low": 0.3, "high": 0.1}}}, ["low=0.3", "smaller than high"]),
        ({"space": {"optim.lrr": {"type": "float", "low": 0.1, "high": 0.3}}}, ["optim.lrr", "did you mean 'lr'"]),
        ({"space": {"optim.lr": {"low": 0.1, "high": 0.3}}}, ["space.optim.lr", "type:"]),
        (
            {"space": {"optim.lr": {"type": "flaot", "low": 0.1, "high": 0.3}}},
            ["unknown type", "did you mean 'float'"],
        ),
        (
            {"space": {"optim.momentum": {"type": "float", "low": 0.5, "high": 1.5}}},
            ["optim.momentum=1.5", "[0, 1)"],
        ),
        ({"space": {"train.batch_size": {"type": "int", "low": 16, "high": 64.5}}}, ["whole number"]),
        ({"space": {"data.val_size": [100, 200]}}, ["cannot be searched", "validation set"]),
        ({"sampler": "grid", "space": {"optim.lr": {"type": "float", "low": 0.1, "high": 0.3}}}, ["grid: [v1"]),
        ({"objective": "test_acc"}, ["objective", "validation accuracy"]),
        ({"trails": 5}, ["unknown key 'trails'", "did you mean 'trials'"]),
        ({"overrides": [*TINY, "data.val_size=0"]}, ["data.val_size must be > 0"]),
    ],
)
def test_bad_sweep_files_are_one_clear_user_error(change, words):
    with pytest.raises(UserError) as exc:
        parse_sweep(sweep_dict(**change), "tiny", "tiny.yaml")
    text = str(exc.value)
    assert text.startswith("tiny.yaml: ") and "\n" not in text
    for w in words:
        assert w in text, text


def test_space_types_and_trial_configs():
    base = [o for o in TINY if not o.startswith("model.channels")] + ["train.epochs=3"]
    spec = parse_sweep(
        sweep_dict(
            overrides=base,
            space={
                "optim.lr": {"type": "logfloat", "low": "1e-3", "high": 0.3},  # YAML 1.1 reads 1e-3 as a string
                "optim.weight_decay": {"type": "float", "low": 0.0, "high": 1e-3},
                "model.stem_width": {"type": "int", "low": 8, "high": 32, "step": 8},
                "model.channels": {"choices": [[8, 16, 32], [16, 32, 64]]},
            },
        ),
        "tiny",
    )
    kinds = {p.key: (p.type, p.log) for p in spec.space}
    assert kinds == {
        "optim.lr": ("float", True),
        "optim.weight_decay": ("float", False),
        "model.stem_width": ("int", False),
        "model.channels": ("categorical", False),
    }
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    values = {p.key: p.suggest(trial) for p in spec.space}
    assert values["model.channels"] in ([8, 16, 32], [16, 32, 64])  # decoded from its JSON text in Optuna
    assert isinstance(trial.params["model.channels"], str)
    assert values["model.stem_width"] in (8, 16, 24, 32) and 1e-3 <= values["optim.lr"] <= 0.3
    cfg = spec.config(values)
    assert cfg.model.channels == values["model.channels"] and cfg.optim.lr == pytest.approx(values["optim.lr"])
    assert cfg.train.epochs == 3 and cfg.data.dataset == "synthetic"  # base overrides under the parameters


def test_saved_sweep_reads_back_identically(tmp_path):
    spec = parse_sweep(
        sweep_dict(
            space={"mix.mixup_alpha": {"type": "float", "low": 0.0, "high": 1.0}, "optim.name": ["sgd", "adam"]},
            pruner={"name": "median", "n_startup_trials": 2},
        ),
        "tiny",
    )
    again = parse_sweep(yaml.safe_load(yaml.safe_dump(spec.to_dict())), "tiny")
    assert again.to_dict() == spec.to_dict() and again.space[0].low == 0.0  # low: 0.0 is not dropped as falsy
    assert again.make_pruner()._n_startup_trials == 2


def test_pruner_resource_is_epochs():
    spec = parse_sweep(sweep_dict(overrides=[*TINY, "train.epochs=9"]), "tiny")
    hb = spec.make_pruner()
    assert isinstance(hb, optuna.pruners.HyperbandPruner)
    assert (hb._min_resource, hb._max_resource, hb._reduction_factor) == (1, 9, 3)


def test_gp_sampler_without_scipy_says_how_to_install_it(monkeypatch):
    import importlib.util

    spec = parse_sweep(sweep_dict(sampler="gp"), "tiny", "tiny.yaml")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install 'reglab\[sweep\]'"):
        spec.make_sampler(0)


def test_overrides_overlapping_a_searched_key_on_dotted_boundaries():
    """An override of a searched key, of a key above one (it would replace the trial's value with its own) or of
    one under it (it would clobber part of the trial's value) overlaps; a key that merely starts with the same
    letters does not."""
    space = [Param("optim.param_groups.0.lr_scale", "float", 0.5, 2.0), Param("model.channels", "categorical")]
    assert overlapping("optim.param_groups", space) == ["optim.param_groups.0.lr_scale"]
    assert overlapping("optim", space) == ["optim.param_groups.0.lr_scale"]
    assert overlapping("optim.param_groups.0.lr_scale", space) == ["optim.param_groups.0.lr_scale"]
    assert overlapping("model.channels.0", space) == ["model.channels"]
    # an old spelling sets the key it is rewritten into (reglab.config.legacy)
    assert overlapping("optim.norm_lr_scale", space) == ["optim.param_groups.0.lr_scale"]
    assert overlapping("optim.norm_lr_scale_on", space) == ["optim.param_groups.0.lr_scale"]
    assert overlapping("train.tta_translate", [Param("train.tta_shifts", "categorical")]) == ["train.tta_shifts"]
    for key in ("optim.param_groups.0.lr_scale_x", "optim.param_group", "model.channel", "model.channels_x"):
        assert overlapping(key, space) == [], key
    text = searched_override_error(
        ["model.channels=[8]", "optim.param_groups=[]", "train.epochs=2"], space, "s.yaml"
    )
    assert text == (
        "model.channels, optim.param_groups (overlaps the searched optim.param_groups.0.lr_scale): searched by "
        "s.yaml (its space), so a command-line value would replace every trial's sampled one (or part of it); "
        "drop it from the command line, or from the sweep's space to fix it."
    )
    assert searched_override_error(["train.epochs=2", "optim.lr_x=1"], space, "s.yaml") is None


def test_file_override_under_a_searched_key_is_refused():
    base = [o for o in TINY if not o.startswith("model.channels")]
    with pytest.raises(UserError) as exc:
        parse_sweep(
            sweep_dict(
                overrides=[*base, "model.channels.0=8"], space={"model.channels": [[8, 16, 32], [16, 32, 64]]}
            ),
            "tiny",
            "tiny.yaml",
        )
    text = str(exc.value)
    assert text == (
        "tiny.yaml: overrides ['model.channels.0=8'] set keys the space searches, or keys above or under them "
        "(model.channels); drop them from overrides."
    )
