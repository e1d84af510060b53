"""Sweeps (reglab.sweep, `reglab sweep`) on synthetic data with a tiny model: pruning, failures, resume, two
worker processes on one storage, Ctrl-C and SIGKILL of a worker mid-trial, the report (importance, figures,
best.yaml) and the retrain of the best config; the sweep file's validation is in tests/sweep/test_spec.py, the
report's rank correlation in tests/sweep/test_analysis.py, the storage's schema-creation race in
tests/sweep/test_storage.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from reglab.cli import main
from reglab.config import load_config
from reglab.errors import UserError
from reglab.sweep import parse_sweep
from reglab.sweep.runner import Worker, counts, recover_stale
from reglab.sweep.storage import load_optuna_study, prepare, read_sweep_dir
from tests.helpers.configs import SWEEP_TINY, sweep_dict, write_sweep
from tests.helpers.events import Event, EventServer
from tests.helpers.processes import checkout_env
from tests.helpers.sweeps import trials_of_another_host

TINY = SWEEP_TINY


def states(study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def cli_proc(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "reglab", "sweep", *args],
        cwd=cwd,
        env=env or checkout_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# ----------------------------------------------------------------------------------------------------------
# One worker in this process: pruning, a failing trial, resume, report, best


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """6 trials (Hyperband, 3 epochs) with trial 1 forced to diverge (lr = 1e4), then resumed to 8 trials."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = parse_sweep(sweep_dict(), "tiny", "tiny.yaml")
    study = prepare(spec, tmp)
    study.enqueue_trial({"optim.lr": 0.05, "train.batch_size": 25, "optim.name": "sgd"})
    study.enqueue_trial({"optim.lr": 1e4, "train.batch_size": 25, "optim.name": "sgd"})
    logs: list[str] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Fixed parameter optim.lr")  # lr = 1e4 is out of range on purpose
        first = Worker(spec, tmp, log=logs.append).run()
    before = {t.number: (t.state, t.params, t.value) for t in load_optuna_study(spec, tmp).get_trials()}
    second = Worker(spec, tmp, trials=8, log=logs.append).run()
    return tmp, spec, first, second, before, logs


def test_pruning_stops_trials_early(swept):
    tmp, spec, first, second, *_ = swept
    study = load_optuna_study(spec, tmp)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert second["pruned"] >= 1 and len(pruned) == second["pruned"]
    for t in pruned:
        epochs = len(t.intermediate_values)
        assert 1 <= epochs < 3
        run_dir = tmp / t.user_attrs["run_dir"]
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == epochs  # the loop really stopped, the run directory is a normal, shorter run
        assert json.loads((run_dir / "summary.json").read_text())["epochs"] == epochs
        assert t.value == pytest.approx(rows[-1]["val_acc"])  # Optuna keeps the last reported accuracy
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        rows = [
            json.loads(line) for line in (tmp / t.user_attrs["run_dir"] / "metrics.jsonl").read_text().splitlines()
        ]
        assert len(rows) == 3 and t.value == pytest.approx(rows[-1]["val_acc"])
        assert all(r["test_acc"] is None for r in rows)  # a sweep never evaluates the test set


def test_failing_trial_is_recorded_and_the_sweep_goes_on(swept):
    tmp, spec, first, *_, logs = swept
    study = load_optuna_study(spec, tmp)
    t = study.trials[1]
    assert t.state == TrialState.FAIL and t.user_attrs["failure_kind"] == "diverged"
    assert "diverged" in t.user_attrs["failure"] and t.user_attrs["will_retry"] is False
    assert first["failed"] == 1 and first["done"] == 6  # a failed trial counts; the other five ran
    assert any("trial 1: FAILED (diverged)" in line for line in logs)


def test_resume_continues_the_same_study(swept):
    tmp, spec, first, second, before, _ = swept
    study = load_optuna_study(spec, tmp)
    assert len(study.trials) == 8 and second["done"] == 8
    for t in study.trials[:6]:
        assert (t.state, t.params, t.value) == before[t.number]  # earlier trials untouched
    assert [t.number for t in study.trials] == list(range(8))
    assert sorted(p.name for p in (tmp / "trials").iterdir()) == [f"trial-{i:04d}" for i in range(8)]


