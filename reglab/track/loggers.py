"""Optional experiment loggers mirroring the per-epoch metrics: TensorBoard and Weights & Biases.

Opt in with ``run.loggers=[tensorboard]`` / ``[wandb]`` / both (``pip install 'reglab[loggers]'``). The run
directory stays the source of truth: the loggers only copy its rows. TensorBoard event files go to
``<run_dir>/tensorboard/``; W&B runs offline into ``<run_dir>/wandb/`` unless ``WANDB_MODE=online`` is set
(then ``wandb sync`` is not needed), under project ``run.wandb_project``, with the run id kept in
``<run_dir>/wandb_id`` so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from ..errors import UserError


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"
    }


def _missing(package: str, logger: str) -> UserError:
    return UserError(
        f"run.loggers includes {logger} but the {package} package is not installed; "
        f"pip install 'reglab[loggers]' (or {package}), or drop {logger} from run.loggers."
    )


class TensorBoardLogger:
    """Each epoch's numeric metrics as TensorBoard scalars (``train/loss``-style tags), step = epoch."""

    def __init__(self):
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        self.writer = None

    def on_start(self, run) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.dir.path / "tensorboard"), purge_step=run.epoch + 1)

    def on_epoch_end(self, run, row) -> None:
        for key, value in _numeric(row).items():
            split, _, name = key.partition("_")
            self.writer.add_scalar(f"{split}/{name}" if name else key, value, int(row["epoch"]))
        self.writer.flush()

    def on_end(self, run, summary) -> None:
        if self.writer is not None:
            self.writer.close()


class WandbLogger:
    """Each epoch's metrics to Weights & Biases (offline by default), the final summary as run summary."""

    def __init__(self, project: str):
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise _missing("wandb", "wandb") from None
        self.project, self.wb = project, None

    def on_start(self, run) -> None:
        import wandb

        id_file = run.dir.path / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        from ..train.checkpoint import atomic_write_text

        atomic_write_text(id_file, run_id, root=run.dir.path)
        self.wb = wandb.init(
            project=self.project,
            id=run_id,
            resume="allow",
            name=run.dir.path.name,
            dir=str(run.dir.path),
            config=run.cfg.to_dict(),
            mode=os.environ.get("WANDB_MODE", "offline"),
            reinit="finish_previous",
        )

    def on_epoch_end(self, run, row) -> None:
        self.wb.log(_numeric(row), step=int(row["epoch"]))

    def on_end(self, run, summary) -> None:
        if self.wb is not None:
            self.wb.summary.update(_numeric(summary))
            self.wb.finish()


def build_loggers(cfg) -> list[Any]:
    """The logger callbacks ``cfg.run.loggers`` asks for (an import error is a clear UserError)."""
    out: list[Any] = []
    for name in cfg.run.loggers:
        out.append(TensorBoardLogger() if name == "tensorboard" else WandbLogger(cfg.run.wandb_project))
    return out
