"""Multi-process training (torchrun, DistributedDataParallel over gloo on CPU) against one process.

The claim, stated exactly: with ``train.sync_bn=true``, 2 processes with 25 images each compute the same
gradient at step 1, and the same weights after an epoch (10 steps), as 1 process with batch 50, within float
tolerance. With plain batch norm each process normalizes with its own 25 images' statistics, so the step is
a different computation (the negative control below measures the gap). Also: a 2-process run stopped after
epoch 1 and resumed ends bit-identical to an uninterrupted 2-process run (with crop, flip and mixup on, so
the per-rank augmentation streams are exercised), only rank 0 writes the run directory, and
``torchrun -m reglab train`` works end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reglab.config import load_config
from reglab.data import DeviceLoader
from reglab.data.datasets import Split
from reglab.train import run
from reglab.train.checkpoint import load_checkpoint
from tests.helpers.ddp import AUG, TINY, ddp_env

SCRIPT = r"""
import gc, json, os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from safetensors.torch import save_file
from reglab.config import load_config
from reglab.train import run
from reglab.train.rundir import load_run_config

out, tiny, aug = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
if rank:  # only rank 0 may write (or lock) the run directory: on the others every writer raises
    import reglab.train.checkpoint as ck, reglab.train.fsguard as fg, reglab.train.rundir as rd
    def forbidden(*args, **kwargs):
        raise AssertionError(f"rank {rank} tried to write or lock {args[:1]}")
    ck.write_file = ck.atomic_write_bytes = rd.remove_temporaries = forbidden
    fg.RunLock.acquire = forbidden
torch.distributed.init_process_group("gloo")  # one group for the several runs below (run() reuses it)
gc.disable()  # so that only run() itself can free the runs' DDP wrappers (they sit in reference cycles)

class Grads:
    all_ranks = True
    def __init__(self, path):
        self.path = path
    def on_step(self, r, step, loss, acc):
        if step == 1:
            save_file({n: p.grad.detach().clone().contiguous() for n, p in r.model.named_parameters()}, str(self.path))

class StopAfter1:
    def on_epoch_end(self, r, row):
        return r.epoch >= 1

def cfg(name, *extra):
    return load_config(None, [*tiny, f"run.dir={out / name}", *extra])

print("started", rank, flush=True)
for bn in ("sync", "plain"):
    res = run(cfg(f"{bn}-w{world}", f"train.sync_bn={bn == 'sync'}"),
              callbacks=[Grads(out / "grads" / f"{bn}-w{world}-r{rank}.safetensors")])
    (out / "grads" / f"{bn}-w{world}-r{rank}.json").write_text(json.dumps(res.metrics))
print("sync/plain finished", rank, flush=True)
run(cfg("A", *aug))
run(cfg("B", *aug), callbacks=[StopAfter1()])
c = load_run_config(out / "B")
c.run.dir = str(out / "B")
run(c, resume=True)
alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
print("DDP wrappers alive after the runs:", alive, flush=True)
torch.distributed.barrier()  # neither rank closes its connections while the other still talks to it
torch.distributed.destroy_process_group()
print("done", rank, flush=True)
sys.stderr.flush()
os._exit(0)  # the normal interpreter shutdown under torchrun is test_torchrun_cli_trains's
"""


def _failure(stdout: str, stderr: str) -> str:
    """What a failed torchrun printed: the ranks' progress lines, then the start of stderr (a crashed rank's own
    message and stacks come first; torchrun's summary of the failure follows them)."""
    return f"stdout:\n{stdout[-2000:]}\nstderr (start):\n{stderr[:6000]}"


def torchrun(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
        cwd=cwd,
        env=ddp_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """The 2-process script under torchrun, with the 1-process reference computed here meanwhile."""
    out = tmp_path_factory.mktemp("ddp")
    (out / "grads").mkdir()
    script = out / "script.py"
    script.write_text(SCRIPT)
    proc = torchrun(str(script), str(out), json.dumps(TINY), json.dumps(AUG), cwd=out)
    single = {}
    try:
        for bn in ("sync", "plain"):
            grads = {}

            class Grads:
                def on_step(self, r, step, loss, acc):
                    if step == 1:
                        grads.update({n: p.grad.detach().clone() for n, p in r.model.named_parameters()})  # noqa: B023

            res = run(
                load_config(None, [*TINY, f"run.dir={out / f'{bn}-w1'}", f"train.sync_bn={bn == 'sync'}"]),
                callbacks=[Grads()],
            )
            single[bn] = (grads, res.metrics)
        # The float noise floor: the same one-process run, rounding differently (channels_last kernels)
        run(load_config(None, [*TINY, f"run.dir={out / 'noise-w1'}", "train.channels_last=true"]))
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, _failure(stdout, stderr)
    return out, single, stdout


def rel_gap(a: dict, b: dict) -> float:
    """||a - b|| / ||b|| over all tensors together.

    Not element-wise: a ReLU whose input is within rounding of 0 in one run and not in the other passes a
    gradient element in one and blocks it in the other; such flips are expected between any two float32
    computations that round differently (channels_last vs contiguous alone shows them), and they are rare, so
    they move the norm a little but an element-wise maximum a lot."""
    diff = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in b)
    return (diff / sum(float((b[k].double() ** 2).sum()) for k in b)) ** 0.5


