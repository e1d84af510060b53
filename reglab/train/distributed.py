"""Multi-process data-parallel training: ``torchrun --nproc_per_node=N -m reglab train RECIPE ...``.

torchrun starts N copies of reglab and sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (and the rendezvous
address); :func:`setup` sees them and joins the process group (gloo on CPU, NCCL on CUDA, one GPU per local
rank). The model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` (Li et al., *PyTorch
Distributed: Experiences on Accelerating Data Parallel Training*, VLDB 2020), which averages gradients over
the ranks during the backward pass: with every rank's loss the mean over its ``B / N`` images, the averaged
gradient is the gradient of the mean loss over the global batch ``B``, i.e. that of one process with batch
``B``, up to floating-point summation order.

Conventions (see docs/reliability.md):

* ``train.batch_size`` is the *global* batch; it must be divisible by N. The learning rate therefore means the
  same as in a one-process run.
* Every rank holds the whole dataset on its device and draws the same per-epoch permutation; rank r takes its
  slice of each global batch (:class:`reglab.data.DeviceLoader`). Augmentation, mixing and dropout randomness
  are reseeded per (seed, rank, epoch), so ranks differ but a resumed run repeats them exactly.
* Batch norm: by default each rank normalizes with its own batch statistics (``B / N`` images), so a
  multi-process run is *not* the same computation as one process with batch ``B``. ``train.sync_bn=true``
  computes the statistics over the global batch (Ioffe & Szegedy 2015 statistics, reduced across ranks):
  :class:`torch.nn.SyncBatchNorm` on CUDA, :class:`SyncBatchNormCPU` below on CPU (torch's needs a GPU).
  With it the step equals the one-process step within float tolerance (tests/e2e/test_ddp.py).
* Metrics: loss and accuracy sums are all-reduced once per epoch; validation and test sets are split over
  the ranks and their sums reduced, so every rank computes the same metrics row. After each epoch rank 0's
  batch-norm buffers (and EMA) are broadcast, so every rank holds exactly the model rank 0 saves.
* Only rank 0 writes the run directory; on ``--resume`` every rank reads the checkpoint.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..data.datasets import Split
from ..data.loader import epoch_seed
from ..errors import UserError

__all__ = [
    "Dist",
    "setup",
    "teardown",
    "all_sum",
    "any_rank",
    "agree",
    "broadcast_text",
    "broadcast_state",
    "wrap",
    "shard",
    "SyncBatchNormCPU",
    "convert_sync_batchnorm",
    "epoch_seed",
]


@dataclass
class Dist:
    """This process's place in a multi-process run (world 1, rank 0 when there is none)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this module initialized the process group (and destroys it at the end)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment variables; (1, 0, 0) without them."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError("WORLD_SIZE / RANK / LOCAL_RANK must be integers (they are set by torchrun).") from None
    return world, rank, local


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group when started by torchrun (or use one the caller initialized)."""
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        owns = False
    else:
        world, rank, local = env_world()
        owns = world > 1
    if world <= 1:
        return Dist(device=device), device
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} GPUs; start "
                "torchrun with --nproc_per_node at most the number of GPUs."
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UserError(f"multi-process training runs on CPU (gloo) or CUDA (NCCL), not on {device.type}.")
    if owns:
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
        )
    return Dist(world, rank, local, device, owns), device


def teardown(d: Dist, clean: bool = True) -> None:
    """End a multi-process run: free its DDP wrapper, and leave the process group if this module joined it.

    The wrapper outlives ``run()`` in a reference cycle (checked: one DDP object alive after ``run()`` with the
    collector off, none after ``gc.collect()``) and holds the group and gradient buckets the size of the model,
    so it is collected here. On a clean finish the ranks then meet at a barrier, so no rank closes its
    connections while another still talks to it, and the group is destroyed while Python is fully alive (gloo's
    threads are joined now, not during interpreter shutdown). After an error the ranks are not at the same
    point (a barrier could meet another rank's pending collective): the group is only destroyed. A group the
    caller made is the caller's to destroy."""
    if not d.enabled:
        return
    if clean:
        gc.collect()
    if d.owns_group and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def all_sum(values: Sequence[float | torch.Tensor], d: Dist) -> list[float]:
    """Sum each value over the ranks with one all-reduce (float64); plain floats in, floats out."""
    t = torch.stack(
        [
            v.detach().to(d.device, torch.float64).reshape(())
            if isinstance(v, torch.Tensor)
            else torch.tensor(float(v), dtype=torch.float64, device=d.device)
            for v in values
        ]
    )
    if d.enabled:
        dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def agree(error: BaseException | None, d: Dist) -> None:
    """Raise on every rank when any rank failed: a rank re-raises its own error, the others a short one."""
    if any_rank(error is not None, d) and error is None:
        raise UserError(
            "another process of this torchrun job stopped with an error (see its message); "
            f"rank {d.rank} stops too."
        )
    if error is not None:
        raise error


def broadcast_text(text: str, d: Dist) -> str:
    """Rank 0's ``text`` on every rank (as a uint8 tensor: no pickling)."""
    if not d.enabled:
        return text
    data = torch.tensor(list(text.encode()) if d.main else [], dtype=torch.uint8)
    size = torch.tensor([len(data)], dtype=torch.int64, device=d.device)
    dist.broadcast(size, 0)
    buf = data.to(d.device) if d.main else torch.empty(int(size.item()), dtype=torch.uint8, device=d.device)
    dist.broadcast(buf, 0)
    return bytes(buf.cpu().tolist()).decode()


@torch.no_grad()
def broadcast_state(module: nn.Module, d: Dist) -> None:
    """Copy rank 0's parameters and buffers into ``module`` on every rank."""
    if d.enabled:
        for t in module.state_dict().values():
            dist.broadcast(t, 0)


def shard(split: Split | None, d: Dist) -> Split | None:
    """Rank ``d.rank``'s share of an evaluation split (every ``world``-th image)."""
    if split is None or not d.enabled:
        return split
    return Split(split.images[d.rank :: d.world], split.labels[d.rank :: d.world])


def wrap(model: nn.Module, d: Dist) -> nn.Module:
    """``DistributedDataParallel(model)``; parameters and buffers start from rank 0's copy."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [d.device.index] if d.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over the ranks: the gradient of a sum that every rank used is the sum of their
    gradients (what torch.distributed.nn.functional.all_reduce did before its deprecation)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class SyncBatchNormCPU(_BatchNorm):
    """Batch norm whose training statistics are taken over the images of *all* ranks (sync BN), on CPU.

    The per-channel count, sum and (in a second reduction, for accuracy) sum of squared deviations are
    all-reduced by a differentiable sum whose backward all-reduces the gradients, so the gradient equals that
    of batch norm over the global batch (after DDP's average).
    Outside training, or with one process, it is plain batch norm. Same parameters and buffers as
    ``nn.BatchNorm2d``, so checkpoints are interchangeable.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dtype, x = x.dtype, x.float()  # statistics in fp32 under bf16 autocast, as torch's batch norm keeps them
        dims = [0, *range(2, x.dim())]
        c = x.shape[1]
        count = torch.full((1,), x.numel() // c, dtype=x.dtype, device=x.device)
        total = all_reduce(torch.cat([x.sum(dims), count]))
        n = total[c]
        mean = total[:c] / n
        shape = [1, c] + [1] * (x.dim() - 2)
        centered = x - mean.view(shape)
        var = all_reduce((centered * centered).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), m)
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every batch-norm layer as a synchronized one (torch's on CUDA, :class:`SyncBatchNormCPU` on CPU);
    the same parameter and buffer tensors are reused."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNormCPU):
        out = SyncBatchNormCPU(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out
