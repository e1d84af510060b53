"""benchmarks/vs_airbench.py: the CPU copy of airbench changes only its device and precision lines (and its run and
epoch counts) and leaves the checkout alone; the time-to-level table picks each system's fastest configuration."""

from __future__ import annotations

import json

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
    import vs_airbench

    return vs_airbench


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


RUNS = {
    "airbench_runs": [
        {"config": "2 epochs", "test_acc": 84.1, "time_s": 60.0, "process_wall_s": 70.0, "seed": 0},
        {"config": "3 epochs", "test_acc": 87.2, "time_s": 90.0, "process_wall_s": 100.0, "seed": 0},
    ],
    "reglab_runs": [
        {
            "config": "fast-cpu-85 train.amp=bf16",
            "seed": 0,
            "test_acc": 85.3,
            "time_s": 80.0,
            "precision": "bf16 autocast",
        },
    ],
}


def replot(vs, monkeypatch, *argv):
    monkeypatch.setattr(vs.sys, "argv", ["vs_airbench.py", *map(str, argv)])
    vs.main()


@pytest.mark.parametrize(
    "partial",
    [RUNS, {"machine": "some CPU, 2 CPUs", "precision": "bf16", "seeds": 2, "unfinished": True, **RUNS}],
    ids=["runs-only", "with-settings"],
)
def test_replot_of_an_unfinished_run_draws_what_it_has(vs, monkeypatch, tmp_path, capsys, partial):
    path = tmp_path / "vs.json.partial"
    path.write_text(json.dumps(partial))
    replot(vs, monkeypatch, "--replot", path, "--plot", tmp_path / "vs.png", "--levels", "80,85,90")
    out = capsys.readouterr().out
    assert "an unfinished run (2 airbench94, 1 reglab runs so far)" in out
    assert "| 85% | fast-cpu-85 train.amp=bf16 | 85.30 | 80 | 3 epochs | 87.20 | 90 | 0.89x |" in out
    assert "| 90% | not reached" in out and (tmp_path / "vs.png").stat().st_size > 0


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"airbench_runs": [], "reglab_runs": []}', "no finished run in it yet; nothing to draw"),
        ('{"airbench_runs": [', "cannot read it as JSON"),
        ('{"airbench94": {"runs": 25}}', "not the JSON of a --cpu run"),
    ],
)
def test_replot_of_a_file_it_cannot_draw_is_one_line(vs, monkeypatch, tmp_path, content, message):
    path = tmp_path / "vs.json.partial"
    path.write_text(content)
    with pytest.raises(SystemExit, match=message) as e:
        replot(vs, monkeypatch, "--replot", path, "--plot", tmp_path / "vs.png")
    assert len(str(e.value).splitlines()) == 1


def test_an_unfinished_run_makes_no_record(vs, monkeypatch, tmp_path):
    path = tmp_path / "vs.json.partial"
    path.write_text(json.dumps(RUNS))
    with pytest.raises(SystemExit, match="unfinished run; --record takes a finished run's JSON only"):
        replot(vs, monkeypatch, "--replot", path, "--record", tmp_path / "rec.json")
    assert not (tmp_path / "rec.json").exists()
