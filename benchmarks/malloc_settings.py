"""What reglab's glibc malloc settings (``reglab/_malloc.py``) change: wall, user and system time of the same
commands with the settings applied (reglab's default) and with ``REGLAB_MALLOC=default`` (glibc's own), measured
as interleaved pairs inside one run, medians and their ratio.

Workloads (each a fresh child process, so each starts with a fresh heap):

* ``eval``: ``--evals`` evaluations of a ``resnet20`` on 1,000 synthetic images (batch 500) in the precision
  ``train.amp=auto`` picks (bf16 on CPUs with bf16 instructions, else fp32), timed after one warm-up pass;
* ``train``: ``reglab train fast-cpu-85`` for 2 epochs on a 15,000-image subset of real CIFAR-10 (the whole
  command), and whether its final metrics are identical under both settings;
* ``landscape``: ``reglab analyze landscape`` on that run's checkpoint (1D only, one direction, 500 images).

Run from the repository root (``--data-dir`` defaults to ``../shared/data``)::

    .venv/bin/python benchmarks/malloc_settings.py [--repeats 3] [--out benchmarks/results/malloc_settings.json]

A noisy shared machine moves both sides of a pair alike; the per-pair ratios show how much.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EVAL_CHILD = r"""
import sys, time, resource
from reglab._malloc import tune_malloc
status = tune_malloc()
import torch
from reglab.models.zoo import create
from reglab.train.device import autocast_for
torch.manual_seed(0)
model = create("resnet20", num_classes=10).eval().to(memory_format=torch.channels_last)
x = torch.randn(1000, 3, 32, 32).contiguous(memory_format=torch.channels_last)
ctx = autocast_for("auto", torch.device("cpu"))
import contextlib
ctx = ctx or contextlib.nullcontext
def once():
    with torch.no_grad(), ctx():
        for i in range(0, 1000, 500):
            model(x[i:i + 500])
once()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(int(sys.argv[1])):
    once()
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
print(f"{t1 - t0} {r1.ru_utime - r0.ru_utime} {r1.ru_stime - r0.ru_stime} {status}")
"""


def child_env(setting: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = str(ROOT)
    if setting == "glibc":
        env["REGLAB_MALLOC"] = "default"
    else:
        env.pop("REGLAB_MALLOC", None)
    return env


def timed(cmd: list[str], setting: str) -> tuple[dict[str, float], str]:
    """Wall, user and system seconds of one child process, and its stdout."""
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(cmd, env=child_env(setting), cwd=ROOT, capture_output=True, text=True)
    r1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    times = {"wall": t1 - t0, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime}
    return times, proc.stdout


def final_metrics(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    skip = ("time", "_s", "per_s")
    return {k: v for k, v in rows[-1].items() if not any(s in k for s in skip)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--evals", type=int, default=20)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--workloads", default="eval,train,landscape")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--run", type=Path, help="analyse this run directory instead of training one (landscape only)")
    args = ap.parse_args()
    py, work = sys.executable, Path(tempfile.mkdtemp(prefix="malloc-bench-"))
    workloads = args.workloads.split(",")
    results: dict[str, dict[str, list]] = {w: {"reglab": [], "glibc": []} for w in workloads}
    metrics: dict[str, list] = {"reglab": [], "glibc": []}
    for rep in range(args.repeats):
        order = ("reglab", "glibc") if rep % 2 == 0 else ("glibc", "reglab")
        for setting in order:
            run_dir = work / f"train-{setting}-{rep}"
            if "eval" in workloads:
                _, out = timed([py, "-c", EVAL_CHILD, str(args.evals)], setting)
                wall, user, sys_s, *status = out.split()
                results["eval"][setting].append({"wall": float(wall), "user": float(user), "sys": float(sys_s)})
                print(
                    f"eval      {setting:6s} rep {rep}: wall {float(wall):6.2f} s, sys {float(sys_s):6.2f} s "
                    f"({' '.join(status)})",
                    flush=True,
                )
            if "train" in workloads or ("landscape" in workloads and args.run is None):
                cmd = [
                    py,
                    "-m",
                    "reglab",
                    "train",
                    "fast-cpu-85",
                    "train.epochs=2",
                    "data.train_subset=15000",
                    f"run.dir={run_dir}",
                    "--data-dir",
                    args.data_dir,
                    "--quiet",
                ]
                t, _ = timed(cmd, setting)
                metrics[setting].append(final_metrics(run_dir))
                if "train" in workloads:
                    results["train"][setting].append(t)
                    print(
                        f"train     {setting:6s} rep {rep}: wall {t['wall']:6.2f} s, sys {t['sys']:6.2f} s",
                        flush=True,
                    )
            if "landscape" in workloads:
                cmd = [
                    py,
                    "-m",
                    "reglab",
                    "analyze",
                    "landscape",
                    str(args.run or run_dir),
                    "-o",
                    str(work / f"ls-{setting}"),
                    "--no-2d",
                    "--directions",
                    "1",
                    "--subset",
                    "500",
                    "--threads",
                    "2",
                ]
                t, _ = timed(cmd, setting)
                results["landscape"][setting].append(t)
                print(
                    f"landscape {setting:6s} rep {rep}: wall {t['wall']:6.2f} s, sys {t['sys']:6.2f} s", flush=True
                )
    table = {}
    print(
        f"\n{'workload':10s} {'setting':7s} {'wall s':>8s} {'user s':>8s} {'sys s':>8s}   (medians of {args.repeats})"
    )
    for w, by in results.items():
        med = {
            s: {k: statistics.median(r[k] for r in rows) for k in ("wall", "user", "sys")}
            for s, rows in by.items()
        }
        pairs = [a["wall"] / b["wall"] for a, b in zip(by["reglab"], by["glibc"])]
        table[w] = {"median": med, "wall_ratio_reglab_over_glibc": statistics.median(pairs), "pair_ratios": pairs}
        for s in ("glibc", "reglab"):
            m = med[s]
            print(f"{w:10s} {s:7s} {m['wall']:8.2f} {m['user']:8.2f} {m['sys']:8.2f}")
        print(
            f"{w:10s} wall ratio reglab/glibc: {table[w]['wall_ratio_reglab_over_glibc']:.3f} "
            f"(pairs: {', '.join(f'{p:.3f}' for p in pairs)})"
        )
    same = (
        all(a == metrics["reglab"][0] for a in metrics["reglab"] + metrics["glibc"]) if metrics["reglab"] else None
    )
    if same is not None:
        print(f"train metrics identical under both settings and every repeat: {same}")
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    record = {
        "benchmark": "malloc_settings",
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load_after": os.getloadavg()[0],
        "repeats": args.repeats,
        "results": table,
        "train_metrics_identical": same,
    }
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
