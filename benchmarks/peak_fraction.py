"""How close the recipes' training steps come to the CPU's matmul peak, bf16 and fp32, measured in one run
(issue 26 item 4).

1. **Peak**: GFLOP/s of a large square ``torch.mm`` (``--matmul``, default 3072) in bf16 and in fp32, with the
   threads training uses, ``--peak-repeats`` times each before the recipes and again after them; the median of
   all of them per dtype is the peak.
2. **Per recipe** (``--recipes``; each in bf16 autocast, what ``train.amp=auto`` picks on a CPU with bf16
   instructions, and in fp32, ``train.amp=off``; ``--precisions fp32`` alone on a CPU without bf16 instructions):
   a real :class:`reglab.train.loop.Run` of the recipe's whole
   training configuration (model, batch size, optimizer, augmentation; synthetic images of CIFAR's shape, no
   validation split, built as ``train_throughput.py`` builds it). The FLOPs of one step are counted with
   ``torch.utils.flop_counter.FlopCounterMode`` around one real ``Run.train_step`` (forward, loss, backward,
   optimizer: Muon's Newton-Schulz matmuls count, elementwise work and batch norm do not); the time is
   ``Run.train_epoch`` over ``--steps`` steps (loader, augmentation and bookkeeping included), after a warm-up
   epoch. bf16 and fp32 epochs of every recipe are interleaved, ``--repeats`` times; medians.
   Achieved GFLOP/s = counted FLOPs per step x steps / time, and its fraction of the matching peak.
3. ``--profile``: one epoch of each recipe in the first precision measured under ``torch.profiler``, self CPU time grouped into convolutions,
   matmuls, batch norm, elementwise/activations, pooling, the optimizer step and the rest.

Run from the repository root::

    .venv/bin/python benchmarks/peak_fraction.py [--recipes default,fast-cpu-85] [--repeats 3] [--profile]
        [--out benchmarks/results/peak_fraction.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from reglab._malloc import tune_malloc  # noqa: E402

MALLOC = tune_malloc()

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from train_throughput import build_run, time_reglab  # noqa: E402

from reglab.config import load_config  # noqa: E402
from reglab.train.device import cpu_name  # noqa: E402

AMPS = {"bf16 autocast": "train.amp=bf16", "fp32": "train.amp=off"}
PEAK_DTYPE = {"bf16 autocast": torch.bfloat16, "fp32": torch.float32}


def matmul_rates(n: int, dtype: torch.dtype, repeats: int) -> list[tuple[float, float]]:
    """(wall, CPU-time) GFLOP/s of ``repeats`` n x n @ n x n matmuls in ``dtype`` (2 n^3 flops each), after one
    warm-up. The CPU-time rate is ``threads x flops / the process's CPU seconds``: what the threads achieve while
    they run, which other load on shared cores moves much less than the wall clock."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    out = []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        torch.mm(a, b)
        c1, t1 = time.process_time(), time.perf_counter()
        out.append((2 * n**3 / (t1 - t0) / 1e9, torch.get_num_threads() * 2 * n**3 / (c1 - c0) / 1e9))
    return out


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed_epoch(r) -> tuple[float, float, int]:
    """(wall, CPU) seconds and minor page faults of one training epoch of ``r`` (faults in a steady-state epoch
    mean its activations are mapped afresh: reglab/_malloc.py)."""
    c0, f0 = time.process_time(), minor_faults()
    wall = time_reglab(r)
    return wall, time.process_time() - c0, minor_faults() - f0


def step_flops(r) -> dict[str, float]:
    """FLOPs of one real training step of ``r`` (its batch, its precision), split into the forward + backward
    (``forward_backward``) and the rest of the step (optimizer, schedule, lookahead, EMA)."""
    r.model.train()
    x, y = next(iter(r.train_loader))
    with FlopCounterMode(display=False) as fb:
        r.forward_backward(x, y)
    with FlopCounterMode(display=False) as whole:
        r.train_step(x, y)
    total = whole.get_total_flops()
    return {
        "step": float(total),
        "forward_backward": float(fb.get_total_flops()),
        "rest": float(total - fb.get_total_flops()),
    }


