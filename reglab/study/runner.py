"""Run a study: each run a real ``reglab train`` process with its own run directory, N at a time.

```
runs/studies/<name>/   (-o DIR to choose)
  study.yaml          the expanded study (file + command-line choices), written on every invocation
  runs/<group>-s<seed>/   one ordinary run directory per run (config.yaml, metrics, summary.json, checkpoints)
  logs/<group>-s<seed>.log   the run's console output
  report/             written by ``reglab report`` at the end (table, curves, HTML)
  .reglab.lock        held (flock) by the ``reglab study`` process running the study (or submitting it to Slurm)
```
Rerunning the same command skips finished runs (``summary.json`` present), resumes interrupted ones from
``checkpoints/last.safetensors`` and starts the rest; a run whose saved config differs from what the study
now asks for is an error (use another ``-o`` or delete that run), never a silent mix. A failing run is
reported and the others go on. With ``parallel`` N, each process gets ``cores // N`` torch threads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from ..config import PLACEMENT_KEYS, current_form
from ..errors import UserError
from ..train.checkpoint import atomic_write_text
from ..train.fsguard import LOCK_NAME, RunLock
from ..typedyaml import changed_keys, flatten_tree
from .spec import Study, StudyRun


@dataclass
class Outcome:
    key: str
    status: str  # done | skipped | failed | interrupted
    seconds: float = 0.0
    message: str = ""


def config_mismatch(run_dir: Path, run: StudyRun) -> list[str]:
    """Keys whose value in ``run_dir/config.yaml`` differs from the study's config for ``run``.

    Compared as the current code reads the saved file (:func:`reglab.config.current_form`): old key spellings
    read as their replacements, a key added to reglab after the run was trained counts as its default (so a new option does not orphan finished studies), and ``aug.order`` is compared over the
    augmentations the config switches on (the place of one that is off changes nothing)."""
    try:
        saved_tree = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return ["config.yaml (unreadable)"]
    if not isinstance(saved_tree, dict):
        return ["config.yaml (not a mapping)"]
    saved = flatten_tree(current_form(saved_tree))
    wanted = flatten_tree(run.config.to_dict())
    on = set(run.config.aug.enabled())
    for flat in (saved, wanted):
        if isinstance(flat.get("aug.order"), list):
            flat["aug.order"] = [name for name in flat["aug.order"] if name in on]
    return changed_keys(saved, wanted, PLACEMENT_KEYS)


def run_state(run_dir: Path) -> str:
    """new | stale (created, no checkpoint yet) | partial (resumable) | done."""
    if (run_dir / "summary.json").is_file():
        return "done"
    if (run_dir / "checkpoints" / "last.safetensors").is_file():
        return "partial"
    return "stale" if (run_dir / "config.yaml").exists() else "new"


def checked_state(run_dir: Path, run: StudyRun) -> str:
    """:func:`run_state` of ``run_dir``; a finished or resumable run trained with another config than the
    study's ``run`` now asks for is refused (:func:`config_mismatch`), naming the first differing keys."""
    state = run_state(run_dir)
    if state in ("done", "partial"):
        diff = config_mismatch(run_dir, run)
        if diff:
            raise UserError(
                f"{run_dir} was trained with a different config ({', '.join(diff[:6])}"
                f"{' ...' if len(diff) > 6 else ''}) than the study now asks for; write this "
                f"study elsewhere with -o DIR, or delete {run_dir} to redo that run."
            )
    return state


def train_command(run: StudyRun, run_dir: Path, state: str, threads: int, data_dir: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "reglab", "train"]
    extra = [
        *([f"run.threads={threads}"] if run.config.run.threads is None else []),  # the user's value wins
        *([f"data.dir={data_dir}"] if data_dir else []),
    ]
    if state == "partial":
        return [*cmd, "--resume", str(run_dir), "--quiet", *extra]
    return [
        *cmd,
        run.recipe,
        *run.overrides,
        f"run.dir={run_dir}",
        *extra,
        "--quiet",
        *(["--overwrite"] if state == "stale" else []),
    ]


def _summary_line(run_dir: Path) -> str:
    import json

    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return ""
    val = s.get("best_val_acc")
    parts = [
        f"val {val:.2f}%" if isinstance(val, (int, float)) and val >= 0 else "",
        f"test {s['test_acc']:.2f}%" if isinstance(s.get("test_acc"), (int, float)) else "",
    ]
    return ", ".join(p for p in parts if p)


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("reglab: error:")]
    return (errors or lines or [""])[-1].strip()


def _echo(line: str) -> None:
    print(line, flush=True)


