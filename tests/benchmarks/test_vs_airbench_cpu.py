"""benchmarks/vs_airbench_cpu.py: the CPU copy of airbench changes only its device and precision lines (and its run
and epoch counts) and leaves the checkout alone; the time-to-level table picks each system's fastest configuration;
a reglab configuration keeps a value with spaces whole."""

from __future__ import annotations

import pytest

from tests.helpers.processes import REPO

AIRBENCH_LINES = [
    "import torch",
    "torch.backends.cudnn.benchmark = True",
    "x = torch.load(p, map_location=torch.device(gpu))",
    "self.images = (self.images.half() / 255)",
    "net = net.half().cuda()",
    "            if net_param.dtype in (torch.half, torch.float):",
    "starter = torch.cuda.Event(enable_timing=True)",
    "torch.cuda.synchronize()",
    "        'train_epochs': 9.9,",
    "x = 1",
    "for run in range(25)",
]


@pytest.fixture
def vs(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import vs_airbench_cpu

    return vs_airbench_cpu


@pytest.mark.parametrize("bf16, dtype", [(True, "bfloat16"), (False, "float")])
def test_cpu_copy_changes_only_device_precision_and_counts_and_leaves_the_checkout_alone(
    tmp_path, vs, bf16, dtype
):
    src = tmp_path / "airbench94.py"
    original = "\n".join(AIRBENCH_LINES) + "\n"
    src.write_text(original)
    work = tmp_path / "work"
    work.mkdir()
    out = vs.cpu_copy(src, work, runs=2, epochs=3.0, bf16=bf16)
    assert out.parent == work and src.read_text() == original
    patched = out.read_text()
    assert "for run in range(2)" in patched and "'train_epochs': 3.0" in patched and "x = 1" in patched
    assert ".cuda()" not in patched and ".half()" not in patched and "torch.cuda" not in patched
    assert f"net = net.{dtype}()" in patched and f"self.images.{dtype}() / 255" in patched
    # the lookahead average must still see the network's own parameter dtype, or it silently stops averaging
    assert f"in (torch.{dtype}, torch.float)" in patched
    assert len(patched.splitlines()) == len(original.splitlines()) + 3  # the timer class replaces one line
    src.write_text("import torch\nnet = net.half().cuda()\n")  # another airbench version: a clear exit
    with pytest.raises(SystemExit, match="not the one --cpu knows"):
        vs.cpu_copy(src, work, runs=1, epochs=9.9, bf16=bf16)


def test_fastest_to_a_level_takes_the_quickest_configuration_whose_mean_reaches_it(vs):
    runs = [
        {"config": "short", "test_acc": 84.0, "time_s": 10.0},
        {"config": "short", "test_acc": 86.2, "time_s": 12.0},  # mean 85.1: reaches 85
        {"config": "long", "test_acc": 90.5, "time_s": 50.0},
        {"config": "long", "test_acc": 89.9, "time_s": 54.0},  # mean 90.2
    ]
    assert vs.fastest_to(85, runs) == {"config": "short", "n": 2, "test_acc": 85.1, "time_s": 11.0}
    assert vs.fastest_to(88, runs)["config"] == "long"
    assert vs.fastest_to(91, runs) is None


@pytest.mark.parametrize(
    "text, tokens",
    [
        (
            "fast-cpu-85 model.channels=[24, 128, 128] train.epochs=3",
            ["fast-cpu-85", "model.channels=[24, 128, 128]", "train.epochs=3"],
        ),
        ("default 'run.name=a b' train.epochs=6", ["default", "run.name=a b", "train.epochs=6"]),
        (
            "quick train.freeze=[{match: whiten.bias, start_epoch: 3}]",
            ["quick", "train.freeze=[{match: whiten.bias, start_epoch: 3}]"],
        ),
        (
            "fast-cpu-85 train.epochs=3 sched.warmup_epochs=0.69",
            ["fast-cpu-85", "train.epochs=3", "sched.warmup_epochs=0.69"],
        ),
    ],
)
def test_a_reglab_configuration_keeps_values_with_spaces_whole(vs, monkeypatch, tmp_path, text, tokens):
    assert vs.config_tokens(text) == tokens
    import time_to_accuracy

    seen = {}

    def one_run(recipe, seed, run_dir, data_dir, overrides):
        seen["argv"] = [recipe, *overrides]
        return {"test_acc": 85.0, "wall_s": 10.0, "train_s": 8.0, "precision": "fp32"}

    monkeypatch.setattr(time_to_accuracy, "one_run", one_run)
    run = vs.reglab_cpu_run(vs.config_tokens(text), 0, tmp_path, None)
    assert seen["argv"] == tokens and run["config"] == " ".join(tokens)


@pytest.mark.parametrize("text", ["default model.channels=[24, 128", "default 'run.name=a b", ""])
def test_a_malformed_reglab_configuration_is_refused(vs, text):
    with pytest.raises(ValueError):
        vs.config_tokens(text)
