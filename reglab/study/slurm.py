"""Run a study on a Slurm cluster through submitit: the pending runs as one job array, one ``reglab train`` per
array task, each in its ordinary run directory under the study directory (the same layout as local runs).

```
<study dir>/slurm/jobs.json          run key -> its latest Slurm job id (e.g. 17_2), and the ones before it
<study dir>/slurm/17_2_0_log.out     submitit's own log of that task (the pickled task and its result beside)
<study dir>/logs/<run>.log           the run's `reglab train` output, as with local runs
```
A task decides when it starts whether its run is fresh, resumed (``checkpoints/last.safetensors``) or already
done: a task that Slurm kills (time limit, ``scancel``, a node lost) leaves a run that the next submission, or a
requeue, continues from its last checkpoint. Requeue: submitit's checkpointing. Slurm sends USR2 90 s before the
time limit (``--signal=USR2@90``) and at preemption; submitit's handler calls :meth:`TrainTask.checkpoint`
(which returns the same task: all its state is on disk) and ``scontrol requeue``s the array task, at most
``max_timeouts`` times after a time limit. ``--requeue`` is also set, so a cluster whose preemption requeues
jobs itself (PreemptMode=REQUEUE) restarts the task too; the restarted task resumes the same way. Plain
``sbatch --requeue`` alone would not do: Slurm never requeues a job that reached its time limit.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from ..train.checkpoint import atomic_write_text
from .runner import _last_line, _summary_line, checked_state, run_state, train_command
from .slurmstate import live_state, load_jobs, save_jobs, slurm_states
from .spec import Study, StudyRun

DEFAULTS = {"time": 60, "cpus_per_task": 1, "max_timeouts": 3}
INSTALL = "pip install 'reglab[slurm]' (or: pip install submitit)"


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError(f"--launcher slurm needs the submitit package: {INSTALL}.") from None
    return submitit


def _ignore_usr2() -> None:
    """In the training process: keep training through Slurm's USR2 warning (submitit's handler in the parent
    requeues the task; the default action would end the run before the requeue is asked for)."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def run_child(cmd: list[str], log: Path, header: str) -> int:
    """Run ``cmd`` (USR2 ignored in it) with its output appended to ``log`` after ``header``; its exit status.
    When this task is stopped meanwhile (submitit's requeue leaves through SystemExit), the child gets SIGTERM
    and 30 s to end (a sweep worker marks its trial interrupted) before SIGKILL."""
    with open(log, "a") as fh:
        fh.write(header)
        fh.flush()
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_ignore_usr2
        )
        try:
            return proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise


def _where() -> str:
    job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "?"))
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"slurm job {job}{'_' + task if task else ''} on {socket.gethostname()}"


class TrainTask:
    """One study run as a Slurm array task: ``reglab train`` as a child process, started fresh, resumed or
    skipped according to what the run directory holds when the task starts (so a requeue or a new submission
    continues from the last checkpoint). Output goes to ``logs/<run>.log``; a failed run fails the task."""

    def __init__(self, run: StudyRun, run_dir: Path, log: Path, threads: int, data_dir: str | None):
        self.run, self.run_dir, self.log = run, str(run_dir), str(log)
        self.threads, self.data_dir = threads, data_dir

    def __call__(self) -> dict[str, Any]:
        run_dir = Path(self.run_dir)
        state = run_state(run_dir)
        if state == "done":
            return {"run": self.run.key, "state": "done", "note": "already finished"}
        cmd = train_command(self.run, run_dir, state, self.threads, self.data_dir)
        header = f"# {_where()} ({'resuming' if state == 'partial' else 'starting'})\n$ {' '.join(cmd)}\n"
        code = run_child(cmd, Path(self.log), header)
        if code != 0:
            raise RuntimeError(f"{self.run.key}: reglab train exited with {code}: {_last_line(Path(self.log))}")
        return {"run": self.run.key, "state": "done", "note": _summary_line(run_dir)}

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit calls this on USR2 (time limit near, or preemption) before requeueing: the task itself,
        since the run's state is its run directory."""
        return _submitit().helpers.DelayedSubmission(self)


class CommandTask:
    """A command as a Slurm array task (a sweep worker), output appended to ``log``; requeued as itself."""

    def __init__(self, cmd: list[str], log: Path):
        self.cmd, self.log = list(cmd), str(log)

    def __call__(self) -> int:
        code = run_child(self.cmd, Path(self.log), f"# {_where()}\n$ {' '.join(self.cmd)}\n")
        if code != 0:
            raise RuntimeError(f"{' '.join(self.cmd[:4])} ... exited with {code}: {_last_line(Path(self.log))}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any):
        return _submitit().helpers.DelayedSubmission(self)


# ----------------------------------------------------------------------------------------------------------
# submitting


def settings_for(study: Study, cli: dict[str, Any], max_running: int | None) -> dict[str, Any]:
    """The launcher settings of one submission: defaults <- the file's ``launcher:`` <- ``--slurm`` <- ``-j``."""
    merged = {**DEFAULTS, **{k: v for k, v in study.launcher.items() if k != "type"}, **cli}
    merged.pop("type", None)
    if max_running is not None:
        merged["max_running"] = max_running
    return merged


def _executor(folder: Path, s: dict[str, Any], name: str, n_tasks: int):
    """A submitit SlurmExecutor for ``s`` (the merged launcher settings)."""
    submitit = _submitit()
    try:
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=s["max_timeouts"], python=s.get("python"))
    except RuntimeError:  # "Could not detect srun"
        raise UserError(
            "--launcher slurm: srun/sbatch not found; run this on a Slurm login node, or use "
            "--launcher local to run here (a local test cluster: .ci/slurm.sh start, then export "
            "SLURM_CONF as it says)."
        ) from None
    params: dict[str, Any] = {
        "job_name": name,
        "time": s["time"],
        "cpus_per_task": s["cpus_per_task"],
        "array_parallelism": s.get("max_running", n_tasks),
        "additional_parameters": {"requeue": True, **s.get("sbatch", {})},
    }
    for key in ("partition", "qos", "account", "constraint", "setup"):
        if key in s:
            params[key] = s[key]
    if s.get("gpus_per_task"):
        params["gpus_per_node"] = s["gpus_per_task"]  # one task per job: per node = per task
    if "mem_gb" in s:
        params["mem"] = f"{int(s['mem_gb'] * 1024)}M"
    ex.update_parameters(**params)
    return ex


