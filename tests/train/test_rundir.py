"""reglab.train.rundir: what an auto-named run (no run.dir) leaves when it fails. The folders it made for itself
(``runs/<name>-<timestamp>/``, and ``runs/`` when it made that too) go again when it fails before writing
anything; a folder with files in it, one that existed before and one the user named stay.

The failing runs fail where a run's data is loaded (a CIFAR-10 folder that is not there, downloads off): after
the run directory was claimed, before anything was written into it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reglab.api import fit
from reglab.cli import main
from reglab.config import load_config
from reglab.errors import UserError
from reglab.train import run, rundir
from tests.helpers.configs import TINY

NO_DATA = ["data.dataset=cifar10", "data.download=false", "run.threads=1"]


def failing(tmp_path: Path, *extra: str):
    """The tiny config on a CIFAR-10 folder that does not exist (downloads off): it fails loading its data."""
    return load_config(None, [*TINY, *NO_DATA, f"data.dir={tmp_path / 'no-data'}", *extra])


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_new_run_that_fails_before_writing_leaves_no_folders(tmp_path, monkeypatch, capsys):
    """Neither its empty run directory nor the runs/ folder it made for it is left behind (runs/ used to stay),
    through run(), fit() (which leaves the caller's run.dir unset) and `reglab train` (one line, exit 2)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="cifar10 not found"):
        run(failing(tmp_path))
    assert listing(tmp_path) == []
    cfg = failing(tmp_path)
    with pytest.raises(UserError, match="cifar10 not found"):
        fit(cfg)
    assert listing(tmp_path) == [] and cfg.run.dir is None  # not handed the removed folder back
    argv = ["train", "quick", *TINY, *NO_DATA, f"data.dir={tmp_path / 'no-data'}", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("reglab: error: cifar10 not found") and len(err.strip().splitlines()) == 1
    assert listing(tmp_path) == []


@pytest.mark.parametrize("before", [[], ["older"]], ids=["empty", "another-run"])
def test_a_failed_new_run_keeps_a_runs_folder_it_did_not_make(tmp_path, monkeypatch, before):
    monkeypatch.chdir(tmp_path)
    for name in before:
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "config.yaml").write_text("another run's config\n")
    (tmp_path / "runs").mkdir(exist_ok=True)
    with pytest.raises(UserError, match="cifar10 not found"):
        run(failing(tmp_path))
    assert listing(tmp_path) == ["runs"] and listing(tmp_path / "runs") == before
    for name in before:
        assert (tmp_path / "runs" / name / "config.yaml").read_text() == "another run's config\n"


def test_a_failed_run_never_removes_the_folder_the_user_named(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(UserError, match="cifar10 not found"):
        run(failing(tmp_path, f"run.dir={mine}"))
    assert mine.is_dir() and listing(mine) == []
    with pytest.raises(UserError, match="cifar10 not found"):
        run(failing(tmp_path, f"run.dir={tmp_path / 'new'}"))
    assert listing(tmp_path) == ["mine"]  # a named run.dir is made only once the run is built


def test_a_new_run_that_fails_after_writing_keeps_its_folder(tmp_path, monkeypatch):
    """A failure once config.yaml is written (here a callback's, at the start) leaves the run directory."""
    monkeypatch.chdir(tmp_path)

    class Fails:
        def on_start(self, r):
            raise RuntimeError("a callback's bug")

    with pytest.raises(RuntimeError, match="a callback's bug"):
        run(load_config(None, [*TINY, "run.threads=1"]), callbacks=[Fails()])
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "config.yaml").is_file()


def test_a_claim_makes_the_runs_folder_again_when_a_failed_run_removed_it(tmp_path, monkeypatch):
    """Another run that failed may remove the empty runs/ between this run making it and claiming its name in
    it: the claim makes it again (and counts it as its own) instead of failing."""
    monkeypatch.chdir(tmp_path)
    real_mkdir, removed = Path.mkdir, []

    def mkdir(self, *args, **kwargs):
        if self.parent == Path("runs") and not removed:  # the other run's clean-up, just before this claim
            removed.append(self)
            Path("runs").rmdir()
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    path, made = rundir.claim_run_dir(load_config(None, ["run.name=race"]))
    assert removed == [path] and path.is_dir() and path.name.startswith("race-")
    assert made == [path, Path.cwd() / "runs"]
    rundir.remove_empty_dirs(made)
    assert listing(tmp_path) == []
