"""Sweep trials set up by hand, for the sweep tests on SQLite (tests/sweep/test_runner.py) and on PostgreSQL
(tests/sweep/test_storage_postgres.py)."""

from __future__ import annotations

import time


def trials_of_another_host(study, silent_for_s: float) -> tuple:
    """Two RUNNING trials of ``study`` that a worker on another machine (pid 1) claims: ``old`` last sent its
    heartbeat ``silent_for_s`` seconds ago, ``fresh`` just now. Returns ``(old, fresh)``."""
    old, fresh = study.ask(), study.ask()
    for t, beat in ((old, time.time() - silent_for_s), (fresh, time.time())):
        t.set_user_attr("host", "another-machine")
        t.set_user_attr("pid", 1)
        t.set_user_attr("heartbeat", beat)
    return old, fresh
