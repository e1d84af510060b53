"""Shared fixtures: fake CIFAR files in the official layout (written by tests/helpers/cifar_files.py), the real
CIFAR-10 copy, the analyses' tiny trained study, chromium and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.cifar_files import (
    FakeCifar10,
    FakeCifar100,
    decode_ids,
    id_images,
    make_archive,
    py2_dumps,
    write_cifar10,
    write_cifar100,
    write_pickle,
)

# The Ctrl-C tests send SIGINT to reglab processes started from here. A test session launched in the background
# without job control (`nohup ... &` in a script) inherits SIGINT as ignored, and so would every child: reset it
# to Python's handler (a handled signal is reset to the default in an exec'd child, an ignored one is not).
signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("REGLAB_TEST_REAL_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def resumes_bit_identical(tmp_path):
    """``check(overrides, stop_after)``: train ``overrides`` straight through, and again stopped after epoch
    ``stop_after`` and resumed from its run directory; assert both give the same per-epoch metrics; return the
    uninterrupted run's result."""
    from reglab.config import load_config
    from reglab.train import run
    from reglab.train.rundir import load_run_config

    def check(overrides: list[str], stop_after: int = 2):
        a = run(load_config(None, [*overrides, f"run.dir={tmp_path / 'a'}"]))

        class Stop:
            def on_epoch_end(self, r, row):
                return r.epoch >= stop_after

        run(load_config(None, [*overrides, f"run.dir={tmp_path / 'b'}"]), callbacks=[Stop()])
        resumed = load_run_config(tmp_path / "b")
        resumed.run.dir = str(tmp_path / "b")
        b = run(resumed, resume=True)
        keys = ("train_loss", "val_acc", "test_acc", "val_loss")
        assert [[row[k] for k in keys] for row in a.metrics] == [[row[k] for k in keys] for row in b.metrics]
        return a

    return check


def _cifar_layouts(unchecked: bool) -> dict:
    from dataclasses import replace

    from reglab.data import cifar

    official = {name: getattr(cifar, name.upper()) for name in ("cifar10", "cifar100")}
    return {k: replace(v, train_rows=None, test_rows=None) if unchecked else v for k, v in official.items()}


@pytest.fixture(autouse=True)
def small_cifar_files(monkeypatch):
    """The fake CIFAR files (tests/helpers/cifar_files.py) hold a few dozen images per file, not the official
    10000 (50000 in CIFAR-100's train): in-process, every test reads them with the per-file image count
    unchecked (Layout.train_rows / test_rows None). reglab processes a test starts check the official counts,
    as do tests that ask for ``official_cifar_rows`` or set their own counts."""
    from reglab.data import cifar

    for name, layout in _cifar_layouts(unchecked=True).items():
        monkeypatch.setitem(cifar.LAYOUTS, name, layout)


@pytest.fixture
def official_cifar_rows(small_cifar_files, monkeypatch):
    """Undo ``small_cifar_files``: the official per-file image counts are checked, as outside the tests."""
    from reglab.data import cifar

    for name, layout in _cifar_layouts(unchecked=False).items():
        monkeypatch.setitem(cifar.LAYOUTS, name, layout)


@pytest.fixture
def fake_cifar10(tmp_path) -> FakeCifar10:
    return write_cifar10(tmp_path / "data")


@pytest.fixture
def fake_cifar100(tmp_path) -> FakeCifar100:
    return write_cifar100(tmp_path / "data")


# ----------------------------------------------------------------------------------------------------------
# The real CIFAR-10 copy (lossy JPEG-decoded rebuild, see ../shared/data/README.md)


@pytest.fixture(scope="session")
def maybe_real_data_dir() -> Path | None:
    """The folder holding the real cifar-10-batches-py/, or None where it is absent."""
    return REAL_DATA if (REAL_DATA / "cifar-10-batches-py" / "data_batch_1").is_file() else None


@pytest.fixture(scope="session")
def real_data_dir(maybe_real_data_dir) -> Path:
    if maybe_real_data_dir is None:
        pytest.skip(f"real CIFAR-10 not found in {REAL_DATA} (set REGLAB_TEST_REAL_DATA to its parent folder)")
    return maybe_real_data_dir


def real_config(real_dir: Path):
    from reglab.config import DataConfig

    return DataConfig(dataset="cifar10", dir=str(real_dir), download=False)


@pytest.fixture(scope="session")
def real_arrays(real_data_dir):
    """``load_arrays`` of the real data: the one time per session the 60000 images are unpickled (~1.5 s)."""
    from reglab.data.datasets import load_arrays

    return load_arrays(real_config(real_data_dir))


@contextmanager
def _reuse_arrays(arrays, cfg):
    """Serve the session's already-loaded arrays to load_splits and check instead of reading the files again."""
    import reglab.data.check
    import reglab.data.datasets

    def cached(asked):
        assert asked == cfg, "the real-data fixtures only cache the default CIFAR-10 config"
        return arrays

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reglab.data.datasets, "load_arrays", cached)
        mp.setattr(reglab.data.check, "load_arrays", cached, raising=False)
        yield


