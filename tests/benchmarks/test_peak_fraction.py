"""benchmarks/peak_fraction.py as a real process: one precision only (a CPU without bf16 instructions), the
profile by input shape and the page faults per epoch in its JSON, and a bad precision named."""

from __future__ import annotations

import json

from tests.helpers.processes import run_python

# fast-cpu-85 on synthetic images, one step per epoch, a tiny matmul for the peak.
SHORT = ["--recipes", "fast-cpu-85", "--steps", "fast-cpu-85=1", "--repeats", "1", "--matmul", "64"]


def test_peak_fraction_measures_fp32_alone_with_its_profile_and_faults(tmp_path):
    out = tmp_path / "peak.json"
    proc = run_python(
        "benchmarks/peak_fraction.py", *SHORT, "--peak-repeats", "1", "--precisions", "fp32", "--profile",
        "--out", str(out), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result["peaks_median"]) == {"fp32"}
    (row,) = result["rows"]
    assert row["precision"] == "fp32" and row["recipe"] == "fast-cpu-85"
    assert 0 < row["fraction_of_peak"] and len(row["minor_faults_all"]) == 1
    prof = result["profiles"]["fast-cpu-85"]
    assert any("conv" in e["op"] and "[512, " in e["shapes"] for e in prof["top_by_shape"])
    assert prof["faults"] >= 0
    assert "profile, fast-cpu-85, fp32, one epoch" in proc.stdout and "by input shape" in proc.stdout
    assert "bf16 matmul peak" not in proc.stdout


def test_peak_fraction_names_an_unknown_precision():
    proc = run_python("benchmarks/peak_fraction.py", *SHORT, "--precisions", "fp16", timeout=120)
    assert proc.returncode == 2
    assert "--precisions: unknown ['fp16']; choose from bf16, fp32" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_peak_fraction_counts_the_steps_of_an_overridden_batch_size(tmp_path):
    """--set train.batch_size halves the batch of fast-cpu-85's one-step synthetic set (512 images): two steps
    of 256, and images/s and GFLOP/s describe the same steps (it counted one step of 512 images before)."""
    out = tmp_path / "peak.json"
    proc = run_python(
        "benchmarks/peak_fraction.py", *SHORT, "--peak-repeats", "1", "--precisions", "fp32",
        "--set", "train.batch_size=256", "--out", str(out), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["batch"], row["steps"]) == (256, 2)
    images_per_gflop = row["img_s"] / row["achieved_gflop_s"]
    assert abs(images_per_gflop - 256 / row["gflop_per_step"]) < 1e-6 * images_per_gflop
