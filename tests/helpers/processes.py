"""Running ``python ...`` from the checkout, the way the benchmark and CLI tests start their real processes, and
the environment of such a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_python(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python ARGS`` (a script such as ``benchmarks/train_throughput.py``, or ``-m reglab ...``) in the checkout,
    with this interpreter and environment; stdout and stderr captured as text."""
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def checkout_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child that runs reglab from the checkout: without the caller's
    ``REGLAB_*`` settings, the checkout first on PYTHONPATH, one OpenMP thread; then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGLAB_")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env
