"""``run(cfg)``: the one function that trains a model. The CLI, studies and sweeps all come through here.

``_run`` reads as its steps: plan the run directory (rank 0 decides, every rank agrees), build the :class:`Run`
(its parts come from :mod:`reglab.train.components`), create the directory or resume from it
(:mod:`reglab.train.resume`), train the epochs, write the summary. An epoch (:meth:`Run.run_epoch`) is
:meth:`Run.train_step` over the device-resident training loader (forward, soft-target loss, backward, optional
clipping, optimizer and per-step scheduler step, lookahead and EMA), evaluation of the raw model (and the EMA)
on the validation and test splits, and one metrics row; :class:`~reglab.train.saving.SavePolicy` writes the
metrics and the checkpoints that are due. Loss and accuracy sums stay on the device during the epoch. A model
with training behaviour of its own defines ``on_epoch_start(epoch)`` (called before every epoch) and
``init_from_data(images)`` (called once, before the first step); the loop knows no model by name.

Callbacks (objects with any of ``on_start(run)``, ``on_step(run, step, loss, acc)``, ``on_epoch_end(run,
row)``, ``on_end(run, summary)``) observe the run; ``on_epoch_end`` returning ``True`` stops it early (sweep
pruning). Resuming restores model, optimizer, scheduler, EMA, loader and every RNG, so a CPU run stopped
after epoch k and resumed ends bit-identical to an uninterrupted one.

Crash safety: every file is replaced atomically, metrics are written before the checkpoints and ``last`` is
written last, so whatever moment a process is killed at, ``--resume`` continues from the newest complete
``last`` (rows of later epochs in metrics.csv are recomputed) and ends bit-identical to an uninterrupted run
(tests/e2e/test_kill_resume.py). A run killed before its first checkpoint starts again from scratch on
``--resume``. Under ``torchrun`` the same function trains data-parallel (:mod:`reglab.train.distributed`).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .._malloc import tune_malloc
from ..config import Config
from ..data.augment import training_size
from ..data.mixing import Mixer
from ..errors import UserError
from . import distributed
from . import resume as resuming
from .checkpoint import run_mismatch
from .components import build_components
from .device import rng_state, select_device, set_rng_state
from .distributed import Dist
from .evaluate import evaluate_splits
from .graph import StepGraph
from .params import set_frozen
from .rundir import RunDir, environment
from .saving import SavePolicy, open_run_dir, plan_run_dir


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class Result:
    """What :func:`run` (and ``reglab.fit``) returns: the run directory, the summary (summary.json's dict) and
    the per-epoch metric rows."""

    run_dir: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)


def _call(callbacks: Sequence[Any], hook: str, *args) -> bool:
    stop = False
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None and fn(*args):
            stop = True
    return stop


class _Tally:
    """Running sums of an epoch's training loss, correct predictions and images, kept on the device (the host
    reads them only when the progress display refreshes and at the end of the epoch)."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.seen = 0

    def add(self, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum.add_(loss.detach(), alpha=len(y))
        hard = y if y.dtype == torch.int64 else y.argmax(1)  # mixed batches carry soft targets
        self.correct += (logits.argmax(1) == hard).sum()  # argmax has no gradient: no detach needed
        self.seen += len(y)


class Run:
    """A training run: its :class:`~reglab.train.components.Components` (``run.model``, ``run.optimizer``,
    ``run.train_loader``, ... -- callbacks and :mod:`reglab.train.resume` read them as attributes) and its
    progress (``epoch``, ``step``, ``best``, ``elapsed``, ``metrics``). Built by :func:`run`."""

    def __init__(self, cfg: Config, device: torch.device, run_dir: RunDir | None = None, dist: Dist | None = None):
        tune_malloc()  # reglab/_malloc.py: activations from the heap, not a fresh mmap per batch
        self.cfg, self.dir, self.device = cfg, run_dir, device
        self.dist = dist or Dist(device=device)
        vars(self).update(vars(build_components(cfg, device, self.dist)))
        self.step_graph = (
            StepGraph(self.forward_backward, list(self.model.parameters()))
            if cfg.train.cuda_graph and device.type == "cuda"
            else None
        )
        self.epoch = 0  # epochs completed
        self.step = 0
        self.best = {"val_acc": -1.0, "epoch": 0}
        self.elapsed = 0.0  # training wall time across resumes
        self.metrics: list[dict[str, Any]] = []

    # -- state --------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "classes": self.data.classes,
            "num_classes": self.data.num_classes,
            "mean": list(self.data.mean),
            "std": list(self.data.std),
            "model": self.cfg.model.__dict__.copy(),
            "dataset": self.data.name,
            "optimizer": self.cfg.optim.name,
            "world_size": self.dist.world,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "elapsed": self.elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "lookahead": self.lookahead.state_dict() if self.lookahead else None,
            "loader": self.train_loader.state_dict(),
            "rng": rng_state(self.device),
            "meta": self.meta(),
            "schedule": {"epochs": self.cfg.train.epochs},
        }

    def check_fits(self, state: dict[str, Any], path: Path) -> None:
        """Raise a UserError listing every difference between the checkpoint's model, dataset and optimizer
        and this run's, before any tensor is loaded."""
        diffs = run_mismatch(
            state, self.cfg.model.__dict__, self.data.num_classes, self.cfg.optim.name, self.model.state_dict()
        )
        if diffs:
            raise UserError(
                f"{path} does not fit this run (checkpoint vs this run): {'; '.join(diffs)}. Resume "
                "without overriding model.*, data.* or optim.name, or start a new run."
            )

    def load_state_dict(self, state: dict[str, Any], rebuild_schedule: bool = False) -> None:
        """Restore a checkpoint's state; ``rebuild_schedule``: the run's length changed, so the lr schedule is
        built anew for ``train.epochs`` and advanced to the checkpoint's step instead of loaded."""
        self.model.load_state_dict(state["model"])
        fused = self.optimizer.defaults.get("fused")
        self.optimizer.load_state_dict(state["optimizer"])
        for g in self.optimizer.param_groups:  # a checkpoint from another device keeps this device's kernel choice
            if "fused" in g:
                g["fused"] = fused
        if rebuild_schedule:
            resuming.rebuild_schedule(self, int(state["step"]))
        else:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if self.lookahead is not None and state.get("lookahead") is not None:
            self.lookahead.load_state_dict(state["lookahead"])
        self.train_loader.load_state_dict(state["loader"])
        set_rng_state(state["rng"], self.device)
        self.epoch, self.step, self.elapsed = int(state["epoch"]), int(state["step"]), float(state["elapsed"])
        self.best = {"val_acc": float(state["best"]["val_acc"]), "epoch": int(state["best"]["epoch"])}

    # -- one epoch ----------------------------------------------------------------------------------------
    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss and backward of one batch (what ``train.cuda_graph`` captures); returns logits, loss."""
        with (self.autocast or contextlib.nullcontext)():
            logits = self.forward(x)
            loss = self.criterion(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return logits, loss

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimization step on a batch: forward, loss and backward (replayed as one CUDA graph with
        ``train.cuda_graph``), gradient clipping, optimizer and lr-schedule steps, then lookahead and EMA."""
        logits, loss = (self.step_graph or self.forward_backward)(x, y)
        if self.cfg.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        if self.lookahead is not None:
            self.lookahead.update(self.model, self.step)
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        return logits, loss

    def train_epoch(self, callbacks: Sequence[Any]) -> dict[str, float]:
        """One pass over the training data (mixed when mixing is on in this epoch); returns the mean loss, the
        accuracy and the number of images seen. Callbacks' ``on_step`` sees the running loss and accuracy."""
        mixer = self._start_epoch()
        tally = _Tally(self.device)
        show = bool(callbacks) or not self.dist.enabled
        refresh = 1 if self.device.type == "cpu" else 25  # steps between host reads of the running sums
        for i, (x, y) in enumerate(self.train_loader):
            if mixer is not None:
                x, y = mixer(x, y, self.train_loader.aug_generator)
            logits, loss = self.train_step(x, y)
            tally.add(logits, loss, y)
            if show and ((i + 1) % refresh == 0 or i + 1 == self.steps_per_epoch):
                mean_loss = tally.loss_sum.item() / tally.seen
                if not math.isfinite(mean_loss) and not self.dist.enabled:  # ranks decide together below
                    self._diverged(mean_loss)
                _call(callbacks, "on_step", self, i + 1, mean_loss, 100.0 * tally.correct.item() / tally.seen)
        return self._finish_epoch(tally)

    def _start_epoch(self) -> Mixer | None:
        """Training mode; under DDP this rank's augmentation, mixing and dropout streams for the epoch
        (reproducible after a resume); ``train.freeze``'s parameters frozen or not for the epoch; the model's own
        ``on_epoch_start(epoch)`` hook if it has one; the training images' size for the epoch (``aug.low_res``
        in the first ``aug.low_res_epochs``, never in the last: the model is evaluated at full size). Returns the
        mixer if mixing is on in this epoch."""
        self.model.train()
        self.train_loader.size = training_size(self.cfg.aug, self.cfg.train.epochs, self.epoch)
        d = self.dist
        if d.enabled:
            self.train_loader.set_epoch(self.epoch)
            torch.manual_seed(distributed.epoch_seed(self.cfg.run.seed, d.rank, self.epoch))
        set_frozen(self.freeze, self.epoch)
        hook = getattr(self.model, "on_epoch_start", None)
        if hook is not None:
            hook(self.epoch)
        mix = self.cfg.mix
        return self.mixer if self.mixer and mix.start_epoch <= self.epoch < (mix.stop_epoch or 1 << 30) else None

    def _finish_epoch(self, tally: _Tally) -> dict[str, float]:
        """The epoch's statistics (summed over ranks); a non-finite loss or weight ends the run."""
        loss_sum, correct, seen = tally.loss_sum, tally.correct, tally.seen
        if self.dist.enabled:  # one reduction per epoch; then every rank holds rank 0's buffers (what it saves)
            loss_sum, correct, seen = distributed.all_sum([loss_sum, correct, seen], self.dist)
            distributed.broadcast_state(self.model, self.dist)
            if self.ema is not None:
                distributed.broadcast_state(self.ema.averaged, self.dist)
        mean_loss = float(loss_sum) / max(seen, 1)
        if not math.isfinite(mean_loss):
            self._diverged(mean_loss)
        # The loss can stay finite for a step or two after the weights overflow: never save such a state.
        floats = [t for t in (*self.model.parameters(), *self.model.buffers()) if t.is_floating_point()]
        if not bool(torch.isfinite(torch.stack(torch._foreach_norm(floats))).all()):  # inf/nan in any -> norm
            self._diverged(float("nan"))
        return {"train_loss": mean_loss, "train_acc": 100.0 * float(correct) / max(seen, 1), "seen": int(seen)}

    def _diverged(self, value: float) -> None:
        raise TrainingDiverged(
            f"training diverged in epoch {self.epoch + 1} (loss = {value}). The last good checkpoint is "
            f"{self.dir.checkpoint('last')} (epoch {self.epoch}). Lower optim.lr, add sched.warmup_epochs or set "
            "train.grad_clip, then start again."
        )

    def run_epoch(self, callbacks: Sequence[Any]) -> dict[str, Any]:
        """Train one epoch, evaluate, append the epoch's metrics row (with its timings) and return it."""
        cfg = self.cfg
        lr = self.optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        stats = self.train_epoch(callbacks)
        train_s = time.perf_counter() - t0
        self.epoch += 1
        with_test = self.epoch % cfg.run.eval_test_every == 0 or self.epoch == cfg.train.epochs
        row = {"epoch": self.epoch, "lr": lr, "train_loss": stats["train_loss"], "train_acc": stats["train_acc"]}
        row.update(self.evaluate_epoch(with_test))
        epoch_s = time.perf_counter() - t0
        self.elapsed += epoch_s
        row.update(
            epoch_s=round(epoch_s, 3),
            images_per_s=round(stats["seen"] / train_s, 1),
            wall_time_s=round(self.elapsed, 2),
        )
        self.metrics.append(row)
        return row

    def note_best(self, row: dict[str, Any]) -> bool:
        """Is this epoch the best so far (validation accuracy; every epoch without a validation split)?"""
        improved = self.val_loader is None or row["val_acc"] > self.best["val_acc"]
        if improved:
            self.best = {"val_acc": row["val_acc"] if self.val_loader else -1.0, "epoch": self.epoch}
        return improved

    def evaluate_epoch(self, with_test: bool) -> dict[str, float | None]:
        """The row's evaluation: the model (and the EMA) on the validation split and, when due, the test set."""
        targets = [("", self.eval_forward)] + ([("ema_", self.ema.module)] if self.ema else [])
        loaders = {"val": self.val_loader, "test": self.test_loader if with_test else None}
        t = self.cfg.train
        return evaluate_splits(targets, loaders, self.dist, tta=t.tta, shifts=t.tta_shifts, autocast=self.autocast)

    def summary(self, env: dict[str, Any]) -> dict[str, Any]:
        last = self.metrics[-1]
        best_row = next((r for r in self.metrics if r["epoch"] == self.best["epoch"]), last)
        s = {
            "name": self.cfg.run.name,
            "dataset": self.data.name,
            "model": self.cfg.model.name,
            "test_acc": last["test_acc"],
            "test_loss": last["test_loss"],
            "best_val_acc": self.best["val_acc"] if self.val_loader else None,
            "best_epoch": self.best["epoch"],
            "test_acc_at_best_val": best_row.get("test_acc"),
            "final_val_acc": last["val_acc"],
            "final_train_loss": last["train_loss"],
            "final_train_acc": last["train_acc"],
            "epochs": self.epoch,
            "params": self.params,
            "gflops_per_image": round(self.gflops, 4),
            "wall_time_s": round(self.elapsed, 2),
            "images_per_s": last.get("images_per_s"),
            "precision": self.precision,
        }
        if self.ema is not None:
            s["ema_test_acc"], s["ema_val_acc"] = last.get("ema_test_acc"), last.get("ema_val_acc")
        return {**s, **env}


