"""Analyses (seed 001): interpolation test, the mixing-ratio study's panels, the eval diagnostics, and every
``reglab analyze`` command on tiny runs (the landscape functions themselves: tests/analysis/test_landscape.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

from reglab.analysis.common import load_run
from reglab.analysis.interpolation import LAMBDAS, interpolation_curves, sample_pairs, summarize
from reglab.analysis.ratio import collect, panel_points, panels_of, ratio_spec
from reglab.cli import main
from reglab.config import load_config
from reglab.train import run
from tests.helpers import configs

TINY = [*configs.TINY, "train.epochs=2"]
FIXED = ["mix.lam_x=fixed", "mix.lam_x_range=[0.5,0.5]"]
RUNS = {
    "erm": [],
    "mixup": ["mix.lam_x=uniform", "mix.lam_x_range=[0.0,1.0]"],
    "a_y": [*FIXED, "mix.lam_y=uniform", "mix.lam_y_range=[0.5,1.0]"],
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny study directory: runs/<name>-s0 for ERM, tied U(0,1) mixup and a decoupled run (2 epochs each)."""
    root = tmp_path_factory.mktemp("study")
    for name, extra in RUNS.items():
        cfg = load_config(None, [*TINY, *extra, f"run.name={name}", f"run.dir={root / 'runs' / f'{name}-s0'}"])
        run(cfg)
    return root


# ----------------------------------------------------------------------------------------------------------
# Interpolation


def test_sample_pairs_are_of_different_classes_and_fixed_by_seed():
    labels = torch.arange(300) % 10
    i1, i2 = sample_pairs(labels, 200, seed=3)
    assert len(i1) == len(i2) == 200 and len(set(i1.tolist())) == 200
    assert bool((labels[i1] != labels[i2]).all())
    j1, j2 = sample_pairs(labels, 200, seed=3)
    assert torch.equal(i1, j1) and torch.equal(i2, j2)
    assert not torch.equal(i2, sample_pairs(labels, 200, seed=4)[1])
    with pytest.raises(ValueError):
        sample_pairs(torch.zeros(20, dtype=torch.long), 5)


def test_interpolation_endpoints_equal_plain_accuracy(study):
    r = load_run(study / "runs" / "erm-s0")
    test = r.data.test
    i1, i2 = sample_pairs(test.labels, 60, seed=0)
    x1, x2 = r.normalize(test.images[i1]), r.normalize(test.images[i2])
    y1, y2 = test.labels[i1], test.labels[i2]
    res = interpolation_curves(r.model, x1, y1, x2, y2, batch_size=64)
    assert LAMBDAS[0].item() == 0.0 and LAMBDAS[-1].item() == 1.0 and len(res["lambda"]) == 101
    with torch.no_grad():
        p1, p2 = r.model(x1).argmax(1), r.model(x2).argmax(1)
        top2_x2 = r.model(x2).topk(2, dim=1).indices
    assert res["acc_x1"][-1] == pytest.approx(100.0 * (p1 == y1).double().mean().item())
    assert res["acc_x2"][0] == pytest.approx(100.0 * (p2 == y2).double().mean().item())
    assert res["acc_x1"][0] == pytest.approx(100.0 * (p2 == y1).double().mean().item())  # x2 alone, as y1: rare
    both = ((top2_x2[:, 0] == y1) & (top2_x2[:, 1] == y2)) | ((top2_x2[:, 0] == y2) & (top2_x2[:, 1] == y1))
    assert res["top2_both"][0] == pytest.approx(100.0 * both.double().mean().item())
    # the plain test accuracy of the run on the x1 images, through the run's own evaluation path
    from reglab.data import DeviceLoader, Split
    from reglab.train.evaluate import evaluate

    plain = evaluate(r.model, DeviceLoader(Split(test.images[i1], y1), 1000, r.meta["mean"], r.meta["std"]))
    assert res["acc_x1"][-1] == pytest.approx(plain.acc)


