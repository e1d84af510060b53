"""``run(cfg)``: the one function that trains a model. The CLI, studies and sweeps all come through here.

Per epoch: a pass over the device-resident training loader (forward, soft-target loss, backward, optional
clipping, optimizer and per-step scheduler step, EMA update), evaluation of the raw model (and the EMA) on
the validation and test splits, one metrics row, and checkpoints (``last``, ``best`` by validation accuracy,
every ``run.checkpoint_every`` epochs). Sums of loss and correct predictions stay on the device during the
epoch; the host reads them only when the progress display refreshes and at the end of the epoch.

Callbacks (objects with any of ``on_start(run)``, ``on_step(run, step, loss, acc)``, ``on_epoch_end(run,
row)``, ``on_end(run, summary)``) observe the run; ``on_epoch_end`` returning ``True`` stops it early (sweep
pruning). Resuming restores model, optimizer, scheduler, EMA, loader and every RNG, so a CPU run stopped
after epoch k and resumed ends bit-identical to an uninterrupted one.

Crash safety: every file is replaced atomically, metrics are written before the checkpoints and ``last`` is
written last, so whatever moment a process is killed at, ``--resume`` continues from the newest complete
``last`` (rows of later epochs in metrics.csv are recomputed) and ends bit-identical to an uninterrupted run
(tests/test_kill_resume.py). A run killed before its first checkpoint starts again from scratch on
``--resume``. Under ``torchrun`` the same function trains data-parallel (:mod:`reglab.train.distributed`).
Resuming, and resuming with another ``train.epochs``, is :mod:`reglab.train.resume`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .._malloc import tune_malloc
from ..config import Config
from ..data import DeviceLoader, load_splits
from ..data.augment import build_transforms
from ..data.mixing import build_mixer
from ..errors import UserError
from ..models import build, count_params, forward_gflops
from . import distributed
from . import resume as resuming
from .checkpoint import run_mismatch, save_checkpoint
from .device import autocast_for, precision_name, rng_state, seed_everything, select_device, set_rng_state
from .distributed import Dist, shard
from .ema import EMA
from .evaluate import evaluate
from .graph import StepGraph
from .lookahead import Lookahead
from .losses import Criterion
from .optim import build_optimizer, build_scheduler
from .rundir import RunDir, environment, plan_start


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


class Run:
    """Everything a training run holds; built from a config by :func:`run`."""

    def __init__(self, cfg: Config, device: torch.device, run_dir: RunDir | None = None, dist: Dist | None = None):
        tune_malloc()  # reglab/_malloc.py: activations from the heap, not a fresh mmap per batch
        self.cfg, self.dir, self.device = cfg, run_dir, device
        self.dist = d = dist or Dist(device=device)
        seed_everything(cfg.run.seed)
        self.data = load_splits(cfg.data)
        if cfg.train.batch_size > len(self.data.train):
            raise UserError(
                f"train.batch_size={cfg.train.batch_size} is larger than the {len(self.data.train)} "
                "training images; lower it."
            )
        if cfg.train.batch_size % d.world:
            raise UserError(
                f"train.batch_size={cfg.train.batch_size} is the global batch and must be divisible by "
                f"the {d.world} processes; use a multiple of {d.world}."
            )
        self.model = build(cfg.model, self.data.num_classes).to(device)
        self.params = count_params(self.model)
        if cfg.train.whiten_bias_epochs is not None:
            if getattr(getattr(self.model, "whiten", None), "bias", None) is None:
                raise UserError(
                    f"train.whiten_bias_epochs applies to fastnet's whitening stem, and model.name="
                    f"{cfg.model.name} has none; set it to null."
                )
            if d.enabled:
                raise UserError(
                    "train.whiten_bias_epochs is not supported with several processes (DDP needs the "
                    "same trained parameters every step); set it to null."
                )
        if cfg.train.cuda_graph and d.enabled:
            raise UserError(
                "train.cuda_graph is not supported with several processes (DDP's gradient hooks are not "
                "captured); set it to false."
            )
        self.gflops = forward_gflops(self.model)
        if d.enabled and cfg.train.sync_bn:
            self.model = distributed.convert_sync_batchnorm(self.model, device)
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        train_fwd = distributed.wrap(self.model, d) if d.enabled else self.model
        mode = None if cfg.train.compile_mode == "default" else cfg.train.compile_mode
        self.forward = torch.compile(train_fwd, mode=mode) if cfg.train.compile else train_fwd
        self.eval_forward = (
            self.forward
            if not d.enabled
            else (torch.compile(self.model, mode=mode) if cfg.train.compile else self.model)
        )
        mean, std = self.data.mean, self.data.std
        common = dict(device=device, channels_last=cfg.train.channels_last)
        raw_augs, float_augs = build_transforms(cfg.aug)
        self.train_loader = DeviceLoader(
            self.data.train,
            cfg.train.batch_size,
            mean,
            std,
            shuffle=True,
            drop_last=True,
            uint8_transforms=raw_augs,
            float_transforms=float_augs,
            seed=cfg.run.seed,
            rank=d.rank,
            world_size=d.world,
            alternating_flip=cfg.aug.flip and cfg.aug.flip_mode == "alternating",
            **common,
        )
        self.mixer = build_mixer(cfg.mix, self.data.num_classes) if cfg.mix.enabled else None
        eval_bs = cfg.train.eval_batch_size
        val, test = shard(self.data.val, d), shard(self.data.test, d)
        self.val_loader = DeviceLoader(val, eval_bs, mean, std, **common) if self.data.val else None
        self.test_loader = DeviceLoader(test, eval_bs, mean, std, **common)
        self.steps_per_epoch = len(self.train_loader)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]  # before a scheduler changes them
        try:
            self.scheduler = build_scheduler(
                self.optimizer, cfg.sched, cfg.train.epochs, self.steps_per_epoch, cfg.optim.lr
            )
        except ValueError as exc:
            raise UserError(f"sched: {exc}.") from None
        self.init_from_data()
        o = cfg.optim
        self.lookahead = (
            Lookahead(
                self.model,
                cfg.train.epochs * self.steps_per_epoch,
                o.lookahead_every,
                o.lookahead_decay,
                o.lookahead_power,
            )
            if o.lookahead
            else None
        )
        self.ema = EMA(self.model, cfg.ema.decay, cfg.ema.warmup_steps, cfg.ema.every) if cfg.ema.enabled else None
        self.criterion = Criterion(
            self.data.num_classes, cfg.train.loss, cfg.train.label_smoothing, cfg.train.smoothing_convention
        )
        self.autocast = autocast_for(cfg.train.amp, device, cache=not cfg.train.cuda_graph)
        self.precision = precision_name(self.autocast)
        self.step_graph = (
            StepGraph(self.forward_backward, list(self.model.parameters()))
            if cfg.train.cuda_graph and device.type == "cuda"
            else None
        )
        if cfg.train.cuda_graph and device.type != "cuda" and d.main:
            print(
                f"note: train.cuda_graph applies on CUDA only; this run on {device.type} trains eagerly.",
                file=sys.stderr,
                flush=True,
            )
        self.epoch = 0  # epochs completed
        self.step = 0
        self.best = {"val_acc": -1.0, "epoch": 0}
        self.elapsed = 0.0  # training wall time across resumes
        self.metrics: list[dict[str, Any]] = []
        self.pending_best: dict[str, Any] | None = None  # best epoch's state not yet written (run.save_every_s)
        self.save_s = 0.0  # this process's time writing best/last checkpoints

    @torch.no_grad()
    def init_from_data(self) -> None:
        """Data-dependent initialization for models that have one (``init_from_data(images)``, e.g. fastnet's
        whitening stem): the first ``train.init_images`` training images, normalized as training sees them
        (the same images on every rank and every run of a seed's split)."""
        init = getattr(self.model, "init_from_data", None)
        if init is not None:
            n = min(self.cfg.train.init_images, len(self.data.train))
            init(self.train_loader.normalize(self.train_loader.images[:n]))

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

    def save(self, names: Sequence[str]) -> None:
        state = self.state_dict()
        for name in names:
            save_checkpoint(self.dir.checkpoint(name), state, root=self.dir.path)

    def save_due(self, improved: bool) -> float:
        """Write ``best`` (this epoch's state if it improved, else a held snapshot of the best epoch, if any)
        and then ``last`` (a kill before last's rename resumes from the previous one); return the time."""
        t0 = time.perf_counter()
        if not improved and self.pending_best is not None:
            save_checkpoint(self.dir.checkpoint("best"), self.pending_best, root=self.dir.path)
        self.pending_best = None
        self.save(["best", "last"] if improved else ["last"])
        now = time.perf_counter()
        self.save_s += now - t0
        return now

    # -- one epoch ----------------------------------------------------------------------------------------
    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss and backward of one batch (what ``train.cuda_graph`` captures); returns logits, loss."""
        with (self.autocast or contextlib.nullcontext)():
            logits = self.forward(x)
            loss = self.criterion(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return logits, loss

    def train_epoch(self, callbacks: Sequence[Any]) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        refresh = 1 if self.device.type == "cpu" else 25
        fwd_bwd = self.step_graph or self.forward_backward
        mix = cfg.mix
        mixer = self.mixer if self.mixer and mix.start_epoch <= self.epoch < (mix.stop_epoch or 1 << 30) else None
        d = self.dist
        if d.enabled:  # per-rank streams for augmentation, mixing and dropout, reproducible after a resume
            self.train_loader.set_epoch(self.epoch)
            torch.manual_seed(distributed.epoch_seed(cfg.run.seed, d.rank, self.epoch))
        show = bool(callbacks) or not d.enabled
        if cfg.train.whiten_bias_epochs is not None:  # airbench: the stem's bias trains for the first epochs only
            model.whiten.bias.requires_grad_(self.epoch < cfg.train.whiten_bias_epochs)
        for i, (x, y) in enumerate(self.train_loader):
            if mixer is not None:
                x, y = mixer(x, y, self.train_loader.aug_generator)
            logits, loss = fwd_bwd(x, y)
            if cfg.train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            if self.lookahead is not None:
                self.lookahead.update(model, self.step)
            if self.ema is not None:
                self.ema.update(model, self.step)
            loss_sum.add_(loss.detach(), alpha=len(y))
            hard = y if y.dtype == torch.int64 else y.argmax(1)
            correct += (logits.argmax(1) == hard).sum()  # argmax has no gradient: no detach needed
            seen += len(y)
            if show and ((i + 1) % refresh == 0 or i + 1 == self.steps_per_epoch):
                mean_loss = loss_sum.item() / seen
                if not math.isfinite(mean_loss) and not d.enabled:  # ranks decide together below
                    self._diverged(mean_loss)
                _call(callbacks, "on_step", self, i + 1, mean_loss, 100.0 * correct.item() / seen)
        if d.enabled:  # one reduction per epoch; then every rank holds rank 0's buffers (what it saves)
            loss_sum, correct, seen = distributed.all_sum([loss_sum, correct, seen], d)
            distributed.broadcast_state(self.model, d)
            if self.ema is not None:
                distributed.broadcast_state(self.ema.averaged, d)
        mean_loss = float(loss_sum) / max(seen, 1)
        if not math.isfinite(mean_loss):
            self._diverged(mean_loss)
        # The loss can stay finite for a step or two after the weights overflow: never save such a state.
        floats = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
        if not bool(torch.isfinite(torch.stack(torch._foreach_norm(floats))).all()):  # inf/nan in any -> norm
            self._diverged(float("nan"))
        return {"train_loss": mean_loss, "train_acc": 100.0 * float(correct) / max(seen, 1), "seen": int(seen)}

    def _diverged(self, value: float) -> None:
        raise TrainingDiverged(
            f"training diverged in epoch {self.epoch + 1} (loss = {value}). The last good checkpoint is "
            f"{self.dir.checkpoint('last')} (epoch {self.epoch}). Lower optim.lr, add sched.warmup_epochs or set "
            "train.grad_clip, then start again."
        )

    def evaluate_epoch(self, with_test: bool) -> dict[str, float | None]:
        row: dict[str, float | None] = {}
        tta = self.cfg.train.tta
        targets = [("", self.eval_forward)] + ([("ema_", self.ema.module)] if self.ema else [])
        for prefix, model in targets:
            for split, loader in (("val", self.val_loader), ("test", self.test_loader if with_test else None)):
                if loader is None:
                    row[f"{prefix}{split}_loss"] = row[f"{prefix}{split}_acc"] = None
                    continue
                res = evaluate(
                    model, loader, tta=tta, translate=self.cfg.train.tta_translate, autocast=self.autocast
                )
                loss, acc = res.loss, res.acc
                if self.dist.enabled:  # each rank evaluated its share: combine the sums
                    n = len(loader.labels)
                    loss_sum, hits, total = distributed.all_sum([loss * n, round(acc * n / 100), n], self.dist)
                    loss, acc = loss_sum / total, 100.0 * hits / total
                row[f"{prefix}{split}_loss"], row[f"{prefix}{split}_acc"] = loss, acc
        return row

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
    error, plan, lock = None, "", None
    if d.main:  # only rank 0 locks and writes the run directory
        try:
            mode, path, lock = plan_start(cfg, resume, overwrite)
            if lock is not None:
                held.callback(lock.release)
            plan = f"{mode}\n{path}"
        except UserError as exc:
            error = exc
    distributed.agree(error, d)
    mode, path_text = distributed.broadcast_text(plan, d).split("\n", 1)
    path = Path(path_text)
    cfg.run.dir = str(path)
    error, r = None, None
    try:
        r = Run(cfg, device, dist=d)  # data and model first: a mistake found here leaves no run directory behind
    except UserError as exc:
        error = exc
    distributed.agree(error, d)
    run_dir = RunDir(path)
    error = None
    if d.main:
        try:
            if mode == "resume":
                run_dir.remove_temporaries()
            else:
                run_dir = RunDir.create(path, cfg, overwrite=overwrite or mode == "restart", lock=lock)
                if lock is None:
                    held.callback(run_dir.lock.release)
        except UserError as exc:
            error = exc
    distributed.agree(error, d)
    r.dir = run_dir
    if mode == "resume":
        resuming.resume(r, cfg, run_dir, d)
    env = environment(device)
    _call(callbacks, "on_start", r)
    saved_at = time.perf_counter()
    setup_s = saved_at - started  # this process: data, model, init (and the checkpoint read of a resume)
    while r.epoch < cfg.train.epochs:
        lr = r.optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        stats = r.train_epoch(callbacks)
        train_s = time.perf_counter() - t0
        r.epoch += 1
        with_test = r.epoch % cfg.run.eval_test_every == 0 or r.epoch == cfg.train.epochs
        row = {
            "epoch": r.epoch,
            "lr": lr,
            "train_loss": stats["train_loss"],
            "train_acc": stats["train_acc"],
            **r.evaluate_epoch(with_test),
        }
        epoch_s = time.perf_counter() - t0
        r.elapsed += epoch_s
        row.update(
            epoch_s=round(epoch_s, 3),
            images_per_s=round(stats["seen"] / train_s, 1),
            wall_time_s=round(r.elapsed, 2),
        )
        r.metrics.append(row)
        improved = r.val_loader is None or row["val_acc"] > r.best["val_acc"]
        if improved:
            r.best = {"val_acc": row["val_acc"] if r.val_loader else -1.0, "epoch": r.epoch}
        final = r.epoch >= cfg.train.epochs
        due = not cfg.run.save_every_s or final or time.perf_counter() - saved_at >= cfg.run.save_every_s
        if d.main:
            run_dir.write_metrics(r.metrics)  # metrics first: on resume, rows past the checkpoint are dropped
            if cfg.run.checkpoint_every and r.epoch % cfg.run.checkpoint_every == 0:
                r.save([f"epoch_{r.epoch}"])
            if due:
                saved_at = r.save_due(improved)
            elif improved:  # written at the next due save (run.save_every_s)
                r.pending_best = copy.deepcopy(r.state_dict())
        stop = distributed.any_rank(_call(callbacks, "on_epoch_end", r, row), d)
        if stop and not due and d.main:
            r.save_due(False)
        if stop:
            break
    summary = {**r.summary(env), "setup_s": round(setup_s, 2), "checkpoint_s": round(r.save_s, 2)}
    if d.main:
        run_dir.write_summary(summary)
    _call(callbacks, "on_end", r, summary)
    return Result(run_dir.path, summary, r.metrics)
