"""benchmarks/time_to_accuracy.py: a real run of the benchmark's processes, and its first-epoch excess."""

from __future__ import annotations

import importlib.util
import json

from tests.helpers.processes import REPO, run_python


def test_time_to_accuracy_benchmark_runs_real_processes(tmp_path):
    out = tmp_path / "tta.json"
    proc = run_python(
        "benchmarks/time_to_accuracy.py",
        "fast-cpu-85",
        "data.dataset=synthetic",
        "data.synthetic_train=400",
        "data.synthetic_test=100",
        "data.val_size=0",
        "train.epochs=1",
        "train.batch_size=100",
        "model.channels=[8,16,16]",
        "--seeds",
        "2",
        "--target",
        "101",
        "--budget",
        "600",
        "--runs",
        str(tmp_path / "runs"),
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    assert result["goal_met"] is False  # 101% cannot be reached
    assert all(r["wall_s"] > r["train_s"] > 0 for r in result["runs"])  # the whole command includes the loop
    summary = json.loads((tmp_path / "runs" / "fast-cpu-85-s1" / "summary.json").read_text())
    assert summary["test_acc"] == result["runs"][1]["test_acc"]
    assert result["runs"][1]["precision"] == summary["precision"] in ("fp32", "bf16 autocast")
    assert "bf16 instructions" in result["machine"]  # cpu_name(): which of the "AMD EPYC"s it was
    assert "NOT met" in proc.stdout


def test_first_epoch_excess_is_the_start_up_inside_the_loop(tmp_path):
    path = REPO / "benchmarks" / "time_to_accuracy.py"
    spec = importlib.util.spec_from_file_location("tta_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    write = lambda times: (tmp_path / "metrics.jsonl").write_text(  # noqa: E731
        "".join(json.dumps({"epoch": i + 1, "epoch_s": t}) + "\n" for i, t in enumerate(times))
    )
    write([5.0, 1.0, 1.2, 0.9, 3.0])  # the last epoch holds the final test evaluation: left out of the median
    assert bench.first_epoch_excess(tmp_path) == {"first_epoch_s": 5.0, "first_epoch_excess_s": 4.0}
    write([0.8, 1.0, 1.2])  # a first epoch faster than the rest: no excess
    assert bench.first_epoch_excess(tmp_path)["first_epoch_excess_s"] == 0.0
    write([5.0, 1.0])
    assert bench.first_epoch_excess(tmp_path)["first_epoch_excess_s"] is None
