"""The run directory: what a training run leaves behind, written so that a crash loses nothing.

```
runs/<name>-<timestamp>[-N]/   (without run.dir: a new folder, -2, -3, ... when the name is taken)
  config.yaml        the fully resolved config
  metrics.csv        one row per epoch (also metrics.jsonl)
  summary.json       final numbers, hardware, versions, git commit
  resumes.jsonl      one record per resume that changed train.epochs (only if one did)
  curves.png         loss and accuracy per epoch (written by reglab.track.plots as a callback)
  checkpoints/last.safetensors, best.safetensors (by validation accuracy), epoch_N.safetensors
```
Every file is replaced atomically (temporary file, fsync, rename); the temporary files a killed process leaves
behind (``.<name>.tmp<pid>``) are removed when the run is resumed or recreated. ``checkpoints/`` is created
with the first checkpoint. One process at a time owns a run directory (``.reglab.lock``, an flock held for the
whole run); nothing inside a run directory is written or deleted through a symbolic link
(:mod:`reglab.train.fsguard`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import OUTPUT_KEYS, PLACEMENT_KEYS, Config, load_config
from ..errors import UserError
from ..typedyaml import changed_keys, flatten_tree
from .checkpoint import atomic_write_text, remove_temporaries
from .fsguard import LOCK_NAME, RunLock, refuse_links

RESUMES = "resumes.jsonl"
BASE_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.run.name or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"


def claim_run_dir(cfg: Config) -> tuple[Path, list[Path]]:
    """Make a new, empty run directory for a run without ``run.dir``: ``runs/<name>-<timestamp>``, or with a
    ``-2``, ``-3``, ... suffix when that name is taken. Claimed with ``mkdir`` (atomic), not a check before
    creating: two runs started in the same second never share a folder, and neither needs --overwrite (which
    would destroy the other's run). Returns it and the folders made for it, deepest first (it, and ``runs/``
    if made here too), which a run that fails before writing anything removes (:func:`remove_empty_dirs`)."""
    base = default_run_dir(cfg)
    made_runs = _make_runs_folder(base.parent)
    for n in range(1, 1000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        made = _claim(path, made_runs)
        if made is not None:
            return path, made
    raise UserError(f"{base}-2 ... {base}-999 are all taken; set run.dir to choose the run directory.")


def _make_runs_folder(folder: Path) -> list[Path]:
    """Create ``folder`` (and missing parents); the folders this call made, deepest first."""
    made, path = [], folder.absolute()
    while not path.exists() and path != path.parent:
        made.append(path)
        path = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the runs folder {folder}: {exc.strerror}; set run.dir.") from None
    return made


def _claim(path: Path, made_runs: list[Path]) -> list[Path] | None:
    """``mkdir path``: the folders made for it (it, then ``made_runs``), or None when the name is taken. A runs
    folder that a failed run removed meanwhile (:func:`remove_empty_dirs`) is made again, and counts as ours."""
    for _ in range(10):
        try:
            path.mkdir()
            return [path, *made_runs]
        except FileExistsError:
            return None
        except FileNotFoundError:
            made_runs = _make_runs_folder(path.parent)
        except OSError as exc:
            raise UserError(f"cannot create run directory {path}: {exc.strerror}; set run.dir.") from None
    raise UserError(f"cannot create run directory {path}: {path.parent} keeps disappearing; set run.dir.")


def remove_empty_dirs(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first, from :func:`claim_run_dir`) while they are empty; one already gone is
    passed over, one with anything in it stays, and so do its parents."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self.lock: RunLock | None = None

    @classmethod
    def create(
        cls, path: Path, cfg: Config, overwrite: bool = False, lock: RunLock | None = None, claimed: bool = False
    ) -> "RunDir":
        """Make (or, with ``overwrite``, empty) the run directory and write config.yaml. ``lock``: this process's
        lock on it, if taken already; else it is taken here and kept in ``self.lock`` until released.
        ``claimed``: this process made the (empty) folder already (:func:`claim_run_dir`)."""
        path = Path(path)
        rd = cls(path)
        if not overwrite:
            rd.refuse_if_taken()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()  # atomic: of several processes racing here, exactly one creates the folder
            created = True
        except FileExistsError:
            created = claimed
            if not path.is_dir():
                raise UserError(
                    f"cannot create run directory {path}: a file (or a dangling link) is there."
                ) from None
        except OSError as exc:
            raise UserError(f"cannot create run directory {path}: {exc.strerror}.") from None
        # Refused here (another process holds the lock): delete nothing, even a folder this process created:
        # the lock file and the folder are the holder's now.
        rd.lock, owned = (lock, False) if lock is not None else (RunLock.acquire(path), True)
        try:
            if not overwrite:
                rd.refuse_if_taken()  # again, under the lock: another process may have started here meanwhile
            rd.check_links()
            if overwrite:
                for old in rd.run_files():
                    if old.name != "config.yaml":  # replaced atomically below
                        old.unlink(missing_ok=True)
            rd.remove_temporaries()
            atomic_write_text(path / "config.yaml", cfg.to_yaml(), root=path, root_must_exist=True)
        except BaseException:
            if created:
                # This process made the folder and holds its lock: leave nothing behind. The lock file goes
                # while still locked; a process that opened it meanwhile finds on locking that it is no longer
                # the file at RUN/.reglab.lock (RunLock.acquire) and then that the folder is gone.
                (path / LOCK_NAME).unlink(missing_ok=True)
            if owned:
                rd.lock.release()
            if created:
                try:
                    path.rmdir()  # only if empty: never another process's files
                except OSError:
                    pass
            raise
        return rd

    def check_links(self) -> None:
        """Raise if a file or folder reglab writes or deletes in this run directory is a symbolic link."""
        names = [
            "config.yaml",
            "metrics.csv",
            "metrics.jsonl",
            "summary.json",
            "curves.png",
            "checkpoints",
            "tensorboard",
            "wandb_id",
            RESUMES,
            LOCK_NAME,
        ]
        for name in names:
            refuse_links(self.path / name, self.path)
        if self.ckpt_dir.is_dir():
            for entry in os.scandir(self.ckpt_dir):
                refuse_links(Path(entry.path), self.path)

    def run_files(self) -> list[Path]:
        """The files of a run already here (a fresh run would replace them)."""
        names = [self.path / n for n in ("config.yaml", "metrics.jsonl", "metrics.csv", "summary.json", RESUMES)]
        return [p for p in names if p.exists()] + (
            sorted(self.ckpt_dir.glob("*.safetensors")) if self.ckpt_dir.is_dir() else []
        )

    def refuse_if_taken(self) -> None:
        """Raise if a fresh run here would overwrite another run's files."""
        if (self.path / "config.yaml").exists():
            raise UserError(
                f"run directory {self.path} already holds a run. Continue it with `reglab train "
                f"--resume {self.path}`, pick another run.dir, or pass --overwrite to replace it."
            )
        found = self.run_files()
        if found:
            names = ", ".join(str(p.relative_to(self.path)) for p in found[:4]) + (
                ", ..." if len(found) > 4 else ""
            )
            raise UserError(
                f"run directory {self.path} holds files of a run ({names}) but no config.yaml, so it "
                "cannot be resumed. Pick another run.dir, or pass --overwrite to replace them."
            )

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        rd = cls(Path(path))
        if not (rd.path / "config.yaml").is_file():
            raise UserError(f"{path} is not a reglab run directory (no config.yaml).")
        return rd

    def remove_temporaries(self) -> list[Path]:
        """Delete temporary files left by a killed writer (never a finished file)."""
        if not self.path.is_dir():
            return []
        refuse_links(self.ckpt_dir, self.path)
        return [*remove_temporaries(self.path, self.path), *remove_temporaries(self.ckpt_dir, self.path)]

    def checkpoint(self, name: str) -> Path:
        return self.ckpt_dir / f"{name}.safetensors"

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite metrics.csv and metrics.jsonl with ``rows`` (all epochs so far)."""
        columns = list(BASE_COLUMNS)
        for row in rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
        self._write("metrics.csv", buf.getvalue())
        self._write("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def _read_jsonl(self, name: str, valid, what: str, fix: str) -> list[dict[str, Any]]:
        """The rows of ``name`` (one JSON object a line, blank lines skipped), each checked by ``valid``; a
        damaged line is a one-line error naming it."""
        path = self.path / name
        if not path.is_file():
            return []
        rows = []
        for i, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if not isinstance(row, dict) or not valid(row):
                    raise UserError(f"{path}: line {i + 1} is not {what}; the file was edited or damaged. {fix}")
                rows.append(row)
        return rows

    def read_metrics(self) -> list[dict[str, Any]]:
        return self._read_jsonl(
            "metrics.jsonl",
            lambda r: isinstance(r.get("epoch"), int),
            "a metrics row",
            "Delete that line (rows are rewritten from the checkpoint's epoch on).",
        )

    def read_resumes(self) -> list[dict[str, Any]]:
        """The records of resumes that changed ``train.epochs`` (:mod:`reglab.train.resume`), oldest first."""
        return self._read_jsonl(RESUMES, lambda r: True, "a resume record", "Delete that line.")

    def add_resume(self, record: dict[str, Any]) -> None:
        """Append ``record`` to resumes.jsonl (the file is replaced atomically)."""
        self._write(RESUMES, "".join(json.dumps(r) + "\n" for r in [*self.read_resumes(), record]))

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._write("summary.json", json.dumps(summary, indent=2) + "\n")

    def write_config(self, cfg: Config) -> None:
        self._write("config.yaml", cfg.to_yaml())

    def _write(self, name: str, text: str) -> None:
        """Replace ``name`` in the run directory atomically; raise if the directory itself has disappeared."""
        atomic_write_text(self.path / name, text, root=self.path, root_must_exist=True)


def load_run_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The saved config of a run directory, with overrides applied (e.g. more epochs on resume)."""
    from ..typedyaml import read_yaml

    rd = RunDir.open(path)
    tree = read_yaml(rd.path / "config.yaml", what="a config mapping")
    return load_config(None, list(overrides), base=tree)