@pytest.fixture(scope="session")
def real_splits(real_data_dir, real_arrays):
    """load_splits on the real data with the default config (45000/5000/10000)."""
    from reglab.data import load_splits

    cfg = real_config(real_data_dir)
    with _reuse_arrays(real_arrays, cfg):
        return load_splits(cfg)


@pytest.fixture(scope="session")
def real_check(real_data_dir, real_arrays):
    """reglab.data.check.check_dataset on the real data: SHA256SUMS verification + summary of all 50000/10000 images."""
    from reglab.data.check import check_dataset

    cfg = real_config(real_data_dir)
    with _reuse_arrays(real_arrays, cfg):
        return check_dataset(cfg)


@pytest.fixture(scope="session")
def cifar_tools():
    """The writers of tests/helpers/cifar_files.py, for tests that need their own folders or archives."""
    from types import SimpleNamespace

    return SimpleNamespace(
        write_cifar10=write_cifar10,
        write_cifar100=write_cifar100,
        make_archive=make_archive,
        py2_dumps=py2_dumps,
        write_pickle=write_pickle,
        id_images=id_images,
        decode_ids=decode_ids,
    )


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tests use tiny tensors on a shared 2-core machine, where one intra-op thread is several times
    faster than two (thread hand-offs dominate under load). Benchmarks, not tests, measure speed."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------------------
# A tiny trained study for the analyses (tests/analysis/test_interpolation.py, tests/commands/test_analyze.py)

_ANALYSIS_FIXED = ["mix.lam_x=fixed", "mix.lam_x_range=[0.5,0.5]"]
_ANALYSIS_RUNS = {
    "erm": [],
    "mixup": ["mix.lam_x=uniform", "mix.lam_x_range=[0.0,1.0]"],
    "a_y": [*_ANALYSIS_FIXED, "mix.lam_y=uniform", "mix.lam_y_range=[0.5,1.0]"],
}


@pytest.fixture(scope="session")
def study(tmp_path_factory):
    """A tiny study directory: runs/<name>-s0 for ERM, tied U(0,1) mixup and a decoupled run (2 epochs each).
    Trained once per session and only read by its tests (their outputs go to their own tmp_path)."""
    from reglab.config import load_config
    from reglab.train import run
    from tests.helpers import configs

    tiny = [*configs.TINY, "train.epochs=2"]
    root = tmp_path_factory.mktemp("study")
    for name, extra in _ANALYSIS_RUNS.items():
        cfg = load_config(None, [*tiny, *extra, f"run.name={name}", f"run.dir={root / 'runs' / f'{name}-s0'}"])
        run(cfg)
    return root


# ----------------------------------------------------------------------------------------------------------
# Headless chromium (Debian's, driven through playwright's Python API) for the HTML tests


@pytest.fixture(scope="session")
def chromium() -> str:
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (make test installs it)")
    pytest.importorskip("playwright")
    return path


# ----------------------------------------------------------------------------------------------------------
# PostgreSQL for the shared-storage sweep tests (tests/sweep/test_storage_postgres.py)


def _postgres_unavailable(reason: str):
    """Skip, except under CI, where the PostgreSQL tests must run (as root .ci/postgres.sh installs the server)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the PostgreSQL tests)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server():
    """URL of a PostgreSQL server for this session: $REGLAB_TEST_POSTGRES if set, else a throwaway one that
    .ci/postgres.sh starts in a temporary folder (installing Debian's postgresql first when root), stopped and
    removed at the end."""
    import shutil
    import subprocess
    import tempfile

    from reglab.errors import UserError
    from reglab.sweep.storage import engine_url

    try:
        engine_url("postgresql://localhost/x")  # the Python driver is installed
    except UserError as exc:
        _postgres_unavailable(str(exc))
    if os.environ.get("REGLAB_TEST_POSTGRES"):
        yield os.environ["REGLAB_TEST_POSTGRES"]
        return
    script = REPO / ".ci" / "postgres.sh"
    if shutil.which("bash") is None:
        _postgres_unavailable("no bash to run .ci/postgres.sh")
    folder = tempfile.mkdtemp(prefix="reglab-pg-")
    proc = subprocess.run(["bash", str(script), "start", folder], capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        subprocess.run(["bash", str(script), "stop", folder], capture_output=True, timeout=120)
        _postgres_unavailable(
            "cannot start PostgreSQL with .ci/postgres.sh: " + " | ".join(proc.stderr.strip().splitlines()[-3:])
        )
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(script), "stop", folder], capture_output=True, timeout=120)


@pytest.fixture
def postgres_url(postgres_server, request):
    """A fresh, empty database on the session's server for one test; its URL (dropped afterwards)."""
    import re

    import sqlalchemy
    from sqlalchemy.engine import make_url

    from reglab.sweep.storage import engine_url

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + f"_{os.getpid()}"
    admin = sqlalchemy.create_engine(engine_url(postgres_server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
