"""benchmarks/vs_airbench.py: ``--replot`` draws a finished or unfinished ``--cpu`` run, and a file it cannot draw
stops it with one line."""

from __future__ import annotations

import json

import pytest

from tests.helpers.processes import REPO


@pytest.fixture
def vs(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import vs_airbench

    return vs_airbench


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


def test_replot_of_an_unfinished_run_uses_the_levels_it_was_asked_for(vs, monkeypatch, tmp_path, capsys):
    path = tmp_path / "vs.json.partial"
    path.write_text(json.dumps({"levels_asked": [85.0], **RUNS}))
    replot(vs, monkeypatch, "--replot", path, "--plot", tmp_path / "vs.png")
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "%" in line[:8]]
    assert [row.split(" | ")[0] for row in rows] == ["| 85%"]


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


def test_plot_time_axis_is_linear_over_a_narrow_span_and_log_over_a_wide_one(vs, monkeypatch, tmp_path):
    """A log axis over 616-1169 s labelled nothing past 1000 s; under a 3x span the axis is linear."""
    import matplotlib.figure
    import vs_airbench_cpu

    scales = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "savefig",
        lambda fig, *a, **k: (scales.append(fig.axes[0].get_xscale()), save(fig, *a, **k)),
    )

    def result(reglab_s, airbench_s):
        return {
            "machine": "some CPU, 2 CPUs", "precision": "bf16", "seeds": 1, "levels": [{"level": 90.0}],
            "airbench_runs": [{"config": "9.9 epochs", "test_acc": 90.5, "time_s": airbench_s, "seed": 0}],
            "reglab_runs": [{"config": "default", "test_acc": 90.4, "time_s": reglab_s, "seed": 0}],
        }  # fmt: skip

    vs_airbench_cpu.plot_cpu(result(616.4, 1168.9), tmp_path / "narrow.png")
    vs_airbench_cpu.plot_cpu(result(80.0, 807.9), tmp_path / "wide.png")
    assert scales == ["linear", "log"]
    assert (tmp_path / "narrow.png").stat().st_size > 0 and (tmp_path / "wide.png").stat().st_size > 0
