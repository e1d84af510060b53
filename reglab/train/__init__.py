"""Training: losses, optimizers and schedules, EMA, checkpoints, run directories and the loop."""

from .loop import Result, Run, TrainingDiverged, run

__all__ = ["Result", "Run", "TrainingDiverged", "run"]