def test_sync_bn_gradient_at_step_1_equals_one_process(ddp):
    out, single, _ = ddp
    ref = single["sync"][0]
    g0 = load_file(str(out / "grads" / "sync-w2-r0.safetensors"))
    g1 = load_file(str(out / "grads" / "sync-w2-r1.safetensors"))
    assert g0.keys() == ref.keys() and len(ref) > 10
    for k in ref:
        assert torch.equal(g0[k], g1[k]), k  # DDP's all-reduce leaves every rank the same averaged gradient
    gap = rel_gap(g0, ref)
    print(f"\nsync BN: relative gradient difference at step 1 = {gap:.2e}")
    assert gap < 1e-5


def _weights(path: Path) -> dict:
    return {
        k: v
        for k, v in load_checkpoint(path / "checkpoints" / "last.safetensors")["model"].items()
        if v.is_floating_point()
    }


def test_sync_bn_weights_after_one_epoch_equal_one_process(ddp):
    """After 10 steps at lr 0.2 rounding differences have grown (ReLU inputs near 0 flip sides, and the
    trajectory amplifies them), so the tolerance is measured, not guessed: the gap between two one-process runs
    that differ only in rounding (channels_last vs contiguous kernels)."""
    out, single, _ = ddp
    w2, w1, noise = _weights(out / "sync-w2"), _weights(out / "sync-w1"), _weights(out / "noise-w1")
    assert load_checkpoint(out / "sync-w2" / "checkpoints" / "last.safetensors")["step"] == 10
    gap, floor = rel_gap(w2, w1), rel_gap(noise, w1)
    plain = rel_gap(_weights(out / "plain-w2"), _weights(out / "plain-w1"))
    print(
        f"\nrelative weight difference after 10 steps: sync BN {gap:.2e}, plain BN {plain:.2e}, "
        f"float noise floor (1 process, channels_last vs contiguous) {floor:.2e}"
    )
    assert gap < 2 * floor and plain > 10 * gap
    rows2 = json.loads((out / "grads" / "sync-w2-r0.json").read_text())
    rows1 = single["sync"][1]
    assert rows2[0]["train_loss"] == pytest.approx(rows1[0]["train_loss"], rel=1e-4)
    assert rows2[0]["val_loss"] == pytest.approx(rows1[0]["val_loss"], rel=1e-3)


def test_plain_bn_differs_by_local_batch_statistics(ddp):
    """The negative control: without sync BN the 2-process gradient is measurably not the 1-process one."""
    out, single, _ = ddp
    ref = single["plain"][0]
    g0 = load_file(str(out / "grads" / "plain-w2-r0.safetensors"))
    sync_gap = rel_gap(load_file(str(out / "grads" / "sync-w2-r0.safetensors")), single["sync"][0])
    plain_gap = rel_gap(g0, ref)
    print(f"\nplain BN: relative gradient difference at step 1 = {plain_gap:.2e} (sync BN: {sync_gap:.2e})")
    assert plain_gap > 1000 * sync_gap and plain_gap > 1e-2


def test_ddp_resume_is_bit_identical(ddp):
    out, _, _ = ddp
    a = load_checkpoint(out / "A" / "checkpoints" / "last.safetensors")
    b = load_checkpoint(out / "B" / "checkpoints" / "last.safetensors")
    assert a["epoch"] == b["epoch"] == 2 and a["meta"]["world_size"] == 2
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for i in a["optimizer"]["state"]:
        assert torch.equal(
            a["optimizer"]["state"][i]["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"]
        )

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("epoch_s", "images_per_s", "wall_time_s")} for r in rows]

    ra, rb = ([json.loads(x) for x in (out / d / "metrics.jsonl").read_text().splitlines()] for d in "AB")
    assert strip(ra) == strip(rb) and len(ra) == 2


