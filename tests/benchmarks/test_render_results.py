"""benchmarks/render_results.py: docs/performance.md's tables are what the committed records give, and a
malformed record stops the renderer with one line naming the file and the field."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "render_results.py"
RECORDS = REPO / "benchmarks" / "results" / "records"
DOC = REPO / "docs" / "performance.md"


@pytest.fixture(scope="module")
def render():
    spec = importlib.util.spec_from_file_location("render_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def schema(render):
    """benchmarks/results_schema.py, the record schema render_results.py imports (loading it put benchmarks/ on
    sys.path)."""
    import results_schema

    return results_schema


@pytest.fixture
def copy(tmp_path):
    """A copy of the document and the records, laid out as in the repository (the links stay the same)."""
    (tmp_path / "docs").mkdir()
    shutil.copy(DOC, tmp_path / "docs" / "performance.md")
    shutil.copytree(RECORDS, records_of(tmp_path))
    return tmp_path


def records_of(copy: Path) -> Path:
    return copy / "benchmarks" / "results" / "records"


def run(render, copy, *extra):
    doc = copy / "docs" / "performance.md"
    return render.main(["--doc", str(doc), "--records", str(records_of(copy)), *extra])


def edit(path: Path, change) -> None:
    rec = json.loads(path.read_text())
    change(rec)
    path.write_text(json.dumps(rec, indent=2))


def test_committed_tables_are_what_the_committed_records_give(render, capsys):
    assert render.main(["--check"]) == 0, capsys.readouterr().err
    assert "up to date" in capsys.readouterr().out


def test_every_table_is_in_the_document_and_every_row_names_hardware_precision_and_record(schema):
    text = DOC.read_text()
    records = {r["id"]: r for r in schema.load_records(RECORDS)}
    for name in schema.TABLES:
        block = text.split(f"<!-- results:{name} ", 1)[1].split(f"<!-- /results:{name} -->", 1)[0]
        rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line][1:]
        assert rows, name
        for row in rows:
            (rid,) = [i for i in records if f"[{i}](../benchmarks/results/records/{i}.json)" in row]
            rec = records[rid]
            assert rec["status"] == "current" and rec["table"] == name
            machine = rec["machine"]["gpu"] or rec["machine"]["cpu"]
            assert machine in row, (name, row)
            if name not in ("data-path", "augment-cost", "speed-options"):
                assert any(p in row for p in (rec["precision"], "bf16", "fp32", "fp16")), row


def test_a_changed_record_makes_check_fail_and_a_render_fixes_it(render, copy, capsys):
    assert run(render, copy, "--check") == 0
    edit(records_of(copy) / "loader-avx2.json", lambda r: r["rows"][0].update(img_s=3700))
    assert run(render, copy, "--check") == 1
    err = capsys.readouterr().err
    assert "out of date" in err and "3,700" in err
    assert run(render, copy) == 0  # rewrites the tables in place
    assert "| 3,700 |" in (copy / "docs" / "performance.md").read_text()
    assert run(render, copy, "--check") == 0


@pytest.mark.parametrize(
    "record, change, message",
    [
        (
            "tta-fast-cpu-85-zen5-bf16.json",
            lambda r: r.pop("precision"),
            "tta-fast-cpu-85-zen5-bf16.json: missing field 'precision'",
        ),
        (
            "tta-fast-cpu-85-zen5-bf16.json",
            lambda r: r["runs"][1].update(test_acc="85.49"),
            'tta-fast-cpu-85-zen5-bf16.json: runs[1].test_acc: must be a percentage in [0, 100], got "85.49"',
        ),
        (
            "tta-fast-cpu-85-zen5-bf16.json",
            lambda r: r["runs"][1].update(test_acc=86.49),
            "tta-fast-cpu-85-zen5-bf16.json: runs (seed 1).test_acc: 86.49, but its raw file says 85.49",
        ),
        (
            "speed-bf16-vs-fp32-zen5.json",
            lambda r: r["machine"].pop("cpu"),
            "speed-bf16-vs-fp32-zen5.json: machine: missing field 'cpu'",
        ),
        (
            "speed-bf16-vs-fp32-zen5.json",
            lambda r: r["rows"][0].update(ratio=1.9),
            "speed-bf16-vs-fp32-zen5.json: rows[0].ratio: 1.9 does not agree with 1765 / 1089",
        ),
        (  # analysis-rate's ratio is the median of its pair ratios (0.54), not 201 / 425
            "analysis-rate-resnet20-zen5.json",
            lambda r: r["rows"][3].update(ratio=0.47),
            "analysis-rate-resnet20-zen5.json: rows[3].ratio: 0.47 does not agree with the median of its "
            "pair_ratios, 0.540",
        ),
        (  # without pair ratios, the quotient of its two rates
            "analysis-rate-resnet20-zen5.json",
            lambda r: r["rows"][3].pop("pair_ratios"),
            "analysis-rate-resnet20-zen5.json: rows[3].ratio: 0.54 does not agree with 201 / 425",
        ),
        (
            "loader-avx2.json",
            lambda r: r.update(table="loaders"),
            "loader-avx2.json: table: unknown table 'loaders'",
        ),
        ("loader-avx2.json", lambda r: r.update(date="22.11.2026"), "loader-avx2.json: date: must be YYYY-MM-DD"),
        ("loader-avx2.json", lambda r: r.update(id="loader"), "loader-avx2.json: id: must be the file name"),
        ("loader-avx2.json", lambda r: r.update(speed=1), "loader-avx2.json: unknown field 'speed'"),
        (
            "loader-avx2.json",
            lambda r: r.update(raw=["benchmarks/results/nowhere.json"]),
            "loader-avx2.json: raw: 'benchmarks/results/nowhere.json' is not a file",
        ),
    ],
)
def test_a_malformed_record_gives_one_clear_line(render, copy, capsys, record, change, message):
    edit(records_of(copy) / record, change)
    before = (copy / "docs" / "performance.md").read_text()
    assert run(render, copy, "--check") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("render_results: ") and len(err.splitlines()) == 1, err
    assert message in err, err
    assert run(render, copy) == 2  # nor is anything rewritten
    assert (copy / "docs" / "performance.md").read_text() == before


def test_a_record_that_is_not_json_says_where(render, copy, capsys):
    path = records_of(copy) / "loader-avx2.json"
    path.write_text(path.read_text().replace('"schema": 1,', '"schema": 1'))
    assert run(render, copy, "--check") == 2
    assert "loader-avx2.json: not valid JSON: Expecting ',' delimiter at line 3" in capsys.readouterr().err


def test_a_marker_for_an_unknown_table_is_refused(render, copy, capsys):
    doc = copy / "docs" / "performance.md"
    doc.write_text(doc.read_text() + "\n<!-- results:speeds -->\n<!-- /results:speeds -->\n")
    assert run(render, copy, "--check") == 2
    assert "marker results:speeds: unknown table" in capsys.readouterr().err
