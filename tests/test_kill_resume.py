"""Crash safety: a training process killed with SIGKILL at random moments, and resumed after each kill with
``reglab train --resume DIR``, ends bit-identical to an uninterrupted run; no checkpoint on disk is ever
unreadable.

The uninterrupted reference is a plain ``python -m reglab train`` subprocess. The killed runs are real
processes too, forked from a "zygote" interpreter that has already imported torch and reglab and that calls
``reglab.cli.main(argv)`` in each child, exactly what ``python -m reglab`` runs, minus the ~5 s import that
would otherwise dominate 13 starts on a 2-core machine. Kill moments (seeded):

* ``time``: a uniformly random delay after the start: before the run directory exists, while it has no
  checkpoint yet, inside training steps, during evaluation or a write;
* ``write``: with ``REGLAB_TEST_SLOW_SAVE`` (a sleep between writing a checkpoint's temporary file and its
  rename), the moment a checkpoint's temporary file appears, plus a random fraction of the sleep: the process
  dies in the middle of a checkpoint write.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from reglab.train.checkpoint import load_checkpoint
from reglab.train.rundir import RunDir, load_run_config

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 5
CFG = [
    "data.dataset=synthetic",
    "data.synthetic_train=600",
    "data.synthetic_test=200",
    "data.val_size=100",
    "model.name=resnet20",
    "model.channels=[8,16,32]",
    "model.blocks=[1,1,1]",
    "train.batch_size=50",
    "train.eval_batch_size=500",
    f"train.epochs={EPOCHS}",
    "train.label_smoothing=0.1",
    "optim.lr=0.2",
    "sched.warmup_epochs=0.5",
    "ema.enabled=true",
    "ema.decay=0.9",
    "mix.mixup_alpha=0.4",
    "run.checkpoint_every=1",
    "run.device=cpu",
    "run.threads=1",
]
TIMING = {"epoch_s", "images_per_s", "wall_time_s"}
SEED = int(os.environ.get("REGLAB_KILL_SEED", "9"))  # another seed, another sequence of kill moments
SLOW_SAVE = 0.3  # seconds between a checkpoint's temporary file and its rename, in `write` mode

ZYGOTE = r"""
import json, os, sys, traceback
import torch
torch.set_num_threads(1)
import matplotlib.pyplot
import reglab.cli, reglab.train.loop, reglab.track, reglab.data.datasets
print(json.dumps({"ready": os.getpid()}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "start":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.environ.pop("REGLAB_TEST_SLOW_SAVE", None)
                os.environ.update(req["env"])
                code = reglab.cli.main(req["argv"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
    elif req["op"] == "wait":
        flags = os.WNOHANG if req.get("nohang") else 0
        pid, status = os.waitpid(req["pid"], flags)
        print(json.dumps({"done": pid != 0, "code": os.waitstatus_to_exitcode(status) if pid else None}),
              flush=True)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGLAB_")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = "1"
    return env


class Zygote:
    """An interpreter with reglab imported that forks a child per command (see the module docstring)."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE], env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert "ready" in self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        return json.loads(line)

    def _ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def start(self, argv: list[str], log: Path, env: dict[str, str]) -> int:
        return self._ask(op="start", argv=argv, log=str(log), env=env)["pid"]

    def poll(self, pid: int) -> int | None:
        out = self._ask(op="wait", pid=pid, nohang=True)
        return out["code"] if out["done"] else None

    def wait(self, pid: int) -> int:
        return self._ask(op="wait", pid=pid)["code"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def temporaries(d: Path) -> list[str]:
    return sorted(p.name for p in [*d.glob(".*.tmp*"), *d.glob("checkpoints/.*.tmp*")])


def check_readable(d: Path) -> int | None:
    """Every file a reader relies on is intact; returns the epoch of checkpoints/last (None if absent)."""
    if not (d / "config.yaml").is_file():
        return None
    load_run_config(d)
    RunDir(d).read_metrics()
    for path in sorted((d / "checkpoints").glob("*.safetensors")):
        load_checkpoint(path)  # raises a UserError for a truncated or corrupt file
    last = d / "checkpoints" / "last.safetensors"
    return load_checkpoint(last)["epoch"] if last.is_file() else None


def assert_same_state(a, b, where="state"):
    """Equal nested checkpoint states: tensors bit for bit (elapsed wall time aside)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, dict):
        keys = set(a) - {"elapsed"}
        assert keys == set(b) - {"elapsed"}, where
        for k in keys:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def _wait_for_temporary(zyg: Zygote, pid: int, d: Path, target: str, timeout: float = 120) -> bool:
    """Poll until the temporary file of checkpoint ``target`` (best, epoch_N or last) appears (for ``best``, in an
    epoch that does not improve on it, that of epoch_N); False if the child exits first."""
    stale = set(temporaries(d))
    prefixes = (".best.", ".epoch_") if target == "best" else (f".{target}",)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(n.startswith(prefixes) for n in set(temporaries(d)) - stale):
            return True
        if zyg.poll(pid) is not None:
            return False
        time.sleep(0.003)
    raise AssertionError("no checkpoint write seen")


MODES = ["early", "time", "write", "time", "time", "write", "early", "time", "write", "time", "time", "write"]


def _wait_for_line(zyg: Zygote, pid: int, log: Path, needle: str, count: int, timeout: float = 120) -> bool:
    """Poll until the child's log holds ``count`` lines matching ``needle``; False if it exits first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log.read_text() if log.is_file() else ""
        if sum(bool(re.match(needle, line)) for line in text.splitlines()) >= count:
            return True
        if zyg.poll(pid) is not None:
            return False
        time.sleep(0.005)
    raise AssertionError(f"no {needle!r} line")


def _epoch_seconds(logs: list[Path]) -> float:
    """The fastest epoch seen so far (from the children's ``epoch k/N | ... | 0.4s (...)`` lines), 0.3 s before
    any epoch finished: a delay of at most half of it after an epoch starts lands inside that epoch, on a quiet
    or a busy machine."""
    times = [float(m) for p in logs if p.is_file() for m in re.findall(r"\| ([0-9.]+)s \(", p.read_text())]
    return min(times, default=0.3)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill")
    ref = subprocess.Popen(
        [sys.executable, "-m", "reglab", "train", "quick", *CFG, f"run.dir={tmp / 'ref'}", "--quiet"],
        cwd=tmp,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    zyg = Zygote()
    d = tmp / "killed"
    rng = random.Random(SEED)
    kills: list[dict] = []
    logs: list[Path] = []
    try:
        for mode in MODES:
            fresh = not (d / "config.yaml").is_file()
            argv = (
                ["train", "quick", *CFG, f"run.dir={d}", "--quiet"]
                if fresh
                else ["train", "--resume", str(d), "--quiet"]
            )
            env = {"REGLAB_TEST_SLOW_SAVE": str(SLOW_SAVE)} if mode == "write" else {}
            before = check_readable(d)
            stale = set(temporaries(d))
            logs.append(tmp / f"child{len(logs)}.log")
            pid = zyg.start(argv, logs[-1], env)
            if mode == "early":  # during start-up: before the run directory exists, or before training starts
                time.sleep(rng.uniform(0.0, 0.3))
                alive = zyg.poll(pid) is None
            elif mode == "time":  # inside the training steps of the first or second epoch this process runs
                done = rng.choice([0, 1]) if 1 < len(kills) and (before or 0) < EPOCHS - 2 else 0
                alive = _wait_for_line(
                    zyg, pid, logs[-1], r"reglab: \S+ \| " if done == 0 else "epoch ", max(done, 1)
                )
                time.sleep(rng.uniform(0.02, 0.5) * _epoch_seconds(logs))
                alive = alive and zyg.poll(pid) is None
            else:  # in the middle of a checkpoint write
                alive = _wait_for_temporary(zyg, pid, d, rng.choice(["best", "epoch_", "last"]))
                time.sleep(rng.uniform(0, SLOW_SAVE * 0.8))
            assert alive, f"the run ended before kill {len(kills) + 1} ({kills}): {logs[-1].read_text()[-2000:]}"
            mid_write = [n for n in temporaries(d) if "safetensors" in n and n not in stale]
            os.kill(pid, signal.SIGKILL)
            assert zyg.wait(pid) == -signal.SIGKILL
            after = check_readable(d)
            kills.append(
                {
                    "mode": mode,
                    "fresh": fresh,
                    "last_before": before,
                    "last_after": after,
                    "config_after": (d / "config.yaml").is_file(),
                    "mid_write": mid_write,
                    "temporaries": temporaries(d),
                }
            )
        logs.append(tmp / "final.log")
        code = zyg.wait(zyg.start(["train", "--resume", str(d), "--quiet"], logs[-1], {}))
    finally:
        zyg.close()
    out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    log = "".join(f"--- {p.name}\n{p.read_text() if p.is_file() else ''}" for p in logs)
    assert code == 0, log[-3000:]
    return tmp / "ref", d, kills, log


def test_enough_kills_at_the_moments_that_matter(crashed):
    _, _, kills, _ = crashed
    assert len(kills) >= 10
    writes = [k for k in kills if k["mid_write"]]
    assert len(writes) >= 4, kills  # killed while a checkpoint's temporary file was on disk
    assert any(k["last_after"] is None for k in kills), "no kill before the first checkpoint"
    assert any(k["last_after"] is not None and k["mode"] == "time" for k in kills)
    for k in kills:  # a kill never loses a finished checkpoint
        assert k["last_after"] == k["last_before"] or (k["last_before"] or 0) < (k["last_after"] or 0), k
    summary = ", ".join(
        f"{k['mode']}:{k['last_before']}->{k['last_after']}{'*' if k['mid_write'] else ''}" for k in kills
    )
    print(f"\n{len(kills)} kills (mode:last epoch before->after, * = mid checkpoint write): {summary}")


def test_resumed_run_is_bit_identical(crashed):
    ref, d, _, log = crashed
    names = sorted(p.name for p in (ref / "checkpoints").glob("*.safetensors"))
    assert names == sorted(p.name for p in (d / "checkpoints").glob("*.safetensors"))
    assert "last.safetensors" in names and f"epoch_{EPOCHS}.safetensors" in names
    for name in names:
        assert_same_state(
            load_checkpoint(ref / "checkpoints" / name), load_checkpoint(d / "checkpoints" / name), name
        )
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    rows_ref, rows = RunDir(ref).read_metrics(), RunDir(d).read_metrics()
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    assert strip(rows) == strip(rows_ref)
    csv_ref, csv = ((p / "metrics.csv").read_text().splitlines() for p in (ref, d))
    assert len(csv) == len(csv_ref) == EPOCHS + 1 and csv[0] == csv_ref[0]
    s_ref, s = (json.loads((p / "summary.json").read_text()) for p in (ref, d))
    for key in (
        "test_acc",
        "test_loss",
        "best_val_acc",
        "best_epoch",
        "final_val_acc",
        "final_train_loss",
        "final_train_acc",
        "epochs",
        "ema_test_acc",
        "params",
    ):
        assert s[key] == s_ref[key], key
    assert temporaries(d) == []  # the final resume cleared whatever the kills left
    assert "Traceback" not in log


def test_resume_before_the_first_checkpoint_restarts_with_a_message(crashed):
    _, _, kills, log = crashed
    assert any(k["config_after"] and k["last_after"] is None for k in kills), (
        "no kill left a run without checkpoint"
    )
    assert "has no checkpoint yet (it stopped in its first epoch); starting it again from the beginning" in log
