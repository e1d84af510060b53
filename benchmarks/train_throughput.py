"""Training images/s of reglab's step next to a plain PyTorch loop on the same model, and the share of the
CPU's measured fp32 matmul peak that training reaches.

For each preset (default ``resnet20`` and ``resnet10_b1-1-1-1_w64``; ``--resnet18`` adds ``resnet18``):

* reglab: a real :class:`reglab.train.loop.Run` on in-memory synthetic data (``--batch`` x N images, no
  validation split), timed over ``Run.train_epoch``: DeviceLoader batch (shuffle, default crop + flip,
  normalization, channels_last) -> forward -> ``Criterion`` -> backward -> SGD step -> scheduler step, plus the
  loop's per-step bookkeeping (on CPU it reads the running loss every step).
* plain: the same architecture, one fixed batch of random tensors already in memory in the same memory
  format, ``F.cross_entropy``, ``zero_grad``/``backward``/``SGD.step`` (momentum 0.9, weight decay 5e-4).

With ``--recipe NAME`` the reglab side is that recipe's whole training configuration (its model, batch size,
optimizer with its parameter groups, lookahead, label smoothing, augmentation, alternating flip), on synthetic
images of the same shape; the plain loop uses the same model and batch size. ``--against KEY=VALUE`` (with
``--recipe``, repeatable) replaces the plain loop by a second reglab run of the same recipe with those overrides,
so one option's effect is a ratio inside one run, e.g. ``--set train.compile=true --against train.compile=false``.
The **data path** column is the time of iterating the run's training loader alone (gather, augment, normalize,
channels_last) over the same batches, as a share of reglab's step time. ``--device cuda`` measures on a GPU
(synchronizing before every clock read). The plain loop runs in the reglab side's precision: bf16 autocast where
``train.amp`` resolves to it (``auto``: on CUDA and on CPUs with bf16 instructions), else fp32.

N (steps per measurement) is chosen from a timed warm-up so each measurement takes about ``--seconds``.
The two are interleaved ``--repeats`` times (default 3); the table shows medians and their ratio;
the last line lists every repeat and each interleaved pair's ratio.
The peak is the best GFLOP/s of five ``--matmul``-sized fp32 matmuls (default 2048), measured before and
after the models (the larger counts); achieved training GFLOP/s is ``3 x forward GFLOPs/image x images/s``
(backward ~ 2 x forward), with the forward GFLOPs counted at the size the reglab side trains at. The runs timed
here have one epoch, which is their last and so always full size: to time a recipe's ``aug.low_res`` epochs add
``--set train.epochs=2`` (then every timed epoch is the first), e.g. ``--recipe fast-cpu-88 --set train.epochs=2
--against aug.low_res=0``. Run from the repository root::

    .venv/bin/python benchmarks/train_throughput.py [--batch 128] [--threads N] [--resnet18]
    .venv/bin/python benchmarks/train_throughput.py --recipe fast-cpu-85 [--device cuda]

On a shared machine the numbers move with the other load; the script prints the load average before and
after so a reader can tell.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reglab.config import load_config  # noqa: E402
from reglab.errors import UserError  # noqa: E402
from reglab.models import count_params, create, forward_gflops, model_from_config  # noqa: E402
from reglab.train.device import autocast_for, cpu_name, precision_name  # noqa: E402
from reglab.train.loop import Run  # noqa: E402


def matmul_peak(n: int, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of ``repeats`` n x n @ n x n matmuls (2 n^3 flops each)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return max(rates)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Plain:
    """The textbook loop: fixed in-memory batch, forward, cross-entropy, backward, SGD step."""

    def __init__(self, model: torch.nn.Module, batch: int, channels_last: bool, device: torch.device, bf16: bool):
        torch.manual_seed(0)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.device = device
        self.model = model.to(device, memory_format=fmt).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        self.x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=fmt)
        self.y = torch.randint(0, 10, (batch,), device=device)
        self.autocast = bf16  # the precision of the reglab side

    def steps(self, n: int) -> float:
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(n):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss = F.cross_entropy(self.model(self.x), self.y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        loss.item()
        sync(self.device)
        return time.perf_counter() - t0


def build_run(
    preset: str,
    batch: int,
    steps: int,
    channels_last: bool,
    recipe: str | None = None,
    device: str = "cpu",
    overrides: tuple[str, ...] = (),
) -> Run:
    data = [
        "data.dataset=synthetic",
        f"data.synthetic_train={batch * steps}",
        "data.synthetic_test=10",
        "data.val_size=0",
        "data.train_subset=null",
        "train.epochs=1",
        f"run.device={device}",
    ]
    if recipe:
        cfg = load_config(recipe, [*data, *overrides])
    else:
        cfg = load_config(
            None,
            [
                *data,
                f"model.name={preset}",
                f"train.batch_size={batch}",
                f"train.channels_last={str(channels_last).lower()}",
                "optim.lr=0.05",
                "sched.name=constant",
            ],
        )
    return Run(cfg, torch.device(device))


def time_reglab(r: Run) -> float:
    sync(r.device)
    t0 = time.perf_counter()
    r.train_epoch(())
    sync(r.device)
    return time.perf_counter() - t0


def time_loader(r: Run) -> float:
    """The training loader alone over one epoch: what the data path costs inside a step."""
    sync(r.device)
    t0 = time.perf_counter()
    for _batch in r.train_loader:
        pass
    sync(r.device)
    return time.perf_counter() - t0


def make_model(preset: str, args) -> torch.nn.Module:
    """The preset, or with --recipe the recipe's model with the --set overrides (e.g. model.channels=[...]): the
    reglab side's model, for the plain loop and the GFLOPs column."""
    torch.manual_seed(0)
    return (
        model_from_config(load_config(args.recipe, list(args.set)).model, 10)
        if args.recipe
        else create(preset, 10)
    )


