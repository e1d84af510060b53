"""The recipes in recipes/ and the ``budgets:`` mechanism: every recipe loads at full scale and at its budgets,
its model builds, CPU budgets are really smaller, and budget selection follows recipe -> budget -> command line."""

from __future__ import annotations

import pytest
import torch
import yaml

import reglab.models
from reglab.cli import main
from reglab.config import RECIPES_DIR, load_config
from reglab.errors import UserError

RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))
BUDGETED = [p for p in RECIPES if "budgets" in (yaml.safe_load(p.read_text()) or {})]
# The default recipe and the time-to-accuracy recipes have none (a budget would change what they measure).
WITHOUT_BUDGETS = {
    "quick",
    "default",
    "default-fp32",
    "fast-cpu-85",
    "fast-cpu-88",
    "fast-cpu-93",
    "fast-cpu-93-muon",
    "fast-cpu-93-wide",
    "fast-gpu-94",
    "fast-gpu-94-muon",
}
SMALL = "seed002_aug_cutout"  # a recipe used for the mechanics below


def _classes(cfg) -> int:
    return (
        100
        if cfg.data.dataset == "cifar100" and cfg.data.cifar100_labels == "fine"
        else 20
        if cfg.data.dataset == "cifar100"
        else 10
    )


def _recipe(tmp_path, text: str):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_recipes_are_installed():
    names = {p.stem for p in RECIPES}
    assert {
        "quick",
        "seed000_preact50_gelu_mixup",
        "seed001_preact18_erm",
        "seed002_resnet24_final",
        "seed003_ladder_00_baseline",
        "seed003_result4_final",
        "seed004_baseline",
    } <= names
    assert {p.stem for p in RECIPES} - {p.stem for p in BUDGETED} == WITHOUT_BUDGETS


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_its_model_builds(path):
    assert path.read_text().startswith("#"), "every recipe starts with a header comment saying where it comes from"
    cfg = load_config(path.stem)
    assert cfg.run.name == path.stem and cfg.run.budget is None
    assert "budgets" not in cfg.to_dict()
    with torch.device("meta"):
        model = reglab.models.model_from_config(cfg.model, _classes(cfg))
    assert sum(p.numel() for p in model.parameters()) > 0


def test_fast_cpu_88_is_the_default_recipe_shortened():
    """fast-cpu-88 copies default.yaml (recipes have no inheritance): the two may differ only in the batch size, the
    epochs, the first epoch's image size and the run name, so a change to the default's training reaches both or
    this fails."""
    from reglab.typedyaml import flatten_tree

    fast = flatten_tree(load_config("fast-cpu-88").to_dict())
    default = flatten_tree(load_config("default").to_dict())
    differ = {k for k in fast.keys() | default.keys() if fast.get(k) != default.get(k)}
    assert differ == {"train.batch_size", "train.epochs", "aug.low_res", "aug.low_res_epochs", "run.name"}
    assert (fast["train.batch_size"], fast["train.epochs"]) == (1000, 4)
    assert (fast["aug.low_res"], fast["aug.low_res_epochs"]) == (24, 1)


@pytest.mark.parametrize("path", BUDGETED, ids=lambda p: p.stem)
def test_budgets_load_and_are_smaller(path):
    full = load_config(path.stem)
    cpu = load_config(path.stem, ["run.budget=cpu"])
    smoke = load_config(path.stem, ["run.budget=smoke"])
    assert (cpu.run.budget, smoke.run.budget) == ("cpu", "smoke")

    def images(cfg):  # training images seen over the run (45000 = the default split of CIFAR's 50000)
        return cfg.train.epochs * (cfg.data.train_subset or 45000)

    assert cpu.train.epochs <= full.train.epochs
    assert (cpu.data.train_subset or 10**9) <= (full.data.train_subset or 10**9)
    assert cpu.train.epochs < full.train.epochs or (cpu.data.train_subset or 10**9) < (
        full.data.train_subset or 10**9
    )
    assert images(cpu) <= 30_000, "a CPU budget must finish in minutes on the 2-core machine"
    assert smoke.train.epochs == 1 and smoke.data.train_subset is not None and smoke.data.train_subset <= 1000
    assert images(smoke) <= images(cpu) < images(full)
    # A budget changes budget-sized knobs only, never what the recipe compares.
    for cfg in (cpu, smoke):
        assert (cfg.model, cfg.mix, cfg.optim, cfg.data.dataset) == (
            full.model,
            full.mix,
            full.optim,
            full.data.dataset,
        )
        assert (cfg.aug, cfg.train.loss, cfg.train.label_smoothing) == (
            full.aug,
            full.train.loss,
            full.train.label_smoothing,
        )
    # Scaled schedules stay inside the shortened run.
    if cpu.sched.name == "multistep":
        assert max(cpu.sched.milestones) < cpu.train.epochs


