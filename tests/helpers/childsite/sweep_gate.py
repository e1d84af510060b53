"""Test-only hook for the killed-worker sweep test (tests/sweep/test_storage_postgres.py), installed by this
folder's ``sitecustomize.py`` in the sweep processes that test starts (this folder first on their PYTHONPATH)
when $REGLAB_TEST_SWEEP_GATE is set.

``REGLAB_TEST_SWEEP_GATE=PORT:LOCKFILE:VICTIM``: after epoch 1 of trial VICTIM (its metrics are on disk and the
epoch is reported to the storage) the worker connects to 127.0.0.1:PORT, sends ``PID NUMBER`` and blocks until
it is killed; after epoch 1 of any other trial a worker waits for a shared ``flock`` on LOCKFILE, which the test
holds exclusively until it has killed the victim. Both are events, not timing: the test kills a worker that is
certainly mid-trial, and no other trial gets past its first epoch before the kill.
"""

from __future__ import annotations

import os


def install(setting: str) -> None:
    import fcntl
    import socket
    import threading

    from reglab.sweep import runner

    port, lock_path, victim = setting.split(":")
    original = runner._Reporter.on_epoch_end

    def on_epoch_end(self, run, row):
        stop = original(self, run, row)
        if run.epoch == 1:
            if self.trial.number == int(victim):
                with socket.create_connection(("127.0.0.1", int(port))) as conn:
                    conn.sendall(f"{os.getpid()} {self.trial.number}\n".encode())
                    threading.Event().wait()  # until SIGKILL
            with open(lock_path) as fh:
                fcntl.flock(fh, fcntl.LOCK_SH)
                fcntl.flock(fh, fcntl.LOCK_UN)
        return stop

    runner._Reporter.on_epoch_end = on_epoch_end
