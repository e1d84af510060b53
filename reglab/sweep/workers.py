"""``reglab sweep --workers N``: N worker processes on one machine sharing one study.

Each worker is ``python -m reglab sweep <sweep_dir>/sweep.yaml --worker-index i ...`` in its own session (so a
terminal Ctrl-C reaches only this launcher, which then sends exactly one SIGINT to every worker: each marks its
running trial interrupted and exits 130). Workers get ``run.threads = cores // N`` unless the command line sets
``run.threads``; their output lines carry a ``[wI]`` prefix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from .storage import SWEEP_FILE


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def worker_command(sweep_dir: Path, trials: int, index: int, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "reglab",
        "sweep",
        str(sweep_dir / SWEEP_FILE),
        "-o",
        str(sweep_dir),
        "--trials",
        str(trials),
        "--worker-index",
        str(index),
        *extra,
    ]


def run_workers(sweep_dir: Path, trials: int, n: int, extra: list[str], log: Callable[[str], None] = print) -> int:
    """Start ``n`` workers, wait for all; 0 when every worker finished cleanly."""
    extra = list(extra)
    if not any(e.startswith("run.threads=") for e in extra):
        extra.append(f"run.threads={max(1, cpu_count() // n)}")
    log(
        f"starting {n} worker processes ({extra[-1] if extra[-1].startswith('run.threads=') else 'threads as given'})"
    )
    procs = [
        subprocess.Popen(worker_command(sweep_dir, trials, i, extra), start_new_session=True) for i in range(n)
    ]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 120
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # the study stays consistent: its trial is failed on resume
                p.kill()
                p.wait()
        raise
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    for i, c in bad:
        log(f"worker {i} exited with code {c}")
    return 1 if bad else 0