def test_report_importance_figures_and_best_recipe(swept, capsys):
    tmp, spec, *_ = swept
    assert main(["sweep", "report", str(tmp)]) == 0
    out = capsys.readouterr().out
    assert "importance (PED-ANOVA" in out and "pruning:" in out
    summary = json.loads((tmp / "report" / "summary.json").read_text())
    imp = summary["importance"]
    assert set(imp) == {"optim.lr", "train.batch_size", "optim.name"}
    assert sum(imp.values()) == pytest.approx(1.0) and all(v >= 0 for v in imp.values())
    assert {"optim.lr", "optim.name=sgd", "optim.name=adam"} <= set(summary["correlation"])
    save = summary["savings"]
    assert save["pruned"] >= 1 and save["epochs_run"] < save["epochs_if_unpruned"] == 3 * save["trials"]
    for name in ("accuracy_vs_params.png", "val_acc_vs_epoch.png", "importance.png", "parallel_coordinates.png"):
        assert (tmp / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp / "report" / "report.html").read_text()
    assert "Parallel coordinates" in html and "data:image/png;base64" in html
    rows = (tmp / "report" / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 8 and "diverged" in rows[2]
    best = load_config(tmp / "report" / "best.yaml")  # the exported recipe loads as a config
    study = load_optuna_study(spec, tmp)
    bt = study.best_trial
    assert summary["best"]["trial"] == bt.number and best.optim.lr == pytest.approx(bt.params["optim.lr"])
    assert best.run.dir is None and best.optim.name == bt.params["optim.name"]


def test_report_goes_where_o_says(swept, tmp_path, capsys):
    """`reglab sweep report DIR -o OUT` writes the report into OUT (it went to DIR/report/ whatever -o said)."""
    tmp, *_ = swept
    before = (
        {p.name: p.stat().st_mtime_ns for p in (tmp / "report").iterdir()} if (tmp / "report").is_dir() else {}
    )
    out = tmp_path / "elsewhere" / "sweep-report"
    assert main(["sweep", "report", str(tmp), "-o", str(out)]) == 0
    assert f"report: {out}/report.md" in capsys.readouterr().out
    for name in ("report.md", "report.html", "summary.json", "trials.csv", "best.yaml", "importance.png"):
        assert (out / name).is_file(), name
    after = {p.name: p.stat().st_mtime_ns for p in (tmp / "report").iterdir()} if (tmp / "report").is_dir() else {}
    assert after == before  # the default report folder is left as it was


def test_best_retrains_on_train_plus_val_and_reports_test_once(swept, capsys):
    tmp, spec, *_ = swept
    assert main(["sweep", "best", str(tmp), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy of the best config" in out
    saved = json.loads((tmp / "best" / "retrain.json").read_text())
    cfg = yaml.safe_load((tmp / "best" / "config.yaml").read_text())
    assert cfg["data"]["val_size"] == 0 and saved["test_acc"] is not None
    assert saved["trial"] == load_optuna_study(spec, tmp).best_trial.number
    mtime = (tmp / "best" / "summary.json").stat().st_mtime_ns
    assert main(["sweep", "best", str(tmp)]) == 0  # asked again: the stored result, no second look at test
    assert "already retrained" in capsys.readouterr().out
    assert (tmp / "best" / "summary.json").stat().st_mtime_ns == mtime


def test_grid_sampler_visits_every_point_once(tmp_path):
    spec = parse_sweep(
        sweep_dict(
            sampler="grid",
            pruner="none",
            trials=None,
            overrides=[*TINY, "train.epochs=1", "train.batch_size=50"],
            space={
                "optim.lr": {"type": "float", "low": 0.01, "high": 0.1, "grid": [0.01, 0.1]},
                "optim.name": ["sgd"],
            },
        ),
        "grid",
    )
    assert spec.trials == 2
    prepare(spec, tmp_path)
    Worker(spec, tmp_path, log=lambda m: None).run()
    study = load_optuna_study(spec, tmp_path)
    assert states(study) == ["COMPLETE", "COMPLETE"]
    assert sorted(t.params["optim.lr"] for t in study.trials) == [0.01, 0.1]


def test_journal_file_storage(tmp_path):
    spec = parse_sweep(
        sweep_dict(
            trials=1, storage=f"journal:{tmp_path / 'shared.journal'}", overrides=[*TINY, "train.epochs=1"]
        ),
        "tiny",
    )
    prepare(spec, tmp_path / "out")
    Worker(spec, tmp_path / "out", log=lambda m: None).run()
    assert (tmp_path / "shared.journal").stat().st_size > 0 and not (tmp_path / "out" / "study.db").exists()
    assert states(load_optuna_study(spec, tmp_path / "out")) == ["COMPLETE"]
    plain = parse_sweep(sweep_dict(trials=2, overrides=[*TINY, "train.epochs=1"]), "tiny")
    prepare(plain, tmp_path / "out")  # resumed without naming a storage: the directory remembers its own
    assert plain.storage == spec.storage
    other = parse_sweep(
        sweep_dict(trials=2, storage=f"sqlite:///{tmp_path / 'x.db'}", overrides=[*TINY, "train.epochs=1"]), "tiny"
    )
    with pytest.raises(UserError, match="uses storage"):
        prepare(other, tmp_path / "out")


def test_stale_trials_of_other_hosts_fail_after_the_grace_period(tmp_path):
    spec = parse_sweep(sweep_dict(heartbeat_s=1, stale_after_s=60, max_retries=0), "tiny")
    study = prepare(spec, tmp_path)
    old, fresh = trials_of_another_host(study, silent_for_s=120)
    assert recover_stale(study, spec, log=lambda m: None) == [old.number]
    t = study.trials[old.number]
    assert t.state == TrialState.FAIL and "no heartbeat for" in t.user_attrs["failure"]
    assert t.user_attrs["will_retry"] is False  # max_retries: 0
    assert study.trials[fresh.number].state == TrialState.RUNNING  # a live worker elsewhere is left alone


def test_failure_kinds():
    import torch

    from reglab.sweep.runner import _failure_kind
    from reglab.train import TrainingDiverged

    assert _failure_kind(TrainingDiverged("loss = nan")) == "diverged"
    assert _failure_kind(torch.OutOfMemoryError("CUDA out of memory")) == "oom"
    assert _failure_kind(MemoryError()) == "oom"
    assert _failure_kind(ValueError("bad")) == "error"


def test_cli_user_errors(tmp_path, capsys):
    bad = write_sweep(tmp_path / "bad.yaml", sampler="tpee")
    assert main(["sweep", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'tpe'" in err
    assert main(["sweep", "report", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err
    for form in ("best", "dashboard"):  # their -o would mean nothing: refused rather than ignored
        assert main(["sweep", form, str(tmp_path), "-o", str(tmp_path / "x")]) == 2
        assert f"sweep {form} DIR takes no -o/--out" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert main(["sweep", str(write_sweep(tmp_path / "ok.yaml")), "optim.lrr=1"]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err


def test_resume_with_other_command_line_overrides_is_refused(tmp_path, capsys):
    """Command-line overrides that change what trials train are recorded (sweep.yaml, the study, the report,
    Hyperband's bound) and a resume with others is refused, naming the key, before anything is written."""
    f = write_sweep(tmp_path / "s.yaml", epochs=1, trials=1)
    out = tmp_path / "out"
    assert main(["sweep", str(f), "-o", str(out), "--no-report", "train.epochs=2", "run.threads=1"]) == 0
    saved = (out / "sweep.yaml").read_text()
    assert yaml.safe_load(saved)["cli_overrides"] == ["train.epochs=2"]  # placement keys are not recorded
    assert f"reglab sweep {out / 'sweep.yaml'} -o {out} train.epochs=2\n" in saved
    study = load_optuna_study(parse_sweep(yaml.safe_load(saved), "tiny"), out)
    assert len(study.trials[0].intermediate_values) == 2  # the trial trained the command line's epochs
    assert main(["sweep", "report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "resource: epochs, at most 2" in text and "command-line overrides: train.epochs=2" in text
    for argv, shown in (
        (["train.epochs=3"], "train.epochs=3 (saved: 2)"),
        ([], "train.epochs=1 (saved: 2)"),  # dropped: the file's value would train other trials
        (["optim.momentum=0.5", "train.epochs=2"], "optim.momentum=0.5 (saved: "),
    ):
        assert main(["sweep", str(f), "-o", str(out), "--trials", "2", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and shown in err and "-o DIR" in err, err
        assert f"reglab sweep {out / 'sweep.yaml'} -o {out} train.epochs=2)" in err
    # a key the space searches: the override would replace every trial's sampled value
    assert main(["sweep", str(f), "-o", str(out), "train.epochs=2", "optim.lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optim.lr: searched by" in err and "drop it from the command line" in err
    assert (out / "sweep.yaml").read_text() == saved  # nothing written by the refused runs
    assert len(load_optuna_study(read_sweep_dir(out), out).trials) == 1
    # what a trial writes (loggers, checkpoints, downloads) is not what it trains: a resume may change it
    resumed = ["train.epochs=2", "run.threads=1", "run.checkpoint_every=1", "data.download=false"]
    assert main(["sweep", str(out / "sweep.yaml"), "--no-report", *resumed]) == 0
    # another sweep directory joining the same study is checked against the study's record, and a refused one
    # remembers nothing, so its rerun with the study's overrides joins
    out2, db = tmp_path / "out2", f"sqlite:///{out / 'study.db'}"
    assert main(["sweep", str(f), "-o", str(out2), "--storage", db, "train.epochs=3"]) == 2
    assert "study 'tiny' in sqlite:///" in capsys.readouterr().err
    assert not (out2 / "sweep.yaml").exists()
    assert main(["sweep", str(f), "-o", str(out2), "--storage", db, "--no-report", "train.epochs=2"]) == 0
    assert yaml.safe_load((out2 / "sweep.yaml").read_text())["cli_overrides"] == ["train.epochs=2"]


def test_command_line_override_above_or_under_a_searched_key_is_refused(tmp_path, capsys):
    """Not only the searched key itself: a key under it (clobbering part of each trial's value) or above it
    (replacing it) is refused the same way, before the sweep directory is made."""
    base = [o for o in TINY if not o.startswith("model.channels")]
    f = write_sweep(
        tmp_path / "s.yaml",
        trials=1,
        overrides=[*base, "train.epochs=1"],
        space={"optim.lr": {"type": "logfloat", "low": 1e-3, "high": 0.5}, "model.channels": [[8, 16, 32]]},
    )
    out = tmp_path / "out"
    for argv, shown in (
        (["model.channels.0=16"], "model.channels.0 (overlaps the searched model.channels): searched by"),
        (["optim={lr: 0.1}"], "optim (overlaps the searched optim.lr): searched by"),
        (["train.epochs=1", "model.channels=[16,32,64]"], "model.channels: searched by"),
    ):
        assert main(["sweep", str(f), "-o", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and shown in err and "drop it from the command line" in err, err
        assert not out.exists()


def test_sweep_file_may_not_set_cli_overrides_unless_it_is_the_directorys_own(tmp_path, capsys):
    """cli_overrides is reglab's record, in a sweep directory's sweep.yaml, of the command-line overrides the sweep
    started with: a resume of that directory checks the command line against it. In a hand-written file, or in a
    saved sweep.yaml run into another directory, the command line would silently replace it: refused, nothing
    written."""
    f = write_sweep(tmp_path / "s.yaml", epochs=1, trials=1, cli_overrides=["train.epochs=2"])
    out = tmp_path / "out"
    assert main(["sweep", str(f), "-o", str(out), "--no-report", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{f}: cli_overrides is written by reglab sweep" in err, err
    assert "delete it and give those KEY=VALUE overrides after the file on the command line" in err
    assert not out.exists()
    # the sweep's own sweep.yaml: its record is what a resume is checked against
    spec = parse_sweep(sweep_dict(epochs=1, trials=1), "tiny")
    spec.cli_overrides = ["train.epochs=2"]
    prepare(spec, out)
    saved = (out / "sweep.yaml").read_text()
    assert main(["sweep", str(out / "sweep.yaml"), "train.epochs=3"]) == 2
    assert "was started with other command-line overrides: train.epochs=3 (saved: 2)" in capsys.readouterr().err
    # ... and into another directory it is not that sweep's record any more
    other = tmp_path / "other"
    assert main(["sweep", str(out / "sweep.yaml"), "-o", str(other), "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and f"records the command-line overrides (cli_overrides) of the sweep in {out}" in err
    )
    assert f"resume that sweep with -o {out}" in err
    assert not other.exists() and (out / "sweep.yaml").read_text() == saved


# ----------------------------------------------------------------------------------------------------------
# Processes: two workers on one storage; Ctrl-C and SIGKILL of a worker mid-trial


def test_two_worker_processes_share_one_study(tmp_path):
    f = write_sweep(tmp_path / "two.yaml", trials=4, overrides=[*TINY, "train.epochs=1"])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reglab",
            "sweep",
            str(f),
            "-o",
            str(tmp_path / "out"),
            "--workers",
            "2",
            "--no-report",
        ],
        cwd=tmp_path,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = parse_sweep(sweep_dict(trials=4, overrides=[*TINY, "train.epochs=1"]), "tiny")
    study = load_optuna_study(spec, tmp_path / "out")
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(4))  # none lost, none duplicated, no overshoot
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both processes trained trials
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    dirs = sorted(p.name for p in (tmp_path / "out" / "trials").iterdir())
    assert dirs == [f"trial-{i:04d}" for i in range(4)]
    assert "[w0] trial" in proc.stdout and "[w1] trial" in proc.stdout


def _trial_in_epoch_end(events: EventServer, proc: subprocess.Popen) -> Event:
    """The sweep process's first trial_epoch event: a RUNNING trial reported epoch 1 to the storage and waits,
    inside its epoch end, for an answer (the test interrupts or kills it instead)."""
    try:
        return events.wait_for("trial_epoch", what="a trial's first epoch")
    except AssertionError:
        proc.kill()
        pytest.fail("no trial reported an epoch: " + proc.communicate()[0])


def test_interrupt_and_sigkill_leave_the_study_consistent(tmp_path):
    # each signal lands while the trial waits in its first epoch end (a test hook): the trial's length does not
    # matter (5 epochs: only the retry that completes in-process trains them all)
    d = sweep_dict(trials=1, pruner="none", max_retries=2, overrides=[*TINY, "train.epochs=5"])
    f = tmp_path / "kill.yaml"
    f.write_text(yaml.safe_dump(d))
    spec = parse_sweep(d, "tiny")
    out = tmp_path / "out"
    args = (str(f), "-o", str(out), "--no-report")
    with EventServer() as events:
        # Ctrl-C mid-trial: the trial is failed as interrupted, queued again, exit code 130
        proc = cli_proc(*args, cwd=tmp_path, env=events.env(checkout_env(), trial_epoch="ask"))
        held = _trial_in_epoch_end(events, proc)
        first = int(held.args[0])
        proc.send_signal(signal.SIGINT)
        text = proc.communicate(timeout=60)[0]
        held.close()
    assert proc.returncode == 130, text
    study = load_optuna_study(spec, out)
    t = study.trials[first]
    assert t.state == TrialState.FAIL and t.user_attrs["failure_kind"] == "interrupted", text
    assert t.user_attrs["will_retry"] is True
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == first
    # SIGKILL mid-trial (no chance to clean up): the next run fails it as "died" and retries it
    with EventServer() as events:
        proc = cli_proc(*args, cwd=tmp_path, env=events.env(checkout_env(), trial_epoch="ask"))
        held = _trial_in_epoch_end(events, proc)
        killed = int(held.args[0])
        proc.kill()
        proc.wait()
        held.close()
    assert load_optuna_study(spec, out).trials[killed].state == TrialState.RUNNING  # left behind by the kill
    logs: list[str] = []
    Worker(spec, out, log=logs.append).run()
    study = load_optuna_study(spec, out)
    k = study.trials[killed]
    assert k.state == TrialState.FAIL and k.user_attrs["failure_kind"] == "died"
    assert "ended without finishing" in k.user_attrs["failure"] and any("worker died" in m for m in logs)
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    c = counts(study)
    assert c["done"] == 1 and c["retried"] == 2 and c["complete"] == 1  # the trial count is met
    retries = {t.user_attrs["retry_of"]: t for t in study.trials if "retry_of" in t.user_attrs}
    assert first in retries and killed in retries  # each failed trial was queued again, same parameters
    for number, retry in retries.items():
        assert retry.params == study.trials[number].params
    assert retries[killed].state == TrialState.COMPLETE
