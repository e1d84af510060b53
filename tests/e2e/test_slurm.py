"""`reglab study --launcher slurm`: the `launcher:` settings and their messages, and studies on a real
single-node Slurm cluster (`.ci/slurm.sh start`: slurm-wlm + munge, no cgroups) through submitit.

The cluster tests skip, with the script's reason, where the cluster cannot start (not root, no apt-get, no
submitit); set REGLAB_REQUIRE_SLURM=1 to make that a failure instead. Runs are the tiny synthetic trainings
of test_study.py. A run reports its first checkpoint to the test (a test hook, tests/helpers/childsite, in the
job's environment); what happens to a job in the queue has no such event and is polled with squeue, as
reglab's own --wait does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reglab.cli import main
from reglab.errors import UserError
from reglab.study import load_study
from tests.helpers.configs import write_study
from tests.helpers.events import ENV as HOOKS_ENV
from tests.helpers.events import EventServer

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = Path(os.environ.get("REGLAB_SLURM_DIR", "/tmp/reglab-slurm"))
KEYS = ("train_loss", "val_acc", "test_acc", "val_loss")
DEADLINE_S = 600  # the longest any one wait may take on a loaded 2-core machine before the test fails
# The tests on the cluster are slow: each waits on Slurm starting jobs that train (31-140 s wall each on a
# loaded 2-core machine), and the first one starts the cluster (apt-get install on a fresh machine).
CLUSTER = pytest.mark.slow


# ----------------------------------------------------------------------------------------------------------
# settings and messages (no cluster needed)


def test_launcher_section_is_read_and_times_become_minutes(tmp_path):
    spec = tmp_path / "s.yaml"
    launcher = {
        "type": "slurm",
        "partition": "gpu",
        "cpus_per_task": 4,
        "mem_gb": 8,
        "setup": ["module load cuda"],
        "sbatch": {"mail-type": "END"},
    }
    write_study(spec, launcher=launcher)
    # YAML 1.1 reads an unquoted 1:30:00 as the base-60 number 5400: it must still mean 90 minutes
    spec.write_text(spec.read_text() + "  time: 1:30:00\n")
    study = load_study(spec)
    assert study.launcher == {**launcher, "time": 90}
    for written, minutes in (("45", 45), ("'30:00'", 30), ("'2-00:00:00'", 2880), ("'0:90'", 2), ("'1-2'", 1560)):
        write_study(spec, launcher={"time": 1})
        spec.write_text(spec.read_text().replace("time: 1", f"time: {written}"))
        assert load_study(spec).launcher["time"] == minutes, written


@pytest.mark.parametrize(
    "launcher, message",
    [
        ({"partion": "gpu"}, "did you mean 'partition'"),
        ({"type": "slrum"}, "did you mean 'slurm'"),
        ({"time": "soon"}, "is not a time limit"),
        ({"time": 0}, "must be >= 1 minute"),
        ({"cpus_per_task": 0}, "cpus_per_task must be an integer >= 1"),
        ({"gpus_per_task": "one"}, "gpus_per_task must be an integer >= 0"),
        ({"mem_gb": -1}, "mem_gb must be a number > 0"),
        ({"setup": "module load cuda"}, "setup must be a list"),
        ({"sbatch": {"--mail-type": "END"}}, "without the dashes"),
        ({"partition": ""}, "partition must be a partition name"),
        ("slurm", "launcher must be a mapping"),
    ],
)
def test_bad_launcher_sections_are_refused_with_a_clear_message(tmp_path, launcher, message):
    with pytest.raises(UserError, match=message):
        load_study(write_study(tmp_path / "s.yaml", launcher=launcher))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--slurm", "partition=gpu"], "add --launcher slurm"),
        (["--wait"], "add --launcher slurm"),
        (["--launcher", "slurm", "--slurm", "partion=gpu"], "did you mean 'partition'"),
        (["--launcher", "slurm", "--slurm", "cpus_per_task=two"], "cpus_per_task=two: must be an integer"),
        (["--launcher", "slurm", "--slurm", "time"], "expected KEY=VALUE"),
        (["--launcher", "slurm", "--slurm", "time=later"], "is not a time limit"),
    ],
)
def test_bad_slurm_flags_are_one_line_errors(tmp_path, capsys, argv, message):
    spec = write_study(tmp_path / "s.yaml", seeds=1)
    assert main(["study", str(spec), "-o", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_submitit_names_the_pip_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    spec = write_study(tmp_path / "s.yaml", seeds=1)
    assert main(["study", str(spec), "-o", str(tmp_path / "o"), "--launcher", "slurm"]) == 2
    assert "pip install 'reglab[slurm]'" in capsys.readouterr().err


def test_no_slurm_on_this_machine_is_a_clear_error(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch, srun, squeue
    spec = write_study(tmp_path / "s.yaml", seeds=1)
    assert main(["study", str(spec), "-o", str(tmp_path / "o"), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "srun/sbatch not found" in err and ".ci/slurm.sh start" in err


def test_status_without_slurm_shows_the_run_directories(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no squeue
    spec = write_study(tmp_path / "s.yaml", seeds=1)
    out = tmp_path / "o"
    (out / "runs" / "erm-s0").mkdir(parents=True)
    (out / "runs" / "erm-s0" / "summary.json").write_text(json.dumps({"best_val_acc": 50.0, "test_acc": 40.0}))
    assert main(["study", str(spec), "-o", str(out), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "squeue unavailable" in lines[0]
    assert lines[2].split()[:4] == ["erm-s0", "-", "-", "done"] and "val 50.00%, test 40.00%" in lines[2]
    assert lines[3].split() == ["mixup-s0", "-", "-", "not", "started", "not", "started"]
    assert lines[4].strip() == "1 done, 1 not started"


def test_dry_run_shows_the_slurm_settings_file_then_flags(tmp_path, capsys):
    spec = write_study(tmp_path / "s.yaml", seeds=1, launcher={"type": "slurm", "partition": "cpu", "time": 30})
    assert (
        main(
            [
                "study",
                str(spec),
                "-o",
                str(tmp_path / "o"),
                "--dry-run",
                "--slurm",
                "time=2:00:00",
                "--slurm",
                "qos=high",
                "-j",
                "3",
            ]
        )
        == 0
    )
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("launcher slurm:")
    assert "time=120" in last and "partition=cpu" in last and "qos=high" in last and "max_running=3" in last


# ----------------------------------------------------------------------------------------------------------
# a real Slurm cluster


@pytest.fixture(scope="module")
def slurm_cluster():
    """Start the single-node test cluster (`.ci/slurm.sh start`), point SLURM_CONF at it; stop it at the end
    if this fixture started it."""

    def unavailable(reason: str):
        if os.environ.get("REGLAB_REQUIRE_SLURM"):
            pytest.fail(f"REGLAB_REQUIRE_SLURM is set but {reason}")
        pytest.skip(reason)

    try:
        import submitit  # noqa: F401
    except ImportError:
        unavailable("submitit is not installed (pip install 'reglab[slurm]')")
    script = REPO / ".ci" / "slurm.sh"
    env = {**os.environ, "REGLAB_SLURM_DIR": str(SLURM_DIR)}
    was_up = subprocess.run([str(script), "status"], env=env, capture_output=True).returncode == 0
    proc = subprocess.run([str(script), "start"], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        unavailable("no Slurm test cluster: " + (proc.stderr.strip().splitlines() or ["no message"])[-1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(SLURM_DIR / "slurm.conf"))
        mp.setenv("REGLAB_SLURM_POLL_S", "1")
        yield SLURM_DIR
    if not was_up:
        subprocess.run([str(script), "stop"], env=env, capture_output=True, timeout=120)


def known_jobs() -> set[str]:
    """Every job id the controller remembers (finished ones too, for MinJobAge=600 s)."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True).stdout
    return {w.split("=", 1)[1] for line in out.splitlines() for w in line.split() if w.startswith("JobId=")}


