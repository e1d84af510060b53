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
import time
from pathlib import Path

import yaml

from ..errors import UserError
from .spec import Sweep, parse_sweep

SWEEP_FILE = "sweep.yaml"
DB_FILE = "study.db"




def storage_url(spec: Sweep, sweep_dir: Path) -> str:
    if spec.storage:
        url = spec.storage
        if "://" not in url and not url.startswith("journal:"):
            if url.endswith((".journal", ".log", ".jsonl")):
                return f"journal:{Path(url).resolve()}"
            raise UserError(f"storage {url!r} is not a storage URL; use sqlite:///FILE.db, journal:FILE, "
                            "postgresql://USER:PASS@HOST/DB or mysql://...")
        return url
    return f"sqlite:///{(sweep_dir / DB_FILE).resolve()}"


def _creation_race(error: str) -> bool:
    """Whether ``error`` is another process creating the same schema at the same moment: a table that already
    exists, a locked database, or the schema-version row (alembic_version) inserted twice; worth a retry."""
    text = error.lower()
    return "already exists" in text or "locked" in text or ("unique constraint" in text and "alembic" in text)


def open_storage(url: str):
    """An Optuna storage for ``url`` (journal:FILE, sqlite:///FILE or any SQLAlchemy URL Optuna accepts)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = url[len("journal:"):].removeprefix("//")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    engine = {"connect_args": {"timeout": 300}} if url.startswith("sqlite") else {}
    for attempt in range(10):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except ImportError as exc:
            raise UserError(f"storage {url}: {exc}; install the database driver (e.g. psycopg2-binary for "
                            "PostgreSQL).") from None
        except Exception as exc:  # sqlalchemy's ArgumentError / OperationalError: bad URL, unreachable server
            text = str(exc)
            if attempt < 9 and _creation_race(text):
                time.sleep(0.2 + 0.3 * attempt)
                continue
            raise UserError(f"cannot open the Optuna storage {url!r}: {text.splitlines()[0]}") from None


def read_sweep_dir(sweep_dir: Path) -> Sweep:
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise UserError(f"{sweep_dir} is not a sweep directory (no {SWEEP_FILE}); give the folder `reglab sweep` "
                        "wrote (default runs/sweeps/<name>).")
    return parse_sweep(yaml.safe_load(path.read_text()) or {}, Path(sweep_dir).name, str(path))


def prepare(spec: Sweep, sweep_dir: Path):
    """Create (or check and reopen) the sweep directory and its study; return the study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    saved = sweep_dir / SWEEP_FILE
    if saved.is_file():
        old = read_sweep_dir(sweep_dir)
        diff = [k for k, v in spec.identity().items() if old.identity()[k] != v]
        if diff:
            raise UserError(f"{sweep_dir} holds a sweep with different {', '.join(diff)}; a resumed study must "
                            "search the same space on the same base. Use another -o DIR (or name:) for the new sweep.")
        if spec.storage is None:
            spec.storage = old.storage  # resuming: the storage the sweep started with
        elif old.storage != spec.storage:
            raise UserError(f"{sweep_dir} uses storage {old.storage or DB_FILE!r}, not {spec.storage!r}; drop "
                            "--storage (the directory remembers its storage) or use another -o DIR.")
    from ..train.checkpoint import atomic_write_text

    atomic_write_text(saved, "# Written by `reglab sweep`; rerun it to resume: reglab sweep " + str(saved) + "\n"
                      + yaml.safe_dump(spec.to_dict(), sort_keys=False))
    if read_sweep_dir(sweep_dir).to_dict() != spec.to_dict():  # the copy workers and `report` read back
        raise RuntimeError(f"{saved} does not read back as the sweep it was written from")
    storage = open_storage(storage_url(spec, sweep_dir))
    with ask_lock(sweep_dir):
        study = optuna.create_study(storage=storage, study_name=spec.name, direction="maximize", load_if_exists=True)
    ident = study.user_attrs.get("sweep")
    if ident is None:
        study.set_user_attr("sweep", spec.identity())
    elif ident != spec.identity():
        raise UserError(f"study {spec.name!r} in {storage_url(spec, sweep_dir)} was started with another space or "
                        "base; give the sweep another name: or a new storage.")
    return study


def load_study(spec: Sweep, sweep_dir: Path, sampler=None, pruner=None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=spec.name, storage=open_storage(storage_url(spec, sweep_dir)),
                                 sampler=sampler, pruner=pruner)
    except KeyError:
        raise UserError(f"no study {spec.name!r} in {storage_url(spec, sweep_dir)}; run `reglab sweep` first.") \
            from None


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
