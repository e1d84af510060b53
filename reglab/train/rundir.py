"""The run directory: what a training run leaves behind, written so that a crash loses nothing.

```
runs/<name>-<timestamp>/
  config.yaml        the fully resolved config
  metrics.csv        one row per epoch (also metrics.jsonl)
  summary.json       final numbers, hardware, versions, git commit
  curves.png         loss and accuracy per epoch (written by reglab.track.plots as a callback)
  checkpoints/last.safetensors, best.safetensors (by validation accuracy), epoch_N.safetensors
```
Every file is replaced atomically (temporary file, fsync, rename); the temporary files a killed process leaves
behind (``.<name>.tmp<pid>``) are removed when the run is resumed or recreated.
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
import yaml

from ..config import Config, load_config
from ..errors import UserError
from .checkpoint import atomic_write_text, remove_temporaries

BASE_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.run.name or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"

    @classmethod
    def create(cls, path: Path, cfg: Config, overwrite: bool = False) -> "RunDir":
        path = Path(path)
        rd = cls(path)
        if not overwrite:
            rd.refuse_if_taken()
        try:
            rd.ckpt_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run directory {path}: {exc.strerror}.") from None
        if overwrite:
            for old in rd.run_files():
                if old.name != "config.yaml":  # replaced atomically below
                    old.unlink(missing_ok=True)
        rd.remove_temporaries()
        atomic_write_text(path / "config.yaml", cfg.to_yaml())
        return rd

    def run_files(self) -> list[Path]:
        """The files of a run already here (a fresh run would replace them)."""
        names = [self.path / n for n in ("config.yaml", "metrics.jsonl", "metrics.csv", "summary.json")]
        return [p for p in names if p.exists()] + (sorted(self.ckpt_dir.glob("*.safetensors"))
                                                   if self.ckpt_dir.is_dir() else [])

    def refuse_if_taken(self) -> None:
        """Raise if a fresh run here would overwrite another run's files."""
        if (self.path / "config.yaml").exists():
            raise UserError(f"run directory {self.path} already holds a run. Continue it with `reglab train "
                            f"--resume {self.path}`, pick another run.dir, or pass --overwrite to replace it.")
        found = self.run_files()
        if found:
            names = ", ".join(str(p.relative_to(self.path)) for p in found[:4]) + (", ..." if len(found) > 4 else "")
            raise UserError(f"run directory {self.path} holds files of a run ({names}) but no config.yaml, so it "
                            "cannot be resumed. Pick another run.dir, or pass --overwrite to replace them.")

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        rd = cls(Path(path))
        if not (rd.path / "config.yaml").is_file():
            raise UserError(f"{path} is not a reglab run directory (no config.yaml).")
        return rd

    def remove_temporaries(self) -> list[Path]:
        """Delete temporary files left by a killed writer (never a finished file)."""
        return [*remove_temporaries(self.path), *remove_temporaries(self.ckpt_dir)] if self.path.is_dir() else []

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
        atomic_write_text(self.path / "metrics.csv", buf.getvalue())
        atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        rows = []
        for i, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                    raise UserError(f"{path}: line {i + 1} is not a metrics row; the file was edited or damaged. "
                                    "Delete that line (rows are rewritten from the checkpoint's epoch on).")
                rows.append(row)
        return rows

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")


def load_run_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The saved config of a run directory, with overrides applied (e.g. more epochs on resume)."""
    rd = RunDir.open(path)
    try:
        tree = yaml.safe_load((rd.path / "config.yaml").read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{rd.path / 'config.yaml'} is not valid YAML: {exc}.") from None
    if not isinstance(tree, dict):
        raise UserError(f"{rd.path / 'config.yaml'} does not hold a config mapping.")
    return load_config(None, list(overrides), base=tree)


def plan_start(cfg: Config, resume: bool, overwrite: bool) -> tuple[str, Path]:
    """How to start: ("fresh" | "resume" | "restart", run dir). Raises the user's mistakes."""
    if resume:
        run_dir = RunDir.open(Path(cfg.run.dir))
        if run_dir.checkpoint("last").is_file():
            return "resume", run_dir.path
        done = run_dir.read_metrics()
        if len(done) > 1:
            raise UserError(f"{run_dir.path} has no checkpoints/last.safetensors to resume from, although its "
                            f"metrics record {len(done)} epochs (was the checkpoint moved or deleted?). Put it "
                            "back, or start the run again with --overwrite.")
        print(f"reglab: {run_dir.path} has no checkpoint yet (it stopped in its first epoch); starting it again "
              "from the beginning with its saved config.", file=sys.stderr, flush=True)
        return "restart", run_dir.path
    path = Path(cfg.run.dir) if cfg.run.dir else default_run_dir(cfg)
    if not overwrite:
        RunDir(path).refuse_if_taken()  # before any work
    return "fresh", path


def environment(device: torch.device) -> dict[str, Any]:
    """What summary.json records about where a run ran: hardware, versions, git commit and dirty state."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    try:
        tv = version("torchvision")  # the installed version, without importing torchvision (~1.8 s here)
    except PackageNotFoundError:
        tv = None
    hw = {"device": str(device), "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
          "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=5).stdout.strip()) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    versions = {"reglab": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
                "torchvision": tv, "numpy": np.__version__}
    return {"hardware": hw, "versions": versions, "git_commit": commit, "git_dirty": dirty}