def bench_preset(preset: str, args) -> dict:
    device = torch.device(args.device)
    plain = Plain(make_model(preset, args), args.batch, not args.contiguous, device, args.bf16)
    plain.steps(3)  # warm-up (allocator, oneDNN primitives / cuDNN autotuning)
    step_s = plain.steps(3) / 3
    steps = max(2, min(args.max_steps, round(args.seconds / step_s)))
    r = build_run(preset, args.batch, steps, not args.contiguous, args.recipe, args.device, tuple(args.set))
    assert r.steps_per_epoch == steps
    time_reglab(r)  # warm-up epoch (and the compile, if any)
    if args.against:  # the baseline is reglab itself with other overrides
        del plain
        base = build_run(
            preset, args.batch, steps, not args.contiguous, args.recipe, args.device, tuple(args.against)
        )
        time_reglab(base)
        baseline = lambda: time_reglab(base)  # noqa: E731
    else:
        baseline = lambda: plain.steps(steps)  # noqa: E731
    reg, pla, data = [], [], []
    for _ in range(args.repeats):  # interleaved, so slow phases of the shared machine hit both
        reg.append(steps * args.batch / time_reglab(r))
        pla.append(steps * args.batch / baseline())
        data.append(time_loader(r) * reg[-1] / (steps * args.batch))  # loader time / reglab epoch time
    # at the size the reglab side trained at (aug.low_res shrinks the images of its first epochs)
    gflops = forward_gflops(make_model(preset, args), image_size=r.train_loader.size or 32)
    return {
        "preset": preset,
        "params": count_params(r.model),
        "gflops": gflops,
        "steps": steps,
        "reglab": statistics.median(reg),
        "plain": statistics.median(pla),
        "reglab_all": reg,
        "plain_all": pla,
        "data_share": statistics.median(data),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="resnet20,resnet10_b1-1-1-1_w64", help="comma-separated model presets")
    p.add_argument("--resnet18", action="store_true", help="also measure resnet18 (slow on CPU)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="target duration of one measurement")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--matmul", type=int, default=2048, help="size of the peak-measuring matmul")
    p.add_argument("--contiguous", action="store_true", help="NCHW instead of channels_last for both")
    p.add_argument(
        "--recipe", default=None, help="measure this recipe's full training config (sets the model and batch size)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --recipe: a config override for the reglab side (repeatable), e.g. train.compile=false",
    )
    p.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --recipe: the baseline is reglab with these overrides instead of the plain loop",
    )
    p.add_argument("--max-steps", type=int, default=200)
    args = p.parse_args()
    if args.recipe:
        try:  # the recipe and both override lists, checked before anything is timed
            cfg = load_config(args.recipe)
            for overrides in (args.set, args.against):
                load_config(args.recipe, overrides)
        except UserError as e:
            p.error(str(e))
        args.presets, args.resnet18, args.batch = cfg.model.name, False, cfg.train.batch_size
        args.contiguous = not cfg.train.channels_last
    if args.against and not args.recipe:
        p.error("--against needs --recipe (the baseline is that recipe with the given overrides)")
    autocast = autocast_for(load_config(args.recipe, list(args.set)).train.amp, torch.device(args.device))
    args.bf16, args.precision = autocast is not None, precision_name(autocast)  # the reglab side's, for both
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = [s for s in args.presets.split(",") if s] + (["resnet18"] if args.resnet18 else [])

    load0 = os.getloadavg()
    t_start = time.perf_counter()
    peak_before = matmul_peak(args.matmul) if args.device == "cpu" else float("nan")
    rows = [bench_preset(name, args) for name in presets]
    peak_after = matmul_peak(args.matmul) if args.device == "cpu" else float("nan")
    peak = max(peak_before, peak_after)
    load1 = os.getloadavg()

    print(
        f"torch {torch.__version__}, {cpu_name()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} threads, batch {args.batch}, "
        f"{'NCHW' if args.contiguous else 'channels_last'}, {args.repeats} interleaved repeats, "
        f"device {args.device}{', recipe ' + args.recipe if args.recipe else ''}, reglab side in {args.precision}, "
        f"load average {load0[0]:.2f} -> {load1[0]:.2f}, {time.perf_counter() - t_start:.0f}s"
    )
    if args.device == "cpu":
        print(
            f"fp32 matmul peak ({args.matmul}x{args.matmul}): {peak_before:.1f} GFLOP/s before, "
            f"{peak_after:.1f} after (the larger is used below)\n"
        )
    else:
        print("(no CPU matmul peak on a GPU: the % of peak column is left empty)\n")
    side = f"reglab {' '.join(args.set)}" if args.against and args.set else "reglab"
    base = f"reglab {' '.join(args.against)}" if args.against else "plain"
    ratio = "ratio" if args.against else "reglab/plain"
    print(
        f"| model | params | fwd GFLOPs/img | steps | {side} img/s | {base} img/s | {ratio} "
        "| reglab train GFLOP/s | % of peak | data path % of step |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        achieved = 3 * r["gflops"] * r["reglab"]
        print(
            f"| {r['preset']} | {r['params']:,} | {r['gflops']:.3f} | {r['steps']} | {r['reglab']:.0f} "
            f"| {r['plain']:.0f} | {r['reglab'] / r['plain']:.2f} | {achieved:.1f} "
            f"| {'—' if math.isnan(peak) else f'{100 * achieved / peak:.0f}%'} | {100 * r['data_share']:.1f}% |"
        )
    print(
        "\nall repeats (img/s): "
        + "; ".join(
            f"{r['preset']}: {side} {[round(v) for v in r['reglab_all']]}, {base} {[round(v) for v in r['plain_all']]}, "
            f"pair ratios {[round(a / b, 3) for a, b in zip(r['reglab_all'], r['plain_all'])]}"
            for r in rows
        )
    )


if __name__ == "__main__":
    main()
