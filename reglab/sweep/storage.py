"""A sweep's directory, its Optuna storage and its study.

A sweep directory holds ``sweep.yaml`` (the validated sweep file, rerunnable), ``study.db`` (the Optuna study in
SQLite, unless the sweep names another storage), ``trials/trial-NNNN/`` (one run directory per trial),
``report/`` and ``best/``.

Storage: SQLite by default, opened with a long busy timeout so several worker processes can write to it. SQLite
transactions survive a killed process (the OS drops its locks), which Optuna's journal file backend cannot
promise (a worker killed while holding its symlink lock leaves the lock behind until the lock's grace period);
``journal:FILE``, PostgreSQL and MySQL URLs work too (PostgreSQL/MySQL to share a study between machines).
"""

from __future__ import annotations

import contextlib
import importlib
import re
import shlex
import time
from pathlib import Path

import yaml

from ..errors import UserError
from .spec import Sweep, parse_sweep

SWEEP_FILE = "sweep.yaml"
DB_FILE = "study.db"

URL_FORMS = (
    "sqlite:///FILE.db, journal:FILE, postgresql://USER:PASSWORD@HOST:PORT/DB or mysql://USER:PASSWORD@HOST/DB"
)
# Database drivers per SQLAlchemy dialect, in order of preference: (SQLAlchemy driver name, module to import). A
# URL naming no driver (postgresql://...) gets the first one installed, whatever SQLAlchemy's own default is
# (SQLAlchemy 2.0 picks psycopg2, 2.1 psycopg 3).
DRIVERS = {
    "postgresql": (("psycopg", "psycopg"), ("psycopg2", "psycopg2")),
    "mysql": (("pymysql", "pymysql"), ("mysqldb", "MySQLdb")),
}
INSTALL = {
    "postgresql": "pip install 'reglab[postgres]' (psycopg 3; psycopg2-binary works too)",
    "mysql": "pip install PyMySQL",
}


def storage_url(spec: Sweep, sweep_dir: Path) -> str:
    if spec.storage:
        url = spec.storage
        if "://" not in url and not url.startswith("journal:"):
            if url.endswith((".journal", ".log", ".jsonl")):
                return f"journal:{Path(url).resolve()}"
            raise UserError(f"storage {url!r} is not a storage URL; use {URL_FORMS}.")
        return url
    return f"sqlite:///{(sweep_dir / DB_FILE).resolve()}"


def shown_url(url: str) -> str:
    """``url`` with its password masked (``postgresql://user:***@host/db``), for messages and logs."""
    if "://" not in url or "@" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: mask whatever sits between user: and @
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:  # also psycopg without a libpq wrapper
        return False