def run(
    cfg: Config,
    *,
    resume: bool = False,
    quiet: bool = True,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
) -> Result:
    """Train (or resume) the run ``cfg`` describes; return its directory, summary and metrics.

    Under torchrun (WORLD_SIZE > 1) every process calls this; rank 0 alone writes the run directory and calls
    the callbacks (except those with a true ``all_ranks`` attribute); all ranks return the same metrics."""
    device = select_device(cfg.run.device)
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    d, device = distributed.setup(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
    with contextlib.ExitStack() as held:  # the run directory's lock (rank 0), released however the run ends
        try:
            result = _run(cfg, device, d, resume, overwrite, callbacks, held)
        except BaseException:
            distributed.teardown(d, clean=False)
            raise
    distributed.teardown(d)
    return result


def _run(
    cfg: Config,
    device: torch.device,
    d: Dist,
    resume: bool,
    overwrite: bool,
    callbacks: Sequence[Any],
    held: contextlib.ExitStack,
) -> Result:
    started = time.perf_counter()
    callbacks = [cb for cb in callbacks if d.main or getattr(cb, "all_ranks", False)]
    mode, path, lock = plan_run_dir(cfg, resume, overwrite, d, held)
    r = _build_run(cfg, device, d)  # data and model first: a mistake found here leaves no run directory behind
    r.dir = open_run_dir(cfg, mode, path, lock, overwrite, d, held)
    if mode == "resume":
        resuming.resume(r, cfg, r.dir, d)
    env = environment(device)
    _call(callbacks, "on_start", r)
    saver = SavePolicy(r, main=d.main)
    setup_s = saver.saved_at - started  # this process: data, model, init (and the checkpoint read of a resume)
    _train_epochs(r, saver, callbacks)
    summary = {**r.summary(env), "setup_s": round(setup_s, 2), "checkpoint_s": round(saver.save_s, 2)}
    if d.main:
        r.dir.write_summary(summary)
    _call(callbacks, "on_end", r, summary)
    return Result(r.dir.path, summary, r.metrics)


def _build_run(cfg: Config, device: torch.device, d: Dist) -> Run:
    """The run's components on every rank; a config mistake on any rank stops all of them."""
    error, r = None, None
    try:
        r = Run(cfg, device, dist=d)
    except UserError as exc:
        error = exc
    distributed.agree(error, d)
    return r


def _train_epochs(r: Run, saver: SavePolicy, callbacks: Sequence[Any]) -> None:
    """Epochs until ``train.epochs``: train, evaluate, note the best, save what is due; a callback's
    ``on_epoch_end`` returning true (on any rank) stops the run after saving."""
    while r.epoch < r.cfg.train.epochs:
        row = r.run_epoch(callbacks)
        improved = r.note_best(row)
        saver.epoch_end(improved, final=r.epoch >= r.cfg.train.epochs)
        if distributed.any_rank(_call(callbacks, "on_epoch_end", r, row), r.dist):
            saver.stopped()
            break