def wait_until(ok, what: str) -> None:
    """Poll ``ok`` (a job's state in Slurm's queue, which has no event to wait on) until it holds."""
    deadline = time.time() + DEADLINE_S
    while not ok():
        assert time.time() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)  # the polling interval of a squeue poll: Slurm gives no event for a state change


def job_of(out: Path, key: str) -> str:
    return json.loads((out / "slurm" / "jobs.json").read_text())[key]["job"]


def in_queue(job: str) -> bool:
    from reglab.study.slurmstate import slurm_states

    return job in (slurm_states() or {})


def epochs_of(run_dir: Path) -> list[list]:
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return [[row.get(k) for k in KEYS] for row in rows]


@CLUSTER
def test_study_on_slurm_finishes_and_a_rerun_submits_nothing(slurm_cluster, tmp_path, capsys):
    spec = write_study(tmp_path / "s.yaml")  # 2 groups x 2 seeds, 2 epochs each
    out = tmp_path / "study"
    assert main(["study", str(spec), "-o", str(out), "--launcher", "slurm", "--wait"]) == 0
    text = capsys.readouterr().out
    assert "4 to submit" in text and text.count(": done (job ") == 4, text
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["erm-s0", "erm-s1", "mixup-s0", "mixup-s1"]
    assert all((out / "runs" / r / "summary.json").is_file() for r in runs)
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert len({j["job"].split("_")[0] for j in jobs.values()}) == 1  # one job array
    assert yaml.safe_load((out / "runs" / "mixup-s1" / "config.yaml").read_text())["mix"]["mixup_alpha"] == 1.0
    assert "# slurm job " in (out / "logs" / "erm-s0.log").read_text()
    assert (out / "report" / "report.md").is_file()
    stamps = {r: (out / "runs" / r / "summary.json").stat().st_mtime_ns for r in runs}
    before = known_jobs()

    assert main(["study", str(spec), "-o", str(out), "--launcher", "slurm", "--wait"]) == 0
    assert "4 already finished, 0 queued or running, 0 to submit" in capsys.readouterr().out
    assert known_jobs() == before and json.loads((out / "slurm" / "jobs.json").read_text()) == jobs
    assert stamps == {r: (out / "runs" / r / "summary.json").stat().st_mtime_ns for r in runs}
    assert main(["study", str(spec), "-o", str(out), "--status"]) == 0
    status = capsys.readouterr().out
    assert "4 done" in status and status.count(" done, val ") == 4, status


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> tuple[Path, list[list]]:
    """A one-run, 6-epoch study file, and the per-epoch metrics of its run trained straight through by a local
    `reglab train` (one thread, as in a 1-cpu Slurm task)."""
    root = tmp_path_factory.mktemp("long")
    spec = write_study(root / "s.yaml", seeds=1, runs={"long": ["train.epochs=6"]})
    run = load_study(spec).runs[0]
    ref = root / "reference"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reglab",
            "train",
            run.recipe,
            *run.overrides,
            f"run.dir={ref}",
            "run.threads=1",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert proc.returncode == 0, proc.stderr
    return spec, epochs_of(ref)


