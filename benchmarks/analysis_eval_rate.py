"""Evaluation rate (images/s) of the analyses against the training loop's evaluation, on the same model, in one
process: interleaved, ``--repeats`` times, medians and their ratios (issue 26 item 5: "bring the analyses'
evaluation rate to within 1.5x of the training loop's evaluation rate on the same model, measured in one run").

What is timed, all on the same model (a trained run's ``best`` checkpoint with ``--run``, else a fresh
``resnet20``), the same number of threads and batch size ``--batch``:

* ``loop``: :func:`reglab.train.evaluate.evaluate` over a :class:`reglab.data.DeviceLoader` of ``--images``
  images, as the training loop evaluates a split: the run's precision (``train.amp``, ``auto`` = bf16 autocast on
  a CPU with bf16 instructions) and its memory format (``train.channels_last``, default true);
  ``loop fp32`` is the same in fp32.
* ``landscape``: :class:`reglab.analysis.landscape.Evaluator` as ``reglab analyze landscape`` builds it
  (:func:`reglab.analysis.landscape.evaluator_for`, when present), called at ``--points`` different points
  ``theta + a d`` along a filter-normalized direction: each call sets the point's weights (``theta + a d`` for
  every parameter) and evaluates the ``--images`` images. ``landscape fp32 NCHW`` is the evaluator as it was
  before it took the run's precision and layout (fp32, contiguous).
* ``interpolation``: :func:`reglab.analysis.interpolation.pair_hits` as ``reglab analyze interpolation`` calls
  it, on ``--images / --points`` pairs at ``--points`` values of lam (the same image count; each lam mixes the
  pairs, then evaluates them). ``interpolation fp32 NCHW``: as before, fp32, contiguous.

Each measurement also records the process's user and system CPU seconds (``getrusage``); the ratios printed are
each analysis's rate over the loop's rate (``< 1``: the analysis is slower; the goal is ``>= 1/1.5 = 0.67``).
``set weights`` times building one point's weights alone. Run from the repository root::

    .venv/bin/python benchmarks/analysis_eval_rate.py --run RUN_DIR [--data-dir ../shared/data] [--repeats 3]
        [--threads N] [--out benchmarks/results/analysis_eval_rate.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reglab._malloc import tune_malloc  # noqa: E402

MALLOC = tune_malloc()  # as every reglab entry point does, before the first large allocation

import torch  # noqa: E402

from reglab.analysis import interpolation as interp  # noqa: E402
from reglab.analysis import landscape  # noqa: E402
from reglab.data import DeviceLoader  # noqa: E402
from reglab.data.datasets import Split  # noqa: E402
from reglab.train.device import autocast_for, cpu_name, precision_name  # noqa: E402
from reglab.train.evaluate import evaluate  # noqa: E402


def timed(fn) -> dict[str, float]:
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fn()
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    return {"wall": t1 - t0, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime}


class FreshRun:
    """A stand-in for :class:`reglab.analysis.common.LoadedRun` without a run directory: a fresh model and
    random images, the run's precision ``auto`` and channels_last as the defaults."""

    def __init__(self, model_name: str, n: int):
        from reglab.models import create

        torch.manual_seed(0)
        self.model = create(model_name, 10).eval()
        self.images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
        self.labels = torch.randint(0, 10, (n,))
        self.meta = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
        self.amp, self.channels_last = "auto", True

    def normalize(self, images_u8: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.meta["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(self.meta["std"]).view(1, 3, 1, 1)
        return (images_u8.float() / 255 - mean) / std


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a trained run directory (default: a fresh --model)")
    ap.add_argument("--model", default="resnet20", help="model preset without --run (default resnet20)")
    ap.add_argument("--data-dir", help="dataset folder of --run (same as data.dir=...)")
    ap.add_argument("--images", type=int, default=4000, help="images per measurement (default 4000)")
    ap.add_argument("--points", type=int, default=4, help="landscape points / lam values per measurement")
    ap.add_argument("--batch", type=int, default=1000, help="batch size of all three (landscape's default 1000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--out", type=Path, help="write every measurement and the medians as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run:
        from reglab.analysis.common import load_run

        run = load_run(args.run, "best", [f"data.dir={args.data_dir}"] if args.data_dir else [])
        split = run.data.train if len(run.data.train) >= args.images else run.data.test
        images, labels = split.images[: args.images], split.labels[: args.images]
        from reglab.train.rundir import load_run_config

        channels_last = load_run_config(run.path, []).train.channels_last
    else:
        run = FreshRun(args.model, args.images)
        images, labels, channels_last = run.images, run.labels, run.channels_last
    model = run.model.eval()
    n = len(labels)
    cpu = torch.device("cpu")
    autocast = autocast_for(run.amp, cpu)
    precision = precision_name(autocast)

    # the training loop's evaluation: a model in the run's memory format, batches from a DeviceLoader
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    import copy

    loop_model = copy.deepcopy(model).to(memory_format=fmt)
    loader = DeviceLoader(
        Split(images, labels), args.batch, run.meta["mean"], run.meta["std"], channels_last=channels_last
    )

    # the landscape analysis: the evaluator its command builds, at --points points along one direction
    x = run.normalize(images)
    make = getattr(landscape, "evaluator_for", None)
    if make is not None:
        ev_new = make(run, x, labels, args.batch)
    else:  # before evaluator_for existed: the evaluator the command built then
        ev_new = landscape.Evaluator(model, x, labels, args.batch)
    ev_old = landscape.Evaluator(model, x, labels, args.batch)
    d = landscape.directions(model, 1, seed=0)[0]
    alphas = [0.05 + 0.1 * k for k in range(args.points)]

    # interpolation: pair_hits as its command calls it, n // points pairs at --points values of lam
    pairs = n // args.points
    x1, x2 = x[:pairs], x[pairs : 2 * pairs]
    y1, y2 = labels[:pairs], labels[pairs : 2 * pairs]
    lambdas = torch.linspace(0, 1, args.points)
    hits_kw = getattr(interp, "hits_options", lambda r: {})(run)

    work = {
        "loop": (n, lambda: evaluate(loop_model, loader, autocast=autocast)),
        "loop fp32": (n, lambda: evaluate(loop_model, loader, autocast=None)),
        "landscape": (n * args.points, lambda: [ev_new([a], [d]) for a in alphas]),
        "landscape fp32 NCHW": (n * args.points, lambda: [ev_old([a], [d]) for a in alphas]),
        "interpolation": (
            pairs * args.points,
            lambda: interp.pair_hits(model, x1, y1, x2, y2, lambdas, args.batch, **hits_kw),
        ),
        "interpolation fp32 NCHW": (
            pairs * args.points,
            lambda: interp.pair_hits(model, x1, y1, x2, y2, lambdas, args.batch),
        ),
    }
    for _, fn in work.values():  # warm-up: oneDNN primitives, the allocator's heap
        fn()
    names = list(work)
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    load0 = os.getloadavg()[0]
    for rep in range(args.repeats):
        order = names if rep % 2 == 0 else names[::-1]  # interleaved, alternating the order
        for name in order:
            count, fn = work[name]
            t = timed(fn)
            t["img_s"] = count / t["wall"]
            rows[name].append(t)
        print(f"repeat {rep}: " + ", ".join(f"{k} {rows[k][-1]['img_s']:.0f}" for k in names), flush=True)
    weights = timed(lambda: [ev_new.weights([a], [d]) for a in alphas * 5]) if hasattr(ev_new, "weights") else None
    load1 = os.getloadavg()[0]

    med = {
        k: {m: statistics.median(r[m] for r in v) for m in ("img_s", "wall", "user", "sys")}
        for k, v in rows.items()
    }
    print(
        f"\ntorch {torch.__version__}, {cpu_name()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
        f"model {args.run or args.model}, run precision {precision}, channels_last {channels_last}, batch "
        f"{args.batch}, {n} images x {args.points} points, {args.repeats} interleaved repeats, malloc {MALLOC}, "
        f"load average {load0:.2f} -> {load1:.2f}"
    )
    print(
        "\n| measurement | img/s (median) | all repeats | user s | sys s | / loop | / loop fp32 "
        "| img per CPU-s | / loop (CPU time) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    ratios = {}
    for k in names:
        per = [r["img_s"] for r in rows[k]]
        pair = [a["img_s"] / b["img_s"] for a, b in zip(rows[k], rows["loop"])]
        pair32 = [a["img_s"] / b["img_s"] for a, b in zip(rows[k], rows["loop fp32"])]
        cpu_rate = [work[k][0] / (r["user"] + r["sys"]) for r in rows[k]]
        cpu_pair = [a / (work["loop"][0] / (b["user"] + b["sys"])) for a, b in zip(cpu_rate, rows["loop"])]
        ratios[k] = {
            "vs_loop": statistics.median(pair),
            "vs_loop_fp32": statistics.median(pair32),
            "pairs": pair,
            "img_per_cpu_s": statistics.median(cpu_rate),
            "vs_loop_cpu_time": statistics.median(cpu_pair),
        }
        print(
            f"| {k} | {med[k]['img_s']:.0f} | {', '.join(f'{v:.0f}' for v in per)} | {med[k]['user']:.2f} "
            f"| {med[k]['sys']:.2f} | {ratios[k]['vs_loop']:.2f} | {ratios[k]['vs_loop_fp32']:.2f} "
            f"| {ratios[k]['img_per_cpu_s']:.0f} | {ratios[k]['vs_loop_cpu_time']:.2f} |"
        )
    print(
        "\n(/ loop: median of the per-repeat ratios of this row's rate to the loop's; goal >= 0.67. img per CPU-s: "
        "images per second of this process's user + system time, which other load on the cores moves less than "
        "the wall clock)"
    )
    if weights:
        print(f"set weights: {1000 * weights['wall'] / (5 * len(alphas)):.2f} ms per point")
    if args.out:
        record = {
            "benchmark": "analysis_eval_rate",
            "date": time.strftime("%Y-%m-%d"),
            "cpu": cpu_name(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "model": str(args.run or args.model),
            "precision": precision,
            "channels_last": channels_last,
            "batch": args.batch,
            "images": n,
            "points": args.points,
            "repeats": args.repeats,
            "malloc": MALLOC,
            "load_average": [load0, load1],
            "median": med,
            "ratios": ratios,
            "all": rows,
            "set_weights_ms": None if not weights else 1000 * weights["wall"] / (5 * len(alphas)),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
