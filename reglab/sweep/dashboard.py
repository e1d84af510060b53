"""``reglab sweep dashboard DIR``: the sweep's study, live, in optuna-dashboard.

Serves the storage the sweep directory names (its ``study.db``, a journal file, or a PostgreSQL/MySQL URL) with
optuna-dashboard's WSGI app on a threaded ``wsgiref`` server, bound to 127.0.0.1 unless ``--host`` says
otherwise. The dashboard has no login and can change the study (tell trials, edit notes, delete a study), so
binding to another address prints a warning. ``--port 0`` takes any free port; the line printed at start names
the address actually bound.
"""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..errors import UserError
from .storage import load_optuna_study, read_sweep_dir, shown_url, storage_url

INSTALL = "pip install 'reglab[dashboard]' (or: pip install optuna-dashboard)"
LOCAL = ("127.0.0.1", "localhost", "::1")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # Ctrl-C does not wait for open browser connections


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args) -> None:  # one line per request drowns the useful ones; errors still print
        pass


def make_dashboard(sweep_dir: Path, host: str = "127.0.0.1", port: int = 8080):
    """The (not yet serving) server and the page of the sweep's study on it."""
    try:
        import optuna_dashboard
    except ImportError:
        raise UserError(f"the live dashboard needs optuna-dashboard, which is not installed: {INSTALL}.") from None
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be 0..65535 (0: any free port), got {port}.")
    sweep_dir = Path(sweep_dir)
    spec = read_sweep_dir(sweep_dir)
    study = load_optuna_study(spec, sweep_dir)  # a clear error for a storage that cannot be opened or has no study
    storage = study._storage
    app = optuna_dashboard.wsgi(storage)
    try:
        server = make_server(
            host, port, app, server_class=_Server6 if ":" in host else _Server, handler_class=_QuietHandler
        )
    except OSError as exc:
        why = (
            "in use (another dashboard?); pick another with --port, or --port 0 for any free one"
            if exc.errno in (98, 48)
            else exc.strerror or str(exc)
        )
        raise UserError(f"cannot serve the dashboard on {host}:{port}: {why}.") from None
    bound = server.server_port
    shown_host = f"[{host}]" if ":" in host else host
    study_id = storage.get_study_id_from_name(spec.name)
    page = f"http://{shown_host}:{bound}/dashboard/studies/{study_id}"
    return server, page, spec.name, shown_url(storage_url(spec, sweep_dir))


def serve(sweep_dir: Path, host: str = "127.0.0.1", port: int = 8080, log: Callable[[str], None] = print) -> int:
    server, page, name, where = make_dashboard(sweep_dir, host, port)
    if host not in LOCAL:
        log(
            f"warning: the dashboard listens on {host}, reachable from other machines; it has no login and can "
            "change the study (tell trials, delete studies). Use the default --host 127.0.0.1 and an SSH tunnel "
            "(ssh -L PORT:127.0.0.1:PORT HOST) to view it from elsewhere."
        )
    log(f"dashboard of sweep {name} ({where}): {page}  (Ctrl-C stops it)")
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None  # `kill PID` stops it cleanly too
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("dashboard stopped")
    finally:
        server.server_close()
        if main:
            signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