def submit_study(
    study: Study,
    out_dir: Path,
    settings: dict[str, Any],
    *,
    data_dir: str | None = None,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Submit every run of ``study`` that is neither finished nor already queued/running in Slurm, as one job
    array; record the job ids in ``slurm/jobs.json``; return the keys now in Slurm's hands (those submitted
    and those that were already queued or running)."""
    out_dir = Path(out_dir)
    runs_dir, logs_dir, folder = out_dir / "runs", out_dir / "logs", out_dir / "slurm"
    jobs = load_jobs(out_dir)
    states = queue_states(folder, settings)
    todo: list[StudyRun] = []
    in_queue: list[str] = []
    notes: list[str] = []
    finished = 0
    for run in study.runs:
        run_dir = runs_dir / run.key
        state = checked_state(run_dir, run)
        live = live_state(jobs.get(run.key, {}).get("job"), states)
        if state == "done":
            finished += 1
        elif live:
            in_queue.append(run.key)
            notes.append(f"  {run.key}: already {live} as job {jobs[run.key]['job']}")
        else:
            todo.append(run)
    try:
        for d in (runs_dir, logs_dir, folder):
            d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "study.yaml", study.to_yaml())
    except OSError as exc:
        raise UserError(f"cannot write the study directory {out_dir}: {exc.strerror}.") from None
    echo(
        f"study {study.name}: {len(study.runs)} runs, {finished} already finished, {len(in_queue)} queued or running, "
        f"{len(todo)} to submit -> {out_dir}"
    )
    for line in notes:
        echo(line)
    if not todo:
        return in_queue
    tasks = [
        TrainTask(
            run,
            (runs_dir / run.key).resolve(),
            (logs_dir / f"{run.key}.log").resolve(),
            settings["cpus_per_task"],
            data_dir,
        )
        for run in todo
    ]
    ids = submit_tasks(folder, f"reglab-{study.name}", tasks, settings)
    now = datetime.now().isoformat(timespec="seconds")
    for run, job in zip(todo, ids):
        before = jobs.get(run.key, {})
        earlier = [*before.get("earlier", []), *([before["job"]] if before.get("job") else [])]
        jobs[run.key] = {"job": job, "submitted": now, "earlier": earlier}
    save_jobs(out_dir, jobs)
    echo(
        f"submitted job array {ids[0].split('_')[0]} ({len(ids)} task{'s' if len(ids) > 1 else ''}; "
        f"{describe(settings)}): " + ", ".join(f"{run.key}={job}" for run, job in zip(todo, ids))
    )
    return [*in_queue, *(run.key for run in todo)]


def queue_states(folder: Path, settings: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """squeue's view (see :func:`slurm_states`), or a clear error where there is no Slurm to ask."""
    states = slurm_states()
    if states is None:
        _executor(folder, settings, "check", 1)  # says so where srun/sbatch are missing
        raise UserError("squeue failed: is the Slurm controller reachable (scontrol ping)?")
    return states


def submit_tasks(folder: Path, name: str, tasks: list, settings: dict[str, Any]) -> list[str]:
    """Submit ``tasks`` (picklable callables) as one job array named ``name``, submitit's files in ``folder``;
    return the job ids (``ARRAY_TASK``, or a plain id for a single task)."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    ex = _executor(folder, settings, name, len(tasks))
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):  # submitit also prints sbatch's complaint; say it once
            submitted = ex.submit_array(tasks)
    except Exception as exc:  # noqa: BLE001  submitit's FailedJobError / FailedSubmissionError: sbatch said no
        text = " ".join((str(exc) or captured.getvalue()).split())
        raise UserError(
            f"sbatch refused the job array: {text or type(exc).__name__} (launcher settings: "
            f"{describe(settings)})."
        ) from None
    return [job.job_id for job in submitted]


def describe(s: dict[str, Any]) -> str:
    """The settings as one ``key=value, ...`` line (setup lines and the python command left out)."""
    shown = [f"{k}={v}" for k, v in s.items() if k not in ("setup", "sbatch", "python")]
    return ", ".join(shown + [f"sbatch {k}={v}" for k, v in s.get("sbatch", {}).items()])
