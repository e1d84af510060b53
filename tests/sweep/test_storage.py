"""Sweep storage (reglab/sweep/storage.py): opening a SQLite storage retries a schema-creation race and reports
other errors at once. The storage on a real PostgreSQL server is tested in tests/sweep/test_storage_postgres.py."""

from __future__ import annotations

import optuna
import pytest

from reglab.errors import UserError


def test_open_storage_retries_a_schema_creation_race_and_reports_other_errors(monkeypatch, tmp_path):
    """Two processes creating one SQLite study at once: the loser's insert of the schema-version row fails with
    an IntegrityError (seen in CI); opening again finds the schema made and succeeds."""
    from sqlalchemy.exc import IntegrityError

    from reglab.sweep import storage

    real, calls = optuna.storages.RDBStorage, []

    def racing(url, **kw):
        calls.append(url)
        if len(calls) == 1:
            raise IntegrityError(
                "INSERT INTO alembic_version",
                {},
                Exception("UNIQUE constraint failed: alembic_version.version_num"),
            )
        return real(url, **kw)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)  # reglab's retry back-off: nothing to wait for
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert isinstance(storage.open_storage(url), real) and len(calls) == 2

    def broken(url, **kw):
        calls.append(url)
        raise IntegrityError("INSERT INTO trials", {}, Exception("UNIQUE constraint failed: trials.number"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", broken)
    calls.clear()
    with pytest.raises(UserError, match="cannot open the Optuna storage"):
        storage.open_storage(url)
    assert len(calls) == 1  # not a creation race: reported at once