def start_and_stop_mid_run(spec: Path, out: Path, stop: list[str]) -> str:
    """Submit the study (without waiting) with the run reporting the checkpoints it saves, wait for its first,
    send ``stop + [job]`` (scancel ...); return the job id."""
    with EventServer() as events, pytest.MonkeyPatch.context() as mp:
        hooked = events.env(dict(os.environ), saved="tell")  # the job gets the environment it is submitted from
        mp.setenv("PYTHONPATH", hooked["PYTHONPATH"])
        mp.setenv(HOOKS_ENV, hooked[HOOKS_ENV])
        assert main(["study", str(spec), "-o", str(out), "--launcher", "slurm"]) == 0
        mp.undo()
        job = job_of(out, "long-s0")
        events.wait_for(
            "saved",
            lambda ev: ev.args == ["last.safetensors"],
            timeout=DEADLINE_S,
            what="the run's first checkpoint",
        )
        subprocess.run([*stop, job], check=True)
    return job


@CLUSTER
def test_scancelled_task_is_resumed_by_a_rerun_bit_identical(slurm_cluster, long_reference, tmp_path, capsys):
    spec, reference = long_reference
    out = tmp_path / "study"
    run_dir = out / "runs" / "long-s0"
    job = start_and_stop_mid_run(spec, out, ["scancel"])
    wait_until(lambda: not in_queue(job), "the cancelled job to leave the queue")
    assert not (run_dir / "summary.json").exists(), "the run finished before scancel: make it longer"
    done_before = len(epochs_of(run_dir))
    assert 1 <= done_before < 6
    capsys.readouterr()
    assert main(["study", str(spec), "-o", str(out), "--status"]) == 0
    status = capsys.readouterr().out
    assert "1 stopped" in status and f"epoch {done_before}/6" in status, status

    assert main(["study", str(spec), "-o", str(out), "--launcher", "slurm", "--wait", "--no-report"]) == 0
    text = capsys.readouterr().out
    assert "1 to submit" in text and "long-s0: done" in text, text
    log = (out / "logs" / "long-s0.log").read_text()
    assert "(resuming)" in log and "--resume" in log
    assert json.loads((out / "slurm" / "jobs.json").read_text())["long-s0"]["earlier"] == [job]
    assert epochs_of(run_dir) == reference


