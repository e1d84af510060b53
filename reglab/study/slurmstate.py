"""What Slurm and the study directory say about a study's Slurm jobs: squeue (sacct where the cluster keeps
accounting), ``slurm/jobs.json`` (run key -> its job ids), waiting for jobs to leave the queue, and the table
of ``reglab study NAME --status``."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from ..train.checkpoint import atomic_write_text
from .runner import Outcome, _last_line, _summary_line, run_state
from .spec import Study

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}


def slurm_states() -> dict[str, tuple[str, str]] | None:
    """``job id (e.g. 17_2) -> (state, reason or node)`` of this user's jobs in the queue (squeue); None when
    squeue cannot be asked (not installed, no cluster)."""
    import getpass

    try:
        proc = subprocess.run(
            ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%R"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def finished_states(ids: list[str]) -> dict[str, str]:
    """``job id -> final state`` (COMPLETED, TIMEOUT, CANCELLED, FAILED ...) from sacct, where the cluster
    keeps accounting; {} where it does not (sacct fails without slurmdbd)."""
    if not ids:
        return {}
    arrays = sorted({i.split("_")[0] for i in ids})
    try:
        proc = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(arrays)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        return {}
    out = {}
    for line in proc.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job in ids:
            out[job] = state.split()[0] if state else ""
    return out


def load_jobs(out_dir: Path) -> dict[str, dict[str, Any]]:
    """``slurm/jobs.json``: run key -> {"job": latest job id, "submitted": time, "earlier": [older ids]}."""
    path = Path(out_dir) / "slurm" / "jobs.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); delete it to forget the study's Slurm jobs.") from None
    return data if isinstance(data, dict) else {}


def save_jobs(out_dir: Path, jobs: dict[str, dict[str, Any]]) -> None:
    atomic_write_text(Path(out_dir) / "slurm" / "jobs.json", json.dumps(jobs, indent=1, sort_keys=True) + "\n")


def live_state(job: str | None, states: dict[str, tuple[str, str]] | None) -> str | None:
    """``queued`` / ``running`` / another live Slurm state (lower case), or None when not in the queue."""
    if not job or not states or job not in states:
        return None
    state = states[job][0]
    return "queued" if state in QUEUED else "running" if state in RUNNING else state.lower()


def poll_seconds() -> float:
    """Seconds between two squeue calls while waiting: REGLAB_SLURM_POLL_S, default 10 (be kind to slurmctld)."""
    try:
        return max(0.2, float(os.environ.get("REGLAB_SLURM_POLL_S", "10")))
    except ValueError:
        raise UserError(
            f"REGLAB_SLURM_POLL_S={os.environ['REGLAB_SLURM_POLL_S']!r} must be a number of seconds."
        ) from None


def wait_gone(jobs: dict[str, str], on_gone: Callable[[str, str], None]) -> None:
    """Poll squeue until every job of ``jobs`` (name -> job id) has left the queue; call ``on_gone(name, job)``
    for each as it goes."""
    pending = dict(jobs)
    while pending:
        states = slurm_states()
        if states is None:
            raise UserError("squeue failed while waiting; the jobs go on: follow them with squeue / --status.")
        for name, job in list(pending.items()):
            if job not in states:
                del pending[name]
                on_gone(name, job)
        if pending:
            time.sleep(poll_seconds())


def wait_for(
    study: Study, out_dir: Path, keys: list[str], *, echo: Callable[[str], None] = print
) -> list[Outcome]:
    """Wait until the Slurm jobs of ``keys`` have left the queue; one outcome per key (done, or failed with
    sacct's final state where there is one, else the last line of the run's log)."""
    jobs = load_jobs(out_dir)
    pending = {k: jobs[k]["job"] for k in keys if k in jobs}
    t0 = time.time()
    outcomes: list[Outcome] = []

    def gone(key: str, job: str) -> None:
        run_dir = Path(out_dir) / "runs" / key
        secs, n = time.time() - t0, len(outcomes) + 1
        if run_state(run_dir) == "done":
            outcomes.append(Outcome(key, "done", secs, _summary_line(run_dir)))
            echo(f"  [{n}/{len(pending)}] {key}: done (job {job}), {_summary_line(run_dir)}")
        else:
            why = (
                finished_states([job]).get(job) or _last_line(Path(out_dir) / "logs" / f"{key}.log") or "no output"
            )
            outcomes.append(Outcome(key, "failed", secs, why))
            echo(f"  [{n}/{len(pending)}] {key}: STOPPED (job {job}): {why}")

    wait_gone(pending, gone)
    return outcomes


def print_status(study: Study, out_dir: Path, echo: Callable[[str], None] = print) -> dict[str, int]:
    """One line per run: its Slurm job and state (squeue; sacct where the cluster keeps accounting) and what
    its run directory holds; then the counts. Returns the counts (queued, running, done, stopped, new)."""
    out_dir = Path(out_dir)
    jobs = load_jobs(out_dir)
    states = slurm_states()
    ids = [j["job"] for j in jobs.values() if j.get("job")]
    final = finished_states(ids) if states is not None else {}
    counts = {"queued": 0, "running": 0, "done": 0, "stopped": 0, "not started": 0}
    rows = []
    for run in study.runs:
        run_dir = out_dir / "runs" / run.key
        state = run_state(run_dir)
        job = jobs.get(run.key, {}).get("job")
        live = live_state(job, states)
        epochs = _epochs_done(run_dir)
        disk = (
            "done, " + _summary_line(run_dir)
            if state == "done"
            else f"epoch {epochs}/{run.config.train.epochs}" + (" (checkpoint)" if state == "partial" else "")
            if epochs
            else "no epoch yet"
            if state != "new"
            else "not started"
        )
        if state == "done":
            kind = "done"
        elif live in ("queued", "running"):
            kind = live
        elif live:
            kind = "running"
        else:
            kind = "stopped" if job or state != "new" else "not started"
        counts[kind] += 1
        slurm = live or (final.get(job, "").lower() or "ended" if job else "-")
        if states is None and job:
            slurm = "?"
        rows.append((run.key, job or "-", slurm, kind, disk.rstrip(", ")))
    widths = [max(len(r[i]) for r in [("run", "job", "slurm", "status", ""), *rows]) for i in range(4)]
    echo(
        f"study {study.name} -> {out_dir}"
        + ("" if states is not None else "  (squeue unavailable: Slurm states unknown)")
    )
    for row in [("run", "job", "slurm", "status", "run directory"), *rows]:
        echo("  " + "  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
    echo("  " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    if counts["stopped"] and not (counts["queued"] or counts["running"]):
        echo("  stopped runs continue from their last checkpoint when you rerun the study command")
    return counts


def _epochs_done(run_dir: Path) -> int:
    try:
        return sum(1 for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip())
    except OSError:
        return 0