# What a resume may change: where and how it runs (PLACEMENT_KEYS), how long it trains (train.epochs:
# reglab.train.resume.schedule_change), and what is written. Anything else would train another run than the
# checkpoint's (its optimizer, schedule and data stream come back from the checkpoint) under a config.yaml that
# claims the new value.
RESUMABLE_KEYS = PLACEMENT_KEYS | OUTPUT_KEYS | {"train.epochs"}


def refuse_training_changes(saved: Config, cfg: Config, path: Path) -> None:
    """Raise if ``cfg`` (the saved config with the resume's overrides) differs from the run's ``saved`` config in
    a key a resume cannot honour (outside :data:`RESUMABLE_KEYS`)."""
    before, after = flatten_tree(saved.to_dict()), flatten_tree(cfg.to_dict())
    changed = changed_keys(before, after, RESUMABLE_KEYS)
    if changed:
        shown = ", ".join(f"{k}={after.get(k)!r} (saved: {before.get(k)!r})" for k in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise UserError(
            f"--resume continues {path} as it was trained; it cannot change {shown}{more}: the checkpoint's "
            "optimizer, schedule and data stream would carry on unchanged. Resume without it (a resume may change "
            "train.epochs, data.dir, run.device, run.threads and what is written), or start a new run with it."
        )


def plan_start(cfg: Config, resume: bool, overwrite: bool) -> tuple[str, Path, RunLock | None, list[Path]]:
    """How to start: ("fresh" | "new" | "resume" | "restart", run dir, this process's lock on it: taken here for a
    resume or restart, by :meth:`RunDir.create` for a fresh run; the folders made here). "new": no run.dir was
    given, and this process made a free ``runs/<name>-<timestamp>[-N]`` folder (:func:`claim_run_dir`), the only
    case that makes any. Raises the user's mistakes."""
    if resume:
        if not cfg.run.dir:
            raise UserError("resume needs run.dir: set it to the run directory to continue.")
        run_dir = RunDir.open(Path(cfg.run.dir))
        lock = RunLock.acquire(run_dir.path)
        try:
            run_dir.check_links()
            if run_dir.checkpoint("last").is_file():
                refuse_training_changes(load_run_config(run_dir.path), cfg, run_dir.path)
                return "resume", run_dir.path, lock, []
            done = run_dir.read_metrics()
            if len(done) > 1:
                raise UserError(
                    f"{run_dir.path} has no checkpoints/last.safetensors to resume from, although its "
                    f"metrics record {len(done)} epochs (was the checkpoint moved or deleted?). Put it "
                    "back, or start the run again with --overwrite."
                )
        except BaseException:
            lock.release()
            raise
        print(
            f"reglab: {run_dir.path} has no checkpoint yet (it stopped in its first epoch); starting it again "
            "from the beginning with its saved config.",
            file=sys.stderr,
            flush=True,
        )
        return "restart", run_dir.path, lock, []
    if not cfg.run.dir:
        path, made = claim_run_dir(cfg)
        return "new", path, None, made
    path = Path(cfg.run.dir)
    if not overwrite:
        RunDir(path).refuse_if_taken()  # before any work
    return "fresh", path, None, []


def environment(device: torch.device) -> dict[str, Any]:
    """What summary.json records about where a run ran: hardware, versions, git commit and dirty state."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    try:
        tv = version("torchvision")  # the installed version, without importing torchvision (~1.8 s here)
    except PackageNotFoundError:
        tv = None
    hw = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    try:
        root = Path(__file__).resolve().parents[2]
        commit = (
            subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
        dirty = (
            bool(
                subprocess.run(
                    ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.strip()
            )
            if commit
            else None
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    versions = {
        "reglab": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": tv,
        "numpy": np.__version__,
    }
    return {"hardware": hw, "versions": versions, "git_commit": commit, "git_dirty": dirty}
