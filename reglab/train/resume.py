"""``train --resume``: restoring a run from its ``last`` checkpoint, and resuming with another ``train.epochs``.

:func:`resume` loads and checks the checkpoint (:mod:`reglab.train.ckschema`, :meth:`Run.check_fits`),
restores the run's state and keeps the metrics rows up to the checkpoint's epoch. A resume with another
``train.epochs`` (:func:`schedule_change`): fewer epochs than done is refused; otherwise a schedule whose
shape depends on the run's length (cosine, linear, onecycle; lookahead's decay) is rebuilt for the new length
and advanced to the checkpoint's step (:func:`rebuild_schedule`), with a ``reglab: note:`` line, since
continuing the old schedule would train the extra epochs at its final lr (~0 for cosine). Schedules that are
functions of the step alone continue exactly.

Every resume that changes ``train.epochs`` is recorded in ``RUN/resumes.jsonl`` (one JSON object a line:
``time``, the checkpoint's ``epoch`` and ``step``, ``epochs_before`` (the length the checkpoint's schedule was
built for), ``epochs_after``, ``schedule``, ``rebuilt`` and the ``lr`` the run continues with), written before
config.yaml takes the new length. A checkpoint written before reglab stored its schedule length in the
checkpoint (no ``schedule`` field) takes that length from the first record made for it, else from config.yaml:
so a resumed run killed before its first new checkpoint, then resumed again, still knows the old length
(config.yaml already holds the new one by then).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..errors import UserError
from . import distributed
from .checkpoint import load_checkpoint
from .ckschema import resume_fields
from .distributed import Dist
from .optim import build_scheduler
from .rundir import RunDir

if TYPE_CHECKING:
    from .loop import Run

EPOCH_DEPENDENT = ("cosine", "linear", "onecycle")  # schedules whose shape depends on train.epochs


def schedule_change(cfg: Config, saved: dict[str, Any], run_dir: RunDir) -> tuple[bool, str, int]:
    """What a resume with another ``train.epochs`` does: (rebuild the lr schedule?, note for the user, the
    length the checkpoint's schedule was built for).

    Fewer epochs than the run has done is refused. More (or fewer, for an unfinished run) with a schedule whose
    shape depends on the length (cosine, linear, onecycle; lookahead's decay too) rebuilds the schedule for the
    new length, advanced to the checkpoint's step, and says so: continuing the old schedule would train the
    extra epochs at its final lr (~0 for cosine). Other schedules are functions of the step alone and continue
    exactly."""
    done, epochs = saved["epoch"], cfg.train.epochs
    if epochs < done:
        raise UserError(
            f"train.epochs={epochs} is fewer than the {done} epochs {run_dir.path} has trained; a run "
            f"cannot be shortened. Resume with train.epochs >= {done}, or start a new run."
        )
    before = saved["schedule_epochs"]
    if before is None:  # a checkpoint from before reglab stored it: see the module docstring
        before = recorded_length(run_dir, saved)
    if before == epochs:
        return False, "", before
    if cfg.sched.name not in EPOCH_DEPENDENT and not cfg.optim.lookahead:
        return False, "", before
    past = f"epochs 1-{done} followed" if done > 1 else "epoch 1 followed" if done else "no epoch followed"
    note = (
        f"reglab: note: train.epochs {before} -> {epochs}: the {cfg.sched.name} lr schedule (built for "
        f"{before} epoch{'s' * (before != 1)}) is rebuilt for {epochs} epochs and continues where a "
        f"{epochs}-epoch run would be at epoch {done}; {past} the old schedule, so this is not the same "
        f"run as {epochs} epochs from the start"
    )
    return True, note, before


def recorded_length(run_dir: RunDir, saved: dict[str, Any]) -> int:
    """The schedule length of a checkpoint that does not store it: the first resumes.jsonl record made for
    this checkpoint (same epoch and step), else the saved config's ``train.epochs``."""
    for rec in run_dir.read_resumes():
        if (rec.get("epoch"), rec.get("step")) == (saved["epoch"], saved["step"]) and isinstance(
            rec.get("epochs_before"), int
        ):
            return rec["epochs_before"]
    from .rundir import load_run_config

    return load_run_config(run_dir.path).train.epochs


def rebuild_schedule(r: "Run", step: int) -> None:
    """Give ``r`` the lr schedule for its ``train.epochs``, at ``step``: the lr a run of that length from the
    start would have there (the same scheduler steps)."""
    import warnings

    for g, base in zip(r.optimizer.param_groups, r.base_lrs):
        g["lr"] = base  # as build_optimizer left it; initial_lr/max_lr of the old schedule go
        for key in ("initial_lr", "max_lr", "min_lr"):
            g.pop(key, None)
    r.scheduler = build_scheduler(r.optimizer, r.cfg.sched, r.cfg.train.epochs, r.steps_per_epoch, r.cfg.optim.lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": on purpose here
        for _ in range(step):
            r.scheduler.step()


def resume(r: "Run", cfg: Config, run_dir: RunDir, d: Dist) -> None:
    """Restore ``r`` from ``run_dir``'s ``last`` checkpoint (every rank), keep the metrics rows up to its epoch,
    and on rank 0 say what a changed ``train.epochs`` does and save the config with it."""
    ckpt = run_dir.checkpoint("last")
    error, note, record = None, "", None
    try:
        state = load_checkpoint(ckpt, r.device)
        saved = resume_fields(state, ckpt)
        r.check_fits(state, ckpt)
        rebuild, note, before = schedule_change(cfg, saved, run_dir)
        try:
            r.load_state_dict(state, rebuild_schedule=rebuild)
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError, OverflowError) as exc:
            raise UserError(
                f"{ckpt} does not match this run's model or optimizer "
                f"({(str(exc).splitlines() or [type(exc).__name__])[0][:300]})."
            ) from None
        lr = r.optimizer.param_groups[0]["lr"]
        if note:
            note += f" (lr {lr:.3g} at epoch {r.epoch + 1})."
        if before != cfg.train.epochs:
            record = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "epoch": r.epoch,
                "step": r.step,
                "epochs_before": before,
                "epochs_after": cfg.train.epochs,
                "schedule": cfg.sched.name,
                "rebuilt": rebuild,
                "lr": lr,
            }
    except UserError as exc:
        error = exc
    distributed.agree(error, d)
    r.metrics = [row for row in run_dir.read_metrics() if row["epoch"] <= r.epoch]
    if d.main:
        if note:
            print(note, file=sys.stderr, flush=True)
        if record is not None:  # before config.yaml holds the new length (see the module docstring)
            run_dir.add_resume(record)
        run_dir.write_config(cfg)  # epochs may have been extended