# ----------------------------------------------------------------------------------------------------------
# Budget mechanics


def test_command_line_beats_the_budget_in_any_order():
    budget = load_config(SMALL, ["run.budget=cpu"])
    for overrides in (["run.budget=cpu", "train.epochs=2"], ["train.epochs=2", "run.budget=cpu"]):
        cfg = load_config(SMALL, overrides)
        assert cfg.train.epochs == 2  # the command line wins
        assert cfg.data.train_subset == budget.data.train_subset != load_config(SMALL).data.train_subset
        assert cfg.run.budget == "cpu"


def test_budget_selected_in_the_recipe_and_deselected_on_the_command_line(tmp_path):
    path = _recipe(
        tmp_path,
        "train: {epochs: 50}\nrun: {budget: cpu}\nbudgets:\n  cpu: {train.epochs: 3, data.train_subset: 500}\n",
    )
    cfg = load_config(path)
    assert (cfg.train.epochs, cfg.data.train_subset, cfg.run.budget) == (3, 500, "cpu")
    cfg = load_config(path, ["run.budget=null"])
    assert (cfg.train.epochs, cfg.data.train_subset, cfg.run.budget) == (50, None, None)


def test_unknown_budget_lists_budgets_with_a_suggestion():
    with pytest.raises(UserError) as exc:
        load_config(SMALL, ["run.budget=cpuu"])
    msg = str(exc.value)
    assert "did you mean 'cpu'" in msg and "cpu, smoke" in msg


def test_budget_on_a_recipe_without_budgets_is_refused():
    with pytest.raises(UserError, match="no budgets"):
        load_config("quick", ["run.budget=cpu"])
    with pytest.raises(UserError, match="no budgets"):
        load_config(None, ["run.budget=cpu"])


@pytest.mark.parametrize(
    "text, words",
    [
        ("budgets: [cpu, smoke]\n", ["budgets must be a mapping"]),
        ("budgets: {cpu: 5}\n", ["budgets.cpu", "mapping of dotted keys"]),
        ("budgets: {cpu: [train.epochs, 5]}\n", ["budgets.cpu", "mapping of dotted keys"]),
        ("budgets: {cpu: {epochs: 5}}\n", ["budgets.cpu", "must be dotted"]),
        ("budgets: {cpu: {train: {epochs: 5}}}\n", ["budgets.cpu", "must be dotted"]),
        ("budgets: {cpu: {train.epoch: 5}}\n", ["budgets.cpu", "did you mean 'epochs'"]),
        ("budgets: {cpu: {train.epochs: many}}\n", ["budgets.cpu", "train.epochs"]),
        ("budgets: {cpu: {run.budget: smoke}}\n", ["budgets.cpu", "run.budget"]),
    ],
)
def test_malformed_budgets_are_user_errors(tmp_path, text, words):
    path = _recipe(tmp_path, text)
    with pytest.raises(UserError) as exc:
        load_config(path)  # checked on every load, selected or not
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))


def test_resolved_config_records_the_budget_and_resumes_with_it():
    cfg = load_config(SMALL, ["run.budget=smoke"])
    saved = yaml.safe_load(cfg.to_yaml())  # what config.yaml in the run directory holds
    assert saved["run"]["budget"] == "smoke" and "budgets" not in saved
    again = load_config(None, ["train.epochs=3"], base=saved)  # the resume path (load_run_config)
    assert again.run.budget == "smoke" and again.data.train_subset == cfg.data.train_subset
    assert again.train.epochs == 3
    assert load_config(None, ["run.budget=smoke"], base=saved).run.budget == "smoke"
    with pytest.raises(UserError, match="no budgets"):
        load_config(None, ["run.budget=cpu"], base=saved)


