"""The GPU path (issue 8) on a real CUDA device: device-resident batches, a training step with no host sync,
GPU and CPU computing the same function, a compiled (CUDA-graph) run end to end, and ``train.cuda_graph``
against the eager step. Skipped where no CUDA device is present, as in CI; run on a GPU with
``python -m pytest tests/e2e/test_gpu.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reglab.config import load_config
from reglab.data import DeviceLoader
from reglab.data.augment import build_transforms
from reglab.data.datasets import Split
from reglab.models import create
from reglab.train import run
from reglab.train.checkpoint import load_checkpoint
from reglab.train.loop import Run
from reglab.train.optim import build_optimizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SYN = [
    "data.dataset=synthetic",
    "data.synthetic_train=2048",
    "data.synthetic_test=512",
    "data.val_size=256",
    "train.eval_batch_size=500",
    "run.device=cuda",
]
CUDA = torch.device("cuda")


def split(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(
        torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (n,), generator=g),
    )


def test_loader_batches_are_made_on_the_gpu_and_normalize_as_on_the_cpu():
    s = split()
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    gpu = DeviceLoader(s, 128, mean, std, device=CUDA, channels_last=True)
    cpu = DeviceLoader(s, 128, mean, std, device="cpu", channels_last=True)
    assert gpu.images.is_cuda and gpu.labels.is_cuda
    for (xg, yg), (xc, yc) in zip(gpu, cpu):
        assert xg.is_cuda and yg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-6)
        assert torch.equal(yg.cpu(), yc)
    cfg = load_config("fast-gpu-94", SYN)
    raw, floats = build_transforms(cfg.aug)
    aug = DeviceLoader(
        s,
        128,
        mean,
        std,
        device=CUDA,
        shuffle=True,
        drop_last=True,
        uint8_transforms=raw,
        float_transforms=floats,
        channels_last=True,
    )
    batches = list(aug)
    assert len(batches) == len(s) // 128 and all(x.is_cuda and x.shape == (128, 3, 32, 32) for x, _ in batches)


def _step(r: Run, x, y):
    with r.autocast():
        loss = r.criterion(r.forward(x), y)
    r.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    r.optimizer.step()
    r.scheduler.step()
    r.step += 1
    r.lookahead.update(r.model, r.step)
    return loss.detach()


def _without_sync(step, n: int = 3) -> list:
    """``n`` calls of ``step`` under CUDA's sync debug mode set to raise on any synchronizing call."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        return [step() for _ in range(n)]
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("recipe", ["fast-gpu-94", "fast-gpu-94-muon", "fast-gpu-resnet18"])
def test_training_step_makes_no_host_sync(recipe):
    """Batch (gather, crop, flip, normalize) -> bf16 forward -> loss -> backward -> SGD -> schedule -> lookahead,
    under CUDA's sync debug mode set to raise on any synchronizing call (a .item(), a D2H copy, a nonzero)."""
    cfg = load_config(recipe, [*SYN, "train.compile=false", "train.batch_size=256", "optim.lookahead=true"])
    r = Run(cfg, CUDA)
    assert r.autocast is not None  # train.amp=auto is bf16 on CUDA
    batches = iter(r.train_loader)
    _step(r, *next(batches))  # cuDNN picks its algorithms outside the checked steps
    losses = _without_sync(lambda: _step(r, *next(batches)))
    assert torch.isfinite(torch.stack(losses)).all()


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fused_gpu_optimizer_steps_like_the_cpu_one(name):
    """build_optimizer fuses on CUDA; three steps with fastnet's three parameter groups (64x lr on the norms)
    must move the weights as the CPU's (unfused) optimizer does."""
    cfg = load_config(
        "fast-gpu-94",
        [*SYN, f"optim.name={name}", "optim.lr=0.01", "sched.min_lr=0", f"optim.nesterov={name == 'sgd'}"],
    )
    torch.manual_seed(0)
    cpu = create("fastnet_half")
    gpu = create("fastnet_half").to(CUDA)
    gpu.load_state_dict(cpu.state_dict())
    opts = [build_optimizer(m, cfg.optim) for m in (cpu, gpu)]
    assert opts[1].defaults.get("fused") and not opts[0].defaults.get("fused")
    for _ in range(3):
        for p in cpu.parameters():
            p.grad = torch.randn_like(p)
        for p, q in zip(cpu.parameters(), gpu.parameters()):
            q.grad = p.grad.to(CUDA)
        for o in opts:
            o.step()
    for p, q in zip(cpu.parameters(), gpu.parameters()):
        torch.testing.assert_close(q.cpu(), p, rtol=1e-5, atol=1e-6)