@CLUSTER
def test_requeue_on_preemption_resumes_from_the_last_checkpoint(slurm_cluster, long_reference, tmp_path, capsys):
    """USR2 is what Slurm sends at preemption and before the time limit: submitit's handler requeues the same
    array task, which resumes the run when it starts again."""
    spec, reference = long_reference
    out = tmp_path / "study"
    job = start_and_stop_mid_run(spec, out, ["scancel", "--signal=USR2"])

    def requeued() -> bool:
        from reglab.study.slurmstate import slurm_states

        state = (slurm_states() or {}).get(job, ("", ""))
        return state[0] == "PENDING" and "BeginTime" in state[1]

    wait_until(requeued, "the requeued task")
    capsys.readouterr()
    # a rerun while Slurm holds the requeued task back (for 2 min) finds it and submits nothing; once its start
    # is moved to now, the task may already run by the time the rerun with --wait looks at the queue
    assert main(["study", str(spec), "-o", str(out), "--launcher", "slurm", "--no-report"]) == 0
    text = capsys.readouterr().out
    assert "0 to submit" in text and f"already queued as job {job}" in text, text
    subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], check=True)  # skip Slurm's 2 min delay
    assert main(["study", str(spec), "-o", str(out), "--launcher", "slurm", "--wait", "--no-report"]) == 0
    text = capsys.readouterr().out
    assert "0 to submit" in text and f"long-s0: done (job {job})" in text, text
    log = (out / "logs" / "long-s0.log").read_text()
    assert log.count(f"# slurm job {job} ") == 2 and "(resuming)" in log, log
    assert epochs_of(out / "runs" / "long-s0") == reference


# ----------------------------------------------------------------------------------------------------------
# sweeps: --workers N as Slurm array tasks on one storage


def test_sweep_slurm_flags_need_the_slurm_launcher(tmp_path, capsys):
    from tests.helpers.configs import write_sweep

    spec = write_sweep(tmp_path / "sw.yaml")
    assert main(["sweep", str(spec), "-o", str(tmp_path / "o"), "--slurm", "partition=gpu"]) == 2
    assert "add --launcher slurm" in capsys.readouterr().err


@CLUSTER
def test_sweep_workers_on_slurm_share_one_storage(slurm_cluster, tmp_path, capsys):
    from tests.helpers.configs import SWEEP_TINY, write_sweep

    spec = write_sweep(tmp_path / "sw.yaml", trials=3, overrides=[*SWEEP_TINY, "train.epochs=1"])
    out = tmp_path / "sweep"
    assert (
        main(
            ["sweep", str(spec), "-o", str(out), "--launcher", "slurm", "--workers", "2", "--wait", "--no-report"]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "submitted job array" in text and text.count(") ended") == 2, text
    assert "3/3 finished (3 complete" in text, text
    for i in (0, 1):
        log = (out / "slurm" / f"worker{i}.log").read_text()
        assert log.startswith("# slurm job ") and f"--worker-index {i}" in log
