"""Study reports (reglab/track/report.py: `reglab report`, checked in headless Chromium): tables of the runs and
groups, the comparison with a reference group and the claims' verdicts, what a subset study leaves out, the order
of the groups, errors for missing folders.

Runs are tiny synthetic trainings (a few seconds each) in real `reglab train` processes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from reglab.cli import main
from reglab.track.records import find_run_dirs, load_records
from reglab.track.report import write_study_report
from tests.helpers.configs import STUDY_TINY, write_study

TINY = STUDY_TINY


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "study"
    spec = write_study(out.parent / "s.yaml", overrides=[*TINY, "train.epochs=3", "run.eval_test_every=1"])
    assert main(["study", str(spec), "-o", str(out), "-j", "2", "--no-report"]) == 0
    return out


@pytest.mark.slow  # its fixture finished_study: 33 s on a quiet 2-core machine
def test_report_tables_group_seeds_with_mean_and_std(finished_study, tmp_path):
    files = write_study_report([finished_study], tmp_path / "rep")
    records = load_records([finished_study])
    assert len(records) == 4 and {r.group for r in records} == {"erm", "mixup"}
    groups = {g["group"]: g for g in csv.DictReader(files["groups_csv"].open())}
    accs = [r.row["test_acc"] for r in records if r.group == "erm"]
    assert float(groups["erm"]["test_acc"]) == pytest.approx(sum(accs) / 2)
    assert float(groups["erm"]["test_acc_std"]) == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
    md = files["markdown"].read_text()
    assert "| erm | 2 |" in md and "±" in md and "Curves use the test split" in md
    runs = list(csv.DictReader(files["runs_csv"].open()))
    assert len(runs) == 4 and all(r["status"] == "done" and int(r["epochs"]) == 3 for r in runs)
    # one run dir given directly, and a folder holding run dirs, give the same records
    assert len(find_run_dirs([finished_study / "runs" / "erm-s0"])) == 1
    assert len(find_run_dirs([finished_study / "runs"])) == 4


@pytest.mark.slow  # its fixture finished_study: 33 s on a quiet 2-core machine
def test_report_compares_with_the_reference_and_judges_the_claims(finished_study, tmp_path, capsys):
    study = yaml.safe_load((finished_study / "study.yaml").read_text())
    study["reference"] = "mixup"
    study["claims"] = [
        {
            "claim": "erm ends above chance",
            "metric": "test_acc",
            "compare": ["erm"],
            "than": 0,
            "expect": "higher",
        },
        {
            "claim": "erm differs from mixup",
            "metric": "test_loss",
            "compare": ["erm", "mixup"],
            "expect": "same",
            "margin": 1e-9,
        },
    ]
    (finished_study / "study.yaml").write_text(yaml.safe_dump(study))
    files = write_study_report([finished_study], tmp_path / "rep")
    records = load_records([finished_study])
    comparison = list(csv.DictReader(files["comparison_csv"].open()))
    assert [(r["group"], r["reference"], r["pairs"]) for r in comparison] == [("erm", "mixup", "2")]
    acc = {(r.group, r.seed): r.row["test_acc"] for r in records}
    diffs = [acc[("erm", s)] - acc[("mixup", s)] for s in (0, 1)]
    assert float(comparison[0]["test_acc_mean"]) == pytest.approx(sum(diffs) / 2)
    claims = list(csv.DictReader(files["claims_csv"].open()))
    erm = [acc[("erm", s)] for s in (0, 1)]
    half = 12.7062 * abs(erm[0] - erm[1]) / 2**0.5 / 2**0.5  # t(0.975, 1) * sd / sqrt(2)
    assert float(claims[0]["lo"]) == pytest.approx(sum(erm) / 2 - half, abs=1e-3)
    assert claims[0]["verdict"] == ("reproduced" if float(claims[0]["lo"]) > 0 else "inconclusive")
    assert claims[1]["verdict"] in ("contradicted", "inconclusive") and claims[1]["n"] == "2"
    md = files["markdown"].read_text()
    assert "Each group against **mixup**, paired by seed" in md and "| erm ends above chance |" in md
    # the command line's --reference wins over the study file's
    assert main(["report", str(finished_study), "-o", str(tmp_path / "r2"), "--reference", "erm"]) == 0
    assert "Each group against **erm**" in (tmp_path / "r2" / "report.md").read_text()
    assert main(["report", str(finished_study), "-o", str(tmp_path / "r3"), "--reference", "ermm"]) == 2
    assert "reference group 'ermm'" in capsys.readouterr().err
    # `reglab findings` collects the claims of study directories into one table
    assert main(["findings", str(finished_study), "-o", str(tmp_path / "findings.md")]) == 0
    table = capsys.readouterr().out
    assert "| erm ends above chance |" in table and f"**{claims[0]['verdict']}**" in table
    assert "Verdicts:" in table and (tmp_path / "findings.md").read_text() == table
    assert main(["findings", str(tmp_path)]) == 2


@pytest.mark.slow  # its fixture finished_study: 33 s on a quiet 2-core machine
def test_report_of_a_subset_study_skips_what_did_not_run(finished_study, tmp_path, capsys):
    """`reglab study --only mixup` of a study whose reference is erm: the report compares with the first group
    that ran and leaves out the claims about groups that did not run, instead of failing after the runs."""
    import shutil

    subset = tmp_path / "subset"
    shutil.copytree(finished_study, subset)
    for run_dir in (subset / "runs").glob("erm-s*"):
        shutil.rmtree(run_dir)
    study = yaml.safe_load((subset / "study.yaml").read_text())
    study["reference"] = "erm"
    study["claims"] = [
        {"claim": "mixup beats erm", "metric": "test_acc", "compare": ["mixup", "erm"], "expect": "higher"},
        {
            "claim": "mixup above chance",
            "metric": "test_acc",
            "compare": ["mixup"],
            "than": 10,
            "expect": "higher",
        },
    ]
    (subset / "study.yaml").write_text(yaml.safe_dump(study))
    files = write_study_report([subset], tmp_path / "rep")
    assert [r["claim"] for r in csv.DictReader(files["claims_csv"].open())] == ["mixup above chance"]
    assert "mixup beats erm" not in files["markdown"].read_text()
    # `reglab findings` gives the command that reruns just the groups that ran
    assert main(["findings", str(subset)]) == 0
    assert "--only mixup" in capsys.readouterr().out


def test_report_of_a_missing_or_empty_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "nope"), "-o", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "r")]) == 2
    assert "holds no reglab run directories" in capsys.readouterr().err
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "config.yaml").write_text("garbage\n")  # YAML, but a string, not a config
    assert main(["report", str(tmp_path / "garbled"), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "config.yaml does not hold a config mapping (it holds a str)" in err and "Traceback" not in err


@pytest.mark.slow  # its fixture finished_study: 33 s on a quiet 2-core machine
def test_html_report_renders_in_headless_chromium(finished_study, tmp_path, chromium):
    from playwright.sync_api import sync_playwright

    files = write_study_report([finished_study], tmp_path / "rep", title="tiny study")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(files["html"].resolve().as_uri())
        assert page.title() == "tiny study"
        images = page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert page.locator("table.runs tbody tr").count() == 4
        assert page.locator("table.groups tbody tr").count() == 2
        assert page.locator("details").count() == 4
        browser.close()
    # curves + gap, and each run's own curves.png inside its <details>
    assert len(images) == 2 + 4 and all(ok and w > 100 and h > 100 for ok, w, h in images), images
    assert all(u.startswith(("file:", "data:")) for u in requests)  # self-contained: nothing from a network


def test_report_keeps_the_study_order_not_the_alphabet(tmp_path):
    study = tmp_path / "st"
    for key in ("zeta-s0", "alpha-s0", "mid-s0"):
        (study / "runs" / key).mkdir(parents=True)
        (study / "runs" / key / "config.yaml").write_text(yaml.safe_dump({"run": {"name": key[:-3], "seed": 0}}))
    (study / "study.yaml").write_text(
        yaml.safe_dump({"name": "st", "run_order": ["zeta-s0", "alpha-s0", "mid-s0"]})
    )
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "config.yaml").write_text(yaml.safe_dump({"run": {"name": "lone"}}))
    assert [r.group for r in load_records([lone, study])] == ["lone", "zeta", "alpha", "mid"]
    assert [r.status for r in load_records([study])] == ["not started"] * 3
