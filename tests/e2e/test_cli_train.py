"""``reglab train / eval / predict`` as real subprocesses (``python -m reglab ...``) on synthetic data.

Independent commands run concurrently to keep the wall time down on a shared 2-core machine; every child
gets OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers.configs import BATCHES, SYNTHETIC_300, TINY_RESNET
from tests.helpers.processes import checkout_env, run_python

TRAIN = ["train", "quick", *SYNTHETIC_300, *TINY_RESNET, *BATCHES, "optim.lr=0.2", "run.device=cpu"]


def cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reglab", *args],
        cwd=cwd,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_many(commands: list[list[str]], cwd: Path, timeout: float = 180) -> list[subprocess.CompletedProcess]:
    """Run several independent commands at once; results in order."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "reglab", *c],
            cwd=cwd,
            env=checkout_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in commands
    ]
    out = []
    for c, p in zip(commands, procs):
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


def assert_one_line_user_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("reglab: error:")]
    assert len(errors) == 1, proc.stderr
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def trained(work):
    """A 2-epoch CLI run into the relative run.dir ``runs/first``, copied to ``D`` (a run dir that was moved
    or copied), then ``--resume D`` to 3 epochs. Returns (D, first proc, resume proc, rows after first)."""
    first = cli(*TRAIN, "train.epochs=2", "run.dir=runs/first", "--quiet", cwd=work)
    assert first.returncode == 0, first.stderr
    d = work / "D"
    shutil.copytree(work / "runs" / "first", d)
    rows_after_first = (d / "metrics.jsonl").read_text().splitlines()
    resumed = cli("train", "--resume", str(d), "train.epochs=3", "--quiet", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    return d, first, resumed, rows_after_first


def test_train_prints_test_accuracy(trained):
    d, first, _, rows = trained
    assert "test accuracy" in first.stdout
    assert "run dir: runs/first" in first.stdout
    assert "Traceback" not in first.stderr
    assert len(rows) == 2
    for name in (
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "curves.png",
        "checkpoints/last.safetensors",
        "checkpoints/best.safetensors",
    ):
        assert (d / name).is_file(), name
    # --quiet: one plain line per epoch on stderr, no progress bar
    epoch_lines = [ln for ln in first.stderr.splitlines() if ln.startswith("epoch")]
    assert len(epoch_lines) == 2 and "1/2" in epoch_lines[0] and "2/2" in epoch_lines[1], first.stderr


def test_resume_continues_to_more_epochs(trained, work):
    d, _, resumed, _ = trained
    assert "test accuracy" in resumed.stdout
    epoch_lines = [ln for ln in resumed.stderr.splitlines() if ln.startswith("epoch")]
    assert len(epoch_lines) == 1 and "3/3" in epoch_lines[0], resumed.stderr
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    summary = json.loads((d / "summary.json").read_text())
    assert summary["epochs"] == 3
    saved = yaml.safe_load((d / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 3 and saved["run"]["dir"] == str(d)
    # the resume continued the copy it was given, not the directory the run was first written to
    assert len((work / "runs" / "first" / "metrics.jsonl").read_text().splitlines()) == 2


def test_config_and_rerun_errors(trained, work):
    bad_yaml = work / "broken.yaml"
    bad_yaml.write_text("train:\n  epochs: 3\n  batch_size: [1, 2\noptim:\n  lr: 0.1\n")
    first_dir = work / "runs" / "first"
    before = (first_dir / "checkpoints" / "last.safetensors").read_bytes()
    rerun, lrr, abc, yml = cli_many(
        [
            [*TRAIN, "train.epochs=2", "run.dir=runs/first", "--quiet"],  # the first command, again
            [*TRAIN, "optim.lrr=0.1", f"run.dir={work / 'x1'}"],
            [*TRAIN, "train.epochs=abc", f"run.dir={work / 'x2'}"],
            ["train", str(bad_yaml), f"run.dir={work / 'x3'}"],
        ],
        cwd=work,
    )
    assert_one_line_user_error(rerun, "--resume", "runs/first")
    assert (first_dir / "checkpoints" / "last.safetensors").read_bytes() == before
    assert_one_line_user_error(lrr, "optim.lrr", "'lr'")
    assert_one_line_user_error(abc, "train.epochs", "abc")
    line = assert_one_line_user_error(yml, str(bad_yaml.name))
    assert "line 3" in line or "line 4" in line, line
    for x in ("x1", "x2", "x3"):
        assert not (work / x).exists(), x


# ----------------------------------------------------------------------------------------------------------
# eval and predict


def make_images(folder: Path) -> tuple[list[Path], list[Path]]:
    from PIL import Image

    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    good, bad = [], []
    p = folder / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8), "RGB").save(p, quality=90)
    good.append(p)
    rgba = rng.integers(0, 256, (40, 60, 4), dtype=np.uint8)
    rgba[:, :20, 3] = 0  # partly transparent
    p = folder / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(p)
    good.append(p)
    p = folder / "gray16.png"
    img16 = Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 21).astype(np.uint16))
    assert img16.mode == "I;16"
    img16.save(p)
    good.append(p)
    p = folder / "palette.gif"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").convert("P").save(p)
    good.append(p)
    p = folder / "gray.png"
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8), "L").save(p)
    good.append(p)
    big = folder / "tmp_full.png"
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8), "RGB").save(big)
    p = folder / "truncated.png"
    p.write_bytes(big.read_bytes()[: big.stat().st_size * 6 // 10])
    big.unlink()
    bad.append(p)
    p = folder / "empty.jpg"
    p.write_bytes(b"")
    bad.append(p)
    p = folder / "notes.txt"
    p.write_text("this is not an image\n")
    bad.append(p)
    bad.append(folder / "missing.png")
    return good, bad


@pytest.fixture(scope="module")
def used(trained, work):
    """eval --json, predict (text) and predict --json, run concurrently on the trained run."""
    d = trained[0]
    good, bad = make_images(work / "imgs")
    files = [str(p) for p in [good[0], bad[0], *good[1:], *bad[1:]]]
    ev, pr_text, pr_json = cli_many(
        [
            ["eval", str(d), "--json"],
            ["predict", str(d), *files],
            ["predict", str(d), *files, "--json", "--top-k", "3"],
        ],
        cwd=work,
    )
    return d, good, bad, ev, pr_text, pr_json


def test_eval_json(used):
    d, _, _, ev, _, _ = used
    assert ev.returncode == 0, ev.stderr
    out = json.loads(ev.stdout)
    assert out["split"] == "test" and out["images"] == 100
    assert 0 <= out["acc"] <= 100
    assert sorted(out["per_class_acc"]) == [f"class{i}" for i in range(10)]
    cm = np.array(out["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 100
    assert out["acc"] == pytest.approx(100 * np.trace(cm) / 100, abs=1e-3)
    assert (d / "confusion_test.png").stat().st_size > 1000
    assert json.loads((d / "eval_test.json").read_text())["acc"] == out["acc"]
    # eval of best must agree with the training run's own test accuracy at its best epoch
    summary = json.loads((d / "summary.json").read_text())
    assert out["acc"] == pytest.approx(summary["test_acc_at_best_val"], abs=0.01)


def test_predict_text(used):
    _, good, bad, _, pr, _ = used
    assert pr.returncode == 2, (pr.stdout, pr.stderr)  # README: every mistake exits 2
    assert "Traceback" not in pr.stderr
    out_lines = [ln for ln in pr.stdout.splitlines() if ln.strip()]
    assert len(out_lines) == len(good)
    for path, line in zip(good, out_lines):
        assert line.startswith(f"{path}: class"), line
        probs = [float(tok.rstrip("%,")) for tok in line.split(": ", 1)[1].split() if tok.endswith(("%", "%,"))]
        assert len(probs) == 3 and sum(probs) <= 100.0 + 0.2, line
        assert probs == sorted(probs, reverse=True)
    err_lines = [ln for ln in pr.stderr.splitlines() if ln.strip()]
    assert len(err_lines) == len(bad), pr.stderr
    for path, line in zip(bad, err_lines):
        assert line.startswith(f"reglab: error: {path}: "), line
    assert "truncat" in err_lines[0] or "decode" in err_lines[0], err_lines[0]
    assert "not an image" in err_lines[1] and "not an image" in err_lines[2], err_lines  # empty, text
    assert "not found" in err_lines[-1]


def test_predict_json(used):
    _, good, bad, _, _, pj = used
    assert pj.returncode == 2, pj.stderr
    results = json.loads(pj.stdout)
    by_file = {r["file"]: r for r in results}
    assert len(results) == len(good) + len(bad)
    for p in good:
        r = by_file[str(p)]
        assert "error" not in r, r
        assert len(r["top"]) == 3
        probs = [t["prob"] for t in r["top"]]
        assert all(0 <= q <= 1 for q in probs) and sum(probs) <= 1 + 1e-4
        assert probs == sorted(probs, reverse=True)
        assert all(t["class"].startswith("class") for t in r["top"])
    for p in bad:
        r = by_file[str(p)]
        assert "top" not in r and isinstance(r["error"], str) and r["error"], r


def test_train_without_a_validation_split_reports_the_test_accuracy(tmp_path):
    proc = run_python(
        "-m",
        "reglab",
        "train",
        "fast-cpu-85",
        "data.dataset=synthetic",
        "data.synthetic_train=300",
        "data.synthetic_test=100",
        "data.val_size=0",
        "train.epochs=1",
        "train.batch_size=100",
        "model.channels=[8,16,16]",
        f"run.dir={tmp_path / 'r'}",
        "--quiet",
        timeout=300,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "test accuracy" in proc.stdout and "no validation split" in proc.stdout


@pytest.mark.parametrize("checkpointed", [True, False])
def test_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch, checkpointed):
    """Ctrl-C during `reglab train`: exit 130, no traceback, and one line with the command that resumes, where
    the run has a checkpoint to resume from (after its first epoch; a --resume always has one); before the first
    checkpoint just 'interrupted'."""
    from reglab.cli import main
    from reglab.train import saving

    real = saving.SavePolicy.epoch_end

    def ctrl_c(self, improved, final):  # Ctrl-C arrives after the epoch's checkpoint, or before it is written
        if checkpointed:
            real(self, improved, final)
        raise KeyboardInterrupt

    monkeypatch.setattr(saving.SavePolicy, "epoch_end", ctrl_c)
    run_dir = tmp_path / "my run"
    assert main([*TRAIN, "train.epochs=3", "run.threads=1", f"run.dir={run_dir}", "--quiet"]) == 130
    err = capsys.readouterr().err  # the run's header and progress lines, then the last word
    assert "Traceback" not in err
    if not checkpointed:
        assert err.splitlines()[-1] == "reglab: interrupted" and "resume with" not in err
        return
    hint = f"reglab: interrupted; resume with: reglab train --resume '{run_dir}'"
    assert err.splitlines()[-1] == hint
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 130  # interrupted again while resuming
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == hint and "Traceback" not in err


# Starts `reglab train` with the clock's seconds frozen: every run started by it is "started in the same second".
SAME_SECOND = (
    "import sys, time; time.strftime = lambda fmt, *a: '20260101-000000'; from reglab.cli import main; "
    "sys.exit(main(sys.argv[1:]))"
)


def test_auto_named_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    """Two concurrent auto-named runs (no run.dir) in the same second, next to an older run of that name: each
    claims a free folder (-2, -3), --overwrite included, and the older run is left untouched."""
    first = tmp_path / "runs" / "quick-20260101-000000"
    first.mkdir(parents=True)
    (first / "config.yaml").write_text("an older run's config\n")
    args = [*TRAIN, "train.epochs=1", "data.synthetic_train=150", "run.threads=1", "--quiet"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SAME_SECOND, *args, *extra],
            cwd=tmp_path,
            env=checkout_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in ([], ["--overwrite"])
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    dirs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert dirs == ["quick-20260101-000000", "quick-20260101-000000-2", "quick-20260101-000000-3"]
    assert (
        os.listdir(first) == ["config.yaml"] and (first / "config.yaml").read_text() == "an older run's config\n"
    )
    shown = sorted(
        ln.split("run dir: ")[1].strip() for out, _ in outs for ln in out.splitlines() if "run dir: " in ln
    )
    assert shown == ["runs/quick-20260101-000000-2", "runs/quick-20260101-000000-3"]
    for d in dirs[1:]:
        assert (tmp_path / "runs" / d / "summary.json").is_file()
