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
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..config import Config
from ..data import DeviceLoader, load_splits
from ..data.augment import build_transforms
from ..data.mixing import Mixer
from ..errors import UserError
from ..models import build, count_params, forward_gflops
from .checkpoint import load_checkpoint, save_checkpoint
from .ema import EMA
from .evaluate import evaluate
from .losses import Criterion
from .optim import build_optimizer, build_scheduler
from .rundir import RunDir, default_run_dir


def build_mixer(mix, num_classes: int) -> Mixer:
    lam_x = ("beta", mix.mixup_alpha) if mix.lam_x == "beta" else (mix.lam_x, _ratio_arg(mix.lam_x, mix.lam_x_range))
    lam_y = None if mix.lam_y == "tied" else (
        ("beta", mix.mixup_alpha) if mix.lam_y == "beta" else (mix.lam_y, _ratio_arg(mix.lam_y, mix.lam_y_range)))
    return Mixer(num_classes, mix.mixup_alpha, mix.cutmix_alpha, mix.switch_prob, mix.prob, mix.per_sample,
                 lam_x=lam_x, lam_y=lam_y)


def _ratio_arg(kind: str, rng: list[float]):
    return tuple(rng) if kind == "uniform" else rng[0]


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class Result:
    run_dir: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"run.device={name} but this machine has no usable CUDA GPU (torch {torch.__version__}); "
                        "use run.device=cpu or run.device=auto.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("run.device=mps but MPS is not available here; use run.device=cpu.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1], int(np_state[2]), int(np_state[3]), float(np_state[4])))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def environment(device: torch.device) -> dict[str, Any]:
    import torchvision

    from .. import __version__

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
                "torchvision": torchvision.__version__, "numpy": np.__version__}
    return {"hardware": hw, "versions": versions, "git_commit": commit, "git_dirty": dirty}


def _call(callbacks: Sequence[Any], hook: str, *args) -> bool:
    stop = False
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None and fn(*args):
            stop = True
    return stop


