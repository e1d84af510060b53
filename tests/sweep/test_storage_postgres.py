"""Sweeps on a real PostgreSQL server (tests/conftest.py's ``postgres_server``: .ci/postgres.sh), the storage
URL's error messages, and the live dashboard (``reglab sweep dashboard``) as a real server process."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from reglab.cli import main
from reglab.errors import UserError
from reglab.sweep import parse_sweep
from reglab.sweep.runner import counts, recover_stale
from reglab.sweep.storage import engine_url, load_optuna_study, open_storage, prepare, shown_url
from tests.helpers import configs
from tests.helpers.events import CHILDSITE
from tests.helpers.processes import checkout_env
from tests.helpers.sweeps import trials_of_another_host

GATE = CHILDSITE  # its sitecustomize.py installs the killed-worker test's hook, childsite/sweep_gate.py


def sweep_dict(**kw) -> dict:
    return configs.sweep_dict(**{"name": "pg", "epochs": 2, **kw})


def _driver():
    try:
        engine_url("postgresql://localhost/x")
    except UserError as exc:
        pytest.skip(str(exc))


def _need_dashboard() -> None:
    """optuna-dashboard installed (pip install 'reglab[dashboard]'): skip without it, except under CI."""
    import importlib

    try:
        importlib.import_module("optuna_dashboard")
    except ImportError:
        reason = "optuna-dashboard is not installed: pip install 'reglab[dashboard]'"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run the dashboard tests)")
        pytest.skip(reason)


def _run_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "trials").iterdir())


def _epochs_on_disk(out: Path, t) -> int:
    return len((out / t.user_attrs["run_dir"] / "metrics.jsonl").read_text().splitlines())


# ----------------------------------------------------------------------------------------------------------
# The storage URL: mistakes are one line that says what to fix, and never show the password


@pytest.mark.parametrize(
    "url, words",
    [
        ("postgres://u:pw@localhost/db", ["write postgresql://, not postgres://"]),
        ("postgresq://u:pw@localhost/db", ["unknown database 'postgresq'", "did you mean postgresql://"]),
        ("postgresql://u:pw@localhost:54x/db", ["not a database URL", "postgresql://USER:PASSWORD@HOST:PORT/DB"]),
        ("postgresql:/db", ["not a database URL"]),
    ],
)
def test_bad_storage_urls_are_clear_user_errors(url, words):
    with pytest.raises(UserError) as exc:
        open_storage(url)
    text = str(exc.value)
    assert "\n" not in text and ":pw@" not in text
    for w in words:
        assert w in text, text


def test_missing_postgres_driver_names_the_pip_command(monkeypatch):
    from reglab.sweep import storage

    monkeypatch.setattr(storage, "_importable", lambda module: False)
    with pytest.raises(UserError, match=r"pip install 'reglab\[postgres\]'") as exc:
        open_storage("postgresql://u:secret@localhost/db")
    assert "secret" not in str(exc.value) and "u:***@localhost" in str(exc.value)
    with pytest.raises(
        UserError, match="names the psycopg2 driver, which is not installed: pip install psycopg2-bin"
    ):
        open_storage("postgresql+psycopg2://u@localhost/db")
    # with only psycopg2 installed, postgresql:// uses it (SQLAlchemy 2.1 alone would ask for psycopg 3)
    monkeypatch.setattr(storage, "_importable", lambda module: module == "psycopg2")
    assert engine_url("postgresql://u:pw@h:5/db") == "postgresql+psycopg2://u:pw@h:5/db"
    monkeypatch.setattr(storage, "_importable", lambda module: True)
    assert engine_url("postgresql://u:pw@h:5/db") == "postgresql+psycopg://u:pw@h:5/db"


def test_unreachable_server_is_one_line_without_the_password(tmp_path, capsys):
    _driver()
    with socket.socket() as s:  # a port where certainly nothing listens: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        f = tmp_path / "s.yaml"
        f.write_text(yaml.safe_dump(sweep_dict(trials=1)))
        code = main(
            [
                "sweep",
                str(f),
                "-o",
                str(tmp_path / "out"),
                "--storage",
                f"postgresql://reglab:secret@127.0.0.1:{port}/db",
            ]
        )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"no database server answers at 127.0.0.1:{port}: start it" in err and "secret" not in err
    assert "reglab:***@127.0.0.1" in err
    assert not (
        tmp_path / "out" / "sweep.yaml"
    ).exists()  # the directory does not remember the storage that failed


def test_wrong_password_and_missing_database_on_a_real_server(postgres_server):
    from sqlalchemy.engine import make_url

    u = make_url(postgres_server)
    with pytest.raises(UserError, match="the server refused user 'reglab': check the user and password") as exc:
        open_storage(u.set(password="wrong-password").render_as_string(hide_password=False))
    assert "wrong-password" not in str(exc.value)
    with pytest.raises(UserError, match="database 'no_such_db' does not exist .* create it"):
        open_storage(u.set(database="no_such_db").render_as_string(hide_password=False))
    assert shown_url(postgres_server) == u.render_as_string(hide_password=True)
    assert u.password not in shown_url(postgres_server)


# ----------------------------------------------------------------------------------------------------------
# Two worker processes on one PostgreSQL study


def test_two_worker_processes_on_postgres_reach_the_trial_count_exactly(tmp_path, postgres_url):
    d = sweep_dict(trials=6, storage=postgres_url)
    f = tmp_path / "pg.yaml"
    f.write_text(yaml.safe_dump(d))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "reglab", "sweep", str(f), "-o", str(out), "--workers", "2"],
        cwd=tmp_path,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert not (out / "study.db").exists()  # the study lives on the server
    spec = parse_sweep(d, "pg")
    study = load_optuna_study(spec, out)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(6)), text  # none lost, none duplicated, no overshoot
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    assert counts(study)["done"] == 6 and {t.user_attrs["worker"] for t in trials} == {0, 1}
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both processes trained trials
    assert _run_dirs(out) == [f"trial-{i:04d}" for i in range(6)]
    for t in trials:  # each run directory holds the epochs its trial reported, no more, no less
        assert t.user_attrs["run_dir"] == f"trials/trial-{t.number:04d}"
        assert _epochs_on_disk(out, t) == len(t.intermediate_values) == t.user_attrs["epochs"]
        assert len(t.intermediate_values) == (2 if t.state == TrialState.COMPLETE else 1)
    assert "[w0] trial" in proc.stdout and "[w1] trial" in proc.stdout
    assert postgres_url.split("@")[0].split(":")[-1] not in text  # the password is never printed
    # the report reads everything from the server
    rows = (out / "report" / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 6
    # the storage itself: one row per trial number in the study, as Optuna's schema stores them
    import sqlalchemy

    engine = sqlalchemy.create_engine(engine_url(postgres_url))
    with engine.connect() as conn:
        numbers = [r[0] for r in conn.execute(sqlalchemy.text("SELECT number FROM trials ORDER BY number"))]
    engine.dispose()
    assert numbers == list(range(6))


def test_worker_killed_mid_trial_on_postgres_is_retried_and_the_count_is_exact(tmp_path, postgres_url):
    """SIGKILL one of two workers in trial 0, after epoch 1 reached the run directory and the server; the other
    worker fails that trial as "worker died" (its process is gone) and runs its retry with the same parameters."""
    d = sweep_dict(trials=3, pruner="none", storage=postgres_url, max_retries=1)
    f = tmp_path / "kill.yaml"
    f.write_text(yaml.safe_dump(d))
    out, lock_path, log_path = tmp_path / "out", tmp_path / "gate.lock", tmp_path / "sweep.log"
    spec = parse_sweep(d, "pg")
    with socket.socket() as server, open(lock_path, "w") as gate, open(log_path, "w") as log:
        fcntl.flock(gate, fcntl.LOCK_EX)  # no trial but the victim gets past epoch 1 until the kill
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(600)
        env = checkout_env(REGLAB_TEST_SWEEP_GATE=f"{server.getsockname()[1]}:{lock_path}:0")
        env["PYTHONPATH"] = f"{GATE}{os.pathsep}{env['PYTHONPATH']}"
        launcher = subprocess.Popen(
            [sys.executable, "-m", "reglab", "sweep", str(f), "-o", str(out), "--workers", "2", "--no-report"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        victim = None
        try:
            try:
                conn, _ = server.accept()  # the victim's hook: epoch 1 of trial 0 is done
            except socket.timeout:
                pytest.fail("trial 0 never finished its first epoch: " + log_path.read_text())
            with conn:
                pid, number = map(int, conn.makefile().readline().split())
                study = load_optuna_study(spec, out)
                t = study.trials[0]
                assert number == 0 and t.state == TrialState.RUNNING and t.user_attrs["pid"] == pid
                assert list(t.intermediate_values) == [1]  # the server has epoch 1 ...
                assert _epochs_on_disk(out, t) == 1  # ... and so has the run directory
                os.kill(pid, signal.SIGKILL)
                victim = pid
            fcntl.flock(gate, fcntl.LOCK_UN)
            assert launcher.wait(timeout=900) == 1  # one worker did not finish cleanly: it was killed
        finally:
            _kill_workers(launcher, spec, out, victim)
    text = log_path.read_text()
    assert "exited with code -9" in text and "trial 0: worker died" in text, text
    study = load_optuna_study(spec, out)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(4)), text  # 3 trials + 1 retry, numbered once each
    k = trials[0]
    assert k.state == TrialState.FAIL and k.user_attrs["failure_kind"] == "died" and k.user_attrs["will_retry"]
    assert (
        f"process {victim} on" in k.user_attrs["failure"] and "ended without finishing" in k.user_attrs["failure"]
    )
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].params == k.params and retry[0].state == TrialState.COMPLETE
    assert retry[0].user_attrs["pid"] != victim
    c = counts(study)
    assert (c["done"], c["complete"], c["retried"], c["running"], c["waiting"]) == (3, 3, 1, 0, 0)
    assert _run_dirs(out) == [f"trial-{i:04d}" for i in range(4)]
    assert _epochs_on_disk(out, k) == 1  # the killed trial's run directory stopped at its first epoch
    for t in trials[1:]:
        assert t.state == TrialState.COMPLETE and _epochs_on_disk(out, t) == 2


def _kill_workers(launcher: subprocess.Popen, spec, out: Path, victim: int | None) -> None:
    """After a failed assertion: end the launcher and any worker process still running (they run in their own
    sessions, so the launcher's end does not reach them)."""
    if launcher.poll() is None:
        launcher.kill()
        launcher.wait()
    pids = {victim} if victim else set()
    try:
        pids |= {t.user_attrs.get("pid") for t in load_optuna_study(spec, out).get_trials()}
    except Exception:
        pass
    for pid in pids - {None}:
        try:
            if b"--worker-index" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_stale_heartbeat_from_another_host_on_postgres(tmp_path, postgres_url):
    """A worker on another machine that went silent: its trial is failed after stale_after_s and queued again;
    a live one elsewhere is left alone."""
    spec = parse_sweep(sweep_dict(storage=postgres_url, stale_after_s=60, max_retries=1), "pg")
    study = prepare(spec, tmp_path)
    old, fresh = trials_of_another_host(study, silent_for_s=3600)
    assert recover_stale(study, spec, log=lambda m: None) == [old.number]
    t = study.trials[old.number]
    assert (
        t.state == TrialState.FAIL and "no heartbeat for" in t.user_attrs["failure"] and t.user_attrs["will_retry"]
    )
    assert study.trials[fresh.number].state == TrialState.RUNNING
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == old.number


# ----------------------------------------------------------------------------------------------------------
# The live dashboard: `reglab sweep dashboard DIR` as a real server process

# (values per epoch, final state) of the hand-made study the dashboard serves: every finished state, known values
DASH_TRIALS = [
    ([40.0, 61.5], TrialState.COMPLETE),
    ([12.5], TrialState.PRUNED),
    ([30.0, 55.25], TrialState.COMPLETE),
    ([], TrialState.FAIL),
]
API_STATE = {TrialState.COMPLETE: "Complete", TrialState.PRUNED: "Pruned", TrialState.FAIL: "Fail"}


@pytest.fixture(params=["sqlite", "postgresql"])
def dashboard_sweep(request, tmp_path):
    """A sweep directory whose study (SQLite file, or on the PostgreSQL server) holds DASH_TRIALS."""
    storage = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    spec = parse_sweep(sweep_dict(name="dash", trials=4, storage=storage), "dash")
    out = tmp_path / "dash"
    study = prepare(spec, out)
    for values, state in DASH_TRIALS:
        t = study.ask()
        for p in spec.space:
            p.suggest(t)
        for epoch, v in enumerate(values, 1):
            t.report(v, epoch)
        study.tell(t, values[-1] if state == TrialState.COMPLETE else None, state=state)
    return out, spec


def _start_dashboard(out: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """``reglab sweep dashboard OUT --port 0`` as a server process; its study page's URL once it listens."""
    import select

    proc = subprocess.Popen(
        [sys.executable, "-m", "reglab", "sweep", "dashboard", str(out), "--port", "0", *args],
        env=checkout_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready, _, _ = select.select([proc.stdout], [], [], 300)  # the first line is printed once the port is bound
    line = proc.stdout.readline() if ready else ""
    if "http://" not in line:
        proc.kill()
        pytest.fail(f"the dashboard did not start: {line}{proc.communicate()[0]}")
    return proc, line.split("http://")[1].split()[0]


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    out = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = row.split()[1], row.split()[3]
        ip_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            out.add(socket.inet_ntoa(bytes.fromhex(ip_hex)[::-1]))
    return out


def test_dashboard_serves_the_sweep_on_localhost(dashboard_sweep, chromium, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    _need_dashboard()
    out, spec = dashboard_sweep
    proc, page_url = _start_dashboard(out)
    try:
        host_port, _, path = page_url.partition("/")
        base = f"http://{host_port}"
        assert host_port.startswith("127.0.0.1:") and _listening_addresses(int(host_port.split(":")[1])) == {
            "127.0.0.1"
        }  # this machine only, by default
        # the HTTP API lists the study and its trials with their states and values
        studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=60))["study_summaries"]
        assert [s["study_name"] for s in studies] == ["dash"]
        study_id = studies[0]["study_id"]
        assert path == f"dashboard/studies/{study_id}"
        detail = json.load(urllib.request.urlopen(f"{base}/api/studies/{study_id}?after=0", timeout=60))
        got = [
            (t["number"], t["state"], t.get("values"), [iv["value"] for iv in t["intermediate_values"]])
            for t in detail["trials"]
        ]
        assert got == [
            (i, API_STATE[state], [values[-1]] if values else None, values)
            for i, (values, state) in enumerate(DASH_TRIALS)
        ]
        # the page, in headless chromium: the study list, then each trial with its state and value
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(f"{base}/dashboard")
            expect(page.get_by_role("heading", name=f"{study_id}. dash", exact=True)).to_be_visible(timeout=60_000)
            page.goto(f"http://{page_url}/trials")
            expect(page.get_by_text(f"{len(DASH_TRIALS)} Trials")).to_be_visible(timeout=60_000)
            for number, (values, state) in enumerate(DASH_TRIALS):
                page.get_by_text(f"Trial {number}", exact=True).click()
                heading = page.get_by_role("heading", name=f"Trial {number} (trial_id=")
                expect(heading).to_be_visible(timeout=30_000)
                lines = [ln.strip() for ln in heading.locator("xpath=..").inner_text().splitlines() if ln.strip()]
                assert lines[1] == API_STATE[state], lines  # the trial's panel: its state under its title ...
                if values:  # ... its value, and the accuracy of every epoch
                    assert lines[lines.index("Value") + 1] == f"{values[-1]:g}", lines
                    steps = lines[lines.index("Intermediate Values") + 1 : lines.index("Parameter")]
                    assert steps == [f"{e} {v:g}" for e, v in enumerate(values, 1)], lines
                else:
                    assert lines[lines.index("Value") + 1] == "None", lines
            page.screenshot(path=str(tmp_path / "dashboard.png"))
            browser.close()
        assert all(u.startswith(base) for u in requests), {u for u in requests if not u.startswith(base)}
    finally:
        proc.terminate()  # SIGTERM (kill PID): a clean stop, as Ctrl-C
        text = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and "dashboard stopped" in text, text


def test_dashboard_user_errors(tmp_path, capsys, monkeypatch):
    _need_dashboard()
    spec = parse_sweep(sweep_dict(name="dash", trials=1), "dash")
    prepare(spec, tmp_path / "dash")
    assert main(["sweep", "dashboard", str(tmp_path)]) == 2  # not a sweep directory
    assert "not a sweep directory" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert main(["sweep", "dashboard", str(tmp_path / "dash"), "--port", str(busy.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert "in use" in err and "--port 0" in err and err.count("\n") == 1
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import optuna_dashboard -> ImportError
    assert main(["sweep", "dashboard", str(tmp_path / "dash")]) == 2
    assert "pip install 'reglab[dashboard]'" in capsys.readouterr().err


def test_dashboard_on_another_address_warns(tmp_path, monkeypatch):
    from reglab.sweep import dashboard

    class Server:
        def serve_forever(self):
            raise KeyboardInterrupt

        def server_close(self):
            pass

    monkeypatch.setattr(dashboard, "make_dashboard", lambda *a: (Server(), "http://0.0.0.0:1/x", "dash", "db"))
    logs: list[str] = []
    assert dashboard.serve(tmp_path, "0.0.0.0", 1, logs.append) == 0
    assert "reachable from other machines" in logs[0] and "no login" in logs[0]
    logs.clear()
    assert dashboard.serve(tmp_path, "127.0.0.1", 1, logs.append) == 0
    assert not any("warning" in m for m in logs)
