"""Progress display as a training callback: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time


def _fmt_row(row: dict, epochs: int) -> str:
    parts = [
        f"epoch {row['epoch']:>3}/{epochs}",
        f"lr {row['lr']:.4g}",
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}%",
    ]
    if row.get("val_acc") is not None:
        parts.append(f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2f}%")
    if row.get("test_acc") is not None:
        parts.append(f"test acc {row['test_acc']:.2f}%")
    if row.get("ema_val_acc") is not None:
        parts.append(f"ema val {row['ema_val_acc']:.2f}%")
    parts.append(f"{row['epoch_s']:.1f}s ({row['images_per_s']:.0f} img/s)")
    return " | ".join(parts)


class Progress:
    """``quiet``: one line per epoch. Otherwise a live bar with loss, accuracy, lr and images/s (rich)."""

    def __init__(self, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.live = not quiet and self.stream.isatty()
        self.bar = None

    def on_start(self, run) -> None:
        cfg = run.cfg
        print(
            f"reglab: {cfg.run.name or 'run'} | {cfg.model.name} ({run.params / 1e6:.2f}M params, "
            f"{run.gflops:.3f} GFLOPs/img) | {run.data.name}: {len(run.data.train)} train, "
            f"{len(run.data.val) if run.data.val else 0} val, {len(run.data.test)} test | {run.device}, "
            f"{run.precision} | "
            f"{run.dir.path}",
            file=self.stream,
            flush=True,
        )
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=run.steps_per_epoch, epoch=run.epoch + 1, info="")
        self.t0 = time.perf_counter()

    def on_step(self, run, step: int, loss: float, acc: float) -> None:
        if self.bar is None:
            return
        if step == 1:
            self.t0 = time.perf_counter()
        rate = (step - 1) * run.cfg.train.batch_size / max(time.perf_counter() - self.t0, 1e-9)
        lr = run.optimizer.param_groups[0]["lr"]
        self.bar.update(
            self.task,
            completed=step,
            epoch=f"{run.epoch + 1}/{run.cfg.train.epochs}",
            info=f"loss {loss:.4f} acc {acc:.2f}% lr {lr:.4g} {rate:.0f} img/s",
        )

    def on_epoch_end(self, run, row: dict) -> None:
        line = _fmt_row(row, run.cfg.train.epochs)
        if self.bar is not None:
            self.bar.console.print(line)
            self.bar.reset(self.task, total=run.steps_per_epoch)
        else:
            print(line, file=self.stream, flush=True)

    def on_end(self, run, summary: dict) -> None:
        if self.bar is not None:
            self.bar.stop()
