"""Crash safety: a training process killed with SIGKILL at random moments, and resumed after each kill with
``reglab train --resume DIR``, ends bit-identical to an uninterrupted run; no checkpoint on disk is ever
unreadable.

The uninterrupted reference is a plain ``python -m reglab train`` subprocess. The killed runs are real
processes too, forked from a "zygote" interpreter that has already imported torch and reglab and that calls
``reglab.cli.main(argv)`` in each child, exactly what ``python -m reglab`` runs, minus the ~5 s import that
would otherwise dominate 13 starts on a 2-core machine. Each child's stdout and stderr come to the test over a
socket (the test copies them to the child's log file): the test reads the child's lines as they are printed,
and the end of that stream is the child's end. Kill moments (seeded):

* ``early``: a random delay (up to 0.3 s) after the start: before the run directory exists, or while it has
  no checkpoint yet;
* ``time``: a random fraction of an epoch after the child printed its start line (or an epoch line): inside
  training steps, during evaluation or a write;
* ``write``: with the test hook ``written`` (tests/helpers/childsite/reglab_test_hooks.py) the child reports
  each checkpoint whose temporary file it has written and fsynced, and waits for the test's answer before it
  renames the file; the test answers until the chosen checkpoint (best, epoch_N or last) comes, then kills
  the child: it dies in the middle of that checkpoint write, its temporary file on disk.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
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
from tests.helpers.configs import BATCHES, SYNTHETIC_600, TINY_RESNET
from tests.helpers.events import CHILDSITE, Event, EventServer
from tests.helpers.processes import checkout_env

# slow: the 13 runs are one fixture, 45 s on a quiet 2-core machine
pytestmark = pytest.mark.slow

EPOCHS = 5
CFG = [
    *SYNTHETIC_600,
    *TINY_RESNET,
    *BATCHES,
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
TIMEOUT_S = 300  # the longest the test waits for a child's line, checkpoint write or end before it fails

ZYGOTE = r"""
import json, os, socket, sys, traceback
import torch
torch.set_num_threads(1)
import matplotlib.pyplot
import reglab.cli, reglab.train.loop, reglab.track, reglab.data.datasets
sys.path.insert(0, sys.argv[1])
import reglab_test_hooks
print(json.dumps({"ready": os.getpid()}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "start":
        host, port = req["address"].rsplit(":", 1)
        out = socket.create_connection((host, int(port)))  # the child's stdout and stderr, to the test
        out.sendall(f"output {os.getpid()}\n".encode())
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(out.fileno(), 2)
                out.close()
                if req["hooks"]:
                    reglab_test_hooks.install(req["hooks"])
                code = reglab.cli.main(req["argv"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        out.close()
        print(json.dumps({"pid": pid}), flush=True)
    elif req["op"] == "wait":
        flags = os.WNOHANG if req.get("nohang") else 0
        pid, status = os.waitpid(req["pid"], flags)
        print(json.dumps({"done": pid != 0, "code": os.waitstatus_to_exitcode(status) if pid else None}),
              flush=True)
"""


class Zygote:
    """An interpreter with reglab imported that forks a child per command (see the module docstring)."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, str(CHILDSITE)],
            env=checkout_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
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

    def start(self, argv: list[str], address: str, hooks: dict | None) -> int:
        return self._ask(op="start", argv=argv, address=address, hooks=hooks)["pid"]

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


MODES = ["early", "time", "write", "time", "time", "write", "early", "time", "write", "time", "time", "write"]


class Child:
    """A child forked by the zygote: its pid and its output stream (stdout and stderr), which is copied to
    ``log`` as it is read and ends when the child does."""

    def __init__(self, zyg: Zygote, events: EventServer, argv: list[str], log: Path, hooks: dict | None = None):
        self.pid = zyg.start(argv, events.address, hooks)
        out = events.wait_for("output", what="the child's output stream")  # sent before the fork
        self.conn, self.text, self.log = out.conn, b"", log
        self.ended = False
        self._add(out.rest)

    def _add(self, chunk: bytes) -> None:
        self.text += chunk
        with self.log.open("ab") as fh:
            fh.write(chunk)

    def _read(self) -> None:
        """One chunk of output (the stream is readable); at its end, ``ended``."""
        chunk = self.conn.recv(65536)
        self._add(chunk)
        self.ended = not chunk

    def wait_for_lines(self, needle: str, count: int, timeout: float = TIMEOUT_S) -> bool:
        """Read the child's output until ``count`` complete lines match ``needle``; False if it ends first."""
        deadline = time.monotonic() + timeout
        while (
            sum(bool(re.match(needle, ln)) for ln in self.text.decode(errors="replace").split("\n")[:-1]) < count
        ):
            if self.ended:
                return False
            if not select.select([self.conn], [], [], max(deadline - time.monotonic(), 0))[0]:
                raise AssertionError(f"no {needle!r} line within {timeout} s")
            self._read()
        return True

    def wait_for_write(self, events: EventServer, target: str, timeout: float = TIMEOUT_S) -> Event | None:
        """Answer the child's ``written`` events until the temporary file of checkpoint ``target`` (best,
        epoch_ or last; for best, in an epoch that does not improve on it, that of epoch_N) is written: that
        event, unanswered (the child waits in its checkpoint write); None if the child ends first."""
        prefixes = ("best.", "epoch_") if target == "best" else (target,)
        deadline = time.monotonic() + timeout
        while not self.ended:
            ready = select.select([self.conn, events.sock], [], [], max(deadline - time.monotonic(), 0))[0]
            if not ready:
                raise AssertionError(f"no {target} checkpoint write within {timeout} s")
            if self.conn in ready:
                self._read()
            if events.sock in ready:
                ev = events.next(what="a checkpoint write")
                if ev.kind == "written" and ev.args[0].startswith(prefixes):
                    return ev
                ev.answer()
        return None

    def drain(self, timeout: float = TIMEOUT_S) -> None:
        """Read the rest of the output, until the child (and the stream) ended."""
        deadline = time.monotonic() + timeout
        while not self.ended:
            if not select.select([self.conn], [], [], max(deadline - time.monotonic(), 0))[0]:
                raise AssertionError(f"the child's output did not end within {timeout} s")
            self._read()
        self.conn.close()


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
        env=checkout_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    zyg = Zygote()
    events = EventServer()
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
            before = check_readable(d)
            stale = set(temporaries(d))
            logs.append(tmp / f"child{len(logs)}.log")
            hooks = events.spec(written="ask") if mode == "write" else None
            child = Child(zyg, events, argv, logs[-1], hooks)
            held = None
            if mode == "early":  # during start-up: before the run directory exists, or before training starts
                time.sleep(rng.uniform(0.0, 0.3))  # the kill moment itself, drawn at random: not a wait
                alive = zyg.poll(child.pid) is None
            elif mode == "time":  # inside the training steps of the first or second epoch this process runs
                done = rng.choice([0, 1]) if 1 < len(kills) and (before or 0) < EPOCHS - 2 else 0
                alive = child.wait_for_lines(r"reglab: \S+ \| " if done == 0 else "epoch ", max(done, 1))
                time.sleep(rng.uniform(0.02, 0.5) * _epoch_seconds(logs))  # the kill moment: random, not a wait
                alive = alive and zyg.poll(child.pid) is None
            else:  # in the middle of a checkpoint write: the child waits there for an answer that never comes
                held = child.wait_for_write(events, rng.choice(["best", "epoch_", "last"]))
                alive = held is not None
                rng.uniform(0, 0.24)  # unused: keeps each seed's sequence of kill moments (docs/reliability.md)
            assert alive, f"the run ended before kill {len(kills) + 1} ({kills}): {child.text.decode()[-2000:]}"
            mid_write = [n for n in temporaries(d) if "safetensors" in n and n not in stale]
            os.kill(child.pid, signal.SIGKILL)
            assert zyg.wait(child.pid) == -signal.SIGKILL
            child.drain()
            if held is not None:
                held.close()
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
        child = Child(zyg, events, ["train", "--resume", str(d), "--quiet"], logs[-1])
        child.drain()
        code = zyg.wait(child.pid)
    finally:
        events.close()
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
