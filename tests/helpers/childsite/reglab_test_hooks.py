"""Test-only hooks inside the reglab processes a test starts: they tell the test when something happened, so
that the test waits on that event instead of polling the disk with sleeps.

Turned on by ``REGLAB_TEST_HOOKS`` (JSON) with this folder first on the process's PYTHONPATH: its
``sitecustomize.py`` calls :func:`install` at interpreter start-up, also in the processes that process starts
(a study's ``reglab train`` runs inherit the environment). A test that forks its children from an interpreter
of its own (test_kill_resume.py) calls :func:`install` there. Nothing here is part of reglab.

``{"address": "127.0.0.1:PORT", "<event>": "tell" | "ask", ...}``: for each event named, the process opens a
connection to ``address`` (the test's :class:`helpers.events.EventServer`) and sends one line,
``<event> <pid> <args...>``. ``tell``: it goes on at once (also when the test no longer listens). ``ask``: it
waits for the test's one-line answer (the test may kill or interrupt it instead); no answer within
``ANSWER_TIMEOUT_S`` is an error.

Events:

* ``written <name>``: a checkpoint's temporary file is written and fsynced; the rename to ``<name>`` (e.g.
  ``last.safetensors``) has not happened yet (wraps ``reglab.train.checkpoint.write_file``);
* ``saved <name>``: a checkpoint was renamed into place (wraps ``reglab.train.checkpoint.atomic_write_bytes``);
* ``trial_epoch <trial number> <epoch>``: a sweep trial reported an epoch to its storage (wraps the sweep's
  per-epoch reporter).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

ENV = "REGLAB_TEST_HOOKS"
ANSWER_TIMEOUT_S = 600.0  # far longer than any test waits before it answers, kills or interrupts
EVENTS = ("written", "saved", "trial_epoch")


def send(address: str, event: str, *args, ask: bool = False) -> str | None:
    """Send ``<event> <pid> <args>`` to the test; with ``ask``, wait for its answer line and return it."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=ANSWER_TIMEOUT_S) as conn:
            conn.sendall((" ".join([event, str(os.getpid()), *map(str, args)]) + "\n").encode())
            if not ask:
                return None
            answer = conn.makefile("rb").readline()
    except ConnectionRefusedError:
        if not ask:  # the test has stopped listening: it no longer waits for this
            return None
        raise RuntimeError(f"test hook: event {event!r}: nothing listens on {address}") from None
    except OSError as exc:  # not an OSError for reglab to report as a failed write: a broken test set-up
        raise RuntimeError(f"test hook: event {event!r} to {address}: {exc}") from None
    if not answer:
        raise RuntimeError(f"test hook: the test closed the connection without answering {event!r}")
    return answer.decode().strip()


def install(spec: dict) -> None:
    """Install the hooks ``spec`` names (see the module docstring)."""
    address = spec["address"]
    modes = {k: v for k, v in spec.items() if k != "address"}
    unknown = [k for k, v in modes.items() if k not in EVENTS or v not in ("tell", "ask")]
    if unknown:
        raise ValueError(f"{ENV}: unknown events or modes {unknown} (events: {EVENTS}; modes: tell, ask)")
    if "written" in modes or "saved" in modes:
        _checkpoint_hooks(address, modes)
    if "trial_epoch" in modes:
        _sweep_hooks(address, modes["trial_epoch"] == "ask")


def install_from_env() -> None:
    if os.environ.get(ENV):
        install(json.loads(os.environ[ENV]))


def _is_checkpoint(path: Path) -> bool:
    return path.suffix == ".safetensors"


def _checkpoint_hooks(address: str, modes: dict) -> None:
    from reglab.train import checkpoint as ck

    real_atomic_write, real_write_file = ck.atomic_write_bytes, ck.write_file
    writing: list[Path] = []  # the file atomic_write_bytes is writing (write_file only sees a descriptor)

    def atomic_write_bytes(path, data, *args, **kwargs):
        writing.append(Path(path))
        try:
            real_atomic_write(path, data, *args, **kwargs)
        finally:
            writing.pop()
        if "saved" in modes and _is_checkpoint(Path(path)):
            send(address, "saved", Path(path).name, ask=modes["saved"] == "ask")

    def write_file(fd, data):
        real_write_file(fd, data)
        if "written" in modes and writing and _is_checkpoint(writing[-1]):
            send(address, "written", writing[-1].name, ask=modes["written"] == "ask")

    ck.atomic_write_bytes, ck.write_file = atomic_write_bytes, write_file


def _sweep_hooks(address: str, ask: bool) -> None:
    from reglab.sweep import runner

    real = runner._Reporter.on_epoch_end

    def on_epoch_end(self, run, row):
        stop = real(self, run, row)
        send(address, "trial_epoch", self.trial.number, run.epoch, ask=ask)
        return stop

    runner._Reporter.on_epoch_end = on_epoch_end
