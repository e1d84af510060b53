"""The test side of ``childsite/reglab_test_hooks.py``: a test starts reglab processes with
:meth:`EventServer.env` and blocks on :meth:`EventServer.wait_for` until one of them reports the event it
waits for (a checkpoint write, a sweep epoch), instead of polling files with sleeps. Every wait has a timeout,
generous for a loaded 2-core machine, that turns a hang into a failure naming what did not happen."""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

CHILDSITE = Path(__file__).resolve().parent / "childsite"
ENV = "REGLAB_TEST_HOOKS"
TIMEOUT_S = 300.0


class Event:
    """One event: ``kind`` (``written``, ``saved``, ...), the sender's ``pid``, its ``args`` (strings); the
    connection stays open until :meth:`answer` or :meth:`close` (a sender that asked waits until then: keep a
    reference to the event while it should wait, since a collected event closes its connection too)."""

    def __init__(self, conn: socket.socket, line: str, rest: bytes):
        self.conn, self.rest = conn, rest
        kind, pid, *self.args = line.split()
        self.kind, self.pid = kind, int(pid)

    def answer(self, text: str = "go") -> None:
        """Answer the sender (which goes on if it asked; one that only told has hung up: nothing to do)."""
        try:
            self.conn.sendall(text.encode() + b"\n")
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.conn.close()

    def __repr__(self) -> str:
        return f"Event({self.kind} pid={self.pid} {' '.join(self.args)})"


def read_line(conn: socket.socket, buf: bytes, timeout: float) -> tuple[bytes | None, bytes]:
    """The next line (without its newline) from ``conn`` and what came after it; None at end of stream.
    Raises AssertionError after ``timeout`` seconds without a full line."""
    while b"\n" not in buf:
        ready, _, _ = select.select([conn], [], [], timeout)
        if not ready:
            raise AssertionError(f"no complete line within {timeout:.0f} s")
        chunk = conn.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line, rest


class EventServer:
    """A listening socket on 127.0.0.1 that hooked processes connect to, one connection per event."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def env(self, base: dict[str, str], **hooks: str) -> dict[str, str]:
        """``base`` plus what turns ``hooks`` (event -> ``"tell"`` or ``"ask"``) on in a child process."""
        path = base.get("PYTHONPATH")
        return {
            **base,
            "PYTHONPATH": str(CHILDSITE) + (os.pathsep + path if path else ""),
            ENV: json.dumps({"address": self.address, **hooks}),
        }

    def spec(self, **hooks: str) -> dict:
        """The hooks' settings for ``reglab_test_hooks.install`` in an interpreter the test controls."""
        return {"address": self.address, **hooks}

    def pending(self) -> bool:
        """Whether a connection is waiting to be accepted (without waiting for one)."""
        return bool(select.select([self.sock], [], [], 0)[0])

    def next(self, timeout: float = TIMEOUT_S, what: str = "an event") -> Event:
        """The next connection's event line."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            raise AssertionError(f"gave up waiting for {what} (timeout)")
        conn, _ = self.sock.accept()
        line, rest = read_line(conn, b"", timeout)
        if line is None:
            conn.close()
            raise AssertionError(f"a connection closed before its event line, waiting for {what}")
        return Event(conn, line.decode(), rest)

    def wait_for(
        self,
        kind: str,
        match: Callable[[Event], bool] = lambda ev: True,
        timeout: float = TIMEOUT_S,
        what: str | None = None,
    ) -> Event:
        """The first ``kind`` event that ``match`` accepts, within ``timeout`` seconds in all; the events before
        it are answered ("go") and closed."""
        what = what or f"a {kind!r} event"
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next(max(deadline - time.monotonic(), 0), what)
            if ev.kind == kind and match(ev):
                return ev
            ev.answer()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> EventServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
