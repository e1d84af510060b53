"""Side by side with airbench94 (Jordan, 2024) on the same machine: unmodified against ``fast-gpu-94`` on a GPU,
time to 80/85/88/90% test accuracy against reglab's fastest recipes on a CPU (``--cpu``).

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

``--cpu`` is the side by side on a CPU, as time to accuracy. airbench94 cannot run unmodified on a CPU, so a
copy of its script is written into the benchmark's temporary folder with only its device and precision lines
changed (:data:`vs_airbench_cpu.CPU_PATCH`: no ``.cuda()``; its fp16 network becomes bf16 on CPUs with bf16
instructions, fp32 elsewhere, BatchNorm kept fp32 by airbench itself; a wall-clock timer in place of CUDA events),
one run per process and its epoch count set (``--airbench-epochs``, it publishes 9.9). reglab's configurations
(``--reglab``, default :data:`vs_airbench_cpu.CPU_REGLAB`: its fastest recipes, some shortened) run in the same
bf16/fp32 precision. Both systems' configurations are interleaved, ``--seeds`` rounds (default 2), so load on a
shared machine falls on both alike. For each level of ``--levels`` (test accuracy on this copy) the table gives
each system's fastest configuration whose mean accuracy reaches it, and the ratio of reglab's whole-command time
to airbench94's own timer (training + TTA, without its data loading, per-epoch evaluations and process start-up:
the comparison favours airbench). Choosing the epoch count by test accuracy is what a time-to-accuracy benchmark
does for both systems alike; no reglab setting is chosen here. ``--plot`` draws accuracy against time;
``--replot JSON`` redraws a finished run (or, from its ``-o FILE.partial``, the runs of one cut short)::

    git clone https://github.com/KellerJordan/cifar10-airbench /tmp/airbench   # commit f1c599c
    .venv/bin/python benchmarks/vs_airbench.py --cpu --airbench /tmp/airbench --data-dir ../shared/data \
        --plot vs.png -o vs.json
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
sys.path.insert(0, str(REPO / "benchmarks"))

from vs_airbench_cpu import (  # noqa: E402
    CPU_LEVELS,
    config_tokens,
    cpu_record,
    cpu_side_by_side,
    plot_cpu,
    print_cpu_table,
    replot_input,
    run_airbench_script,
)


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


def check_checkout(airbench: Path) -> None:
    if not (airbench / "legacy" / "airbench94.py").is_file():
        sys.exit(
            f"{airbench}/legacy/airbench94.py not found: --airbench must be a checkout of "
            "KellerJordan/cifar10-airbench."
        )


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected numbers separated by commas, e.g. 80,85,88,90"
        ) from None


def _config(text: str) -> list[str]:
    try:
        return config_tokens(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}; expected 'RECIPE KEY=VALUE ...'") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--replot",
        default=None,
        metavar="JSON",
        help="--cpu: redraw a run's plot and table (a finished run's JSON or the .partial file of one cut short)",
    )
    p.add_argument(
        "--airbench",
        required="--replot" not in sys.argv,
        help="checkout of github.com/KellerJordan/cifar10-airbench",
    )
    p.add_argument("--data-dir", required="--replot" not in sys.argv)
    p.add_argument("--seeds", type=int, default=None, help="runs per configuration (default: GPU 5, --cpu 2)")
    p.add_argument("--cpu", action="store_true", help="time to accuracy on this CPU against a device-patched copy")
    p.add_argument(
        "--levels",
        type=_floats,
        default=None,
        help="--cpu: test accuracies (%%), comma-separated (default: 80,85,88,90; --replot: the run's own)",
    )
    p.add_argument("--airbench-epochs", type=_floats, default=None, help="--cpu: airbench94 epoch counts to run")
    p.add_argument(
        "--reglab",
        action="append",
        default=None,
        type=_config,
        metavar="'RECIPE KEY=VALUE ...'",
        help="--cpu: a reglab configuration to run (repeatable; default: CPU_REGLAB); split as a shell splits, "
        "a value in brackets kept whole",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="--cpu: both systems' precision (auto: bf16 where the CPU has bf16 instructions)",
    )
    p.add_argument("--plot", default=None, help="--cpu: also draw the time-to-accuracy plot here (PNG)")
    p.add_argument("--recipe", default="fast-gpu-94", help="GPU: the reglab recipe")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="reglab config override for every run (repeatable), e.g. --set train.cuda_graph=true",
    )
    p.add_argument("--timeout", type=int, default=7200, help="seconds one airbench94 process may take")
    p.add_argument("-o", "--output", default=None)
    p.add_argument("--record", default=None, help="--cpu: also write a benchmarks/results/records/ record here")
    p.add_argument("--command", default=None, help="--replot --record: the command the record says was run")
    args = p.parse_args()
    replot_levels, args.levels = args.levels, args.levels or CPU_LEVELS
    if args.replot:  # draw the plot (and print the table) again from a --cpu run's JSON (or its .partial file)
        result = replot_input(Path(args.replot), replot_levels, bool(args.record))
        print_cpu_table(result)
        plot_cpu(result, Path(args.plot or Path(args.replot).with_suffix(".png")))
        if args.record:
            rec = cpu_record(result, Path(args.record).stem, args.command or "benchmarks/vs_airbench.py --cpu")
            Path(args.record).write_text(json.dumps(rec, indent=2, ensure_ascii=False) + "\n")
        return
    airbench = Path(args.airbench).resolve()
    check_checkout(airbench)
    work = Path(tempfile.mkdtemp(prefix="airbench-"))
    write_airbench_data(args.data_dir, work)
    if args.cpu:
        args.seeds = args.seeds or 2
        result = cpu_side_by_side(args, airbench, work)
        print_cpu_table(result)
        if args.plot:
            plot_cpu(result, Path(args.plot))
        if args.output:
            Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        if args.record:
            rec = cpu_record(result, Path(args.record).stem, "benchmarks/vs_airbench.py " + " ".join(sys.argv[1:]))
            Path(args.record).write_text(json.dumps(rec, indent=2, ensure_ascii=False) + "\n")
        return
    args.seeds = args.seeds or 5
    recipe = args.recipe
    t0 = time.perf_counter()
    ab = run_airbench_script(airbench / "legacy" / "airbench94.py", work, args.timeout)
    ab_wall = time.perf_counter() - t0
    out = work / "reglab.json"
    if not ab:
        sys.exit("airbench94 ran but printed no final 'eval' row; nothing to compare.")
    target = "94"
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
    name = "airbench94"
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