class Run:
    """Everything a training run holds; built from a config by :func:`run`."""

    def __init__(self, cfg: Config, device: torch.device, run_dir: RunDir | None = None):
        self.cfg, self.dir, self.device = cfg, run_dir, device
        seed_everything(cfg.run.seed)
        self.data = load_splits(cfg.data)
        if cfg.train.batch_size > len(self.data.train):
            raise UserError(f"train.batch_size={cfg.train.batch_size} is larger than the {len(self.data.train)} "
                            "training images; lower it.")
        self.model = build(cfg.model, self.data.num_classes).to(device)
        self.params = count_params(self.model)
        self.gflops = forward_gflops(self.model)
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.forward = torch.compile(self.model) if cfg.train.compile else self.model
        mean, std = self.data.mean, self.data.std
        common = dict(device=device, channels_last=cfg.train.channels_last)
        raw_augs, float_augs = build_transforms(cfg.aug)
        self.train_loader = DeviceLoader(self.data.train, cfg.train.batch_size, mean, std, shuffle=True,
                                         drop_last=True, uint8_transforms=raw_augs, float_transforms=float_augs,
                                         seed=cfg.run.seed, **common)
        self.mixer = build_mixer(cfg.mix, self.data.num_classes) if cfg.mix.enabled else None
        eval_bs = cfg.train.eval_batch_size
        self.val_loader = DeviceLoader(self.data.val, eval_bs, mean, std, **common) if self.data.val else None
        self.test_loader = DeviceLoader(self.data.test, eval_bs, mean, std, **common)
        self.steps_per_epoch = len(self.train_loader)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        try:
            self.scheduler = build_scheduler(self.optimizer, cfg.sched, cfg.train.epochs, self.steps_per_epoch,
                                             cfg.optim.lr)
        except ValueError as exc:
            raise UserError(f"sched: {exc}.") from None
        self.ema = EMA(self.model, cfg.ema.decay, cfg.ema.warmup_steps, cfg.ema.every) if cfg.ema.enabled else None
        self.criterion = Criterion(self.data.num_classes, cfg.train.loss, cfg.train.label_smoothing,
                                   cfg.train.smoothing_convention)
        use_bf16 = cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and device.type == "cuda")
        self.autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else None
        self.epoch = 0  # epochs completed
        self.step = 0
        self.best = {"val_acc": -1.0, "epoch": 0}
        self.elapsed = 0.0  # training wall time across resumes
        self.metrics: list[dict[str, Any]] = []

    # -- state --------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {"classes": self.data.classes, "num_classes": self.data.num_classes, "mean": list(self.data.mean),
                "std": list(self.data.std), "model": self.cfg.model.__dict__.copy(), "dataset": self.data.name}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "best": self.best, "elapsed": self.elapsed,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "loader": self.train_loader.state_dict(), "rng": rng_state(self.device), "meta": self.meta()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.train_loader.load_state_dict(state["loader"])
        set_rng_state(state["rng"], self.device)
        self.epoch, self.step, self.elapsed = int(state["epoch"]), int(state["step"]), float(state["elapsed"])
        self.best = {"val_acc": float(state["best"]["val_acc"]), "epoch": int(state["best"]["epoch"])}

    def save(self, names: Sequence[str]) -> None:
        state = self.state_dict()
        for name in names:
            save_checkpoint(self.dir.checkpoint(name), state)

    # -- one epoch ----------------------------------------------------------------------------------------
    def train_epoch(self, callbacks: Sequence[Any]) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        refresh = 1 if self.device.type == "cpu" else 25
        ctx = self.autocast or contextlib.nullcontext
        mix = cfg.mix
        mixer = self.mixer if self.mixer and mix.start_epoch <= self.epoch < (mix.stop_epoch or 1 << 30) else None
        for i, (x, y) in enumerate(self.train_loader):
            if mixer is not None:
                x, y = mixer(x, y, self.train_loader.generator)
            with ctx():
                logits = self.forward(x)
                loss = self.criterion(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            if self.ema is not None:
                self.ema.update(model, self.step)
            loss_sum += loss.detach() * len(y)
            hard = y if y.dtype == torch.int64 else y.argmax(1)
            correct += (logits.detach().argmax(1) == hard).sum()
            seen += len(y)
            if (i + 1) % refresh == 0 or i + 1 == self.steps_per_epoch:
                mean_loss = loss_sum.item() / seen
                if not math.isfinite(mean_loss):
                    self._diverged(mean_loss)
                _call(callbacks, "on_step", self, i + 1, mean_loss, 100.0 * correct.item() / seen)
        mean_loss = loss_sum.item() / max(seen, 1)
        if not math.isfinite(mean_loss):
            self._diverged(mean_loss)
        # The loss can stay finite for a step or two after the weights overflow: never save such a state.
        floats = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
        if not bool(torch.stack([torch.isfinite(t).all() for t in floats]).all()):
            self._diverged(float("nan"))
        return {"train_loss": mean_loss, "train_acc": 100.0 * correct.item() / max(seen, 1), "seen": seen}

    def _diverged(self, value: float) -> None:
        raise TrainingDiverged(
            f"training diverged in epoch {self.epoch + 1} (loss = {value}). The last good checkpoint is "
            f"{self.dir.checkpoint('last')} (epoch {self.epoch}). Lower optim.lr, add sched.warmup_epochs or set "
            "train.grad_clip, then start again.")

    def evaluate_epoch(self, with_test: bool) -> dict[str, float | None]:
        row: dict[str, float | None] = {}
        tta = self.cfg.train.tta
        targets = [("", self.forward)] + ([("ema_", self.ema.module)] if self.ema else [])
        for prefix, model in targets:
            for split, loader in (("val", self.val_loader), ("test", self.test_loader if with_test else None)):
                if loader is None:
                    row[f"{prefix}{split}_loss"] = row[f"{prefix}{split}_acc"] = None
                    continue
                res = evaluate(model, loader, tta=tta, autocast=self.autocast)
                row[f"{prefix}{split}_loss"], row[f"{prefix}{split}_acc"] = res.loss, res.acc
        return row

    def summary(self, env: dict[str, Any]) -> dict[str, Any]:
        last = self.metrics[-1]
        best_row = next((r for r in self.metrics if r["epoch"] == self.best["epoch"]), last)
        s = {"name": self.cfg.run.name, "dataset": self.data.name, "model": self.cfg.model.name,
             "test_acc": last["test_acc"], "test_loss": last["test_loss"],
             "best_val_acc": self.best["val_acc"] if self.val_loader else None, "best_epoch": self.best["epoch"],
             "test_acc_at_best_val": best_row.get("test_acc"), "final_val_acc": last["val_acc"],
             "final_train_loss": last["train_loss"], "final_train_acc": last["train_acc"],
             "epochs": self.epoch, "params": self.params, "gflops_per_image": round(self.gflops, 4),
             "wall_time_s": round(self.elapsed, 2), "images_per_s": last.get("images_per_s")}
        if self.ema is not None:
            s["ema_test_acc"], s["ema_val_acc"] = last.get("ema_test_acc"), last.get("ema_val_acc")
        return {**s, **env}


def run(cfg: Config, *, resume: bool = False, quiet: bool = True, overwrite: bool = False,
        callbacks: Sequence[Any] = ()) -> Result:
    """Train (or resume) the run ``cfg`` describes; return its directory, summary and metrics."""
    device = select_device(cfg.run.device)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    if resume:
        run_dir = RunDir.open(Path(cfg.run.dir))
        ckpt = run_dir.checkpoint("last")
        if not ckpt.is_file():
            raise UserError(f"{run_dir.path} has no checkpoints/last.safetensors to resume from; start it again "
                            "with --overwrite.")
    else:
        path = Path(cfg.run.dir) if cfg.run.dir else default_run_dir(cfg)
        if (path / "config.yaml").exists() and not overwrite:
            RunDir.create(path, cfg, overwrite)  # raises the "already holds a run" error before any work
        cfg.run.dir = str(path)
    r = Run(cfg, device)  # data and model first: a mistake found here leaves no run directory behind
    if not resume:
        run_dir = RunDir.create(path, cfg, overwrite)
    r.dir = run_dir
    if resume:
        state = load_checkpoint(ckpt, device)
        try:
            r.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"{ckpt} does not match this run's model or optimizer ({str(exc).splitlines()[0]}).") \
                from None
        r.metrics = [row for row in run_dir.read_metrics() if row["epoch"] <= r.epoch]
        from .checkpoint import atomic_write_text

        atomic_write_text(run_dir.path / "config.yaml", cfg.to_yaml())  # epochs may have been extended
    env = environment(device)
    _call(callbacks, "on_start", r)
    while r.epoch < cfg.train.epochs:
        lr = r.optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        stats = r.train_epoch(callbacks)
        train_s = time.perf_counter() - t0
        r.epoch += 1
        with_test = r.epoch % cfg.run.eval_test_every == 0 or r.epoch == cfg.train.epochs
        row = {"epoch": r.epoch, "lr": lr, "train_loss": stats["train_loss"], "train_acc": stats["train_acc"],
               **r.evaluate_epoch(with_test)}
        epoch_s = time.perf_counter() - t0
        r.elapsed += epoch_s
        row.update(epoch_s=round(epoch_s, 3), images_per_s=round(stats["seen"] / train_s, 1),
                   wall_time_s=round(r.elapsed, 2))
        r.metrics.append(row)
        names = ["last"]
        if r.val_loader is None or row["val_acc"] > r.best["val_acc"]:
            r.best = {"val_acc": row["val_acc"] if r.val_loader else -1.0, "epoch": r.epoch}
            names.append("best")
        if cfg.run.checkpoint_every and r.epoch % cfg.run.checkpoint_every == 0:
            names.append(f"epoch_{r.epoch}")
        run_dir.write_metrics(r.metrics)  # metrics first: on resume, rows past the checkpoint are dropped
        r.save(names)
        if _call(callbacks, "on_epoch_end", r, row):
            break
    summary = r.summary(env)
    run_dir.write_summary(summary)
    _call(callbacks, "on_end", r, summary)
    return Result(run_dir.path, summary, r.metrics)
