"""benchmarks/vs_airbench.py: the CPU copy of airbench changes only the device lines and leaves the checkout alone."""

from __future__ import annotations

import pytest

from tests.helpers.processes import REPO


def test_vs_airbench_cpu_copy_changes_only_device_lines_and_leaves_the_checkout_alone(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from vs_airbench import CPU_PATCH, cpu_copy

    src = tmp_path / "airbench94.py"
    original = "\n".join(["import torch", *[old for old, _ in CPU_PATCH], "x = 1", "for run in range(25)"]) + "\n"
    src.write_text(original)
    work = tmp_path / "work"
    work.mkdir()
    out = cpu_copy(src, work, runs=2)
    assert out.parent == work and src.read_text() == original
    patched = out.read_text()
    assert "for run in range(2)" in patched and "x = 1" in patched
    assert ".cuda()" not in patched and ".half()" not in patched and "torch.cuda" not in patched
    src.write_text("import torch\nnet = net.half().cuda()\n")  # another airbench version: a clear exit
    with pytest.raises(SystemExit, match="not the one --cpu knows"):
        cpu_copy(src, work, runs=1)
