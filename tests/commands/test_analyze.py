"""Every ``reglab analyze`` command (seed 001's analyses) and the eval diagnostics on tiny runs; the analyses'
functions themselves are tested in tests/analysis/test_interpolation.py, test_ratio.py and test_landscape.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reglab.cli import main

# ----------------------------------------------------------------------------------------------------------
# Commands and eval diagnostics on the tiny runs (the study fixture: tests/conftest.py)


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
    # a study without ratio runs (only ERM here): exit 2 and one line saying what was expected
    import shutil

    shutil.copytree(study / "runs" / "erm-s0", tmp_path / "erm_only" / "runs" / "erm-s0")
    assert main(["analyze", "ratio", str(tmp_path / "erm_only"), "-o", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a mixing-ratio study" in err
    assert not (tmp_path / "r2").exists()


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


def test_cli_landscape_one_direction_has_no_interval_and_no_verdict(study, tmp_path, capsys):
    """With one direction there is no spread: each width and the paired difference say n=1, no CI, and the
    difference gets no wider/narrower verdict (a zero-width interval would look certain)."""
    runs = [str(study / "runs" / "erm-s0"), str(study / "runs" / "mixup-s0")]
    args = ["analyze", "landscape", *runs, "-o", str(tmp_path / "one"), "--subset", "60", "--directions", "1"]
    assert main([*args, "--levels", "+0.5", "--no-2d", "--amp", "off"]) == 0
    text = capsys.readouterr().out
    diff_row = next(line for line in text.splitlines() if line.startswith("| mixup − erm |"))
    assert "(n=1, no CI)" in diff_row and "wider" not in diff_row and "narrower" not in diff_row
    assert "[" not in diff_row  # no interval at all
    erm_row = next(line for line in text.splitlines() if line.startswith("| erm |"))
    assert "(n=1, no CI)" in erm_row


@pytest.mark.parametrize("analysis", ["interpolation", "landscape"])
def test_threads_option_sets_torchs_threads(study, tmp_path, monkeypatch, analysis):
    """``--threads N`` is handed to ``torch.set_num_threads`` before any evaluation."""
    import torch

    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    extra = ["--pairs", "10", "--bootstrap", "0"] if analysis == "interpolation" else ["--subset", "30", "--no-2d"]
    extra += ["--resolution", "3", "--directions", "1"] if analysis == "landscape" else []
    run = str(study / "runs" / "erm-s0")
    assert main(["analyze", analysis, run, "-o", str(tmp_path / analysis), "--threads", "1", *extra]) == 0
    assert seen[:1] == [1]