def test_cli_bare_budget_shorthand(capsys):
    assert main(["config", SMALL, "budget=cpu", "train.epochs=2"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    expected = load_config(SMALL, ["run.budget=cpu", "train.epochs=2"]).to_dict()
    assert out == expected and out["run"]["budget"] == "cpu" and out["train"]["epochs"] == 2
    assert main(["config", SMALL, "budget=cpuu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reglab: error:") and "did you mean 'cpu'" in err


def test_smoke_budget_trains(tmp_path):
    from reglab.train import run

    cfg = load_config(
        SMALL,
        [
            "run.budget=smoke",
            "data.dataset=synthetic",
            "data.val_size=100",
            "data.synthetic_train=400",
            "data.synthetic_test=100",
            "model.name=resnet20",
            "model.channels=[8,16,32]",
            "model.blocks=[1,1,1]",
            "train.eval_batch_size=500",
            "run.device=cpu",
            f"run.dir={tmp_path / 'run'}",
        ],
    )
    assert cfg.train.epochs == 1 and cfg.aug.cutout_holes == 1 and cfg.run.budget == "smoke"
    result = run(cfg)
    assert len(result.metrics) == 1 and 0 <= result.summary["test_acc"] <= 100
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["run"]["budget"] == "smoke"


# ----------------------------------------------------------------------------------------------------------
# README.md's commands that name a recipe or a study, and its study file example

README = RECIPES_DIR.parent / "README.md"
TAKES_VALUE = {"-o", "--seeds", "-j", "--launcher", "--slurm", "--data-dir", "--only"}


def _readme_commands(sub: str) -> list[list[str]]:
    """The arguments after ``reglab SUB`` in README.md's bash blocks and inline code (``--resume`` ones left out)."""
    import re

    text = README.read_text()
    found = [
        line.split("#")[0] for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()
    ]
    found += [
        " ".join(span.split()) for span in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    ]
    out = []
    for line in found:
        if f"reglab {sub} " in line + " " and "--resume" not in line:
            out.append(line.split(f"reglab {sub}", 1)[1].split())
    return out


def _split(args: list[str]) -> tuple[str | None, list[str]]:
    """(recipe or study name, overrides); placeholders (RECIPE, [KEY=VALUE], aug.KEY=VALUE, ...) are dropped."""
    name, overrides, skip = None, [], False
    for arg in args:
        arg = arg.strip("[]")
        if skip or arg in TAKES_VALUE:
            skip = not skip and arg in TAKES_VALUE
            continue
        if arg.startswith("-") or arg == "..." or any(c.isupper() for c in arg.split("=")[0]):
            continue
        if "=" in arg:
            overrides.append(f"run.{arg}" if arg.startswith("budget=") else arg)
        elif name is None:
            name = arg
    return name, overrides


def test_readme_recipe_commands_resolve():
    """Every `reglab train|config|augment preview RECIPE KEY=VALUE` example in README.md loads as written
    (`reglab config` resolves the same way without training)."""
    seen = []
    for sub in ("train", "config", "augment preview"):
        for args in _readme_commands(sub):
            recipe, overrides = _split(args)
            load_config(recipe or "default", overrides)
            seen.append(recipe)
    assert {"quick", "recipes/seed002_aug_cutout.yaml", None} <= set(seen), seen


def test_readme_study_commands_and_study_file_load(tmp_path):
    """README.md's `reglab study NAME ...` examples name studies that load, and its study file example loads
    (its reference and claims name groups the grid really gives)."""
    import re

    from reglab.study import load_study

    names = []
    for args in _readme_commands("study"):
        name, overrides = _split(args)
        if name in (None, "my_study.yaml"):
            continue
        budget = next((o.split("=", 1)[1] for o in overrides if o.startswith("run.budget=")), None)
        load_study(name, [o for o in overrides if not o.startswith("run.budget=")], budget=budget)
        names.append(name)
    assert "seed004_regularizers" in names, names
    section = README.read_text().split("A study file (see", 1)[1]
    (tmp_path / "my_study.yaml").write_text(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    for budget in (None, "cpu"):
        study = load_study(tmp_path / "my_study.yaml", budget=budget, seeds=3)
        assert len(study.runs) == 12 and study.raw["reference"] == "erm_lr=0.1"
