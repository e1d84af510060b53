"""Where a run computes, in which precision, and how its randomness is seeded, saved and restored (with its
checkpoints)."""

from __future__ import annotations

import functools
import platform
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import UserError


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"run.device={name} but this machine has no usable CUDA GPU (torch {torch.__version__}); "
            "use run.device=cpu or run.device=auto."
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("run.device=mps but MPS is not available here; use run.device=cpu.")
    return torch.device(name)


def bf16_is_native(device: torch.device) -> bool:
    """Whether bf16 autocast is the fast path on ``device`` (what ``train.amp=auto`` follows).

    On a CUDA GPU with bf16 tensor cores (compute capability 8.0+, Ampere and later; ROCm), not on older ones
    (V100, T4), where bf16 is emulated. On a CPU with bf16 instructions (AVX512-BF16 or AMX-BF16: AMD Zen 4 and
    later, Intel Cooper Lake, Sapphire Rapids and later; read from /proc/cpuinfo). Measured with
    ``benchmarks/train_throughput.py --set train.amp=bf16 --against train.amp=off`` (docs/performance.md): the
    recipes train 1.6-2.9x faster in bf16 on a 2-core AMD Zen 5, while on CPUs without these instructions oneDNN
    emulates bf16 and training runs 10-15x slower."""
    if device.type == "cuda":
        return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8
    return device.type == "cpu" and bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def autocast_for(amp: str, device: torch.device, cache: bool = True) -> Callable[[], Any] | None:
    """What ``train.amp`` (``auto``/``off``/``bf16``) means on ``device``: a factory of the bf16 autocast context,
    or None for fp32. ``cache=False`` for CUDA-graph capture (a weight-cast cache does not survive it)."""
    if amp == "off" or (amp == "auto" and not bf16_is_native(device)):
        return None
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)


def precision_name(autocast: Callable[[], Any] | None) -> str:
    """How runs, ``reglab eval`` and the benchmarks name the precision of an ``autocast_for`` result."""
    return "bf16 autocast" if autocast is not None else "fp32"


def cpu_name() -> str:
    """The CPU as the benchmarks record it: model name, family/model numbers and whether it has bf16 instructions.
    The name alone does not tell machines apart: "AMD EPYC" covers both the AVX2 machines and a Zen 5 (family 26)
    that trains twice as fast."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    numbers = ", ".join(f"{key} {info[key]}" for key in ("cpu family", "model") if key in info)
    bf16 = "bf16 instructions" if bf16_is_native(torch.device("cpu")) else "no bf16 instructions"
    return f"{name} ({numbers + ', ' if numbers else ''}{bf16})"


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in Linux's /proc/cpuinfo (empty elsewhere: macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
    return info


def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 Linux's ``flags`` line of /proc/cpuinfo)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1], int(np_state[2]), int(np_state[3]), float(np_state[4])))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
