"""The ``reglab`` command line, run as real subprocesses (``python -m reglab ...``).

Each command costs a fresh interpreter plus ``import torch`` (several seconds on a 2-core machine), so a
module fixture starts all of them at once and the tests then check their results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def start_cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGLAB_")}
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.Popen(
        [sys.executable, "-m", "reglab", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def cli(tmp_path_factory, maybe_real_data_dir):
    """name -> CompletedProcess of every command these tests look at (all started at once)."""
    tmp = tmp_path_factory.mktemp("cli")
    commands = {
        "models": start_cli("models", "--json"),
        "bogus_url": start_cli(
            "data",
            "check",
            "--data-dir",
            str(tmp / "nothing-here"),
            env_extra={"REGLAB_CIFAR10_URL": (tmp / "no-such-archive.tar.gz").as_uri()},
        ),
    }
    if maybe_real_data_dir is not None:
        # Relative, the way the team types it: "../shared/data" from the checkout.
        commands["real"] = start_cli("data", "check", "--data-dir", os.path.relpath(maybe_real_data_dir, REPO))
    results = {"tmp": tmp}
    try:
        for name, proc in commands.items():
            out, err = proc.communicate(timeout=300)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        for proc in commands.values():
            if proc.poll() is None:
                proc.kill()
    return results


def test_models_json(cli):
    proc = cli["models"]
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list) and len(rows) >= 20
    for row in rows:
        assert set(row) == {"name", "params", "gflops", "aliases"}
        assert isinstance(row["params"], int) and row["params"] > 0 and row["gflops"] > 0
    by_name = {r["name"]: r for r in rows}
    # Compact ResNets are listed under their structural names, with their former names as aliases.
    assert by_name["resnet24_b3-5-3_w64"]["aliases"] == ["s002_resnet24"]
    assert by_name["resnet24_b3-5-3_w64"]["params"] == 4_918_602
    assert by_name["resnet20"]["aliases"] == [] and "s002_resnet24" not in by_name
    assert by_name["resnet18"]["params"] == 11_173_962
    assert by_name["resnet20"]["params"] == 269_722
    assert by_name["resnet18"]["gflops"] == pytest.approx(1.11, abs=0.01)
    assert by_name["resnet20"]["gflops"] < by_name["resnet56"]["gflops"] < by_name["resnet110"]["gflops"]


def test_data_check_on_real_cifar10(cli, real_data_dir):
    proc = cli["real"]
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "checksums ok" in out
    assert "train     50000 images, 10 classes, mean (0.4913, 0.4821, 0.4465)" in out
    assert "test      10000 images" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    for name in CLASSES:
        assert rows[name] == ["5000", "1000"], out


def test_missing_data_with_bogus_download_url(cli):
    proc = cli["bogus_url"]
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("reglab: error:")
    for needle in ("cannot download", "no-such-archive.tar.gz", "--data-dir", "data.dir", "REGLAB_DATA"):
        assert needle in lines[0]
    assert proc.stdout == ""
    target = cli["tmp"] / "nothing-here"
    leftovers = sorted(p.name for p in target.iterdir()) if target.exists() else []
    assert leftovers == []  # no dataset folder, no .download-* temp dir


# In-process runs of reglab.cli.main: the same code path minus a fresh interpreter.


def test_data_check_json_on_fake_data(tmp_path, cifar_tools, capsys, monkeypatch):
    from reglab.cli import main

    monkeypatch.delenv("REGLAB_DATA", raising=False)
    fake = cifar_tools.write_cifar10(tmp_path / "fake", per_batch=20, n_test=10)
    assert main(["data", "check", "--data-dir", str(fake.root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["classes"] == list(CLASSES)
    assert summary["train"]["images"] == 100 and summary["test"]["images"] == 10
    assert sum(summary["train"]["per_class"]) == 100
    assert summary["checksums"] == "no SHA256SUMS file"


def test_bad_config_value_is_one_line(tmp_path, capsys):
    from reglab.cli import main

    assert main(["data", "check", "--dataset", "cifar1000", "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("reglab: error: data.dataset: 'cifar1000' is not allowed")
    assert "did you mean 'cifar100'" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_every_help_page_renders():
    """`reglab --help` and every subcommand's help format without error (a bare % in a help string crashed
    `reglab --help` once)."""
    import argparse

    from reglab.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, f"{path} {name}")

    pages = list(walk(build_parser(), "reglab"))
    assert len(pages) > 10
    for path, parser in pages:
        assert parser.format_help().startswith("usage:"), path


def test_version(capsys):
    """`reglab --version` prints `reglab X.Y.Z`, the version pyproject.toml declares, and exits 0."""
    import re

    from reglab.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    declared = re.search(r'(?m)^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text()).group(1)
    assert capsys.readouterr().out == f"reglab {declared}\n"


def test_recipes_lists_every_recipe(capsys):
    """`reglab recipes` (named by the "recipe not found" message) lists every name `reglab train` accepts."""
    import json

    from reglab.cli import main
    from reglab.config import RECIPES_DIR

    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines[:-1]] == names
    assert lines[-1].startswith(f"{len(names)} recipes in ")
    assert next(ln for ln in lines if ln.startswith("quick ")).split(None, 1)[1].startswith("the ResNet baseline")
    assert main(["recipes", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == names


def test_eval_out_help_names_the_files_eval_writes():
    """`reglab eval --out` names the files written there (reglab.track.inference.OUTPUTS), not older names."""
    import argparse

    from reglab.cli import build_parser
    from reglab.track.inference import OUTPUTS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    (out,) = [a for a in sub.choices["eval"]._actions if "--out" in a.option_strings]
    for name in OUTPUTS:
        assert name.format(split="SPLIT") in out.help, (name, out.help)


@pytest.mark.parametrize(
    "flags, overrides, expected",
    [
        ({"avx2", "avx512_bf16"}, [], "default"),  # AMD Zen 4/5, Intel Cooper Lake
        ({"avx2", "amx_bf16"}, [], "default"),  # Intel Sapphire Rapids and later
        ({"avx2", "avx512f"}, [], "default-fp32"),  # AVX-512 without bf16: train.amp=auto is fp32
        ({"avx2"}, [], "default-fp32"),
        ({"avx2", "avx512_bf16"}, ["train.amp=off"], "default-fp32"),  # an explicit precision decides too
        ({"avx2"}, ["train.amp=bf16"], "default"),
    ],
)
def test_no_recipe_means_the_default_for_this_machines_precision(monkeypatch, capsys, flags, overrides, expected):
    """`reglab train` / `reglab config` without a recipe use recipes/default.yaml where train.amp gives bf16
    autocast, recipes/default-fp32.yaml where it gives fp32 (what `make train` runs); `train` says which."""
    import torch
    import yaml

    import reglab
    from reglab.cli import _recipe_or_default, main
    from reglab.config import resolve_recipe
    from reglab.train import device as device_mod

    monkeypatch.setattr(device_mod, "_cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert reglab.default_recipe(overrides) == expected
    assert main(["config", *overrides]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert main(["config", expected, *overrides]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == shown
    recipe = yaml.safe_load(resolve_recipe(expected).read_text())
    assert shown["model"] == {**shown["model"], **recipe["model"]} and shown["run"]["name"] == expected
    assert _recipe_or_default(None, overrides, None, say=True) == expected
    out = capsys.readouterr()
    assert f"no recipe named: recipes/{expected}.yaml" in out.out and out.err == ""
    assert _recipe_or_default("quick", overrides, None, say=True) == "quick"  # a named recipe is kept, silently
    assert capsys.readouterr() == ("", "")


def test_default_recipe_choice_needs_no_device_and_leaves_errors_to_the_chosen_recipe(monkeypatch, capsys):
    """Printing a GPU config on a CPU-only machine still works, and a mistake is reported against the recipe that
    would run (default-fp32.yaml on an AVX2-only CPU), not against the one used to decide."""
    import torch
    import yaml

    from reglab.cli import main
    from reglab.train import device as device_mod

    monkeypatch.setattr(device_mod, "_cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["config", "run.device=cuda"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run"]["device"] == "cuda"
    assert main(["config", "budget=cpu"]) == 2
    err = capsys.readouterr().err
    assert "default-fp32.yaml has no budgets" in err and "recipes/default.yaml" not in err