def test_s_curve_summary_numbers():
    lam = np.linspace(0, 1, 101)
    steep = 100 / (1 + np.exp(-(lam - 0.5) * 40))
    flat = 100 / (1 + np.exp(-(lam - 0.5) * 6))
    s_steep, s_flat = (
        summarize(lam, steep, steep[::-1], np.zeros(101)),
        summarize(lam, flat, flat[::-1], np.zeros(101)),
    )
    assert s_steep["slope_mid"] > s_flat["slope_mid"] > 0
    assert s_steep["transition_width"] < s_flat["transition_width"]
    assert s_steep["crossover"] == pytest.approx(0.5, abs=0.01)
    # logistic: 20% and 80% of the top at lam = 0.5 -+ ln(4)/k
    assert s_steep["transition_width"] == pytest.approx(2 * math.log(4) / 40, abs=0.01)


# ----------------------------------------------------------------------------------------------------------
# Mixing-ratio study


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


# ----------------------------------------------------------------------------------------------------------
# Commands and eval diagnostics on the tiny runs


def test_cli_interpolation(study, tmp_path, capsys):
    out = tmp_path / "interp"
    assert (
        main(
            [
                "analyze",
                "interpolation",
                str(study / "runs" / "erm-s0"),
                str(study / "runs" / "mixup-s0"),
                "-o",
                str(out),
                "--pairs",
                "20",
            ]
        )
        == 0
    )
    for f in ("interpolation.png", "interpolation.json", "interpolation.md", "index.html"):
        assert (out / f).is_file(), f
    data = json.loads((out / "interpolation.json").read_text())
    assert set(data["results"]) == {"erm", "mixup"} and data["pairs"] == 20
    assert len(data["results"]["erm"]["acc_x1"]) == 101
    text = capsys.readouterr().out
    assert "| erm |" in text and "| mixup − erm |" in text and "percentile-bootstrap" in text
    ci = data["results"]["erm"]["ci95"]
    assert set(ci) == {"slope_mid", "transition_width", "crossover", "top2_peak"}
    lo, hi = ci["top2_peak"]
    assert lo <= data["results"]["erm"]["top2_peak"] + 1e-9 and hi >= lo
    assert len(data["results"]["mixup"]["ci95"]["minus_erm"]["slope_mid"]) == 3
    assert (
        main(["analyze", "interpolation", str(study / "runs" / "erm-s0"), "-o", str(out), "--bootstrap", "1"]) == 2
    )


def test_paired_bootstrap_over_pairs():
    from reglab.analysis.interpolation import bootstrap_summaries

    g = torch.Generator().manual_seed(0)
    lam = LAMBDAS.view(1, -1, 1)
    u = torch.rand(1, 1, 400, generator=g)  # each pair's own switch point
    steep = (lam > 0.5 + 0.1 * (u - 0.5)).expand(3, -1, -1).clone()  # top-1 = y1 once lam passes ~0.5
    flat = (lam > 0.5 + 0.8 * (u - 0.5)).expand(3, -1, -1).clone()  # the switch points spread 8x wider
    steep[1], flat[1] = ~steep[0], ~flat[0]
    ci = bootstrap_summaries({"flat": flat, "steep": steep, "same": flat.clone()}, replicates=200)
    mean, lo, hi = ci["steep"]["minus_flat"]["slope_mid"]
    assert lo > 0 and lo <= mean <= hi  # steeper at lam = 0.5, and the interval says so
    assert ci["same"]["minus_flat"]["slope_mid"] == [0.0, 0.0, 0.0]  # identical models: no difference
    lo, hi = ci["flat"]["crossover"]
    assert lo < 0.5 < hi


