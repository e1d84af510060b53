"""Multi-node DDP on one machine: 2 "nodes" x 1 process against 1 node x 2 processes (torchrun, gloo, CPU).

Two separate torchrun agents, ``--nnodes 2 --nproc-per-node 1 --node-rank 0`` / ``1``, meet through a c10d
rendezvous on a free localhost port and train the tiny config of tests/helpers/ddp.py (crop, flip, mixup, EMA,
sync BN, 2 epochs) through ``-m reglab train``; one ``torchrun --standalone --nproc-per-node 2`` trains the same
config. Same world size, same backend, same rank -> data and augmentation mapping: the claim is bit equality of
every metrics row (wall-clock fields aside), of summary.json (timings aside) and of every tensor in the final
checkpoint (model, EMA, optimizer state, RNG and loader state).

Which agent becomes rank 0 is the rendezvous's decision, not ``--node-rank``'s: with ``--rdzv-backend c10d``
torchrun ignores ``--node-rank`` (it warns so) and numbers the agents in the sorted order of (host name, agent
pid). Here both agents run on one host, so the agent started first (the lower pid) normally gets rank 0; the
test starts the ``--node-rank 1`` agent first, so normally the ranks are the other way round from the flags.
The comparison does not depend on the order: both agents get the same absolute ``run.dir`` (a shared file
system on a real cluster), whichever is rank 0 writes it, and a process's share of the data and its random
streams follow its rank, not its node. The test reads each agent's ``group_rank`` from torchrun's log and checks
that exactly the rank-0 agent reported the run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from reglab.train.checkpoint import load_checkpoint
from tests.helpers.ddp import AUG, TINY, ddp_env

# slow: three torchrun agents, 74-93 s on a shared 2-core machine
pytestmark = pytest.mark.slow

CONFIG = [*TINY, *AUG, "train.sync_bn=true"]
TIMEOUT_S = 420  # per torchrun agent; the whole test took 74-93 s here (2 cores, shared with an experiment)
WALL = ("epoch_s", "images_per_s", "wall_time_s", "setup_s", "checkpoint_s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc): torchrun starts its workers in sessions of their own, so
    a signal to the agent's process group does not reach them."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


class Agent:
    """One torchrun agent with its output in files (no pipe can fill while the test waits on another agent)."""

    def __init__(self, name: str, torchrun: list[str], run_dir: Path, out: Path):
        self.name = name
        self.stdout_path, self.stderr_path = out / f"{name}.out", out / f"{name}.err"
        env = ddp_env()
        env["LOGLEVEL"] = "INFO"  # torchrun's rendezvous result (group_rank=...) goes to stderr
        with open(self.stdout_path, "w") as o, open(self.stderr_path, "w") as e:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    *torchrun,
                    "-m",
                    "reglab",
                    "train",
                    "quick",
                    *CONFIG,
                    f"run.dir={run_dir}",
                ],
                cwd=out,
                env=env,
                stdout=o,
                stderr=e,
                text=True,
                start_new_session=True,
            )
        self.deadline = time.monotonic() + TIMEOUT_S

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self) -> None:
        """SIGTERM to the agent (torchrun then stops its workers), SIGKILL to whatever is left 20 s later."""
        if self.proc.poll() is not None:
            return
        family = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@contextmanager
def agents():
    """The agents started inside; on leaving (also on a failure or timeout) none of them or their workers runs."""
    started: list[Agent] = []
    try:
        yield started
    finally:
        for a in started:
            a.stop()


def wait_all(started: list[Agent]) -> None:
    """Wait for every agent, each within its own time limit; stop all as soon as one fails or runs late (the
    other node would wait in the rendezvous or a collective until its own timeout)."""
    while any(a.proc.poll() is None for a in started):
        for a in started:
            rc = a.proc.poll()
            if rc not in (None, 0):
                pytest.fail(
                    f"{a.name} exited with {rc}:\nstdout:\n{a.stdout[-2000:]}\nstderr:\n{a.stderr[-6000:]}"
                )
            if rc is None and time.monotonic() > a.deadline:
                pytest.fail(f"{a.name} still running after {TIMEOUT_S} s:\nstderr:\n{a.stderr[-6000:]}")
        time.sleep(0.5)
    for a in started:
        assert a.proc.returncode == 0, f"{a.name}:\n{a.stderr[-6000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-multinode")
    port, t0 = free_port(), time.monotonic()
    rdzv = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"reglab-test-{port}"]
    with agents() as started:
        for n in (1, 0):  # --node-rank 1 first: it normally becomes rank 0 (see the module docstring)
            node = ["--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(n), *rdzv]
            started.append(Agent(f"node{n}", node, out / "multi", out))
        started.append(Agent("single", ["--standalone", "--nproc-per-node", "2"], out / "single", out))
        wait_all(started)
    wall = time.monotonic() - t0
    print(f"\nmulti-node test: 3 torchrun agents (4 training processes) at once, {wall:.0f} s")
    return out, {a.name: a for a in started}


def group_rank(agent: Agent) -> int:
    found = re.findall(r"group_rank=(\d+)", agent.stderr)
    assert len(found) == 1, agent.stderr[-4000:]
    return int(found[0])


def test_two_agents_form_one_world_of_two(runs):
    out, by = runs
    ranks = {n: group_rank(by[f"node{n}"]) for n in (0, 1)}
    assert sorted(ranks.values()) == [0, 1]
    for n in (0, 1):
        assert "group_world_size=2" in by[f"node{n}"].stderr
    assert "node_rank is only used for static rdzv_backend" in by["node1"].stderr  # --node-rank is ignored
    rank0 = next(n for n in (0, 1) if ranks[n] == 0)
    print(f"\n--node-rank -> rank given by the c10d rendezvous: {ranks}")
    # only the rank-0 process reports (and writes the run directory); the other prints nothing on stdout
    assert f"run dir: {out / 'multi'}" in by[f"node{rank0}"].stdout
    assert by[f"node{1 - rank0}"].stdout == ""
    assert load_checkpoint(out / "multi" / "checkpoints" / "last.safetensors")["meta"]["world_size"] == 2


def _rows(d: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(x).items() if k not in WALL}
        for x in (d / "metrics.jsonl").read_text().splitlines()
    ]


def test_metrics_bit_equal_to_one_node(runs):
    out, _ = runs
    multi, single = _rows(out / "multi"), _rows(out / "single")
    assert len(single) == 2 and single[-1]["test_acc"] is not None
    assert multi == single  # exact float equality of every loss and accuracy, per epoch
    s_multi, s_single = (
        {k: v for k, v in json.loads((out / d / "summary.json").read_text()).items() if k not in WALL}
        for d in ("multi", "single")
    )
    assert s_multi == s_single


def _tensors(x, path: str = ""):
    if isinstance(x, torch.Tensor):
        yield path, x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _tensors(v, f"{path}/{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _tensors(v, f"{path}/{i}")


def test_final_checkpoint_bit_equal_to_one_node(runs):
    out, _ = runs
    multi, single = (load_checkpoint(out / d / "checkpoints" / "last.safetensors") for d in ("multi", "single"))
    assert multi["epoch"] == single["epoch"] == 2 and multi["step"] == single["step"] == 20
    tm, ts = dict(_tensors(multi)), dict(_tensors(single))
    assert tm.keys() == ts.keys() and len(ts) > 100
    assert any(k.startswith("/model/") for k in ts) and any(k.startswith("/ema/") for k in ts)
    different = [k for k in ts if not (tm[k].dtype == ts[k].dtype and torch.equal(tm[k], ts[k]))]
    assert not different, different[:10]
