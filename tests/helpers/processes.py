"""Running ``python ...`` from the checkout, the way the benchmark and CLI tests start their real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_python(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python ARGS`` (a script such as ``benchmarks/train_throughput.py``, or ``-m reglab ...``) in the checkout,
    with this interpreter and environment; stdout and stderr captured as text."""
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
