"""benchmarks/train_throughput.py as a real process: a recipe and its data path, the model set on the command line,
two configs of a recipe compared."""

from __future__ import annotations

import pytest

from reglab.config import load_config
from reglab.models import count_params, forward_gflops, model_from_config
from tests.helpers.processes import run_python

# The benchmark on fast-cpu-85, shortened to a couple of steps per measurement.
SHORT = ["--recipe", "fast-cpu-85", "--seconds", "0.1", "--max-steps", "2", "--matmul", "64"]


def throughput(*args: str, timeout: float = 600):
    return run_python("benchmarks/train_throughput.py", *args, timeout=timeout)


def test_throughput_benchmark_measures_a_recipe_and_its_data_path():
    proc = throughput(*SHORT, "--repeats", "1")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| fastnet "))
    share = float(row.strip("| \n").split("|")[-1].strip().rstrip("%"))
    assert 0 < share < 100


def test_throughput_benchmark_measures_the_model_set_on_the_command_line():
    """``--set model.channels=...`` changes the model of both sides and of the GFLOPs / % of peak columns (they
    used to be the recipe's own model, so the plain loop trained a different network than reglab)."""
    proc = throughput(*SHORT, "--repeats", "1", "--set", "model.channels=[8,24,16]")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| fastnet ")).strip("| \n").split("|")
    model = model_from_config(load_config("fast-cpu-85", ["model.channels=[8,24,16]"]).model, 10)
    assert int(row[1].replace(",", "")) == count_params(model)
    assert float(row[2]) == pytest.approx(forward_gflops(model), abs=5e-4)
    assert forward_gflops(model) < 0.5 * forward_gflops(model_from_config(load_config("fast-cpu-85").model, 10))


def test_throughput_benchmark_compares_two_configs_of_a_recipe():
    cmd = [*SHORT, "--repeats", "2"]
    proc = throughput(*cmd, "--set", "train.label_smoothing=0.0", "--against", "train.label_smoothing=0.2")
    assert proc.returncode == 0, proc.stderr
    assert (
        "| reglab train.label_smoothing=0.0 img/s | reglab train.label_smoothing=0.2 img/s | ratio |"
        in proc.stdout
    )
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| fastnet "))
    assert float(row.strip("| \n").split("|")[6]) > 0
    assert "pair ratios" in proc.stdout
    bad = throughput("--against", "train.compile=false", timeout=120)
    assert bad.returncode == 2 and "--against needs --recipe" in bad.stderr and "Traceback" not in bad.stderr
    typo = throughput(*cmd, "--against", "train.nosuch=1", timeout=120)
    assert typo.returncode == 2 and "unknown config key 'train.nosuch'" in typo.stderr
    assert "Traceback" not in typo.stderr and "| fastnet " not in typo.stdout
