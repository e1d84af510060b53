"""Studies (`reglab study`); the study reports are tested in tests/track/test_report.py, the optional loggers in
tests/track/test_loggers.py.

Runs are tiny synthetic trainings (a few seconds each) in real `reglab train` processes.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reglab.cli import main
from reglab.errors import UserError
from reglab.study import load_study
from reglab.train.fsguard import RunLock
from tests.helpers.configs import STUDY_TINY, write_study
from tests.helpers.events import EventServer

TINY = STUDY_TINY


# ----------------------------------------------------------------------------------------------------------
# study files


def test_load_study_expands_runs_seeds_and_grid(tmp_path):
    study = load_study(write_study(tmp_path / "s.yaml"))
    assert [r.key for r in study.runs] == ["erm-s0", "erm-s1", "mixup-s0", "mixup-s1"]
    mixup = study.runs[2].config
    assert mixup.mix.mixup_alpha == 1.0 and mixup.run.seed == 0 and mixup.run.name == "mixup"
    assert study.runs[1].config.run.seed == 1 and study.runs[0].config.mix.mixup_alpha == 0.0

    grid = load_study(
        write_study(
            tmp_path / "g.yaml", runs=None, seeds=[7], grid={"optim.lr": [0.1, 0.01], "optim.momentum": [0.9, 0.5]}
        )
    )
    assert [r.key for r in grid.runs] == [
        "lr=0.1_momentum=0.9-s7",
        "lr=0.1_momentum=0.5-s7",
        "lr=0.01_momentum=0.9-s7",
        "lr=0.01_momentum=0.5-s7",
    ]
    assert grid.runs[3].config.optim.lr == 0.01 and grid.runs[3].config.optim.momentum == 0.5
    crossed = load_study(write_study(tmp_path / "c.yaml", seeds=1, grid={"optim.lr": [0.1, 0.2]}))
    assert [r.group for r in crossed.runs] == ["erm_lr=0.1", "erm_lr=0.2", "mixup_lr=0.1", "mixup_lr=0.2"]


def test_command_line_overrides_and_budget_win(tmp_path):
    study = load_study(write_study(tmp_path / "s.yaml"), ["train.epochs=5"], seeds=1)
    assert [r.config.train.epochs for r in study.runs] == [5, 5]
    budget = load_study(write_study(tmp_path / "b.yaml", recipe="seed004_baseline", overrides=[]), budget="smoke")
    assert budget.runs[0].config.data.train_subset == 1000 and budget.runs[0].config.train.epochs == 1


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"rnus": {}}, "did you mean 'runs'"),
        ({"runs": {"bad": ["optim.lrr=0.1"]}}, "run 'bad'"),
        ({"runs": {"bad": "optim.lr=0.1"}}, "expected a list"),
        ({"runs": {"bad": {"lr": 0.1}}}, "must be dotted"),
        ({"seeds": 0}, "seeds=0"),
        ({"runs": None}, "needs runs"),
        ({"grid": {"optim.lr": []}}, "non-empty list"),
        ({"recipe": "quik"}, "did you mean 'quick'"),
        ({"runs": {"a b": []}}, "may hold only"),
    ],
)
def test_bad_study_files_are_refused_with_a_clear_message(tmp_path, fields, message):
    with pytest.raises(UserError, match=message):
        load_study(write_study(tmp_path / "s.yaml", **fields))


def test_every_shipped_study_file_loads():
    studies = sorted((Path(__file__).resolve().parents[2] / "studies").glob("*.yaml"))
    assert studies, "studies/ holds the reports' comparisons"
    for path in studies:
        assert load_study(path).runs, path


# ----------------------------------------------------------------------------------------------------------
# running


@pytest.mark.slow  # 21 s on a quiet 2-core machine
def test_study_runs_in_parallel_then_skips_finished_runs(tmp_path, capsys):
    spec = write_study(tmp_path / "s.yaml")
    out = tmp_path / "study"
    assert main(["study", str(spec), "-o", str(out), "-j", "2"]) == 0
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["erm-s0", "erm-s1", "mixup-s0", "mixup-s1"]
    stamps = {r: (out / "runs" / r / "summary.json").stat().st_mtime_ns for r in runs}
    saved = yaml.safe_load((out / "runs" / "mixup-s1" / "config.yaml").read_text())
    assert saved["mix"]["mixup_alpha"] == 1.0 and saved["run"]["seed"] == 1 and saved["run"]["name"] == "mixup"
    assert saved["run"]["threads"] == 1  # 2 cores / 2 runs at a time
    groups = list(csv.DictReader((out / "report" / "groups.csv").open()))
    assert [(g["group"], g["n"]) for g in groups] == [("erm", "2"), ("mixup", "2")]
    capsys.readouterr()

    assert main(["study", str(spec), "-o", str(out)]) == 0
    assert "4 already finished, 0 to run" in capsys.readouterr().out
    assert stamps == {r: (out / "runs" / r / "summary.json").stat().st_mtime_ns for r in runs}


def test_changed_study_config_is_an_error_not_a_silent_mix(tmp_path, capsys):
    spec = write_study(tmp_path / "s.yaml", seeds=1, runs={"erm": []})
    out = tmp_path / "study"
    assert main(["study", str(spec), "-o", str(out), "--no-report"]) == 0
    capsys.readouterr()
    assert main(["study", str(spec), "-o", str(out), "optim.lr=0.05"]) == 2
    err = capsys.readouterr().err
    assert "different config (optim.lr)" in err and "-o DIR" in err and len(err.strip().splitlines()) == 1
    # --dry-run reports what the real run would find: the finished run refused, not "done"
    assert main(["study", str(spec), "-o", str(out), "--dry-run", "optim.lr=0.05"]) == 2
    captured = capsys.readouterr()
    assert captured.out.split()[:2] == ["erm-s0", "refused"] and "different config (optim.lr)" in captured.out
    assert len(captured.err.strip().splitlines()) == 1 and "1 run(s) would be refused" in captured.err
    assert main(["study", str(spec), "-o", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.split()[:2] == ["erm-s0", "done"]


def test_runs_saved_before_a_new_option_existed_still_match(tmp_path):
    """A finished run whose config.yaml predates an option (no key for it, an aug.order without the new
    augmentation) is the same config; a real difference still is one."""
    from reglab.study.runner import config_mismatch

    spec = write_study(tmp_path / "s.yaml", seeds=1, runs={"erm": []})
    (run,) = load_study(spec).runs
    tree = run.config.to_dict()
    del tree["aug"]["solarize_p"], tree["aug"]["solarize_threshold"]
    tree["aug"]["order"] = [n for n in tree["aug"]["order"] if n != "solarize"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(tree))
    assert config_mismatch(run_dir, run) == []
    tree["aug"]["order"] = list(reversed(tree["aug"]["order"]))  # crop and flip swap places: a real change
    tree["optim"]["lr"] = 123.0
    (run_dir / "config.yaml").write_text(yaml.safe_dump(tree))
    assert config_mismatch(run_dir, run) == ["aug.order", "optim.lr"]


def test_runs_saved_with_the_old_key_spellings_still_match(tmp_path):
    """A run saved before optim.param_groups / train.freeze / train.tta_shifts holds the old keys (at their "off"
    values, or set); read as their replacements it is the same config, and its report compares with new runs."""
    from reglab.study.runner import config_mismatch
    from reglab.track.records import load_record
    from reglab.track.report import config_differences

    spec = write_study(tmp_path / "s.yaml", seeds=1, runs={"erm": []})
    (run,) = load_study(spec).runs
    old = run.config.to_dict()
    for key in ("param_groups",):
        del old["optim"][key]
    del old["train"]["freeze"], old["train"]["tta_shifts"]
    old["optim"].update(norm_lr_scale=1.0, norm_lr_scale_on="norm")
    old["train"].update(whiten_bias_epochs=None, tta_translate=0)
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(old))
    assert config_mismatch(run_dir, run) == []
    new_dir = tmp_path / "new"
    new_dir.mkdir()
    (new_dir / "config.yaml").write_text(yaml.safe_dump(run.config.to_dict()))
    assert config_differences([load_record(run_dir), load_record(new_dir)]) == []
    old["optim"]["norm_lr_scale"] = 64.0  # a scale that was on is a real difference, named by its new key
    (run_dir / "config.yaml").write_text(yaml.safe_dump(old))
    assert config_mismatch(run_dir, run) == ["optim.param_groups"]


@pytest.mark.slow  # 22 s on a quiet 2-core machine
def test_failing_run_is_reported_and_the_others_finish(tmp_path, capsys):
    spec = write_study(tmp_path / "s.yaml", seeds=1, runs={"ok": [], "diverges": ["optim.lr=1e12"]})
    out = tmp_path / "study"
    assert main(["study", str(spec), "-o", str(out)]) == 1
    text = capsys.readouterr().out
    assert "diverges-s0: FAILED (exit 2): reglab: error: training diverged" in text
    assert "1 of 2 runs failed: diverges-s0" in text
    assert (out / "runs" / "ok-s0" / "summary.json").is_file()
    rows = {r["run"]: r for r in csv.DictReader((out / "report" / "runs.csv").open())}
    assert rows["ok-s0"]["status"] == "done" and rows["diverges-s0"]["status"] != "done"


@pytest.mark.slow  # 45 s on a quiet 2-core machine
def test_interrupted_study_resumes_where_it_stopped(tmp_path):
    spec = write_study(tmp_path / "s.yaml", seeds=1, runs={"long": ["train.epochs=6"]})
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "reglab", "study", str(spec), "-o", str(out), "--no-report"]
    run_dir = out / "runs" / "long-s0"
    with EventServer() as events:  # the run's `reglab train` process reports each checkpoint it has saved
        proc = subprocess.Popen(
            cmd,
            env=events.env(dict(os.environ), saved="tell"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            events.wait_for("saved", lambda ev: ev.args == ["last.safetensors"], what="the run's first checkpoint")
        except AssertionError:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no checkpoint: " + proc.communicate()[0])
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        text = proc.communicate(timeout=120)[0]  # (events it still sends until it ends find the server open)
    assert proc.returncode == 130, text
    assert "rerun the same command to resume" in text
    assert not (run_dir / "summary.json").exists()
    done_before = len([ln for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln])
    assert 1 <= done_before < 6

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "start long-s0 (resuming)" in again.stdout
    epochs = [json.loads(ln)["epoch"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5, 6]


def test_a_second_study_in_the_same_folder_is_refused_while_the_first_runs(tmp_path, capsys):
    """The study directory is locked for the whole study: a second `reglab study` there is one line naming the
    first process and its lock (it used to resume the first one's run and fail with "already holds a run")."""
    spec = write_study(tmp_path / "s.yaml", seeds=1, runs={"erm": []})
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "reglab", "study", str(spec), "-o", str(out), "--no-report"]
    with EventServer() as events:  # the first study's run waits after its first checkpoint until answered
        proc = subprocess.Popen(
            cmd, env=events.env(dict(os.environ), saved="ask"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            held = events.wait_for("saved", lambda ev: ev.args == ["last.safetensors"], what="a checkpoint")
        except AssertionError:
            proc.kill()
            pytest.fail("no checkpoint: " + proc.communicate()[0].decode())
        assert main(["study", str(spec), "-o", str(out), "--no-report"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "in use by another reglab study" in err
        assert f"pid {proc.pid}" in err and str(out / ".reglab.lock") in err and "-o DIR" in err
        held.answer()
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:  # let its later checkpoints through
            if events.pending():
                events.next(60).answer()
            else:
                time.sleep(0.1)
        text = proc.communicate(timeout=10)[0].decode()
    assert proc.returncode == 0, text
    assert (out / "runs" / "erm-s0" / "summary.json").is_file()


def _one_line_refusal(err: str, out: Path, pid: int) -> None:
    """``err`` is the study lock's one-line refusal, naming the holder's pid and host and the lock file."""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "in use by another reglab study" in err
    assert f"pid {pid} on {socket.gethostname()}" in err and str(out / ".reglab.lock") in err and "-o DIR" in err


def test_a_slurm_submission_is_refused_while_another_study_holds_the_folder(tmp_path, capsys, monkeypatch):
    """`--launcher slurm` takes the study lock as a local study does: while another study holds the folder
    (here this process, as a running `reglab study` holds it) the submission is the same one-line refusal, and
    nothing is submitted (it used to submit the runs a second time)."""
    import reglab.study.slurm

    def must_not_submit(*args, **kwargs):
        raise AssertionError("submitted while another study held the study directory")

    monkeypatch.setattr(reglab.study.slurm, "submit_study", must_not_submit)
    spec = write_study(tmp_path / "s.yaml", seeds=1)
    out = tmp_path / "study"
    out.mkdir()
    first = RunLock.acquire(out)  # flock: per open file, so this process's second attempt below counts
    try:
        assert main(["study", str(spec), "-o", str(out), "--launcher", "slurm", "--wait"]) == 2
    finally:
        first.release()
    _one_line_refusal(capsys.readouterr().err, out, os.getpid())


def test_a_slurm_study_holds_the_lock_while_it_submits_and_waits(tmp_path, capsys, monkeypatch):
    """A second study started while the first submits its job array, or waits for it (--wait), is refused; the
    lock is released when the first is done."""
    import reglab.study.runner
    import reglab.study.slurm
    import reglab.study.slurmstate
    from reglab.study.runner import Outcome

    spec = write_study(tmp_path / "s.yaml", seeds=1, runs={"erm": []})
    out = tmp_path / "study"
    refusals = []

    def second_study(*args, **kwargs):
        assert main(["study", str(spec), "-o", str(out), "--no-report"]) == 2
        refusals.append(capsys.readouterr().err)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a second study ran in the study directory while the Slurm study held it")

    def submit(study, out_dir, settings, **kwargs):
        second_study()
        (out_dir / "study.yaml").write_text(study.to_yaml())  # as the real submission writes it
        return ["erm-s0"]

    def wait(study, out_dir, keys, **kwargs):
        second_study()
        return [Outcome("erm-s0", "done")]

    monkeypatch.setattr(reglab.study.runner, "_run_locked", must_not_run)
    monkeypatch.setattr(reglab.study.slurm, "submit_study", submit)
    monkeypatch.setattr(reglab.study.slurmstate, "wait_for", wait)
    assert main(["study", str(spec), "-o", str(out), "--launcher", "slurm", "--wait", "--no-report"]) == 0
    assert len(refusals) == 2
    for err in refusals:
        _one_line_refusal(err, out, os.getpid())
    RunLock.acquire(out).release()  # free again


def test_a_refused_slurm_submission_leaves_no_study_folder(tmp_path, capsys, monkeypatch):
    """Without Slurm here the submission fails before writing anything: the study folder the lock made (and
    the parent made for it) is removed again, not left holding only its lock file."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no squeue, sbatch, srun
    spec = write_study(tmp_path / "s.yaml", seeds=1)
    out = tmp_path / "studies" / "tiny"
    assert main(["study", str(spec), "-o", str(out), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and ("srun/sbatch not found" in err or "submitit" in err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_dry_run_lists_states_and_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    spec = write_study(tmp_path / "s.yaml", seeds=1, runs={"erm": [], "mixup": {"model.channels": [8, 16, 32]}})
    assert main(["study", str(spec), "-o", str(tmp_path / "o"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("mixup-s0") and "new" in lines[1]
    # the command is quoted for a shell: a value with a space stays one argument
    args = shlex.split(lines[1].split(None, 2)[2])
    assert "model.channels=[8, 16, 32]" in args and args[0] == "train"
    assert "run.threads=8" in args  # the threads the real run gives each run: the cores / runs at a time
    assert main(["study", str(spec), "-o", str(tmp_path / "o"), "--dry-run", "--parallel", "2"]) == 0
    assert "run.threads=4" in shlex.split(capsys.readouterr().out.splitlines()[1].split(None, 2)[2])
    assert not (tmp_path / "o").exists()


def test_seeds_on_the_command_line_as_a_count_or_a_list(tmp_path, capsys):
    """`--seeds 3,4` reruns a study on new seeds (the claims must hold there too); `--seeds 2` is seeds 0, 1."""
    spec = write_study(tmp_path / "s.yaml", seeds=1, runs={"erm": []})
    assert main(["study", str(spec), "-o", str(tmp_path / "o"), "--dry-run", "--seeds", "3,4"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["erm-s3", "erm-s4"]
    assert main(["study", str(spec), "-o", str(tmp_path / "o"), "--dry-run", "--seeds", "2"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["erm-s0", "erm-s1"]
    with pytest.raises(SystemExit):
        main(["study", str(spec), "--dry-run", "--seeds", "three"])
    assert "neither a count" in capsys.readouterr().err
    assert main(["study", str(spec), "--dry-run", "--seeds", "3,3"]) == 2
    assert "duplicates" in capsys.readouterr().err