def test_cli_landscape(study, tmp_path, capsys):
    out = tmp_path / "land"
    args = [
        "analyze",
        "landscape",
        str(study / "runs" / "erm-s0"),
        "-o",
        str(out),
        "--subset",
        "60",
        "--resolution",
        "3",
        "--directions",
        "1",
        "--levels",
        "+0.5,3",
    ]
    assert main(args) == 0
    for f in (
        "landscape_1d.png",
        "erm_contour.png",
        "erm_surface.png",
        "erm_report_surface.png",
        "erm_report_contour.png",
        "landscape.json",
        "landscape.md",
        "landscape.html",
    ):
        assert (out / f).is_file(), f
    res = json.loads((out / "landscape.json").read_text())["results"]["erm"]
    assert res["subset"] == 60 and res["split"] == "train" and len(res["1d"]["alpha"]) == 5
    assert np.asarray(res["2d"]["loss"]).shape == (3, 3)
    assert res["2d"]["loss"][1][1] == pytest.approx(res["loss0"])  # the grid's centre is the trained model
    assert set(res["basin"]["levels"]) == {"+0.5", "3"}
    text = capsys.readouterr().out
    assert "width L=min+0.5" in text and "test acc (best checkpoint)" in text
    assert "*_contour.png, *_surface.png" in text
    # the accuracy column is the analysed (best) checkpoint's, as `reglab eval` measures it, not the last epoch's
    assert main(["eval", str(study / "runs" / "erm-s0"), "--out", str(tmp_path / "ev")]) == 0
    assert res["test_acc"] == pytest.approx(
        json.loads((tmp_path / "ev" / "eval_test.json").read_text())["acc"], abs=1e-3
    )
    # two models on the same directions: a width interval over directions and a paired difference row
    assert (
        main(
            [
                "analyze",
                "landscape",
                str(study / "runs" / "erm-s0"),
                str(study / "runs" / "mixup-s0"),
                "-o",
                str(tmp_path / "two"),
                "--subset",
                "60",
                "--directions",
                "2",
                "--levels",
                "+0.5",
                "--no-2d",
                "--amp",
                "off",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "| mixup − erm |" in text
    # --amp off: both evaluated in fp32 whatever this CPU's train.amp=auto picks, and the table says so
    assert "evaluated in fp32" in text
    wrote = next(line for line in text.splitlines() if line.startswith("wrote "))
    assert (
        "_contour.png" not in wrote
        and "_surface.png" not in wrote
        and "no contour or surface plots (--no-2d)" in wrote
    )
    assert sorted(p.name for p in (tmp_path / "two").glob("*.png")) == ["landscape_1d.png"]
    two = json.loads((tmp_path / "two" / "landscape.json").read_text())["results"]
    assert {r["precision"] for r in two.values()} == {"fp32"}
    level = two["erm"]["basin"]["levels"]["+0.5"]
    assert len(level["per_direction"]) == 2 and level["ci95"][0] <= level["mean"] <= level["ci95"][1] + 1e-9
    assert main(["analyze", "landscape", str(study / "runs" / "erm-s0"), "--levels", "x"]) == 2
    assert "--levels" in capsys.readouterr().err


def test_cli_ratio(study, tmp_path, capsys):
    out = tmp_path / "ratio"
    assert main(["analyze", "ratio", str(study), "-o", str(out)]) == 0
    assert (out / "ratio.png").is_file() and (out / "ratio.md").is_file()
    panels = json.loads((out / "ratio.json").read_text())["panels"]
    assert [p["label"] for p in panels["a"]] == ["[0.5, 1]"]
    assert [p["label"] for p in panels["d"]] == ["ERM", "[0, 1]"]
    assert main(["analyze", "ratio", str(tmp_path / "nothing"), "-o", str(out)]) == 2
    assert "study directory" in capsys.readouterr().err


def test_eval_reports_calibration_and_gap(study, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["eval", str(study / "runs" / "mixup-s0"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ECE" in text and "15 equal-width bins" in text and "gap" in text
    res = json.loads((out / "eval_test.json").read_text())
    assert 0 <= res["ece"] <= 1 and res["nll"] == pytest.approx(res["loss"], rel=1e-3)
    assert len(res["calibration"]["bins"]) == 15 and "equal-width" in res["calibration"]["binning"]
    assert len(res["per_class_acc"]) == 10
    assert res["gap"]["train_images"] == 500 and "acc_gap" in res["gap"]
    for f in ("reliability_test.png", "gap.png", "confusion_test.png"):
        assert (out / f).is_file(), f