def engine_url(url: str) -> str:
    """The SQLAlchemy URL to connect with: ``url`` checked, and for a postgresql:// or mysql:// URL that names no
    driver, the first installed driver of :data:`DRIVERS` made explicit. Mistakes are one UserError."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = shown_url(url)
    try:
        u = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise UserError(f"storage {shown}: not a database URL ({_first_line(exc)}); use {URL_FORMS}.") from None
    dialect, _, driver = u.drivername.partition("+")
    if dialect in ("postgres", "postgre", "pgsql", "psql", "pg"):
        raise UserError(f"storage {shown}: write postgresql://, not {dialect}:// (SQLAlchemy's name).")
    if dialect == "sqlite":
        return url
    if dialect not in DRIVERS:
        try:
            u.get_dialect()
        except NoSuchModuleError:
            import difflib

            close = difflib.get_close_matches(dialect, ["sqlite", "postgresql", "mysql"], n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}://?)" if close else ""
            raise UserError(f"storage {shown}: unknown database {dialect!r}{hint}; use {URL_FORMS}.") from None
        except ImportError as exc:
            raise UserError(
                f"storage {shown}: its database driver is not installed ({_first_line(exc)})."
            ) from None
        return url
    if driver:
        module = dict(DRIVERS[dialect]).get(driver)
        if module and not _importable(module):
            raise UserError(
                f"storage {shown} names the {driver} driver, which is not installed: pip install "
                f"{'psycopg2-binary' if driver == 'psycopg2' else module}, or write {dialect}:// and "
                f"{INSTALL[dialect]}."
            )
        return url
    for name, module in DRIVERS[dialect]:
        if _importable(module):
            return u.set(drivername=f"{dialect}+{name}").render_as_string(hide_password=False)
    raise UserError(f"storage {shown} needs a {dialect} driver and none is installed: {INSTALL[dialect]}.")


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _connect_error(url: str, exc: BaseException) -> UserError:
    """A UserError for a database that could not be opened: what went wrong and how to fix it."""
    from sqlalchemy.engine import make_url

    shown = shown_url(url)
    orig = getattr(exc, "orig", None) or exc  # sqlalchemy wraps the driver's error
    text = " ".join(str(orig).split())
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", text)
    low = text.lower()
    try:
        u = make_url(url)
        port = u.port or {"postgresql": 5432, "mysql": 3306}.get(u.get_backend_name(), "its default port")
        host, where, user, db = u.host or "localhost", f"{u.host or 'localhost'}:{port}", u.username, u.database
    except Exception:
        host, where, user, db = "?", "the server", None, None
    if "password authentication failed" in low or "no password supplied" in low or "access denied" in low:
        fix = (
            f"the server refused user {user!r}: check the user and password in the URL (or leave the password "
            "out of the URL and put it in ~/.pgpass or PGPASSWORD)"
        )
    elif "does not exist" in low and "database" in low:
        fix = (
            f"database {db!r} does not exist on {where}: create it "
            f"(createdb -h HOST -p PORT -U {user or 'USER'} {db})"
        )
    elif "translate host name" in low or "name or service not known" in low or "nodename nor servname" in low:
        fix = f"unknown host {host!r}: check the host name in the URL"
    elif (
        "refused" in low
        or "timeout" in low
        or "timed out" in low
        or "could not connect" in low
        or "no route to host" in low
    ):
        fix = f"no database server answers at {where}: start it, or fix the host and port in the URL"
    else:
        return UserError(f"cannot open the Optuna storage {shown}: {text[:500]}")
    return UserError(f"cannot open the Optuna storage {shown}: {fix}. ({text[:300]})")


def _creation_race(error: str) -> bool:
    """Whether ``error`` is another process creating the same schema at the same moment: a table that already
    exists, a locked database, or the schema-version row (alembic_version) or a table's row type (PostgreSQL's
    pg_type) inserted twice; worth a retry."""
    text = error.lower()
    return (
        "already exists" in text
        or "locked" in text
        or ("unique constraint" in text and ("alembic" in text or "pg_type" in text))
    )


def open_storage(url: str):
    """An Optuna storage for ``url`` (journal:FILE, sqlite:///FILE or any SQLAlchemy URL Optuna accepts)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = url[len("journal:") :].removeprefix("//")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    real = engine_url(url)
    if url.startswith("sqlite"):
        engine: dict = {"connect_args": {"timeout": 300}}
    else:  # a server: fail in seconds when it is away; test pooled connections (a sweep lasts hours)
        engine = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    for attempt in range(10):
        try:
            return optuna.storages.RDBStorage(real, engine_kwargs=engine)
        except ImportError as exc:
            raise UserError(
                f"storage {shown_url(url)}: {_first_line(exc)}; install its database driver "
                f"(PostgreSQL: {INSTALL['postgresql']})."
            ) from None
        except Exception as exc:  # sqlalchemy's ArgumentError / OperationalError: bad URL, unreachable server
            if attempt < 9 and _creation_race(str(exc)):
                time.sleep(0.2 + 0.3 * attempt)
                continue
            raise _connect_error(url, exc) from None


def read_sweep_dir(sweep_dir: Path) -> Sweep:
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise UserError(
            f"{sweep_dir} is not a sweep directory (no {SWEEP_FILE}); give the folder `reglab sweep` "
            "wrote (default runs/sweeps/<name>)."
        )
    return parse_sweep(yaml.safe_load(path.read_text()) or {}, Path(sweep_dir).name, str(path))


def prepare(spec: Sweep, sweep_dir: Path):
    """Create (or check and reopen) the sweep directory and its study; return the study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    saved = sweep_dir / SWEEP_FILE
    if spec.cli_overrides is None:
        spec.cli_overrides = []
    if saved.is_file():
        old = read_sweep_dir(sweep_dir)
        diff = [k for k, v in spec.identity().items() if old.identity()[k] != v]
        if diff:
            raise UserError(
                f"{sweep_dir} holds a sweep with different {', '.join(diff)}; a resumed study must "
                "search the same space on the same base. Use another -o DIR (or name:) for the new sweep."
            )
        if old.cli_overrides is not None:  # None: a directory from before the overrides were recorded
            _refuse_other_overrides(spec, old.cli_overrides, str(sweep_dir), saved)
        if spec.storage is None:
            spec.storage = old.storage  # resuming: the storage the sweep started with
        elif old.storage != spec.storage:
            raise UserError(
                f"{sweep_dir} uses storage {shown_url(old.storage or DB_FILE)!r}, not "
                f"{shown_url(spec.storage)!r}; drop "
                "--storage (the directory remembers its storage) or use another -o DIR."
            )
    # Opened before sweep.yaml is written: a new directory must not remember a storage that cannot be opened (a
    # typo in the URL, a server that is down), or the rerun with the fix would be refused as another storage.
    storage = open_storage(storage_url(spec, sweep_dir))
    with ask_lock(sweep_dir):
        study = optuna.create_study(
            storage=storage, study_name=spec.name, direction="maximize", load_if_exists=True
        )
    ident = study.user_attrs.get("sweep")
    if ident is None:
        study.set_user_attr("sweep", spec.identity())
    elif ident != spec.identity():
        raise UserError(
            f"study {spec.name!r} in {shown_url(storage_url(spec, sweep_dir))} was started with another "
            "space or base; give the sweep another name: or a new storage."
        )
    # The same check on the study itself: another machine joining it has its own sweep directory.
    joined = study.user_attrs.get("cli_overrides")
    if joined is None:
        study.set_user_attr("cli_overrides", spec.cli_overrides)
    else:
        _refuse_other_overrides(
            spec, joined, f"study {spec.name!r} in {shown_url(storage_url(spec, sweep_dir))}", saved
        )
    # Written only once every check passed: a directory refused here must not remember the refused overrides (its
    # rerun with the study's own ones would then be refused by the directory).
    from ..train.checkpoint import atomic_write_text

    atomic_write_text(
        saved,
        "# Written by `reglab sweep`; rerun it to resume: "
        + resume_command(saved, spec.cli_overrides)
        + "\n"
        + yaml.safe_dump(spec.to_dict(), sort_keys=False),
    )
    if read_sweep_dir(sweep_dir).to_dict() != spec.to_dict():  # the copy workers and `report` read back
        raise RuntimeError(f"{saved} does not read back as the sweep it was written from")
    return study


def resume_command(saved: Path, overrides: list[str]) -> str:
    """The command that resumes the sweep whose copy is ``saved`` in place, with the recorded ``overrides``
    (``-o``: without it, a directory whose study lives in another storage would resume under runs/sweeps/)."""
    return shlex.join(["reglab", "sweep", str(saved), "-o", str(saved.parent), *overrides])


def _refuse_other_overrides(spec: Sweep, recorded: list[str], where: str, saved: Path) -> None:
    """Refuse command-line overrides that train trials differently from those ``where`` was started with: one
    study would hold trials of two experiments (and Hyperband would count another ``train.epochs``)."""
    changes = spec.override_changes(recorded, spec.cli_overrides or [])
    if changes:
        again = resume_command(saved, recorded)
        raise UserError(
            f"{where} was started with other command-line overrides: {'; '.join(changes[:4])}"
            f"{' ...' if len(changes) > 4 else ''}. A resumed sweep trains every trial alike: rerun with the "
            f"overrides it was started with ({again}), or start a new sweep with -o DIR."
        )


def load_optuna_study(spec: Sweep, sweep_dir: Path, sampler=None, pruner=None):
    """The Optuna study (trials, sampler state) of sweep ``spec`` in its storage; not a reglab study file
    (:func:`reglab.study.load_study`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(
            study_name=spec.name,
            storage=open_storage(storage_url(spec, sweep_dir)),
            sampler=sampler,
            pruner=pruner,
        )
    except KeyError:
        raise UserError(
            f"no study {spec.name!r} in {shown_url(storage_url(spec, sweep_dir))}; run `reglab sweep` first."
        ) from None


@contextlib.contextmanager
def ask_lock(sweep_dir: Path):
    """An exclusive ``flock`` on ``<sweep_dir>/.lock`` (released by the OS if the holder dies)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the trial count may overshoot by a few
        yield
        return
    with open(sweep_dir / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
