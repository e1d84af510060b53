"""The optional loggers (reglab/track/loggers.py): TensorBoard and W&B mirror the epoch metrics of a real
`reglab train` process, and a missing logger package or an unknown logger is a clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from reglab.cli import main
from tests.helpers.configs import STUDY_TINY

TINY = STUDY_TINY


def test_tensorboard_and_wandb_mirror_the_epoch_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reglab",
            "train",
            "quick",
            *TINY,
            "run.loggers=[tensorboard,wandb]",
            f"run.dir={run_dir}",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    metrics = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    vals = [(e.step, e.value) for e in acc.Scalars("val/acc")]
    assert vals == [(m["epoch"], pytest.approx(m["val_acc"])) for m in metrics]
    run_id = (run_dir / "wandb_id").read_text().strip()
    files = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1 and b"val_acc" in files[0].read_bytes()


def test_missing_logger_package_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    assert main(["train", "quick", *TINY, "run.loggers=[wandb]", f"run.dir={tmp_path / 'r'}", "--quiet"]) == 2
    assert "pip install 'reglab[loggers]'" in capsys.readouterr().err
    assert main(["train", "quick", *TINY, "run.loggers=[neptune]", f"run.dir={tmp_path / 'r'}", "--quiet"]) == 2
