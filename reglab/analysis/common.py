"""Loading what an analysis needs from a run: the model (eval mode), its normalization, its data splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data import DataSplits, load_splits
from ..errors import UserError
from ..track.inference import load_trained, resolve_checkpoint
from ..train.rundir import load_run_config


@dataclass
class LoadedRun:
    name: str  # run.name of the run (else the directory name)
    path: Path  # run directory
    model: nn.Module  # eval mode, on the CPU
    meta: dict[str, Any]  # checkpoint metadata (mean, std, classes, model)
    data: DataSplits
    mixed: bool  # trained with mixup / cutmix / decoupled mixing
    summary: dict[str, Any]
    amp: str = "off"  # the run's train.amp (its evaluation precision)
    tta: bool = False  # the run's train.tta
    tta_shifts: list[list[int]] = field(default_factory=list)  # the run's train.tta_shifts
    channels_last: bool = True  # the run's train.channels_last (the memory format its evaluation used)

    def autocast(self, amp: str | None = None):
        """The autocast factory of the run's evaluation precision on this CPU (``train.amp`` as
        :func:`reglab.train.device.autocast_for` resolves it: bf16 autocast where the CPU has bf16 instructions
        and the run used ``auto`` or ``bf16``); ``amp`` (``off``, ``auto``, ``bf16``) overrides the run's.
        None: fp32."""
        from ..train.device import autocast_for

        return autocast_for(self.amp if amp is None else amp, torch.device("cpu"))

    def test_accuracy(self) -> tuple[float, str]:
        """Test accuracy of the loaded checkpoint (not the run's last epoch), evaluated as the run evaluated:
        its precision (bf16 autocast where ``train.amp`` took it on this CPU) and its test-time augmentation.
        Returns (accuracy %, precision name)."""
        from ..data import DeviceLoader
        from ..train.device import autocast_for, precision_name
        from ..train.evaluate import evaluate

        autocast = autocast_for(self.amp, torch.device("cpu"))
        loader = DeviceLoader(self.data.test, 1000, self.meta["mean"], self.meta["std"])
        res = evaluate(self.model, loader, tta=self.tta, shifts=self.tta_shifts, autocast=autocast)
        return res.acc, precision_name(autocast)

    def normalize(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x H x W -> float, ``(x / 255 - mean) / std`` with the run's statistics."""
        mean = torch.tensor(self.meta["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.meta["std"], dtype=torch.float32).view(1, 3, 1, 1)
        return (images_u8.float() / 255 - mean) / std


def load_run(target: Path | str, checkpoint: str = "best", data_overrides: list[str] = ()) -> LoadedRun:
    """A run directory's model (``checkpoint``: best or last) and its data (train/val/test splits as the
    run used them; ``data_overrides`` such as ``data.dir=...`` apply)."""
    import json

    target = Path(target)
    if not target.is_dir():
        raise UserError(f"{target} is not a run directory; analyses need the run (config.yaml + checkpoints/).")
    model, meta, _ = load_trained(target, checkpoint)
    _, run_dir = resolve_checkpoint(target, checkpoint)
    cfg = load_run_config(run_dir, list(data_overrides))
    data = load_splits(cfg.data)
    if data.num_classes != meta["num_classes"]:
        raise UserError(
            f"{target}: the checkpoint predicts {meta['num_classes']} classes but the data has {data.num_classes}."
        )
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return LoadedRun(
        cfg.run.name or run_dir.name,
        run_dir,
        model,
        meta,
        data,
        cfg.mix.enabled,
        summary,
        cfg.train.amp,
        cfg.train.tta,
        cfg.train.tta_shifts,
        cfg.train.channels_last,
    )


def unique_names(runs: list[LoadedRun]) -> list[str]:
    """Run names, made unique with the directory name where two runs share one."""
    names = [r.name for r in runs]
    return [n if names.count(n) == 1 else f"{n} ({r.path.name})" for n, r in zip(names, runs)]
