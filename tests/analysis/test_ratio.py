"""Mixing-ratio study (reglab/analysis/ratio.py, seed 001): where a run's mix config places it among the panels,
the runs left out, and the seed averages of the collected runs. The `reglab analyze ratio` command is tested in
tests/commands/test_analyze.py."""

from __future__ import annotations

import json

import pytest
import yaml

from reglab.analysis.ratio import collect, panel_points, panels_of, ratio_spec


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


def test_collect_and_panel_points_average_seeds(tmp_path):
    def fake(name, seed, m, acc):
        d = tmp_path / "runs" / f"{name}-s{seed}"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump({"mix": m, "run": {"name": name, "seed": seed}}))
        (d / "summary.json").write_text(json.dumps({"final_val_acc": acc, "best_val_acc": acc + 1, "test_acc": 0}))

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
