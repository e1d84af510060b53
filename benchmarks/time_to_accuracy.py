"""Time to accuracy: a recipe run end to end, n seeds, wall time of the whole command and its test accuracy.

Each seed is a real ``python -m reglab train RECIPE run.seed=S`` process, timed from before the interpreter
starts to after it exits (imports, data loading, model set-up, training, final test evaluation, checkpoints:
everything a user waits for). The test accuracy is the run's ``summary.json`` ``test_acc`` (reported once at
the end, never used for a choice). The table gives each seed and the mean, std and minimum, and checks them
against ``--target`` (accuracy, %) and ``--budget`` (seconds): a goal is met when the mean accuracy reaches the
target and the mean wall time stays inside the budget. Run from the repository root on a quiet machine
(other load slows the run; the script prints the load average)::

    .venv/bin/python benchmarks/time_to_accuracy.py fast-cpu-85 --seeds 3 --target 85 --budget 300 \\
        --data-dir ../shared/data [-o benchmarks/results/fast-cpu-85.json] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from reglab.train.device import cpu_name  # noqa: E402


def one_run(recipe: str, seed: int, run_dir: Path, data_dir: str | None, overrides: list[str]) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "reglab",
        "train",
        recipe,
        f"run.seed={seed}",
        f"run.dir={run_dir}",
        "--overwrite",
    ]
    if data_dir:
        cmd.append(f"data.dir={data_dir}")
    cmd += overrides
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"seed {seed}: `{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "seed": seed,
        "wall_s": round(wall, 1),
        "train_s": summary.get("wall_time_s"),
        "setup_s": summary.get("setup_s"),
        "checkpoint_s": summary.get("checkpoint_s"),
        **first_epoch_excess(run_dir),
        "test_acc": summary["test_acc"],
        "precision": summary.get("precision"),
        "load_before": round(load, 2),
        "run_dir": str(run_dir),
    }


def first_epoch_excess(run_dir: Path) -> dict:
    """How much longer the first epoch took than the median of the middle ones (the last is left out: it holds
    the final test evaluation): one-time start-up inside the training loop (lazy CUDA/cuDNN initialization,
    a compile), which a timer started after a warm-up run (airbench's) does not see. It also counts the
    whitening-bias epochs of fastnet recipes (``train.freeze`` of ``whiten.bias``, ~4% slower on a CPU), and on the
    CPU recipes part of it is unexplained. Needs >= 3 epochs."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    times = [float(r["epoch_s"]) for r in rows]
    if len(times) < 3:
        return {"first_epoch_s": times[0] if times else None, "first_epoch_excess_s": None}
    middle = statistics.median(times[1:-1])
    return {"first_epoch_s": round(times[0], 3), "first_epoch_excess_s": round(max(0.0, times[0] - middle), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="key=value config overrides for every seed")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--target", type=float, default=None, help="goal: mean test accuracy (%%) at least this")
    p.add_argument("--budget", type=float, default=None, help="goal: mean wall time (s) at most this")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--runs", default=None, help="where the run directories go (default: a temporary folder)")
    p.add_argument("-o", "--output", default=None, help="also write the results as JSON here")
    args = p.parse_args()

    root = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="tta-"))
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rows.append(
            one_run(args.recipe, seed, root / f"{Path(args.recipe).stem}-s{seed}", args.data_dir, args.overrides)
        )
        r = rows[-1]
        print(
            f"seed {seed}: {r['test_acc']:.2f}% in {r['wall_s']:.1f} s (training loop {r['train_s']} s, set-up "
            f"{r['setup_s']} s, checkpoints {r['checkpoint_s']} s, first epoch's excess "
            f"{r['first_epoch_excess_s']} s, {r['precision']}, load {r['load_before']})",
            flush=True,
        )
    accs, walls = [r["test_acc"] for r in rows], [r["wall_s"] for r in rows]

    def sd(v):
        return statistics.stdev(v) if len(v) > 1 else 0.0

    result = {
        "recipe": args.recipe,
        "overrides": args.overrides,
        "seeds": len(rows),
        "runs": rows,
        "mean_acc": statistics.mean(accs),
        "std_acc": sd(accs),
        "min_acc": min(accs),
        "mean_wall_s": statistics.mean(walls),
        "max_wall_s": max(walls),
        "target": args.target,
        "budget_s": args.budget,
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
    }
    met = []
    if args.target is not None:
        met.append(result["mean_acc"] >= args.target)
    if args.budget is not None:
        met.append(result["mean_wall_s"] <= args.budget)
    result["goal_met"] = all(met) if met else None
    print(
        f"\n| recipe | seeds | test acc (mean ± std, min) | wall s (mean, max) | goal |\n|---|---:|---|---|---|\n"
        f"| {args.recipe} | {len(rows)} | {result['mean_acc']:.2f} ± {result['std_acc']:.2f}, {min(accs):.2f} "
        f"| {result['mean_wall_s']:.1f}, {max(walls):.1f} | "
        f"{'—' if result['goal_met'] is None else ('met' if result['goal_met'] else 'NOT met')} "
        f"(≥ {args.target}% in ≤ {args.budget} s) |"
    )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