@pytest.fixture
def no_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_gpu_and_cpu_compute_the_same_training_loss_and_gradients(no_tf32):
    torch.manual_seed(0)
    model = create("resnet20")
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    gpu_model = create("resnet20").to(CUDA)
    gpu_model.load_state_dict(model.state_dict())
    losses, grads = [], []
    for m, dev in ((model, "cpu"), (gpu_model, CUDA)):
        loss = F.cross_entropy(m(x.to(dev)), y.to(dev))
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten().cpu() for p in m.parameters()]))
    assert abs(losses[0] - losses[1]) < 1e-4
    assert (grads[0] - grads[1]).norm() / grads[0].norm() < 1e-3


def test_compiled_cuda_graph_run_matches_eager_and_saves_a_cpu_loadable_checkpoint(tmp_path):
    """fast-gpu-resnet18's compiled path (torch.compile, mode reduce-overhead: CUDA graphs) against the same run
    in eager mode: the same losses per epoch up to bf16 rounding, and the same evaluation."""
    base = [
        *SYN,
        "model.name=resnet20",
        "train.epochs=3",
        "train.batch_size=256",
        "sched.warmup_epochs=1",
        "optim.lr=0.05",
    ]
    eager = run(load_config("fast-gpu-resnet18", [*base, "train.compile=false", f"run.dir={tmp_path / 'e'}"]))
    cfg = load_config("fast-gpu-resnet18", [*base, f"run.dir={tmp_path / 'c'}", "train.cudnn_benchmark=true"])
    assert cfg.train.compile and cfg.train.compile_mode == "reduce-overhead"
    compiled = run(cfg)
    assert torch.backends.cudnn.benchmark
    assert [m["epoch"] for m in compiled.metrics] == [1, 2, 3]
    for a, b in zip(eager.metrics, compiled.metrics):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.05 * a["train_loss"], (a, b)
        assert abs(a["val_acc"] - b["val_acc"]) < 5.0, (a, b)
    assert abs(eager.summary["test_acc"] - compiled.summary["test_acc"]) < 5.0
    state = load_checkpoint(next((compiled.run_dir / "checkpoints").glob("last.*")), torch.device("cpu"))
    assert all(not t.is_cuda for t in state["model"].values())


def _graph_step(r: Run, x, y):
    logits, loss = r.step_graph(x, y)
    r.optimizer.step()
    r.scheduler.step()
    r.step += 1
    r.lookahead.update(r.model, r.step)
    return loss.detach().clone()


def test_cuda_graph_step_makes_no_host_sync_once_captured():
    cfg = load_config("fast-gpu-94", [*SYN, "train.batch_size=256", "train.cuda_graph=true"])
    r = Run(cfg, CUDA)
    assert r.step_graph is not None
    batches = iter(r.train_loader)
    for _ in range(r.step_graph.warmup + 1):  # eager warm-up steps, then the capture and its first replay
        _graph_step(r, *next(batches))
    assert r.step_graph.captures == 1
    losses = _without_sync(lambda: _graph_step(r, *next(batches)))
    assert torch.isfinite(torch.stack(losses)).all() and r.step_graph.captures == 1


@pytest.fixture
def deterministic():
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def test_cuda_graph_run_trains_like_the_eager_run(no_tf32, deterministic):
    """fp32, 3 epochs; the stem's bias freezes after epoch 1, so the step is captured twice. Per-epoch training
    loss and the final weights as the eager loop's (the same kernels; rtol for reduction order)."""
    base = [
        *SYN,
        "train.epochs=3",
        "train.batch_size=256",
        "train.freeze=[{match: whiten.bias, start_epoch: 1}]",
        "train.amp=off",
    ]
    runs = []
    for graph in (False, True):
        r = Run(load_config("fast-gpu-94", [*base, f"train.cuda_graph={graph}"]), CUDA)
        losses = []
        for _ in range(3):
            losses.append(r.train_epoch([])["train_loss"])
            r.epoch += 1
        runs.append((r, losses))
    (eager, le), (graphed, lg) = runs
    assert graphed.step_graph.captures == 2 and eager.step_graph is None
    assert lg == pytest.approx(le, rel=1e-3)
    for a, b in zip(eager.model.parameters(), graphed.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)


def test_cuda_graph_bf16_run_end_to_end(tmp_path):
    """The recipe's own path (bf16 autocast without its cast cache) through run(): it trains as the eager run."""
    base = [*SYN, "train.epochs=3", "train.batch_size=256"]
    eager = run(load_config("fast-gpu-94", [*base, f"run.dir={tmp_path / 'e'}"]))
    seen = []
    graphed = run(
        load_config("fast-gpu-94", [*base, "train.cuda_graph=true", f"run.dir={tmp_path / 'g'}"]),
        callbacks=[type("Spy", (), {"on_start": lambda self, r: seen.append(r)})()],
    )
    assert seen[0].step_graph.captures == 1
    for a, b in zip(eager.metrics, graphed.metrics):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.05 * a["train_loss"], (a, b)
    assert abs(eager.summary["test_acc"] - graphed.summary["test_acc"]) < 5.0
