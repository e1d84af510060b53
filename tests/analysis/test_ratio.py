"""Mixing-ratio study (reglab/analysis/ratio.py, seed 001): where a run's mix config places it among the panels,
the runs left out, and the seed averages of the collected runs. The `reglab analyze ratio` command is tested in
tests/commands/test_analyze.py."""

from __future__ import annotations

import json

import pytest
import yaml

from reglab.analysis.ratio import collect, panel_points, panels_of, ratio_spec
from reglab.errors import UserError


def mix(**kw):
    base = {
        "mixup_alpha": 0.0,
        "cutmix_alpha": 0.0,
        "lam_x": "beta",
        "lam_x_range": [0.0, 1.0],
        "lam_y": "tied",
        "lam_y_range": [0.0, 1.0],
    }
    return {**base, **kw}


@pytest.mark.parametrize(
    "m, panels",
    [
        (mix(), [("d", (0.0, 0.0))]),
        (
            mix(lam_x="fixed", lam_x_range=[0.5, 0.5], lam_y="fixed", lam_y_range=[0.5, 0.5]),
            [("a", (0.5, 0.5)), ("b", (0.5, 0.5)), ("c", (0.5, 0.5))],
        ),
        (mix(lam_x="fixed", lam_x_range=[0.5, 0.9]), [("a", (0.5, 0.5)), ("b", (0.5, 0.5)), ("c", (0.5, 0.5))]),
        (
            mix(lam_x="fixed", lam_x_range=[0.5, 0.5], lam_y="uniform", lam_y_range=[0.5, 0.75]),
            [("a", (0.5, 0.75))],
        ),
        (mix(lam_y="fixed", lam_y_range=[0.5, 0.5], lam_x="uniform", lam_x_range=[0.5, 1.0]), [("b", (0.5, 1.0))]),
        (mix(lam_x="uniform", lam_x_range=[0.5, 0.75]), [("c", (0.5, 0.75))]),
        (mix(lam_x="uniform", lam_x_range=[0.0, 1.0]), [("c", (0.0, 1.0)), ("d", (0.0, 1.0))]),
        (mix(lam_x="uniform", lam_x_range=[0.2, 0.7], lam_y="uniform", lam_y_range=[0.1, 0.3]), []),
    ],
)
def test_runs_are_placed_by_their_mix_config(m, panels):
    assert panels_of(ratio_spec(m)) == panels


def test_beta_and_cutmix_runs_are_not_part_of_the_study():
    assert ratio_spec(mix(mixup_alpha=1.0)) is None
    assert ratio_spec(mix(cutmix_alpha=1.0, lam_x="uniform")) is None


def fake_run(root, name, seed, m, acc):
    d = root / "runs" / f"{name}-s{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"mix": m, "run": {"name": name, "seed": seed}}))
    (d / "summary.json").write_text(json.dumps({"final_val_acc": acc, "best_val_acc": acc + 1, "test_acc": 0}))


def test_collect_and_panel_points_average_seeds(tmp_path):
    def fake(name, seed, m, acc):
        fake_run(tmp_path, name, seed, m, acc)

    tied = mix(lam_x="uniform", lam_x_range=[0.5, 1.0])
    fake("c", 0, tied, 60.0)
    fake("c", 1, tied, 64.0)
    fake("erm", 0, mix(), 55.0)
    (tmp_path / "runs" / "unfinished").mkdir()
    (tmp_path / "runs" / "unfinished" / "config.yaml").write_text("mix: {}\n")
    records = collect(tmp_path)
    assert sorted(r["run"] for r in records) == ["c-s0", "c-s1", "erm-s0"]
    pts = panel_points(records)
    (c,) = pts["c"]
    assert c["mean"] == 62.0 and c["std"] == 2.0 and c["n"] == 2 and c["label"] == "[0.5, 1]"
    assert [p["label"] for p in pts["d"]] == ["ERM", "[0.5, 1]"]
    assert pts["a"] == [] and pts["b"] == []
    assert panel_points(collect(tmp_path, "best_val_acc"))["d"][0]["mean"] == 56.0


def test_a_study_without_ratio_runs_is_refused(tmp_path):
    """A study of ERM and Beta-mixup / cutmix runs (e.g. seed001_erm_vs_mixup) has no ratio to plot: one error
    naming what was expected, not a figure of ERM alone."""
    fake_run(tmp_path, "erm", 0, mix(), 55.0)
    fake_run(tmp_path, "mixup", 0, mix(mixup_alpha=1.0), 58.0)
    fake_run(tmp_path, "cutmix", 0, mix(cutmix_alpha=1.0), 57.0)
    with pytest.raises(UserError) as err:
        collect(tmp_path)
    msg = str(err.value)
    assert "is not a mixing-ratio study" in msg and "mix.lam_x=fixed|uniform" in msg
    assert "3 finished run(s) are 1 without mixing and 2 with Beta-ratio mixup or cutmix" in msg
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    with pytest.raises(UserError, match="holds no finished runs"):
        collect(tmp_path / "empty")