def run_study(
    study: Study,
    out_dir: Path,
    *,
    parallel: int | None = None,
    data_dir: str | None = None,
    echo: Callable[[str], None] = _echo,
) -> list[Outcome]:
    """Run every run of ``study`` not yet finished under ``out_dir``; return one outcome per run. The study
    directory is locked for the whole study (:func:`study_lock`)."""
    out_dir = Path(out_dir)
    with study_lock(out_dir):
        return _run_locked(study, out_dir, parallel, data_dir, echo)


@contextlib.contextmanager
def study_lock(out_dir: Path):
    """Create the study directory and hold its lock (``out_dir/.reglab.lock``) inside the ``with``: a second
    study there, run here or submitted to Slurm, would find the first one's runs half-done and start, resume or
    submit them a second time. Refused, naming the holder (pid and host), while another process holds it. A
    study directory made here that holds nothing but the lock at the end (a Slurm submission refused before
    writing anything) is removed again, with the parents made for it."""
    out_dir = Path(out_dir)
    made = _missing_dirs(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write the study directory {out_dir}: {exc.strerror}.") from None
    lock = RunLock.acquire(
        out_dir,
        busy=f"study directory {out_dir} is in use by another reglab study ({{who}}, lock {out_dir / LOCK_NAME}); "
        "two studies in one folder would start the same runs twice. Wait for it to finish (or stop it) and run "
        "the command again, or write this study elsewhere with -o DIR.",
    )
    try:
        yield
    finally:
        lone = bool(made) and _unlink_lone_lock(out_dir)  # while still locked, as RunDir.create does
        lock.release()
        if lone:
            _remove_empty(made)


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first: what ``mkdir(parents=True)`` makes."""
    missing = []
    path = path.absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _unlink_lone_lock(out_dir: Path) -> bool:
    """Delete ``out_dir``'s lock file if nothing else is in the folder; whether it did."""
    try:
        if [entry.name for entry in os.scandir(out_dir)] != [LOCK_NAME]:
            return False
        (out_dir / LOCK_NAME).unlink()
    except OSError:
        return False
    return True


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; the first that is not, and its parents, stay."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def threads_per_run(parallel: int) -> int:
    """torch threads of each of ``parallel`` runs at a time: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // parallel)


def _run_locked(
    study: Study, out_dir: Path, parallel: int | None, data_dir: str | None, echo: Callable[[str], None]
) -> list[Outcome]:
    parallel = parallel or study.parallel
    threads = threads_per_run(parallel)
    runs_dir, logs_dir = out_dir / "runs", out_dir / "logs"
    todo: list[tuple[StudyRun, Path, str]] = []
    outcomes: list[Outcome] = []
    for run in study.runs:
        run_dir = runs_dir / run.key
        state = checked_state(run_dir, run)
        if state == "done":
            outcomes.append(Outcome(run.key, "skipped", message=_summary_line(run_dir)))
        else:
            todo.append((run, run_dir, state))
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        logs_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "study.yaml", study.to_yaml())
    except OSError as exc:
        raise UserError(f"cannot write the study directory {out_dir}: {exc.strerror}.") from None
    total = len(study.runs)
    echo(
        f"study {study.name}: {total} runs, {total - len(todo)} already finished, {len(todo)} to run "
        f"({parallel} at a time, {threads} thread{'s' if threads > 1 else ''} each) -> {out_dir}"
    )

    active: list[tuple[subprocess.Popen, StudyRun, Path, float]] = []
    queue = list(todo)
    done_count = total - len(todo)
    try:
        while queue or active:
            while queue and len(active) < parallel:
                run, run_dir, state = queue.pop(0)
                log = logs_dir / f"{run.key}.log"
                cmd = train_command(run, run_dir, state, threads, data_dir)
                with open(log, "a") as fh:
                    fh.write(f"$ {' '.join(cmd)}\n")
                    fh.flush()
                    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                echo(f"  start {run.key}{' (resuming)' if state == 'partial' else ''}")
                active.append((proc, run, run_dir, time.time()))
            time.sleep(0.2)
            for item in list(active):
                proc, run, run_dir, t0 = item
                if proc.poll() is None:
                    continue
                active.remove(item)
                done_count += 1
                secs = time.time() - t0
                if proc.returncode == 0:
                    outcomes.append(Outcome(run.key, "done", secs, _summary_line(run_dir)))
                    echo(f"  [{done_count}/{total}] {run.key}: done in {secs:.0f} s, {_summary_line(run_dir)}")
                else:
                    msg = _last_line(logs_dir / f"{run.key}.log")
                    outcomes.append(Outcome(run.key, "failed", secs, msg))
                    echo(f"  [{done_count}/{total}] {run.key}: FAILED (exit {proc.returncode}): {msg}")
    except KeyboardInterrupt:
        for proc, _run, _, _ in active:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc, run, _, t0 in active:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            outcomes.append(Outcome(run.key, "interrupted", time.time() - t0))
        raise
    return outcomes
