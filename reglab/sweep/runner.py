"""One worker's trial loop, failure recording and stale-trial recovery.

Each trial trains through :func:`reglab.train.run` into ``<sweep_dir>/trials/trial-NNNN/`` (an ordinary run
directory); after every epoch its validation accuracy is reported to Optuna and the pruner may stop it
(Hyperband counts epochs as its resource). The test set is never evaluated during a sweep.

Consistency: the ask step (count finished + running trials, then ``study.ask``) runs under an ``flock`` on
``<sweep_dir>/.lock``, so workers on one machine never overshoot the trial count. A trial that raises (an
exception, divergence to NaN, out of memory) is told FAIL with its reason in ``user_attrs['failure']`` and the
worker goes on. Ctrl-C (or SIGTERM) marks the running trial FAIL ("interrupted") and queues a retry with the same
parameters. Every running trial records its host, process id and a heartbeat; a RUNNING trial whose process is
gone (same host) or whose heartbeat is older than ``stale_after_s`` (any host) is failed ("worker died") by the
next worker that asks for a trial, and retried up to ``max_retries`` times. Retried failures do not count
toward the trial target.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from .spec import Sweep
from .storage import ask_lock, load_optuna_study

RETRYABLE = ("interrupted", "died")


# ----------------------------------------------------------------------------------------------------------
# Trial states


def counts(study) -> dict[str, int]:
    from optuna.trial import TrialState

    out = {"complete": 0, "pruned": 0, "failed": 0, "retried": 0, "running": 0, "waiting": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            out["complete"] += 1
        elif t.state == TrialState.PRUNED:
            out["pruned"] += 1
        elif t.state == TrialState.FAIL:
            out["retried" if t.user_attrs.get("will_retry") else "failed"] += 1
        elif t.state == TrialState.RUNNING:
            out["running"] += 1
        elif t.state == TrialState.WAITING:
            out["waiting"] += 1
    out["done"] = out["complete"] + out["pruned"] + out["failed"]
    return out


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` from /proc (telling a reused pid apart); "Z" for a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return "Z" if fields[0] in ("Z", "X") else fields[19]


def process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _proc_start(pid)
    return not (now == "Z" or (start is not None and now is not None and now != start))


def fail_trial(study, number: int, kind: str, reason: str, max_retries: int) -> bool:
    """Tell trial ``number`` FAIL with its reason; queue a retry for interrupted/killed trials. False when the
    trial had already finished (another worker got there first)."""
    import optuna
    from optuna.trial import TrialState

    t = study.get_trials(deepcopy=False)[number]
    if t.state.is_finished():
        return False
    retries = int(t.user_attrs.get("retries", 0))
    retry = kind in RETRYABLE and retries < max_retries
    trial = optuna.trial.Trial(study, t._trial_id)
    try:
        trial.set_user_attr("failure", reason[:1000])
        trial.set_user_attr("failure_kind", kind)
        trial.set_user_attr("will_retry", retry)
        tell(study, number, state=TrialState.FAIL)
    except (RuntimeError, ValueError):  # finished meanwhile by another machine's worker
        return False
    if retry:
        study.enqueue_trial(t.params, user_attrs={"retry_of": number, "retries": retries + 1})
    return True


def tell(study, trial, value=None, state=None) -> None:
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as exc:  # GridSampler calls study.stop() on the last grid point, outside optimize()
        if "Study.stop" not in str(exc):
            raise


def recover_stale(study, spec: Sweep, log: Callable[[str], None] = print) -> list[int]:
    """Fail RUNNING trials whose worker is gone; return their numbers."""
    from optuna.trial import TrialState

    host, now, out = socket.gethostname(), time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        a = t.user_attrs
        beat = a.get("heartbeat") or (t.datetime_start.timestamp() if t.datetime_start else now)
        pid = a.get("pid")
        if a.get("host") == host and pid is not None and not process_alive(int(pid), a.get("pid_start")):
            why = f"worker died: process {pid} on {host} ended without finishing the trial (killed?)"
        elif now - beat > spec.stale_after_s:
            why = (
                f"worker died: no heartbeat for {now - beat:.0f} s (stale_after_s={spec.stale_after_s:g}) "
                f"from process {pid} on {a.get('host')}"
            )
        else:
            continue
        if fail_trial(study, t.number, "died", why, spec.max_retries):
            out.append(t.number)
            log(
                f"trial {t.number}: {why}; marked failed" + (", queued again" if _retried(study, t.number) else "")
            )
    return out


def _retried(study, number: int) -> bool:
    return bool(study.get_trials(deepcopy=False)[number].user_attrs.get("will_retry"))


# ----------------------------------------------------------------------------------------------------------
# One trial


class _Reporter:
    """Training callback: report validation accuracy per epoch, ask the pruner, keep the test set out."""

    def __init__(self, trial):
        self.trial, self.epoch, self.pruned, self.values = trial, 0, False, []

    def on_start(self, run) -> None:
        run.test_loader = None  # trials never evaluate the test set: nothing here can be chosen on it

    def on_epoch_end(self, run, row) -> bool:
        self.epoch = run.epoch
        self.values.append(float(row["val_acc"]))
        self.trial.report(float(row["val_acc"]), run.epoch)
        if run.epoch < run.cfg.train.epochs and self.trial.should_prune():
            self.pruned = True
            return True
        return False


class _Heartbeat(threading.Thread):
    def __init__(self, trial, every: float):
        super().__init__(daemon=True)
        self.trial, self.every, self.halt = trial, every, threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            try:
                self.trial.set_user_attr("heartbeat", time.time())
            except Exception:  # the trial finished or the storage is away: stop beating
                return

    def stop(self) -> None:
        self.halt.set()


def _failure_kind(exc: BaseException) -> str:
    import torch

    from ..train import TrainingDiverged

    if isinstance(exc, TrainingDiverged):
        return "diverged"
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(exc).lower():
        return "oom"
    return "error"


def trial_run_dir(sweep_dir: Path, number: int) -> Path:
    return sweep_dir / "trials" / f"trial-{number:04d}"


# ----------------------------------------------------------------------------------------------------------
# A worker


class Worker:
    """Asks for trials and trains them until the study holds ``trials`` finished (or running) trials."""

    def __init__(
        self,
        spec: Sweep,
        sweep_dir: Path,
        trials: int | None = None,
        index: int = 0,
        extra: list[str] | tuple[str, ...] = (),
        log: Callable[[str], None] = print,
    ):
        self.spec, self.dir, self.index, self.extra = spec, Path(sweep_dir), index, list(extra)
        self.trials = trials or spec.trials
        self.log = log
        self.host, self.pid = socket.gethostname(), os.getpid()

    def _study(self):
        import numpy as np

        first = load_optuna_study(self.spec, self.dir)
        seed = int(np.random.SeedSequence([self.spec.seed, self.index, len(first.trials)]).generate_state(1)[0])
        return load_optuna_study(self.spec, self.dir, self.spec.make_sampler(seed), self.spec.make_pruner())

    def run(self) -> dict[str, int]:
        from .. import train  # noqa: F401  torch loads here, before any trial exists that Ctrl-C could strand

        study = self._study()
        in_row = 0
        previous = signal.getsignal(signal.SIGTERM) if _main_thread() else None
        if _main_thread():
            signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while True:
                trial = None
                try:
                    with ask_lock(self.dir):
                        recover_stale(study, self.spec, self.log)
                        c = counts(study)
                        if c["done"] + c["running"] >= self.trials:
                            break
                        trial = study.ask()
                        self._mark(trial)
                except KeyboardInterrupt:
                    if trial is not None:
                        with _no_interrupts():
                            fail_trial(
                                study,
                                trial.number,
                                "interrupted",
                                "interrupted before training started",
                                self.spec.max_retries,
                            )
                    raise
                outcome = self._run(study, trial)
                in_row = in_row + 1 if outcome.get("failed") and outcome["kind"] != "interrupted" else 0
                if in_row >= self.spec.max_failures_in_a_row:
                    raise UserError(
                        f"{in_row} trials in a row failed (last: {outcome['reason']}); fix the sweep "
                        f"and rerun to resume; `reglab sweep report {self.dir}` lists the failures."
                    )
        finally:
            if _main_thread():
                signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)
        return counts(study)

    def _mark(self, trial) -> None:
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("pid", self.pid)
        trial.set_user_attr("pid_start", _proc_start(self.pid))
        trial.set_user_attr("worker", self.index)
        trial.set_user_attr("heartbeat", time.time())

    def _run(self, study, trial) -> dict[str, Any]:
        from optuna.trial import TrialState

        from ..train import run  # imported (slowly, torch) before the first ask: see run()

        reporter, beat = _Reporter(trial), _Heartbeat(trial, self.spec.heartbeat_s)
        try:
            values = {p.key: p.suggest(trial) for p in self.spec.space}
            run_dir = trial_run_dir(self.dir, trial.number)
            trial.set_user_attr("run_dir", str(run_dir.relative_to(self.dir)))
            cfg = self.spec.config(
                values, [f"run.dir={run_dir}", f"run.name={self.spec.name}-trial-{trial.number:04d}", *self.extra]
            )
            beat.start()
            t0 = time.perf_counter()
            result = run(cfg, overwrite=True, callbacks=[reporter])
        except KeyboardInterrupt:
            beat.stop()
            with _no_interrupts():
                fail_trial(
                    study,
                    trial.number,
                    "interrupted",
                    f"interrupted (Ctrl-C or SIGTERM) in epoch {reporter.epoch + 1}",
                    self.spec.max_retries,
                )
                self.log(
                    f"trial {trial.number}: interrupted in epoch {reporter.epoch + 1}; marked failed"
                    + (", will run again on resume" if _retried(study, trial.number) else "")
                )
            raise
        except Exception as exc:
            beat.stop()
            kind, reason = _failure_kind(exc), f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("epochs", reporter.epoch)
            fail_trial(study, trial.number, kind, reason, self.spec.max_retries)
            self.log(
                f"trial {trial.number}: FAILED ({kind}) after {reporter.epoch} epochs: {reason.splitlines()[0]}"
            )
            _free()
            return {"failed": True, "kind": kind, "reason": reason}
        beat.stop()
        elapsed = time.perf_counter() - t0
        trial.set_user_attr("epochs", reporter.epoch)
        trial.set_user_attr("train_s", round(result.summary.get("wall_time_s") or elapsed, 2))
        rows = result.metrics
        value = rows[-1]["val_acc"] if self.spec.objective == "final_val_acc" else max(r["val_acc"] for r in rows)
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        if reporter.pruned:
            tell(study, trial, state=TrialState.PRUNED)
            self.log(
                f"trial {trial.number}: pruned after epoch {reporter.epoch} (val {reporter.values[-1]:.2f}%)  "
                f"{shown}  [{elapsed:.0f}s]"
            )
        else:
            if not math.isfinite(value):
                fail_trial(study, trial.number, "diverged", f"objective is {value}", self.spec.max_retries)
                return {"failed": True, "kind": "diverged", "reason": f"objective is {value}"}
            tell(study, trial, value)
            self.log(
                f"trial {trial.number}: val {value:.2f}% after {reporter.epoch} epochs  {shown}  [{elapsed:.0f}s]"
            )
        _free()
        return {"failed": False}


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _no_interrupts():
    """Hold off Ctrl-C / SIGTERM while the study is being updated."""
    if not _main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
