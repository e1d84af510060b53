"""Reliability, round two (issue 24): one process per run directory, no writes through symbolic links,
resuming with more epochs, checkpoint metadata that is checked before use, and the bad-input cases of the
issue. Each case runs the real CLI (``reglab.cli.main``) where the issue showed it through the CLI and checks
exit status, a single ``reglab: error:`` line, no traceback, and that nothing outside (or inside) was harmed.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import reglab.cli as cli
import reglab.train.checkpoint as ckmod
from reglab.config import SchedConfig, load_config
from reglab.errors import UserError
from reglab.train import run
from reglab.train.checkpoint import atomic_write_bytes, load_checkpoint
from reglab.train.fsguard import LOCK_NAME, RunLock
from tests.helpers.configs import TINY_300
from tests.helpers.events import CHILDSITE, EventServer

REPO = Path(__file__).resolve().parents[2]
SYN = TINY_300


def cli_run(argv, capfd) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def one_error(code, err, *words, exit_code=2) -> str:
    assert code == exit_code, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("epoch ", "reglab: note"))]
    lines = [ln for ln in lines if not (ln.startswith("reglab: ") and " | " in ln)]  # the start line of a run
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def digest(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rel") / "run"
    run(load_config(None, [*SYN, "train.epochs=2", "sched.name=cosine", f"run.dir={d}"]))
    return d


@pytest.fixture
def work(trained, tmp_path) -> Path:
    """A private copy of the trained run."""
    d = tmp_path / "run"
    shutil.copytree(trained, d)
    return d


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    from PIL import Image

    p = tmp_path_factory.mktemp("img") / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(p)
    return p


# ----------------------------------------------------------------------------------------------------------
# 1. One process per run directory


def test_second_process_on_a_run_directory_is_refused_with_the_holders_pid(work, capfd):
    lock = RunLock.acquire(work)  # as a running `reglab train` holds it (flock: per open file, so this counts)
    try:
        before = digest(work)
        code, _, err = cli_run(["train", "--resume", work, "train.epochs=3"], capfd)
        one_error(code, err, "is in use by another reglab process", f"pid {os.getpid()}")
        code, _, err = cli_run(["train", "quick", *SYN, f"run.dir={work}", "--overwrite"], capfd)
        one_error(code, err, "is in use by another reglab process")
        assert digest(work) == before
    finally:
        lock.release()
    code, _, err = cli_run(["train", "--resume", work, "train.epochs=3", "--quiet"], capfd)
    assert code == 0, err


def test_a_killed_holder_leaves_no_stale_lock(work, tmp_path):
    """A training process killed with SIGKILL while it holds the lock: the kernel drops the lock."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "reglab", "train", "--resume", str(work), "train.epochs=3", "--quiet"]
    with EventServer() as events:
        # the holder reports its first checkpoint write and waits there (lock held) for an answer never sent
        proc = subprocess.Popen(
            cmd, env=events.env(env, written="ask"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        held = None  # the open connection the holder waits on (closing it would let it go on)
        try:
            try:
                held = events.wait_for("written", what="the training process's checkpoint write")
            except AssertionError:
                proc.kill()
                pytest.fail("the training process never reached its checkpoint write: " + proc.communicate()[1])
            second = subprocess.run(cmd[:-1], env=env, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2 and f"pid {proc.pid}" in second.stderr, second.stderr
            assert "Traceback" not in second.stderr
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if held is not None:
                held.close()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(work / "checkpoints" / "last.safetensors")["epoch"] == 3
    assert not [p for p in (work / "checkpoints").iterdir() if ".tmp" in p.name]


# ----------------------------------------------------------------------------------------------------------
# 2. Nothing written or deleted through a symbolic link


def test_eval_refuses_a_linked_output_and_leaves_its_target_alone(work, tmp_path, capfd):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    (work / "confusion_test.png").symlink_to(notes)
    code, _, err = cli_run(["eval", work], capfd)
    one_error(code, err, "confusion_test.png is a symbolic link", "never writes or deletes files through a link")
    assert notes.read_text() == "my notes\n"
    assert not list(work.glob("eval_*.json"))


@pytest.mark.parametrize("how", ["resume", "overwrite"])
def test_linked_checkpoints_folder_is_refused_and_the_other_folder_untouched(work, tmp_path, capfd, how):
    other = tmp_path / "other"
    shutil.move(work / "checkpoints", other)
    (other / "mine.safetensors").write_bytes(b"someone else's file")
    (other / ".x.tmp1").write_bytes(b"not reglab's temporary")
    (work / "checkpoints").symlink_to(other)
    before = digest(other)
    argv = (
        ["train", "--resume", work, "train.epochs=3"]
        if how == "resume"
        else ["train", "quick", *SYN, f"run.dir={work}", "--overwrite"]
    )
    code, _, err = cli_run(argv, capfd)
    one_error(code, err, "checkpoints is a symbolic link")
    assert digest(other) == before


def test_linked_run_files_are_refused_before_training(work, tmp_path, capfd):
    outside = tmp_path / "outside.csv"
    outside.write_text("keep\n")
    (work / "metrics.csv").unlink()
    (work / "metrics.csv").symlink_to(outside)
    code, _, err = cli_run(["train", "--resume", work, "train.epochs=3"], capfd)
    one_error(code, err, "metrics.csv is a symbolic link")
    assert outside.read_text() == "keep\n"


def test_export_refuses_a_linked_export_folder(work, tmp_path, capfd):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (work / "export").symlink_to(elsewhere)
    code, _, err = cli_run(["export", work, "--format", "torchscript"], capfd)
    one_error(code, err, "export is a symbolic link")
    assert list(elsewhere.iterdir()) == []


def test_atomic_write_never_follows_a_planted_temporary_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    target = tmp_path / "run" / "summary.json"
    target.parent.mkdir()
    ckmod.temp_name(target).symlink_to(victim)  # a link waiting at the temporary name
    atomic_write_bytes(target, b"{}", root=target.parent)
    assert victim.read_text() == "untouched" and target.read_bytes() == b"{}" and not target.is_symlink()
    target.unlink()
    target.symlink_to(victim)
    with pytest.raises(UserError, match="summary.json is a symbolic link"):
        atomic_write_bytes(target, b"{}", root=target.parent)
    assert victim.read_text() == "untouched"


# ----------------------------------------------------------------------------------------------------------
# 3. --resume with another train.epochs


def test_resume_with_more_epochs_rebuilds_the_schedule_and_says_so(work, capfd):
    code, _, err = cli_run(["train", "--resume", work, "train.epochs=4", "--quiet"], capfd)
    assert code == 0, err
    assert "reglab: note: train.epochs 2 -> 4: the cosine lr schedule" in err and "rebuilt" in err, err
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    # lr of epochs 3 and 4: a 4-epoch cosine at steps 8 and 12 (4 steps per epoch), not the old schedule's ~0
    assert rows[2]["lr"] == pytest.approx(0.2 * 0.5 * (1 + np.cos(np.pi * 8 / 16)), rel=1e-6)
    assert rows[3]["lr"] == pytest.approx(0.2 * 0.5 * (1 + np.cos(np.pi * 12 / 16)), rel=1e-6)
    assert load_checkpoint(work / "checkpoints" / "last.safetensors")["schedule"] == {"epochs": 4}


def test_rebuilt_schedule_is_the_fresh_schedule_at_that_step():
    from reglab.train.optim import build_scheduler

    for name, extra in (
        ("cosine", {}),
        ("linear", {"min_lr": 0.01}),
        ("onecycle", {}),
        ("cosine", {"warmup_epochs": 1.5}),
    ):

        def fresh():
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
            return opt, build_scheduler(opt, SchedConfig(name=name, **extra), 8, 10, 0.3)  # noqa: B023 (called at once)

        opt_a, a = fresh()
        for _ in range(60):
            opt_a.step()
            a.step()
        # as a resume does it (resume.rebuild_schedule): a 6-epoch schedule 60 steps in, then rebuilt for 8
        from types import SimpleNamespace

        from reglab.train.resume import rebuild_schedule

        opt_b = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
        old = build_scheduler(opt_b, SchedConfig(name=name, **extra), 6, 10, 0.3)
        for _ in range(60):
            opt_b.step()
            old.step()
        cfg = load_config(
            None,
            [
                f"sched.name={name}",
                *(f"sched.{k}={v}" for k, v in extra.items()),
                "train.epochs=8",
                "optim.lr=0.3",
            ],
        )
        fake = SimpleNamespace(optimizer=opt_b, base_lrs=[0.3], cfg=cfg, steps_per_epoch=10, scheduler=old)
        rebuild_schedule(fake, 60)
        assert opt_b.param_groups[0]["lr"] == pytest.approx(opt_a.param_groups[0]["lr"], rel=1e-12), name


def test_resume_with_fewer_epochs_than_done_is_refused(work, capfd):
    before = digest(work)
    code, _, err = cli_run(["train", "--resume", work, "train.epochs=1"], capfd)
    one_error(code, err, "train.epochs=1 is fewer than the 2 epochs", "cannot be shortened")
    assert digest(work) == before


def test_resume_with_the_same_epochs_keeps_the_saved_schedule(work, capfd):
    code, _, err = cli_run(["train", "--resume", work, "--quiet"], capfd)
    assert code == 0 and "note" not in err, err


# ----------------------------------------------------------------------------------------------------------
# 4. Checkpoint metadata is checked before use


def craft(src_run: Path, dst: Path, change) -> Path:
    """A copy of a run whose best and last checkpoints carry the same tensors and altered reglab metadata."""
    shutil.copytree(src_run, dst)
    for name in ("best", "last"):
        path = dst / "checkpoints" / f"{name}.safetensors"
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata()
        tensors = load_file(str(path))
        tree = json.loads(meta["reglab"])
        text = change(tree)
        save_file(
            tensors,
            str(path),
            metadata={"format": meta["format"], "reglab": text if isinstance(text, str) else json.dumps(tree)},
        )
    return dst


def _meta(tree):
    return tree["__dict__"]["meta"]["__dict__"]


CRAFTED = {
    "nested": (lambda t: "[" * 100_000 + "]" * 100_000, "metadata is nested deeper than 64 levels"),
    "two-classes": (lambda t: _meta(t).__setitem__("classes", ["cat", "dog"]), "meta.classes has 2 names for 10"),
    "mean-length-1": (lambda t: _meta(t).__setitem__("mean", [0.5]), "meta.mean must be 3 numbers"),
    "negative-classes": (lambda t: _meta(t).__setitem__("num_classes", -3), "meta.num_classes = -3"),
    "huge-model": (
        lambda t: _meta(t)["model"]["__dict__"].__setitem__("channels", [100000] * 3),
        "meta.model.channels",
    ),
    "big-model": (
        lambda t: _meta(t)["model"]["__dict__"].__setitem__("channels", [4096] * 3),
        "model weights do not fit",
    ),
    "std-zero": (lambda t: _meta(t).__setitem__("std", [0, 1, 1]), "meta.std"),
    "class-not-str": (lambda t: _meta(t)["classes"].__setitem__(0, {"x": 1}), "meta.classes[0]"),
    "no-meta": (lambda t: t["__dict__"].pop("meta"), "meta is missing"),
    "not-a-mapping": (lambda t: "[1, 2, 3]", "metadata holds list"),
    "epoch-string": (lambda t: t["__dict__"].__setitem__("epoch", "7"), "epoch must be an integer"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
@pytest.mark.parametrize("command", ["predict", "eval", "export", "resume"])
def test_crafted_checkpoint_metadata_is_one_line_error(trained, tmp_path, image, capfd, case, command):
    change, words = CRAFTED[case]
    d = craft(trained, tmp_path / "crafted", change)
    argv = {
        "predict": ["predict", d, image],
        "eval": ["eval", d, "--out", tmp_path / "out"],
        "export": ["export", d, "--format", "torchscript", "-o", tmp_path / "m.pt"],
        "resume": ["train", "--resume", d, "train.epochs=3"],
    }[command]
    before = digest(d)
    t0 = time.time()
    code, out, err = cli_run(argv, capfd)
    line = one_error(code, err, "is not a valid reglab checkpoint: ", words)
    assert time.time() - t0 < 30, "a crafted checkpoint must not make reglab work for long"
    assert digest(d) == before and not (tmp_path / "m.pt").exists() and not (tmp_path / "out").exists(), line


# ----------------------------------------------------------------------------------------------------------
# 5-8. Bad input


def test_config_bounds_and_cross_checks(capfd):
    cases = [
        (["run.seed=1180591620717411303424"], ["run.seed=", "0 .. 4294967295"]),
        (["run.seed=-1"], ["run.seed=-1"]),
        (["run.threads=-1"], ["run.threads=-1", "or null"]),
        (["run.threads=0"], ["run.threads=0", "null for torch's default"]),
        (["sched.min_lr=10", "optim.lr=0.3"], ["sched.min_lr=10.0 is above optim.lr=0.3"]),
    ]
    for overrides, words in cases:
        code, _, err = cli_run(["config", *overrides], capfd)
        one_error(code, err, *words)
    code, out, err = cli_run(["config", "sched.min_lr=0.3", "optim.lr=0.3"], capfd)
    assert code == 0, err  # min_lr = lr: a constant schedule, allowed


def test_recipe_bytes_and_keys(tmp_path, capfd):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"run:\n  name: caf\xe9\n")
    dup = tmp_path / "dup.yaml"
    dup.write_text("optim:\n  lr: 0.1\ntrain:\n  epochs: 3\noptim:\n  lr: 0.5\n")
    dup_inner = tmp_path / "dup_inner.yaml"
    dup_inner.write_text("train:\n  epochs: 3\n  epochs: 4\n")
    folder = tmp_path / "recipes_dir"
    folder.mkdir()
    (folder / "a.yaml").write_text("{}\n")
    bomb = tmp_path / "bomb.yaml"
    layers = ["&a [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"&{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")
    ]
    bomb.write_text(f"optim:\n  betas: [{', '.join(layers)}]\n")  # 9^9 numbers if expanded
    cases = [
        (["config", latin1], [str(latin1), "is not UTF-8 text (byte 0xe9 on line 2)"]),
        (["config", dup], ["found duplicate key 'optim' (first at line 1)", "line 5"]),
        (["config", dup_inner], ["found duplicate key 'epochs'"]),
        (["config", folder], ["is a directory, not a YAML file"]),
        (["config", bomb], ["optim.betas"]),
        (["config", "run.name=caf\udce9"], ["not valid UTF-8", "\\xe9"]),  # a raw byte from the shell
    ]
    for argv, words in cases:
        t0 = time.time()
        code, _, err = cli_run(argv, capfd)
        one_error(code, err, *words)
        assert time.time() - t0 < 10


def test_non_utf8_override_through_a_real_process():
    """The error line itself must be printable: the raw byte is shown escaped, no second exception."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "reglab", "config", b"run.name=caf\xe9".decode("utf-8", "surrogateescape")],
        env=env,
        capture_output=True,
        timeout=120,
    )
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and "Traceback" not in err and err.count("\n") == 1, err


def test_broken_pipe_is_quiet():
    """`reglab models | head -0`: the reader is gone before reglab writes; no traceback, status 141."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r, w = os.pipe()
    os.close(r)  # no reader at all
    proc = subprocess.run(
        [sys.executable, "-m", "reglab", "config", "quick"],
        env=env,
        stdout=w,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(w)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_disk_full_during_eval_leaves_no_temporary_file(work, tmp_path, capfd, monkeypatch):
    from matplotlib.figure import Figure

    def full(self, fname, *args, **kwargs):
        fname.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    out = tmp_path / "out"
    code, _, err = cli_run(["eval", work, "--out", out], capfd)
    one_error(code, err, "cannot write", "confusion_test.png", "No space left on device")
    assert [p.name for p in out.iterdir()] == []


def test_export_opset_is_checked(work, tmp_path, capfd):
    for opset, words in (
        ("999", ["--opset 999 is not an ONNX opset", "use 18 to"]),
        ("0", ["--opset 0 is not an ONNX opset"]),
        ("13", ["--opset 13"]),
    ):
        code, out, err = cli_run(["export", work, "--opset", opset, "-o", tmp_path / "m.onnx", "--json"], capfd)
        one_error(code, err, *words)
        assert out == "" and not (tmp_path / "m.onnx").exists()
    code, _, err = cli_run(
        ["export", work, "--format", "torchscript", "--opset", "18", "-o", tmp_path / "m.pt"], capfd
    )
    one_error(code, err, "--opset applies to --format onnx only")


def test_leftover_temporaries_are_removed_by_resume_and_overwrite(work, capfd):
    for how in ("resume", "overwrite"):
        junk = [
            work / "checkpoints" / ".tmpAb12Cd",
            work / "checkpoints" / ".last.safetensors.tmp999999",
            work / ".metrics.csv.tmp999998",
            work / ".curves.png.tmp.png",
        ]
        for p in junk:
            p.write_bytes(b"partial")
        keep = work / "checkpoints" / ".tmp-not-ours-1"
        keep.write_bytes(b"x")
        argv = (
            ["train", "--resume", work, "--quiet"]
            if how == "resume"
            else ["train", "quick", *SYN, "train.epochs=1", f"run.dir={work}", "--overwrite", "--quiet"]
        )
        code, _, err = cli_run(argv, capfd)
        assert code == 0, err
        assert not [p for p in junk if os.path.lexists(p)], how
        assert keep.exists()


def test_a_fresh_run_that_cannot_write_leaves_no_folder_behind(tmp_path, capfd, monkeypatch):
    def full(fd, data):
        os.close(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckmod, "write_file", full)
    d = tmp_path / "new" / "run"
    code, _, err = cli_run(["train", "quick", *SYN, "train.epochs=1", f"run.dir={d}"], capfd)
    one_error(code, err, "cannot write", "No space left on device")
    assert not d.exists()


def test_fresh_run_has_no_checkpoints_folder_until_its_first_checkpoint(tmp_path, capfd):
    class Look:
        def on_start(self, r):
            self.seen = sorted(p.name for p in r.dir.path.iterdir())

    look = Look()
    run(load_config(None, [*SYN, "train.epochs=1", f"run.dir={tmp_path / 'r'}"]), callbacks=[look])
    assert "checkpoints" not in look.seen and LOCK_NAME in look.seen


def test_predict_a_fifo_does_not_hang(work, tmp_path):
    """In a subprocess with a timeout: a regression that opens the FIFO blocks forever, not the test session."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "reglab", "predict", str(work), str(fifo)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )  # the start alone takes ~5-10 s here
    except subprocess.TimeoutExpired:
        pytest.fail("reglab predict blocked on a FIFO (killed after 120 s)")
    one_error(proc.returncode, proc.stderr, "is a FIFO, not an image file", exit_code=2)


def test_best_that_is_not_a_file_is_an_error_and_a_missing_best_says_last(work, image, capfd):
    best = work / "checkpoints" / "best.safetensors"
    best.unlink()
    best.mkdir()
    code, _, err = cli_run(["predict", work, image], capfd)
    one_error(code, err, "best.safetensors is a folder, not a checkpoint", "--checkpoint last")
    best.rmdir()
    best.symlink_to(work / "nowhere")
    code, _, err = cli_run(["eval", work], capfd)
    one_error(code, err, "best.safetensors is a dangling link")
    best.unlink()
    code, out, err = cli_run(["predict", work, image], capfd)
    assert code == 0 and "reglab: note:" in err and "using last.safetensors" in err, err


def test_recipe_that_is_a_directory(tmp_path, capfd):
    code, _, err = cli_run(["train", tmp_path], capfd)
    one_error(code, err, "is a directory, not a YAML file")


def test_resume_keeps_old_checkpoints_loadable(trained):
    """Checkpoints written before this change (no schedule field) still resume: the saved config decides."""
    state = load_checkpoint(trained / "checkpoints" / "last.safetensors")
    state = copy.deepcopy(state)
    state.pop("schedule")
    from reglab.train.ckschema import resume_fields

    assert resume_fields(state, Path("x"))["schedule_epochs"] is None


# ----------------------------------------------------------------------------------------------------------
# Review fixes: a refused racer leaves the winner alone, a linked run directory, old checkpoints extended
# twice, merge keys, the resume records, the checkpoint-write test hooks, unlocking


RACE = r"""
import sys
import reglab.cli as cli
import reglab_test_hooks
from reglab.train import fsguard, rundir

role, address = sys.argv[1], sys.argv[2]
real_create, real_acquire = rundir.RunDir.create.__func__, fsguard.RunLock.acquire.__func__

def step(name):  # tell the test this process reached step `name`; wait until the test lets it go on
    reglab_test_hooks.send(address, "race", role, name, ask=True)

def create(cls, path, cfg, overwrite=False, lock=None, **kw):
    if role == "winner":  # the test lets it go on once the loser has made the folder and is about to lock it
        step("create")
    return real_create(cls, path, cfg, overwrite=overwrite, lock=lock, **kw)

def acquire(cls, run_dir):
    if role == "loser":
        step("at-lock")  # until the winner holds the lock
        return real_acquire(cls, run_dir)
    lock = real_acquire(cls, run_dir)
    step("locked")  # the winner holds the lock, config.yaml not yet written, until the loser has given up
    return lock

rundir.RunDir.create = classmethod(create)
fsguard.RunLock.acquire = classmethod(acquire)
sys.exit(cli.main(sys.argv[3:]))
"""


def test_two_racing_fresh_runs_the_loser_leaves_the_winners_directory_alone(tmp_path):
    """Two real processes start a fresh run in one new run.dir; both find it free, the loser even creates the
    folder, the winner takes the lock first. The loser is refused with the winner's pid and deletes nothing.
    The test sets the order: each process reports when it reaches a step and waits for the test to let it go
    on."""
    d = tmp_path / "runs" / "race"
    env = {**os.environ, "PYTHONPATH": f"{CHILDSITE}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    argv = ["train", "quick", *SYN, "train.epochs=1", f"run.dir={d}", "--quiet"]
    with EventServer() as events:
        procs = {
            role: subprocess.Popen(
                [sys.executable, "-c", RACE, role, events.address, *argv],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for role in ("winner", "loser")
        }
        errs = {}
        try:
            steps = {}
            while len(steps) < 2:  # the winner about to create the run directory, the loser about to lock it
                try:
                    ev = events.wait_for("race", what="both processes at their first step")
                except AssertionError as exc:
                    for p in procs.values():
                        p.kill()
                    pytest.fail(f"{exc}: " + " | ".join(p.communicate()[1][-1500:] for p in procs.values()))
                steps[ev.args[0]] = ev
            assert steps["winner"].args[1] == "create" and steps["loser"].args[1] == "at-lock"
            steps["winner"].answer()
            locked = events.wait_for("race", what="the winner holding the lock")
            assert locked.args == ["winner", "locked"]
            steps["loser"].answer()
            errs["loser"] = procs["loser"].communicate(timeout=240)[1]  # refused while the winner holds the lock
            locked.answer()
            errs["winner"] = procs["winner"].communicate(timeout=240)[1]
        finally:
            for p in procs.values():
                p.kill()
                p.wait()
    assert procs["loser"].returncode == 2, errs["loser"]
    one_error(2, errs["loser"], "is in use by another reglab process", f"pid {procs['winner'].pid}")
    assert procs["winner"].returncode == 0, errs["winner"]
    assert (d / LOCK_NAME).is_file() and (d / LOCK_NAME).read_text().split()[0] == str(procs["winner"].pid)
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last.safetensors"):
        assert (d / name).is_file(), name
    assert load_checkpoint(d / "checkpoints" / "last.safetensors")["epoch"] == 1


def test_a_run_directory_that_disappears_is_not_recreated(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    atomic_write_bytes(d / "config.yaml", b"x", root=d, root_must_exist=True)
    shutil.rmtree(d)
    with pytest.raises(UserError, match="has disappeared"):
        atomic_write_bytes(d / "config.yaml", b"x", root=d, root_must_exist=True)
    with pytest.raises(UserError, match="has disappeared"):
        atomic_write_bytes(d / "checkpoints" / "last.safetensors", b"x", root=d, root_must_exist=True)
    assert not d.exists()


def test_a_lock_taken_on_a_removed_lock_file_is_taken_again(tmp_path, monkeypatch):
    """Another process unlinked the lock file between this one's open and flock: the lock must be on the file
    that is there now, not on the removed one (else two processes would both hold "the" lock)."""
    import fcntl

    real, calls = fcntl.flock, []

    def flock(fd, op):
        if op & fcntl.LOCK_EX and not calls:
            calls.append(fd)
            os.unlink(tmp_path / LOCK_NAME)
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    lock = RunLock.acquire(tmp_path)
    try:
        assert calls and os.fstat(lock.fd).st_ino == os.stat(tmp_path / LOCK_NAME).st_ino
    finally:
        lock.release()


def test_release_unlocks_also_for_a_child_that_inherited_the_descriptor(tmp_path):
    lock = RunLock.acquire(tmp_path)
    # a child that holds the same open file description, and waits for its stdin to close
    child = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=[lock.fd])
    try:
        lock.release()
        again = RunLock.acquire(tmp_path)  # refused if the child's copy still held the flock
        again.release()
    finally:
        child.kill()
        child.wait()


def test_no_flock_support_says_the_run_is_not_locked(tmp_path, monkeypatch, capfd):
    import errno
    import fcntl

    def unsupported(fd, op):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    lock = RunLock.acquire(tmp_path)
    lock.release()
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("reglab: note:") and "not locked" in err, err


@pytest.mark.parametrize("how", ["fresh", "overwrite", "resume"])
def test_a_run_directory_that_is_a_link_trains(tmp_path, capfd, how):
    """runs/x -> elsewhere/x: the run directory itself may be a link (only paths below it may not)."""
    target = tmp_path / "elsewhere" / "x"
    target.mkdir(parents=True)
    link = tmp_path / "runs" / "x"
    link.parent.mkdir()
    link.symlink_to(target)
    fresh = ["train", "quick", *SYN, "train.epochs=1", f"run.dir={link}", "--quiet"]
    if how != "fresh":
        code, _, err = cli_run(fresh, capfd)
        assert code == 0, err
    argv = {
        "fresh": fresh,
        "overwrite": [*fresh, "--overwrite"],
        "resume": ["train", "--resume", link, "train.epochs=2", "--quiet"],
    }[how]
    code, _, err = cli_run(argv, capfd)
    assert code == 0, err
    assert link.is_symlink() and (target / "summary.json").is_file()
    assert load_checkpoint(target / "checkpoints" / "last.safetensors")["epoch"] == (2 if how == "resume" else 1)


def _strip_schedule(run_dir: Path) -> None:
    """Make a run's checkpoints look like ones written before reglab recorded the schedule length."""
    for name in ("best", "last"):
        path = run_dir / "checkpoints" / f"{name}.safetensors"
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata()
        tree = json.loads(meta["reglab"])
        tree["__dict__"].pop("schedule")
        save_file(load_file(str(path)), str(path), metadata={"format": meta["format"], "reglab": json.dumps(tree)})


def _cosine(step, total, lr=0.2):
    return lr * 0.5 * (1 + np.cos(np.pi * step / total))


def test_extending_an_old_checkpoint_killed_before_its_first_checkpoint_still_rebuilds(work, capfd, monkeypatch):
    """An old checkpoint (no schedule field) resumed with more epochs, killed before the first new checkpoint
    (config.yaml already says 4 epochs), then a plain --resume: still the rebuilt 4-epoch schedule."""
    import reglab.train.saving as saving_mod

    _strip_schedule(work)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(saving_mod, "save_checkpoint", killed)
    code, _, err = cli_run(["train", "--resume", work, "train.epochs=4", "--quiet"], capfd)
    assert code == 130 and "train.epochs 2 -> 4" in err, err
    assert "epochs: 4" in (work / "config.yaml").read_text()
    monkeypatch.undo()
    code, _, err = cli_run(["train", "--resume", work, "--quiet"], capfd)
    assert code == 0, err
    assert "reglab: note: train.epochs 2 -> 4: the cosine lr schedule" in err, err
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[2]["lr"] == pytest.approx(_cosine(8, 16), rel=1e-6)
    assert rows[3]["lr"] == pytest.approx(_cosine(12, 16), rel=1e-6)
    records = [json.loads(line) for line in (work / "resumes.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["epochs_before"], r["epochs_after"]) for r in records] == [(2, 2, 4), (2, 2, 4)]


def test_an_extended_schedule_is_recorded_in_the_run_directory(work, capfd):
    code, _, err = cli_run(["train", "--resume", work, "train.epochs=4", "--quiet"], capfd)
    assert code == 0, err
    (rec,) = [json.loads(line) for line in (work / "resumes.jsonl").read_text().splitlines()]
    assert rec["epoch"] == 2 and rec["step"] == 8 and rec["epochs_before"] == 2 and rec["epochs_after"] == 4
    assert rec["schedule"] == "cosine" and rec["rebuilt"] is True
    assert rec["lr"] == pytest.approx(_cosine(8, 16), rel=1e-6)
    code, _, err = cli_run(["train", "--resume", work, "--quiet"], capfd)  # nothing changed: no new record
    assert code == 0, err
    assert len((work / "resumes.jsonl").read_text().splitlines()) == 1
    code, _, err = cli_run(
        ["train", "quick", *SYN, "train.epochs=1", f"run.dir={work}", "--overwrite", "--quiet"], capfd
    )
    assert code == 0, err
    assert not (work / "resumes.jsonl").exists()  # a new run has no resumes


def test_recipes_with_merge_keys_load_and_duplicates_are_still_refused(tmp_path, capfd):
    from reglab.typedyaml import load_yaml

    tree = load_yaml(
        "base: &b {lr: 0.1, momentum: 0.8}\nx:\n  <<: *b\n  lr: 0.5\ny:\n  <<: [*b, {nesterov: true}]\n", "t"
    )
    assert tree["x"] == {"lr": 0.5, "momentum": 0.8} and tree["y"] == {
        "lr": 0.1,
        "momentum": 0.8,
        "nesterov": True,
    }
    recipe = tmp_path / "merge.yaml"
    recipe.write_text("optim:\n  <<: &sgd {lr: 0.05, momentum: 0.85}\n  lr: 0.3\n")
    cfg = load_config(recipe, [])
    assert cfg.optim.lr == 0.3 and cfg.optim.momentum == 0.85
    dup = tmp_path / "dup_merge.yaml"
    dup.write_text("optim:\n  <<: {momentum: 0.85}\n  lr: 0.3\n  lr: 0.4\n")
    code, _, err = cli_run(["config", dup], capfd)
    one_error(code, err, "found duplicate key 'lr' (first at line 3)", "line 4")
    with pytest.raises(UserError, match="found duplicate key 'momentum'"):  # inside a merged mapping
        load_yaml("optim:\n  <<: {momentum: 0.85, momentum: 0.9}\n", "t")
    layers = ["&a {x0: 1}"] + [
        f"&{c} {{<<: [{', '.join([f'*{p}'] * 9)}], x{i + 1}: 1}}"
        for i, (p, c) in enumerate(zip("abcdefgh", "bcdefghi"))
    ]
    t0 = time.time()
    with pytest.raises(UserError, match="merge keys"):  # 9^8 keys if expanded (PyYAML: minutes)
        load_yaml(f"l: [{', '.join(layers)}]\n", "bomb")
    assert time.time() - t0 < 5


def test_the_checkpoint_write_test_hooks_see_checkpoints_only(tmp_path, monkeypatch):
    """The test hooks the kill tests wait on (tests/helpers/childsite/reglab_test_hooks.py): ``written`` while a
    checkpoint's temporary file is on disk and not yet renamed, ``saved`` after the rename; no event for the
    other files reglab writes through the same function."""
    from tests.helpers.childsite import reglab_test_hooks

    monkeypatch.setattr(ckmod, "write_file", ckmod.write_file)  # undone after the test: install() replaces
    monkeypatch.setattr(ckmod, "atomic_write_bytes", ckmod.atomic_write_bytes)  # both in the module
    path = tmp_path / "checkpoints" / "last.safetensors"
    with EventServer() as events:
        reglab_test_hooks.install(events.spec(written="tell", saved="tell"))
        ckmod.atomic_write_text(tmp_path / "summary.json", "{}", root=tmp_path)
        assert not events.pending()
        ckmod.save_checkpoint(path, {"epoch": 1}, root=tmp_path)
        written, saved = events.next(), events.next()
        assert not events.pending()
    assert (written.kind, written.pid, written.args) == ("written", os.getpid(), ["last.safetensors"])
    assert (saved.kind, saved.args) == ("saved", ["last.safetensors"])
    assert load_checkpoint(path)["epoch"] == 1


def test_damaged_metrics_and_resume_records_are_one_line_errors(tmp_path):
    from reglab.errors import UserError
    from reglab.train.rundir import RESUMES, RunDir

    rd = RunDir(tmp_path)
    assert rd.read_metrics() == [] and rd.read_resumes() == []
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "val_acc": 50}\n\n{"epoch": "2"}\n')
    (tmp_path / RESUMES).write_text('{"epoch": 3}\nnot json\n')
    import pytest

    with pytest.raises(UserError, match=r"metrics.jsonl: line 3 is not a metrics row"):
        rd.read_metrics()
    with pytest.raises(UserError, match=r"line 2 is not a resume record"):
        rd.read_resumes()
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    assert [r["epoch"] for r in rd.read_metrics()] == [1, 2]
