"""GPU side by side: airbench94 (Jordan, 2024), unmodified, against reglab's ``fast-gpu-94`` on the same GPU.

airbench's public code is run as it is published (``legacy/airbench94.py`` of a checkout of
github.com/KellerJordan/cifar10-airbench that you fetch yourself; nothing of it is copied into reglab). The
script only gives it its data: airbench reads ``cifar10/train.pt`` / ``test.pt`` (a dict of uint8 NHWC
``images``, ``labels``, ``classes``) from its working directory and would otherwise download CIFAR-10, so the
same CIFAR-10 reglab trains on (``--data-dir``) is written there first, then airbench94 runs its 25 runs and
prints each run's ``tta_val_acc`` and ``total_time_seconds`` (its own timer: CUDA events around training and
the TTA evaluation). reglab's ``fast-gpu-94`` then runs ``--seeds`` times through
``benchmarks/time_to_accuracy.py`` (whole command, and the training loop's own time from summary.json). The
table compares mean test accuracy and time; airbench times itself after a warm-up run, so reglab's loop is also
shown less its first epoch's excess over the median epoch (the one-time start-up inside it). ``--set
KEY=VALUE`` passes overrides to reglab (e.g. ``train.cuda_graph=true``). Needs a CUDA GPU::

    git clone https://github.com/KellerJordan/cifar10-airbench /tmp/airbench
    .venv/bin/python benchmarks/vs_airbench.py --airbench /tmp/airbench --data-dir ../shared/data --seeds 5

``--cpu`` is a diagnostic for machines without a GPU (it answers "what does the fastest known recipe reach on
this data in this time?"), not the issue's GPU side by side: airbench94 cannot run unmodified on a CPU, so a
copy of its script is written into the benchmark's temporary folder with only its device and precision lines
changed (:data:`CPU_PATCH`: no ``.cuda()``/``.half()``, fp32, a wall-clock timer in place of CUDA events) and
``--airbench-runs`` runs instead of 25; it is then compared with ``fast-cpu-93`` (or ``--recipe``)::

    .venv/bin/python benchmarks/vs_airbench.py --cpu --airbench /tmp/airbench --data-dir ../shared/data \
        --seeds 1 --airbench-runs 1 --timeout 7200
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def write_airbench_data(data_dir: str, work: Path) -> None:
    import torch

    from reglab.config import load_config
    from reglab.data import load_splits

    splits = load_splits(
        load_config(None, [f"data.dir={data_dir}", "data.val_size=0", "data.download=false"]).data
    )
    (work / "cifar10").mkdir(parents=True, exist_ok=True)
    for name, split in (("train", splits.train), ("test", splits.test)):
        torch.save(
            {
                "images": split.images.permute(0, 2, 3, 1).contiguous(),
                "labels": split.labels,
                "classes": splits.classes,
            },
            work / "cifar10" / f"{name}.pt",
        )


# (what airbench94.py says, what the CPU copy says instead): device and precision only, and the number of runs.
CPU_PATCH = [
    (
        "torch.backends.cudnn.benchmark = True",
        "import time\nclass _Timer:\n    def record(self): self.t = time.perf_counter()\n"
        "    def elapsed_time(self, other): return 1e3 * (other.t - self.t)",
    ),
    ("map_location=torch.device(gpu)", "map_location='cpu'"),
    ("self.images.half() / 255", "self.images.float() / 255"),
    ("net = net.half().cuda()", "net = net.float()"),
    ("torch.cuda.Event(enable_timing=True)", "_Timer()"),
    ("torch.cuda.synchronize()", "pass"),
]


def cpu_copy(script: Path, work: Path, runs: int) -> Path:
    """airbench94.py with :data:`CPU_PATCH` applied and ``runs`` runs, written into ``work`` (never into reglab)."""
    code = script.read_text()
    for old, new in [*CPU_PATCH, ("for run in range(25)", f"for run in range({runs})")]:
        if old not in code:
            sys.exit(
                f"{script} has no line with {old!r}: this airbench version is not the one --cpu knows; "
                "use the commit named in docs/performance.md."
            )
        code = code.replace(old, new)
    out = work / "airbench94_cpu.py"
    out.write_text(code)
    return out


def run_airbench(
    airbench: Path, work: Path, timeout: int, cpu: bool = False, runs: int = 25
) -> list[tuple[float, float]]:
    script = airbench / "legacy" / "airbench94.py"
    if not script.is_file():
        sys.exit(f"{script} not found: --airbench must be a checkout of KellerJordan/cifar10-airbench.")
    if cpu:
        script = cpu_copy(script, work, runs)
    proc = subprocess.run([sys.executable, str(script)], cwd=work, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"airbench94 failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    runs = []
    for line in proc.stdout.splitlines():  # final row of each run: |  ...  |  eval  | ... | tta_val_acc | time |
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[1] == "eval":
            runs.append((100 * float(cells[5]), float(cells[6])))
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--airbench", required=True, help="checkout of github.com/KellerJordan/cifar10-airbench")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", type=int, default=5, help="reglab runs")
    p.add_argument("--cpu", action="store_true", help="CPU diagnostic: a device-patched copy of airbench94")
    p.add_argument(
        "--airbench-runs",
        type=int,
        default=None,
        help="--cpu only: airbench runs (default 1); the unmodified script runs its 25",
    )
    p.add_argument("--recipe", default=None, help="reglab recipe (default fast-gpu-94; with --cpu: fast-cpu-93)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="reglab config override for every seed (repeatable), e.g. --set train.cuda_graph=true",
    )
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    if args.airbench_runs is not None and not args.cpu:
        sys.exit("--airbench-runs needs --cpu: airbench94 unmodified always runs its 25 runs.")
    work = Path(tempfile.mkdtemp(prefix="airbench-"))
    write_airbench_data(args.data_dir, work)
    recipe = args.recipe or ("fast-cpu-93" if args.cpu else "fast-gpu-94")
    runs = args.airbench_runs or (1 if args.cpu else 25)
    t0 = time.perf_counter()
    ab = run_airbench(Path(args.airbench).resolve(), work, args.timeout, args.cpu, runs)
    ab_wall = time.perf_counter() - t0
    out = work / "reglab.json"
    if not ab:
        sys.exit("airbench94 ran but printed no final 'eval' row; nothing to compare.")
    target = "93" if args.cpu else "94"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "time_to_accuracy.py"),
            recipe,
            *args.set,
            "--seeds",
            str(args.seeds),
            "--data-dir",
            args.data_dir,
            "--target",
            target,
            "-o",
            str(out),
        ],
        check=True,
    )
    rg = json.loads(out.read_text())
    train_s = [r["train_s"] for r in rg["runs"]]
    excess = [r["first_epoch_excess_s"] for r in rg["runs"] if r.get("first_epoch_excess_s") is not None]
    warm_s = statistics.mean(t - e for t, e in zip(train_s, excess)) if len(excess) == len(train_s) else None
    result = {
        "airbench94": {
            "runs": len(ab),
            "mean_acc": statistics.mean(a for a, _ in ab),
            "mean_time_s": statistics.mean(t for _, t in ab),
            "process_wall_s": ab_wall,
            "cpu_patch": args.cpu,
        },
        "reglab": {
            "recipe": recipe,
            "overrides": args.set,
            "runs": rg["seeds"],
            "mean_acc": rg["mean_acc"],
            "mean_train_loop_s": statistics.mean(train_s),
            "mean_train_loop_less_first_epoch_excess_s": warm_s,
            "mean_whole_command_s": rg["mean_wall_s"],
        },
    }
    print("\n| system | runs | mean test acc | mean time (s) |\n|---|---:|---:|---:|")
    name = "airbench94, CPU copy" if args.cpu else "airbench94"
    print(
        f"| {name} (its own timer: training + TTA) | {len(ab)} | {result['airbench94']['mean_acc']:.2f} "
        f"| {result['airbench94']['mean_time_s']:.2f} |"
    )
    print(
        f"| {name} (whole process per run, incl. its per-epoch evals) | {len(ab)} "
        f"| {result['airbench94']['mean_acc']:.2f} | {ab_wall / max(len(ab), 1):.2f} |"
    )
    recipe = " ".join([recipe, *args.set])
    print(
        f"| reglab {recipe} (training loop incl. final TTA test) | {rg['seeds']} | {rg['mean_acc']:.2f} "
        f"| {statistics.mean(train_s):.2f} |"
    )
    if warm_s is not None:
        print(
            f"| reglab {recipe} (training loop less the first epoch's excess over the median epoch: the start-up "
            f"airbench's warm-up run absorbs) | {rg['seeds']} | {rg['mean_acc']:.2f} | {warm_s:.2f} |"
        )
    print(f"| reglab {recipe} (whole command) | {rg['seeds']} | {rg['mean_acc']:.2f} | {rg['mean_wall_s']:.2f} |")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
