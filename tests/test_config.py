"""reglab.config: YAML recipes + dotted overrides -> a validated Config, and every mistake as one UserError."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml

from reglab.config import (
    Config,
    DataConfig,
    Freeze,
    OptimConfig,
    ParamGroup,
    config_from_dict,
    load_config,
    parse_override,
)
from reglab.errors import UserError


def test_defaults_without_recipe():
    cfg = load_config(None, [])
    assert cfg == Config()
    assert cfg.optim.lr == 0.1 and cfg.train.epochs == 10 and cfg.data.dataset == "cifar10"
    assert cfg.run.name is None


def test_overrides_are_applied_and_typed():
    cfg = load_config(
        None,
        [
            "optim.lr=0.05",
            "model.channels=[32,64,128]",
            "model.blocks=[1, 2, 3]",
            "train.epochs=3",
            "data.train_subset=null",
            "aug.pad_mode=zero",
            "ema.enabled=true",
        ],
    )
    assert cfg.optim.lr == 0.05 and isinstance(cfg.optim.lr, float)
    assert cfg.model.channels == [32, 64, 128] and cfg.model.blocks == [1, 2, 3]
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.data.train_subset is None
    assert cfg.aug.pad_mode == "zero"
    assert cfg.ema.enabled is True
    # Everything not overridden keeps its default.
    assert cfg.optim.momentum == OptimConfig().momentum and cfg.data == DataConfig()


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("optim.lr=1e-3", "optim.lr", "1e-3"),  # YAML 1.1 reads this as a *string*; the float field converts it
        ("optim.lr=0.05", "optim.lr", 0.05),
        ("optim.betas=[0.8, 0.99]", "optim.betas", [0.8, 0.99]),
        ("train.compile=yes", "train.compile", True),  # YAML 1.1 boolean
        ("train.grad_clip=~", "train.grad_clip", None),
        ("run.name=", "run.name", None),
        ("run.name=a=b", "run.name", "a=b"),  # split at the first '='
        (" train.epochs = 7", "train.epochs", 7),
    ],
)
def test_parse_override_reads_yaml(text, key, value):
    assert parse_override(text) == (key, value)


def test_yaml_value_conversions():
    cfg = load_config(
        None,
        [
            "optim.lr=1e-3",
            "optim.weight_decay=5e-4",
            "train.epochs=5.0",
            "run.name=123",
            "train.grad_clip=1",
            "optim.betas=[0, 0.5]",
        ],
    )
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.weight_decay == pytest.approx(5e-4)
    assert cfg.train.epochs == 5 and isinstance(cfg.train.epochs, int)
    assert cfg.run.name == "123"
    assert cfg.train.grad_clip == 1.0 and isinstance(cfg.train.grad_clip, float)
    assert cfg.optim.betas == [0.0, 0.5] and all(isinstance(b, float) for b in cfg.optim.betas)


def test_unknown_key_suggests_near_miss_and_lists_valid_keys():
    with pytest.raises(UserError) as exc:
        load_config(None, ["optim.lrr=0.1"])
    msg = str(exc.value)
    assert "optim.lrr" in msg
    assert "did you mean 'lr'" in msg
    for key in (f.name for f in dataclasses.fields(OptimConfig)):
        assert key in msg


def test_unknown_section_suggests_section():
    with pytest.raises(UserError) as exc:
        load_config(None, ["optimm.lr=0.1"])
    msg = str(exc.value)
    assert "did you mean 'optim'" in msg
    for section in ("data", "aug", "model", "train", "optim", "sched", "ema", "run"):
        assert section in msg


def test_unknown_key_without_near_miss_has_no_bogus_suggestion():
    with pytest.raises(UserError) as exc:
        load_config(None, ["train.zzzzzz=1"])
    assert "did you mean" not in str(exc.value)
    assert "epochs" in str(exc.value)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epochs=abc", "expected int"),
        ("train.epochs=5.5", "expected int"),
        ("train.epochs=true", "expected int"),  # bool is not an int here
        ("optim.lr=fast", "expected float"),
        ("train.compile=1", "expected bool"),
        ("model.channels=[32,x]", "a list of int"),
        ("model.channels=32", "a list of int"),
        ("data.train_subset=abc", "int or null"),
        ("optim.name=sgdd", "one of 'sgd'"),
    ],
)
def test_wrong_type_names_expected_type(override, expected):
    with pytest.raises(UserError) as exc:
        load_config(None, [override])
    msg = str(exc.value)
    assert expected in msg
    assert override.split("=")[0] in msg


def test_a_choice_spelled_like_a_yaml_boolean_is_taken_as_the_word(tmp_path):
    """YAML 1.1 reads ``off`` as False: ``train.amp=off`` (override or recipe file) still means 'off'."""
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  amp: off\n")
    assert load_config(str(recipe)).train.amp == "off"
    with pytest.raises(UserError, match="train.amp: True is not allowed"):
        load_config(None, ["train.amp=on"])  # no 'on' among the choices: still an error


def test_literal_error_suggests_close_value():
    with pytest.raises(UserError, match=r"did you mean 'sgd'"):
        load_config(None, ["optim.name=sgdd"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.lr=0", "optim.lr"),
        ("optim.lr=-0.1", "optim.lr"),
        ("optim.lr=nan", "optim.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.epochs=0", "train.epochs"),
        ("train.label_smoothing=1.5", "train.label_smoothing"),
        ("train.label_smoothing=1.0", "train.label_smoothing"),
        ("train.label_smoothing=-0.1", "train.label_smoothing"),
        ("optim.momentum=1", "optim.momentum"),
        ("optim.betas=[0.9]", "optim.betas"),
        ("data.val_size=-1", "data.val_size"),
        ("aug.crop_pad=17", "aug.crop_pad"),
        ("model.kernel_size=4", "model.kernel_size"),
        ("model.channels=[]", "model.channels"),
        ("ema.decay=1", "ema.decay"),
        ("sched.pct_start=1", "sched.pct_start"),
        ("run.device=gpu", "run.device"),
    ],
)
def test_out_of_range_values(override, key):
    with pytest.raises(UserError) as exc:
        load_config(None, [override])
    assert key in str(exc.value)


def test_boundary_values_are_accepted():
    cfg = load_config(
        None,
        [
            "train.label_smoothing=0.99",
            "train.epochs=1",
            "train.batch_size=1",
            "optim.lr=1e-9",
            "aug.crop_pad=0",
            "data.val_size=0",
            "run.device=cuda:1",
        ],
    )
    assert cfg.train.label_smoothing == 0.99 and cfg.data.val_size == 0 and cfg.run.device == "cuda:1"


@pytest.mark.parametrize("override", ["optim.lr=.inf", "optim.lr=inf"])
def test_non_finite_lr_is_rejected(override):
    with pytest.raises(UserError):
        load_config(None, [override])


def test_mismatched_blocks_and_channels():
    with pytest.raises(UserError, match=r"3 stages.*2"):
        load_config(None, ["model.blocks=[1,1,1]", "model.channels=[16,32]"])


def test_nesterov_needs_sgd_with_momentum():
    with pytest.raises(UserError, match="nesterov"):
        load_config(None, ["optim.nesterov=true", "optim.name=adam"])
    with pytest.raises(UserError, match="nesterov"):
        load_config(None, ["optim.nesterov=true", "optim.momentum=0"])
    assert load_config(None, ["optim.nesterov=true"]).optim.nesterov is True


@pytest.mark.parametrize("text", ["lr=0.1", "optim.lr", "=0.1", "optim.lr=[1"])
def test_malformed_override(text):
    with pytest.raises(UserError) as exc:
        load_config(None, [text])
    assert "override" in str(exc.value)


def test_override_into_a_value_is_an_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim: 3\n")
    with pytest.raises(UserError, match="not a section"):
        load_config(recipe, ["optim.lr=0.1"])
    with pytest.raises(UserError, match="expected a mapping"):
        load_config(recipe, [])


def test_recipe_file_and_overrides(tmp_path):
    recipe = tmp_path / "my_recipe.yaml"
    recipe.write_text(
        "# a recipe\noptim:\n  lr: 5e-2\n  betas: [0.8, 0.9]\nmodel:\n  name: resnet20\n"
        "  channels: [8, 16, 32]\ntrain:\n  epochs: 2\n"
    )
    cfg = load_config(recipe, ["train.epochs=4"])
    assert cfg.optim.lr == pytest.approx(0.05) and cfg.optim.betas == [0.8, 0.9]
    assert cfg.model.name == "resnet20" and cfg.model.channels == [8, 16, 32]
    assert cfg.train.epochs == 4  # override beats the recipe
    assert cfg.run.name == "my_recipe"  # defaults to the file's stem
    assert load_config(recipe, ["run.name=other"]).run.name == "other"


def test_empty_recipe_gives_defaults(tmp_path):
    recipe = tmp_path / "empty.yaml"
    recipe.write_text("# nothing\n")
    cfg = load_config(recipe)
    assert dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=None)) == Config()


def test_unknown_key_in_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epochs: 2\n  batchsize: 64\n")
    with pytest.raises(UserError, match=r"train\.batchsize.*did you mean 'batch_size'"):
        load_config(recipe)


@pytest.mark.parametrize(
    "text, line",
    [
        ("optim:\n  lr: 0.1\n   momentum: 0.9\n", 3),  # bad indentation
        ("train:\n  epochs: 2\n\tbatch_size: 3\n", 3),  # a tab
        ("data:\n  dir: x\nmodel:\n  channels: [1, 2\n  name: a\n", 5),  # unclosed flow list
    ],
)
def test_malformed_yaml_reports_line(tmp_path, text, line):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(UserError) as exc:
        load_config(recipe)
    msg = str(exc.value)
    assert "not valid YAML" in msg and f"line {line}," in msg
    assert str(recipe) in msg


def test_recipe_that_is_not_a_mapping(tmp_path):
    recipe = tmp_path / "list.yaml"
    recipe.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(recipe)


def test_recipe_not_found():
    with pytest.raises(UserError) as exc:
        load_config("no_such_recipe_xyz")
    msg = str(exc.value)
    assert "'no_such_recipe_xyz' not found" in msg
    assert "YAML file path" in msg


def test_missing_recipe_path(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def _non_default_config() -> Config:
    return load_config(
        None,
        [
            "data.dataset=cifar100",
            "data.dir=/tmp/somewhere",
            "data.train_subset=1000",
            "data.cifar100_labels=coarse",
            "aug.pad_mode=zero",
            "aug.crop_pad=2",
            "model.name=resnet20",
            "model.channels=[8,16,32]",
            "model.blocks=[1,1,1]",
            "model.preact=true",
            "model.act=gelu",
            "model.pool_size=4",
            "train.epochs=3",
            "train.label_smoothing=0.1",
            "train.grad_clip=2.5",
            "optim.name=adamw",
            "optim.betas=[0.8,0.95]",
            "optim.eps=1e-7",
            "sched.name=multistep",
            "sched.milestones=[1,2]",
            "ema.enabled=true",
            "ema.decay=0.99",
            "run.name=rt",
            "run.seed=7",
            "run.device=cpu",
        ],
    )


def test_round_trip_to_dict():
    cfg = _non_default_config()
    tree = cfg.to_dict()
    again = config_from_dict(copy.deepcopy(tree))
    assert again == cfg
    assert again.to_dict() == tree
    # to_dict is a deep copy: mutating it does not touch the config.
    tree["model"]["channels"].append(64)
    assert cfg.model.channels == [8, 16, 32]


def test_round_trip_through_yaml():
    cfg = _non_default_config()
    assert config_from_dict(yaml.safe_load(cfg.to_yaml())) == cfg
    assert config_from_dict(yaml.safe_load(Config().to_yaml())) == Config()


def test_config_from_dict_validates():
    tree = Config().to_dict()
    tree["optim"]["lr"] = -1.0
    with pytest.raises(UserError, match="optim.lr"):
        config_from_dict(tree)
    tree = Config().to_dict()
    tree["train"]["epochz"] = 3
    with pytest.raises(UserError, match="did you mean 'epochs'"):
        config_from_dict(tree)


def test_load_config_does_not_mutate_base():
    base = Config().to_dict()
    before = copy.deepcopy(base)
    cfg = load_config(None, ["optim.lr=0.05"], base=base)
    assert cfg.optim.lr == 0.05
    assert base == before


def test_nan_never_passes_validation():
    # Every float key with a lower bound rejects NaN (comparisons with NaN are False).
    for key in ("optim.lr", "train.label_smoothing", "ema.decay", "sched.gamma"):
        with pytest.raises(UserError):
            load_config(None, [f"{key}=.nan"])


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


def test_old_keys_at_their_off_values_give_way_to_the_new_ones():
    """A saved config.yaml of before the change holds every old key at its "off" value; overriding the new key on
    it (resume, eval, a sweep's best config) must not count as setting both."""
    off = [
        "optim.norm_lr_scale=1",
        "optim.norm_lr_scale_on=norm",
        "train.whiten_bias_epochs=null",
        "train.tta=true",
    ]
    cfg = load_config(
        None,
        [
            *off,
            "train.tta_translate=0",
            "train.tta_shifts=[[1, 1]]",
            "optim.param_groups=[{match: bias, lr_scale: 2}]",
        ],
    )
    assert cfg.train.tta_shifts == [[1, 1]] and cfg.optim.param_groups[0].match == "bias"
    with pytest.raises(UserError, match="train.tta_translate needs train.tta=true"):
        load_config(None, ["train.tta_translate=1"])


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