def test_only_rank_0_writes_the_run_directory(ddp):
    """Rank 1 ran with every file writer (and the run-directory lock) replaced by one that raises, and finished
    all five runs."""
    out, _, stdout = ddp
    assert stdout.count("done") == 2
    for d in ("sync-w2", "plain-w2", "A", "B"):
        assert (out / d / "checkpoints" / "last.safetensors").is_file() and (out / d / "summary.json").is_file()
        assert not [p for p in (out / d).rglob("*") if ".tmp" in p.name]


def test_runs_free_their_ddp_wrapper(ddp):
    """Each run's DDP wrapper (which holds the process group and model-sized gradient buckets) is freed by
    run() itself, though it sits in a reference cycle and the script has the garbage collector off."""
    _, _, stdout = ddp
    assert stdout.count("DDP wrappers alive after the runs: 0") == 2, stdout


def test_ranks_take_disjoint_shards_of_the_global_batch_with_their_own_augmentation():
    from reglab.config import AugConfig
    from reglab.data.augment import build_transforms

    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8, generator=g)
    split = Split(image.repeat(40, 1, 1, 1), torch.arange(40))  # identical images: only augmentation differs
    raw, _ = build_transforms(AugConfig(crop_pad=2, flip=True))
    kw = dict(mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True, drop_last=True, uint8_transforms=raw, seed=3)
    one = DeviceLoader(split, 8, **kw)
    ranks = [DeviceLoader(split, 8, rank=r, world_size=2, **kw) for r in range(2)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 5
    for batch_one, b0, b1 in zip(one, *ranks):
        assert torch.equal(torch.cat([b0[1], b1[1]]), batch_one[1])  # the global batch, split in two halves
    passes = []
    for r in ranks:
        state = r.generator.get_state()
        r.set_epoch(1)
        first = torch.stack([x for x, _ in r])
        r.generator.set_state(state)
        r.set_epoch(1)
        assert torch.equal(torch.stack([x for x, _ in r]), first)  # reproducible from (seed, rank, epoch)
        passes.append(first)
    assert not torch.equal(passes[0], passes[1])  # but different on each rank
    with pytest.raises(ValueError):
        DeviceLoader(split, 9, rank=0, world_size=2, **kw)  # a global batch must split evenly


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("ddpcli")
    proc = torchrun(
        "-m",
        "reglab",
        "train",
        "quick",
        *TINY,
        "train.sync_bn=true",
        "train.amp=bf16",
        "run.dir=D",
        "--quiet",
        cwd=work,
    )
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, _failure(out, err)
    return work / "D", out, err


def test_torchrun_cli_trains(cli_run):
    """``torchrun -m reglab train`` end to end (resuming under torchrun is run() with resume=True, as above), with
    sync BN under bf16 autocast (what ``train.amp=auto`` picks on a CPU with bf16 instructions)."""
    d, out, err = cli_run
    assert "Traceback" not in err
    summary = json.loads((d / "summary.json").read_text())
    assert summary["precision"] == "bf16 autocast" and summary["final_train_loss"] < 10
    assert [json.loads(x)["epoch"] for x in (d / "metrics.jsonl").read_text().splitlines()] == [1]
    state = load_checkpoint(d / "checkpoints" / "last.safetensors")
    assert state["epoch"] == 1 and state["step"] == 10 and state["meta"]["world_size"] == 2
    assert json.loads((d / "summary.json").read_text())["epochs"] == 1
    assert sum(line.startswith("epoch ") for line in err.splitlines()) == 1  # progress from rank 0 only


def test_torchrun_bad_input_stops_every_rank_with_a_message(tmp_path):
    """Rank 0 alone finds the mistake (its run directory holds a run); every rank stops with a message, none
    hangs, and the existing run is untouched."""
    (tmp_path / "D").mkdir()
    (tmp_path / "D" / "config.yaml").write_text("kept: 1\n")
    proc = torchrun("-m", "reglab", "train", "quick", *TINY, "run.dir=D", "--quiet", cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "run directory D already holds a run" in err and "rank 1 stops too" in err
    assert "Traceback" not in err.split("torch/distributed/elastic")[0]  # none from reglab, before torchrun's own
    assert (tmp_path / "D" / "config.yaml").read_text() == "kept: 1\n"
    assert sorted(p.name for p in (tmp_path / "D").iterdir()) == ["config.yaml"]