CATEGORIES = (
    ("optimizer", ("optimizer.step", "muon", "_foreach", "newton")),
    ("convolution", ("conv", "mkldnn_convolution", "slow_conv")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")),
    ("batch norm", ("batch_norm", "batchnorm")),
    ("pooling", ("pool",)),
    ("copies/casts", ("aten::copy_", "aten::to", "aten::_to_copy", "aten::contiguous", "aten::clone")),
)


def categorize(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "elementwise/other"


def profile_epoch(r) -> dict:
    """Self CPU time of one training epoch by category, the top ops, and the top ops by input shape
    (torch.profiler). The profiler's own allocations make the epoch page-fault (``faults``), which inflates
    first-touch ops such as a gradient's zero fill: check them against the unprofiled epochs' faults."""
    from torch.profiler import ProfilerActivity, profile

    f0 = minor_faults()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        time_reglab(r)
    faults = minor_faults() - f0
    by_shape = sorted(
        prof.key_averages(group_by_input_shape=True), key=lambda e: e.self_cpu_time_total, reverse=True
    )[:15]
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    by: dict[str, float] = {}
    for e in events:
        by[categorize(e.key)] = by.get(categorize(e.key), 0.0) + e.self_cpu_time_total
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    opt = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step"))
    return {
        "self_cpu_s": total / 1e6,
        "share": {k: v / total for k, v in sorted(by.items(), key=lambda kv: -kv[1])},
        "optimizer_step_inclusive_share": opt / total,
        "top": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in top],
        "top_by_shape": [
            {"op": e.key, "shapes": str(e.input_shapes), "self_s": e.self_cpu_time_total / 1e6, "calls": e.count}
            for e in by_shape
        ],
        "faults": faults,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default="default,fast-cpu-85")
    ap.add_argument(
        "--steps",
        default="default=2,fast-cpu-85=10,fast-cpu-93-muon=2",
        help="steps per timed epoch, RECIPE=N,... (others: 4)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--matmul", type=int, default=3072)
    ap.add_argument("--peak-repeats", type=int, default=5)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument(
        "--precisions",
        default="bf16,fp32",
        help="which to measure, comma-separated (default: both); 'fp32' alone on a CPU without bf16 instructions, "
        "where bf16 autocast is emulated and says nothing about the recipe",
    )
    ap.add_argument("--profile", action="store_true", help="profile one epoch per recipe, in the first precision")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps_of = {k: int(v) for k, v in (s.split("=") for s in args.steps.split(",") if s)}
    short = {"bf16": "bf16 autocast", "fp32": "fp32"}
    if unknown := [p for p in args.precisions.split(",") if p not in short]:
        ap.error(f"--precisions: unknown {unknown}; choose from bf16, fp32")
    precisions = [short[p] for p in args.precisions.split(",")]
    recipes = [s for s in args.recipes.split(",") if s]
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    peaks = {p: matmul_rates(args.matmul, PEAK_DTYPE[p], args.peak_repeats) for p in precisions}

    runs, flops = {}, {}
    for rec in recipes:
        cfg = load_config(rec)
        for prec in precisions:
            amp = AMPS[prec]
            steps = steps_of.get(rec, 4)
            r = build_run(
                cfg.model.name, cfg.train.batch_size, steps, cfg.train.channels_last, rec, "cpu", (amp, *args.set)
            )
            flops[(rec, prec)] = step_flops(r)
            time_reglab(r)  # warm-up epoch
            # The run's own steps and images: a --set train.batch_size=... changes the steps of the synthetic set
            # (the recipe's batch x steps images).
            runs[(rec, prec)] = (r, r.train_loader.num_samples, len(r.train_loader))
    times: dict[tuple, list[float]] = {k: [] for k in runs}
    cpus: dict[tuple, list[float]] = {k: [] for k in runs}
    faults_of: dict[tuple, list[int]] = {k: [] for k in runs}
    for rep in range(args.repeats):
        keys = list(runs) if rep % 2 == 0 else list(runs)[::-1]
        for k in keys:
            wall, cpu, faults = timed_epoch(runs[k][0])
            times[k].append(wall)
            cpus[k].append(cpu)
            faults_of[k].append(faults)
        print(
            f"repeat {rep}: " + ", ".join(f"{k[0]} {k[1]} {runs[k][1] / times[k][-1]:.0f} img/s" for k in runs),
            flush=True,
        )
    for p in precisions:
        peaks[p] += matmul_rates(args.matmul, PEAK_DTYPE[p], args.peak_repeats)
    load1 = os.getloadavg()[0]
    peak = {p: statistics.median(w for w, _ in v) for p, v in peaks.items()}
    peak_cpu = {p: statistics.median(c for _, c in v) for p, v in peaks.items()}
    threads = torch.get_num_threads()

    print(
        f"\ntorch {torch.__version__}, {cpu_name()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
        f"{args.repeats} interleaved repeats, malloc {MALLOC}, load average {load0:.2f} -> {load1:.2f}, "
        f"{time.perf_counter() - t_start:.0f} s"
    )
    for p in precisions:
        print(
            f"{p} matmul peak ({args.matmul}^2): median {peak[p]:.1f} GFLOP/s wall, {peak_cpu[p]:.1f} by CPU time "
            f"(all wall: {', '.join(f'{w:.0f}' for w, _ in peaks[p])}; CPU time: "
            f"{', '.join(f'{c:.0f}' for _, c in peaks[p])})"
        )
    print(
        "\n| recipe | precision | batch | GFLOP/step (fwd+bwd / rest) | img/s | achieved GFLOP/s | % of peak "
        "| by CPU time: GFLOP/s, % of peak | all repeats img/s | minor faults per epoch |"
    )
    print("|---|---|---:|---|---:|---:|---:|---|---|---|")
    rows = []
    for (rec, prec), (r, images, steps) in runs.items():
        ts = times[(rec, prec)]
        f = flops[(rec, prec)]
        t = statistics.median(ts)
        achieved = f["step"] * steps / t / 1e9
        achieved_cpu = threads * f["step"] * steps / statistics.median(cpus[(rec, prec)]) / 1e9
        row = {
            "recipe": rec,
            "precision": prec,
            "model": r.cfg.model.name,
            "batch": r.cfg.train.batch_size,
            "steps": steps,
            "gflop_per_step": f["step"] / 1e9,
            "gflop_forward_backward": f["forward_backward"] / 1e9,
            "gflop_rest": f["rest"] / 1e9,
            "img_s": images / t,
            "img_s_all": [images / v for v in ts],
            "achieved_gflop_s": achieved,
            "peak_gflop_s": peak[prec],
            "fraction_of_peak": achieved / peak[prec],
            "cpu_s_all": cpus[(rec, prec)],
            "minor_faults_all": faults_of[(rec, prec)],
            "achieved_gflop_s_cpu_time": achieved_cpu,
            "peak_gflop_s_cpu_time": peak_cpu[prec],
            "fraction_of_peak_cpu_time": achieved_cpu / peak_cpu[prec],
        }
        rows.append(row)
        print(
            f"| {rec} ({row['model']}) | {prec} | {row['batch']} | {row['gflop_per_step']:.1f} "
            f"({row['gflop_forward_backward']:.1f} / {row['gflop_rest']:.2f}) | {row['img_s']:.0f} | {achieved:.1f} "
            f"| {100 * row['fraction_of_peak']:.0f}% | {achieved_cpu:.1f}, "
            f"{100 * row['fraction_of_peak_cpu_time']:.0f}% | {', '.join(f'{v:.0f}' for v in row['img_s_all'])} "
            f"| {', '.join(str(v) for v in row['minor_faults_all'])} |"
        )
    profiles = {}
    if args.profile:
        for rec in recipes:
            r = runs[(rec, precisions[0])][0]
            profiles[rec] = prof = profile_epoch(r)
            print(
                f"\nprofile, {rec}, {precisions[0]}, one epoch ({prof['self_cpu_s']:.2f} s self CPU): "
                + ", ".join(f"{k} {100 * v:.1f}%" for k, v in prof["share"].items())
                + f"; Optimizer.step inclusive {100 * prof['optimizer_step_inclusive_share']:.1f}%"
            )
            for e in prof["top"]:
                print(f"  {e['self_s']:8.3f} s  {e['calls']:6d}  {e['op']}")
            print(f"  by input shape ({prof['faults']} minor page faults in the profiled epoch):")
            for e in prof["top_by_shape"]:
                print(f"  {e['self_s']:8.3f} s  {e['calls']:6d}  {e['op']} {e['shapes']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "benchmark": "peak_fraction",
                    "date": time.strftime("%Y-%m-%d"),
                    "cpu": cpu_name(),
                    "cpus": os.cpu_count(),
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "matmul": args.matmul,
                    "peaks_all": peaks,
                    "peaks_median": peak,
                    "peaks_median_cpu_time": peak_cpu,
                    "overrides": args.set,
                    "repeats": args.repeats,
                    "load_average": [load0, load1],
                    "rows": rows,
                    "profiles": profiles,
                },
                indent=1,
            )
            + "\n"
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
