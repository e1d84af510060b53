"""Where a run's files go and when they are written: the run directory at the start, then after every epoch
the metrics and the ``epoch_N``, ``best`` and ``last`` checkpoints.

At the start (:func:`plan_run_dir`, :func:`open_run_dir`) rank 0 decides whether the run is new, restarts an
unfinished directory or resumes one (:func:`reglab.train.rundir.plan_start`), locks and creates the directory;
every rank learns the outcome, and an error on rank 0 stops every rank. The run itself is built between the
two steps, so a config mistake found with the data and model leaves no directory behind.

After every epoch rank 0 writes the metrics first (a resume drops the rows past its checkpoint), then
``epoch_N`` every ``run.checkpoint_every`` epochs, then ``best`` (when validation accuracy improved, or every
epoch without a validation split) and ``last`` -- ``last`` last, so a kill at any moment leaves a complete
``last`` to resume from. With ``run.save_every_s`` ``best`` and ``last`` are written only when that many seconds
have passed since the previous write, at the end, and when a callback stops the run; an improvement in between
is held in memory as a snapshot and written as ``best`` at the next write. The checkpoints are the same as
every-epoch saving would leave (tests/train/test_loop.py).
"""

from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..config import Config
from ..errors import UserError
from . import distributed
from .checkpoint import save_checkpoint
from .distributed import Dist
from .fsguard import RunLock
from .rundir import RunDir, plan_start, remove_empty_dirs

if TYPE_CHECKING:
    from .loop import Run


def plan_run_dir(
    cfg: Config, resume: bool, overwrite: bool, d: Dist, held: contextlib.ExitStack
) -> tuple[str, Path, RunLock | None]:
    """Rank 0 decides where the run goes and how it starts (``new``, ``restart`` or ``resume``; it locks an
    existing directory), every rank learns it; ``cfg.run.dir`` becomes that path."""
    error, plan, lock = None, "", None
    if d.main:  # only rank 0 locks and writes the run directory
        try:
            mode, path, lock, made = plan_start(cfg, resume, overwrite)
            if lock is not None:
                held.callback(lock.release)
            if made:  # folders made for this run (it, runs/): gone again if the run stops before writing to them
                held.callback(remove_empty_dirs, made)
            plan = f"{mode}\n{path}"
        except UserError as exc:
            error = exc
    distributed.agree(error, d)
    mode, path_text = distributed.broadcast_text(plan, d).split("\n", 1)
    path = Path(path_text)
    cfg.run.dir = str(path)
    return mode, path, lock


def open_run_dir(
    cfg: Config, mode: str, path: Path, lock: RunLock | None, overwrite: bool, d: Dist, held: contextlib.ExitStack
) -> RunDir:
    """Rank 0 creates the run directory (config.yaml, the lock) or, to resume, clears an interrupted write's
    temporary files."""
    run_dir, error = RunDir(path), None
    if d.main:
        try:
            if mode == "resume":
                run_dir.remove_temporaries()
            else:
                run_dir = RunDir.create(
                    path, cfg, overwrite=overwrite or mode == "restart", lock=lock, claimed=mode == "new"
                )
                if lock is None:
                    held.callback(run_dir.lock.release)
        except UserError as exc:
            error = exc
    distributed.agree(error, d)
    return run_dir


class SavePolicy:
    """Writes ``run``'s files after each epoch (rank 0: ``main``); see the module docstring. The clock for
    ``run.save_every_s`` starts when the policy is made, i.e. when training starts."""

    def __init__(self, run: "Run", main: bool):
        self.run, self.main = run, main
        self.every_s = run.cfg.run.save_every_s
        self.saved_at = time.perf_counter()
        self.due = True  # were best/last written after the last epoch
        self.pending_best: dict[str, Any] | None = None  # the best epoch's state, not yet written
        self.save_s = 0.0  # this process's time writing best/last checkpoints

    def epoch_end(self, improved: bool, final: bool) -> None:
        """After epoch ``run.epoch``'s metrics row: write what is due. ``improved``: it is the new best epoch;
        ``final``: it is the last epoch."""
        r = self.run
        self.due = not self.every_s or final or time.perf_counter() - self.saved_at >= self.every_s
        if not self.main:
            return
        r.dir.write_metrics(r.metrics)
        if r.cfg.run.checkpoint_every and r.epoch % r.cfg.run.checkpoint_every == 0:
            self.save([f"epoch_{r.epoch}"])
        if self.due:
            self._best_and_last(improved)
        elif improved:  # written at the next due save
            self.pending_best = copy.deepcopy(r.state_dict())

    def stopped(self) -> None:
        """A callback stopped the run after this epoch: write ``last`` (and a held ``best``) if not done yet."""
        if not self.due and self.main:
            self._best_and_last(False)

    def save(self, names: Sequence[str]) -> None:
        """Write the run's current state as each of the checkpoints ``names``."""
        state = self.run.state_dict()
        for name in names:
            save_checkpoint(self.run.dir.checkpoint(name), state, root=self.run.dir.path)

    def _best_and_last(self, improved: bool) -> None:
        """Write ``best`` (this epoch's state if it improved, else a held snapshot of the best epoch, if any) and
        then ``last`` (a kill before last's rename resumes from the previous one)."""
        t0 = time.perf_counter()
        if not improved and self.pending_best is not None:
            save_checkpoint(self.run.dir.checkpoint("best"), self.pending_best, root=self.run.dir.path)
        self.pending_best = None
        self.save(["best", "last"] if improved else ["last"])
        self.saved_at = time.perf_counter()
        self.save_s += self.saved_at - t0
