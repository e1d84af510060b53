"""The Python API (reglab/api.py, exported lazily by reglab/__init__.py): ``import reglab`` stays cheap, the
README's example runs as written, and the CLI goes through the same functions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import reglab
import reglab.api as api
from reglab.cli import main

REPO = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    """The first ```python block of README.md's "Python API" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README.md's Python API section has no ```python block"
    return blocks[0]


def test_import_reglab_does_not_import_torch():
    """`import reglab` and looking up its functions stay cheap; torch loads on first use (validating a config
    does: the augmentation registry it checks aug.order against lives beside the torch transforms)."""
    code = (
        "import sys, reglab; assert 'torch' not in sys.modules, 'import reglab imported torch'; "
        "assert set(reglab.__all__) <= set(dir(reglab)); "
        "assert callable(reglab.fit) and callable(reglab.load_config) and 'torch' not in sys.modules; "
        "cfg = reglab.load_config('quick', ['train.epochs=1']); assert cfg.train.epochs == 1; print('ok')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_public_names_resolve_and_do_not_shadow_subpackages():
    for name in reglab.__all__:
        assert getattr(reglab, name) is not None, name
    import importlib

    importlib.import_module("reglab.train")  # the subpackage of that name; training is reglab.fit
    assert callable(reglab.fit) and not callable(reglab.train)
    with pytest.raises(AttributeError):
        reglab.no_such_name  # noqa: B018 (the attribute access is the test)


def test_readme_python_example_runs(tmp_path, monkeypatch, cifar_tools):
    """Executes README.md's example as written, on fake CIFAR-10 files (300 training images) via REGLAB_DATA."""
    cifar_tools.write_cifar10(tmp_path / "data", per_batch=60)
    monkeypatch.setenv("REGLAB_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    code = readme_example()
    assert "import reglab" in code and "reglab.fit(" in code
    exec(compile(code, "README.md (Python API)", "exec"), {"__name__": "readme"})
    (run_dir,) = (tmp_path / "runs").glob("quick-*")
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 1
    assert [r["epoch"] for r in reglab.read_metrics(run_dir)] == [1]
    assert reglab.read_summary(run_dir)["params"] > 0


def test_load_config_overrides_budget_and_data_dir(tmp_path):
    cfg = reglab.load_config("quick", ["optim.lr=0.05", "train.epochs=2"], data_dir=tmp_path)
    assert (cfg.optim.lr, cfg.train.epochs, cfg.data.dir, cfg.run.name) == (0.05, 2, str(tmp_path), "quick")
    assert reglab.load_config("seed004_baseline", ["budget=smoke"]).train.epochs == 1
    assert reglab.load_config(None).run.name is None  # None: the built-in defaults, no recipe
    assert reglab.load_config("quick", "train.epochs=3").train.epochs == 3  # one string: one override
    with pytest.raises(reglab.UserError, match="lrr"):
        reglab.load_config("quick", ["optim.lrr=1"])


def test_read_functions_on_an_unfinished_run_and_a_non_run(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text(reglab.load_config("quick").to_yaml())
    assert reglab.read_metrics(tmp_path / "r") == [] and reglab.read_summary(tmp_path / "r") is None
    with pytest.raises(reglab.UserError, match="not a reglab run directory"):
        reglab.read_metrics(tmp_path)


def test_build_model():
    net = reglab.build_model("resnet20", num_classes=100, channels=[8, 16, 32])
    assert net(__import__("torch").zeros(2, 3, 32, 32)).shape == (2, 100)


def test_prepare_study_parses_budget_and_checks_arguments(tmp_path):
    study, out = reglab.prepare_study(
        "seed004_regularizers", ["budget=cpu"], seeds=2, parallel=3, output=tmp_path / "s"
    )
    assert out == tmp_path / "s" and study.parallel == 3 and study.raw["budget"] == "cpu"
    assert {r.seed for r in study.runs} == {0, 1}
    with pytest.raises(reglab.UserError, match="unexpected argument"):
        reglab.prepare_study("seed004_regularizers", ["oops"])
    with pytest.raises(reglab.UserError, match="--parallel"):
        reglab.run_study(study, parallel=0)


class Called(Exception):
    """Raised by a stand-in to prove the CLI reached it."""


def test_cli_goes_through_the_api(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake(name):
        def f(*args, **kwargs):
            seen[name] = (args, kwargs)
            raise Called(name)

        return f

    for name in ("fit", "run_study", "write_report", "list_models"):
        monkeypatch.setattr(api, name, fake(name))
    with pytest.raises(Called):
        main(["train", "quick", "train.epochs=1", "optim.lr=0.1", "--quiet"])
    cfg = seen["fit"][0][0]
    assert cfg.optim.lr == 0.1 and seen["fit"][1]["progress"] == "lines"
    with pytest.raises(Called):
        main(["study", "seed004_regularizers", "budget=cpu", "-o", str(tmp_path / "s")])
    assert seen["run_study"][1]["output"] == tmp_path / "s"
    with pytest.raises(Called):
        main(["report", str(tmp_path), "-o", str(tmp_path / "rep")])
    with pytest.raises(Called):
        main(["models"])


@pytest.mark.parametrize(
    "key, value, override",
    [
        ("optim.lr", -1, "optim.lr=-1"),
        ("train.epochs", 0, "train.epochs=0"),
        ("optim.lr", "fast", "optim.lr=fast"),
        ("train.epochs", "3", "train.epochs='3'"),
        ("sched.min_lr", 5.0, "sched.min_lr=5"),
    ],
)
def test_fit_validates_a_config_changed_in_python(tmp_path, monkeypatch, key, value, override):
    """A Config from load_config changed in Python is checked again by fit, with the message the CLI gives the
    same mistake as an override, before anything runs: no data read, no run directory."""
    import reglab.train
    from tests.helpers.configs import SYN

    def must_not_run(*args, **kwargs):
        raise AssertionError("fit started the run with an invalid config")

    monkeypatch.setattr(reglab.train, "run", must_not_run)
    run_dir = tmp_path / "run"
    cfg = reglab.load_config("quick", [*SYN, "train.epochs=1", f"run.dir={run_dir}"])
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(reglab.UserError) as raised:
        reglab.fit(cfg)
    with pytest.raises(reglab.UserError) as from_cli:
        reglab.load_config("quick", [*SYN, "train.epochs=1", f"run.dir={run_dir}", override])
    assert str(raised.value) == str(from_cli.value)
    assert not run_dir.exists()


def test_fit_refuses_what_is_not_a_config(tmp_path):
    with pytest.raises(reglab.UserError, match=r"fit\(\) takes a Config .* got dict"):
        reglab.fit({"optim": {"lr": 0.1}})


def test_fit_runs_the_checked_config(tmp_path, monkeypatch):
    """A valid change made in Python reaches the run, coerced as the same override would be (an int lr: 1.0)."""
    import reglab.train

    seen = {}
    monkeypatch.setattr(reglab.train, "run", lambda cfg, **kw: seen.setdefault("cfg", cfg))
    cfg = reglab.load_config("quick", ["train.epochs=1"])
    cfg.optim.lr, cfg.train.epochs = 1, 3
    reglab.fit(cfg)
    assert (seen["cfg"].optim.lr, seen["cfg"].train.epochs) == (1.0, 3) and type(seen["cfg"].optim.lr) is float
    assert seen["cfg"].to_dict() == reglab.load_config("quick", ["optim.lr=1", "train.epochs=3"]).to_dict()


def test_fit_takes_paths_and_numpy_numbers_and_hands_back_its_run_dir(tmp_path, monkeypatch):
    """What Python code naturally assigns (a Path, a NumPy integer) is taken as the recipe's string and int; the
    run directory chosen for a config without run.dir is set on the caller's config, so fit(cfg, resume=True)
    continues that run (also after an interrupted run); resume without any run.dir is one clear error."""
    import numpy as np

    import reglab.train

    seen, real_run = [], reglab.train.run

    def fake_run(cfg, **kw):
        seen.append(cfg)
        cfg.run.dir = cfg.run.dir or str(tmp_path / "auto")  # as reglab.train.saving does
        Path(cfg.run.dir).mkdir(exist_ok=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(reglab.train, "run", fake_run)
    cfg = reglab.load_config("quick", ["train.epochs=1"])
    cfg.run.dir, cfg.train.epochs = tmp_path / "run", np.int64(3)
    with pytest.raises(KeyboardInterrupt):
        reglab.fit(cfg)
    assert seen[0].run.dir == str(tmp_path / "run") and type(seen[0].train.epochs) is int
    fresh = reglab.load_config("quick", ["train.epochs=1"])
    with pytest.raises(KeyboardInterrupt):
        reglab.fit(fresh)
    assert fresh.run.dir == str(tmp_path / "auto")
    monkeypatch.setattr(reglab.train, "run", real_run)
    with pytest.raises(reglab.UserError, match="resume needs run.dir"):
        reglab.fit(reglab.load_config("quick", ["train.epochs=1"]), resume=True)
