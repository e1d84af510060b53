"""reglab.train.device: bf16 detection on GPUs and CPUs (/proc/cpuinfo) and the CPU name the benchmarks record."""

from __future__ import annotations

import platform
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from reglab.train import device as device_mod


@pytest.mark.parametrize(
    "major, hip, native", [(8, None, True), (9, None, True), (7, None, False), (6, None, False), (7, "6.2", True)]
)
def test_amp_auto_is_bf16_only_on_gpus_with_bf16_tensor_cores(monkeypatch, major, hip, native):
    """On CUDA, ``auto`` takes bf16 from Ampere (compute capability 8.0) on, and on ROCm; a V100 (7.0) or T4 (7.5)
    emulates bf16, so it stays fp32 there. The device's own properties are read, not the current device's."""
    asked = []
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda d: asked.append(d) or SimpleNamespace(major=major)
    )
    monkeypatch.setattr(torch.version, "hip", hip)
    assert device_mod.bf16_is_native(torch.device("cuda", 1)) is native
    assert hip or asked == [torch.device("cuda", 1)]


def test_cpu_flags_are_read_from_proc_cpuinfo():
    """The detection reads the real flags line of this machine (x86 Linux: it lists sse2), cached once."""
    if not Path("/proc/cpuinfo").is_file() or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 Linux only")
    assert "sse2" in device_mod._cpu_flags()
    assert device_mod.cpu_name().startswith(device_mod._cpuinfo()["model name"] + " (cpu family ")


def test_cpu_name_tells_apart_machines_with_the_same_model_name(monkeypatch):
    """Benchmarks record ``cpu_name()``: "AMD EPYC" alone is both an AVX2 machine and a Zen 5 twice as fast."""
    zen3 = {"model name": "AMD EPYC", "cpu family": "25", "model": "1", "flags": "fpu sse2 avx2"}
    zen5 = {**zen3, "cpu family": "26", "model": "2", "flags": "fpu sse2 avx2 avx512f avx512_bf16"}
    for info, expected in [
        (zen3, "AMD EPYC (cpu family 25, model 1, no bf16 instructions)"),
        (zen5, "AMD EPYC (cpu family 26, model 2, bf16 instructions)"),
    ]:
        monkeypatch.setattr(device_mod, "_cpuinfo", lambda info=info: info)
        assert device_mod.cpu_name() == expected
    monkeypatch.setattr(device_mod, "_cpuinfo", dict)  # no /proc/cpuinfo (macOS, Windows)
    assert device_mod.cpu_name().endswith("(no bf16 instructions)")
