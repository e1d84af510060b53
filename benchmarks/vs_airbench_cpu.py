"""vs_airbench.py ``--cpu``: time to accuracy against airbench94 on a CPU (vs_airbench.py's module docstring says
how). The device-patched copy of airbench94 (:data:`CPU_PATCH`), both systems' runs interleaved, each level's
fastest configuration, the table, the plot, ``--replot``'s input and the ``--record`` record. Imported by
vs_airbench.py, which puts the repository and benchmarks/ on ``sys.path``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

AIRBENCH_COMMIT = "f1c599c"  # the KellerJordan/cifar10-airbench commit CPU_PATCH was written against


# (what airbench94.py says, what the CPU copy says instead): device and precision lines only. ``{dtype}`` is
# ``bfloat16`` on CPUs with bf16 instructions (the nearest to airbench's fp16 network on a GPU: 16-bit weights and
# activations, BatchNorm kept in fp32 by airbench itself) and ``float`` elsewhere.
CPU_PATCH = [
    (
        "torch.backends.cudnn.benchmark = True",
        "import time\nclass _Timer:\n    def record(self): self.t = time.perf_counter()\n"
        "    def elapsed_time(self, other): return 1e3 * (other.t - self.t)",
    ),
    ("map_location=torch.device(gpu)", "map_location='cpu'"),
    ("self.images.half() / 255", "self.images.{dtype}() / 255"),
    ("net = net.half().cuda()", "net = net.{dtype}()"),
    (
        "if net_param.dtype in (torch.half, torch.float):",
        "if net_param.dtype in (torch.{dtype_name}, torch.float):",
    ),
    ("torch.cuda.Event(enable_timing=True)", "_Timer()"),
    ("torch.cuda.synchronize()", "pass"),
]


def cpu_copy(script: Path, work: Path, runs: int, epochs: float, bf16: bool) -> Path:
    """airbench94.py with :data:`CPU_PATCH` applied, ``runs`` runs of ``epochs`` epochs, written into ``work``
    (never into reglab)."""
    code = script.read_text()
    dtype, dtype_name = ("bfloat16", "bfloat16") if bf16 else ("float", "float")
    edits = [(old, new.format(dtype=dtype, dtype_name=dtype_name)) for old, new in CPU_PATCH]
    edits += [
        ("for run in range(25)", f"for run in range({runs})"),
        ("'train_epochs': 9.9", f"'train_epochs': {epochs}"),
    ]
    for old, new in edits:
        if old not in code:
            sys.exit(
                f"{script} has no line with {old!r}: this airbench version is not the one --cpu knows; "
                f"use commit {AIRBENCH_COMMIT} of KellerJordan/cifar10-airbench."
            )
        code = code.replace(old, new)
    out = work / f"airbench94_cpu_{epochs}ep.py"
    out.write_text(code)
    return out


def run_airbench_script(script: Path, work: Path, timeout: int) -> list[tuple[float, float]]:
    """Run an airbench94 script in ``work``; each run's (TTA test accuracy %, its own time in s)."""
    proc = subprocess.run([sys.executable, str(script)], cwd=work, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"airbench94 failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    runs = []
    for line in proc.stdout.splitlines():  # final row of each run: |  ...  |  eval  | ... | tta_val_acc | time |
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[1] == "eval":
            runs.append((100 * float(cells[5]), float(cells[6])))
    return runs


# ------------------------------------------------------------------------------ CPU: time to accuracy, same run
CPU_LEVELS = (80.0, 85.0, 88.0, 90.0)
# airbench94's epoch counts tried (it publishes 9.9; 4.5 reached 88% in two runs on a Zen 4 and missed it, 87.72%,
# in a third, records vs-airbench94-cpu-zen4-bf16-88-b1000 / -88-low-res, so 5 is there too); each a separate
# process of one run.
CPU_AIRBENCH_EPOCHS = (2.0, 3.0, 4.5, 5.0, 9.9)
# reglab's fastest recipes, shortened the same way (a warm-up of 23% of the run, as the recipes have).
CPU_REGLAB = (
    "fast-cpu-85 train.epochs=3 sched.warmup_epochs=0.69",
    "fast-cpu-85",
    "fast-cpu-88",
    "default train.epochs=10",
)
TIMERS = {
    "airbench94": "its own timer: whitening init + training + final TTA evaluation (not its per-epoch "
    "evaluations, data loading or process start-up)",
    "reglab": "the whole `python -m reglab train` command, process start to exit",
}


def config_tokens(text: str) -> list[str]:
    """A reglab configuration ``RECIPE KEY=VALUE ...`` as its arguments: split as a shell splits (quotes keep a
    value whole), and an unquoted value's brackets too: ``model.channels=[24, 128, 128]`` is one argument."""
    tokens: list[str] = []
    depth = 0
    for word in shlex.split(text):
        if depth > 0:
            tokens[-1] += " " + word
        else:
            tokens.append(word)
        depth += sum(word.count(c) for c in "[{") - sum(word.count(c) for c in "]}")
    if depth or not tokens:
        raise ValueError("unbalanced brackets" if tokens else "empty")
    return tokens


def airbench_cpu_run(airbench: Path, work: Path, epochs: float, bf16: bool, timeout: int) -> dict:
    """One run of the patched airbench94 with ``epochs`` epochs: its own timer, the process's wall time."""
    script = cpu_copy(airbench / "legacy" / "airbench94.py", work, 1, epochs, bf16)
    t0 = time.perf_counter()
    (runs,) = [run_airbench_script(script, work, timeout)]
    wall = time.perf_counter() - t0
    if len(runs) != 1:
        sys.exit(f"airbench94 ({epochs} epochs) printed {len(runs)} final 'eval' rows, expected 1.")
    acc, own = runs[0]
    return {"config": f"{epochs:g} epochs", "test_acc": acc, "time_s": own, "process_wall_s": round(wall, 1)}


def reglab_cpu_run(candidate: list[str], seed: int, root: Path, data_dir: str) -> dict:
    """One run of the configuration ``candidate`` (the recipe, then its overrides, each one argument)."""
    from time_to_accuracy import one_run

    recipe, *overrides = candidate
    run = one_run(recipe, seed, root / f"{len(list(root.glob('*')))}-s{seed}", data_dir, overrides)
    return {
        "config": " ".join(candidate),
        "seed": seed,
        "test_acc": run["test_acc"],
        "time_s": run["wall_s"],
        "train_loop_s": run["train_s"],
        "precision": run["precision"],
    }


def fastest_to(level: float, runs: list[dict]) -> dict | None:
    """The configuration with the smallest mean time among those whose mean test accuracy reaches ``level``."""
    by_config: dict[str, list[dict]] = {}
    for r in runs:
        by_config.setdefault(r["config"], []).append(r)
    reached = [
        {
            "config": c,
            "n": len(rs),
            "test_acc": statistics.mean(r["test_acc"] for r in rs),
            "time_s": statistics.mean(r["time_s"] for r in rs),
        }
        for c, rs in by_config.items()
        if statistics.mean(r["test_acc"] for r in rs) >= level
    ]
    return min(reached, key=lambda r: r["time_s"]) if reached else None


def cpu_side_by_side(args: argparse.Namespace, airbench: Path, work: Path) -> dict:
    """Both systems' configurations, interleaved (airbench config i, reglab config i, ...), ``--seeds`` rounds, so
    load on a shared machine falls on both alike; then the time-to-accuracy table at each level."""
    from reglab.train.device import bf16_is_native, cpu_name

    bf16 = {"auto": bf16_is_native(torch_device_cpu()), "bf16": True, "fp32": False}[args.precision]
    reglab_set = [f"train.amp={'bf16' if bf16 else 'off'}", *args.set]
    candidates = [[*c, *reglab_set] for c in (args.reglab or [config_tokens(c) for c in CPU_REGLAB])]
    epochs = args.airbench_epochs or CPU_AIRBENCH_EPOCHS
    head = {  # what the table needs besides the runs: in the .partial file too, so --replot can draw it
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "precision": "bf16" if bf16 else "fp32",
        "airbench_commit": AIRBENCH_COMMIT,
        "timers": TIMERS,
        "levels_asked": list(args.levels),
        "seeds": args.seeds,
        "date": time.strftime("%Y-%m-%d"),
    }
    ab_runs, rg_runs = [], []
    root = work / "reglab-runs"
    root.mkdir()
    for seed in range(args.seeds):
        for i in range(max(len(epochs), len(candidates))):
            if i < len(epochs):
                ab_runs.append({**airbench_cpu_run(airbench, work, epochs[i], bf16, args.timeout), "seed": seed})
                print(f"airbench94 {ab_runs[-1]}", flush=True)
            if i < len(candidates):
                rg_runs.append(reglab_cpu_run(candidates[i], seed, root, args.data_dir))
                print(f"reglab {rg_runs[-1]}", flush=True)
            if args.output:  # what has run so far, in case the rest is cut short
                partial = {**head, "unfinished": True, "airbench_runs": ab_runs, "reglab_runs": rg_runs}
                Path(args.output + ".partial").write_text(json.dumps(partial))
    return {
        **head,
        "airbench_runs": ab_runs,
        "reglab_runs": rg_runs,
        "levels": cpu_levels(args.levels, ab_runs, rg_runs),
    }


def cpu_levels(levels, ab_runs: list[dict], rg_runs: list[dict]) -> list[dict]:
    """Per level, each system's fastest configuration reaching it and reglab's time over airbench94's."""
    rows = []
    for level in levels:
        ab, rg = fastest_to(level, ab_runs), fastest_to(level, rg_runs)
        ratio = rg["time_s"] / ab["time_s"] if ab and rg else None
        rows.append({"level": level, "airbench94": ab, "reglab": rg, "ratio": ratio})
    return rows


def replot_input(path: Path, levels, record: bool) -> dict:
    """``--replot``'s JSON: a finished --cpu run's as it is; the ``.partial`` file of one cut short (its runs so
    far; older ones hold nothing else) with its per-level table computed at ``levels`` (None: the levels the run was asked for, else CPU_LEVELS). One line, no traceback,
    when the file cannot be drawn."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"--replot {path}: cannot read it as JSON ({e})")
    if not (
        isinstance(result, dict) and all(isinstance(result.get(k), list) for k in ("airbench_runs", "reglab_runs"))
    ):
        sys.exit(f"--replot {path}: not the JSON of a --cpu run (it has no airbench_runs and reglab_runs lists)")
    if "levels" in result:
        return result
    ab, rg = result["airbench_runs"], result["reglab_runs"]
    if not ab and not rg:
        sys.exit(f"--replot {path}: an unfinished run with no finished run in it yet; nothing to draw")
    if record:
        sys.exit(f"--replot {path}: an unfinished run; --record takes a finished run's JSON only")
    print(f"{path}: an unfinished run ({len(ab)} airbench94, {len(rg)} reglab runs so far); drawing those")
    precisions = sorted({r["precision"] for r in rg if r.get("precision")})
    counts = [sum(r["config"] == c for r in runs) for runs in (ab, rg) for c in {r["config"] for r in runs}]
    return {
        "machine": "machine not recorded",
        "precision": ", ".join(precisions) or "precision not recorded",
        "airbench_commit": AIRBENCH_COMMIT,
        "timers": TIMERS,
        **result,
        "seeds": f"up to {max(counts)}",
        "levels": cpu_levels(levels or result.get("levels_asked") or CPU_LEVELS, ab, rg),
    }


def torch_device_cpu():
    import torch

    return torch.device("cpu")


def cpu_record(result: dict, record_id: str, command: str) -> dict:
    """``result`` as a record of benchmarks/results/records/ (table ``time-to-level-vs-airbench``): every run of
    both systems; benchmarks/render_results.py computes the per-level table from them."""
    from reglab.train.device import cpu_name

    runs = [{"system": "airbench94", **r} for r in result["airbench_runs"]]
    runs += [
        {"system": "reglab", **{k: v for k, v in r.items() if k != "precision"}} for r in result["reglab_runs"]
    ]
    for r in runs:
        r["test_acc"] = round(r["test_acc"], 2)
        r["time_s"] = round(r["time_s"], 1)
    return {
        "schema": 1,
        "id": record_id,
        "table": "time-to-level-vs-airbench",
        "status": "current",
        "date": result["date"],
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "gpu": None},
        "precision": f"{result['precision']} (both: reglab train.amp, airbench94's network in {result['precision']})",
        "command": command,
        "levels": list(result.get("levels_asked") or [row["level"] for row in result["levels"]]),
        "runs": runs,
        "notes": f"airbench94 = KellerJordan/cifar10-airbench @ {result['airbench_commit']}, legacy/airbench94.py with "
        "vs_airbench.py's CPU_PATCH (device and precision lines only), one run per process. Timers: "
        f"airbench94 {result['timers']['airbench94']}; reglab {result['timers']['reglab']}.",
    }


def print_cpu_table(result: dict) -> None:
    print(
        f"\n{result['machine']}, {result['precision']}; airbench94 timer: {result['timers']['airbench94']}; "
        f"reglab timer: {result['timers']['reglab']}"
    )
    print(
        "\n| test acc ≥ | reglab: fastest config | acc | time (s) | airbench94: epochs | acc | time (s) | ratio |"
    )
    print("|---:|---|---:|---:|---|---:|---:|---:|")
    for row in result["levels"]:
        rg, ab = row["reglab"], row["airbench94"]
        rg_cells = f"{rg['config']} | {rg['test_acc']:.2f} | {rg['time_s']:.0f}" if rg else "not reached | — | —"
        ab_cells = f"{ab['config']} | {ab['test_acc']:.2f} | {ab['time_s']:.0f}" if ab else "not reached | — | —"
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] else "—"
        print(f"| {row['level']:g}% | {rg_cells} | {ab_cells} | {ratio} |")


def plot_cpu(result: dict, path: Path) -> None:
    """Test accuracy against time, every run a dot, each configuration's mean a marker joined per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, runs, colour in (
        ("airbench94", result["airbench_runs"], "tab:orange"),
        ("reglab", result["reglab_runs"], "tab:blue"),
    ):
        if not runs:  # an unfinished run's file may hold one system's runs only
            continue
        ax.scatter([r["time_s"] for r in runs], [r["test_acc"] for r in runs], s=12, alpha=0.5, color=colour)
        means = []
        for config in dict.fromkeys(r["config"] for r in runs):
            rs = [r for r in runs if r["config"] == config]
            means.append((statistics.mean(r["time_s"] for r in rs), statistics.mean(r["test_acc"] for r in rs)))
        means.sort()
        ax.plot(*zip(*means), marker="o", color=colour, label=f"{name} (mean of {result['seeds']} per config)")
    for row in result["levels"]:
        ax.axhline(row["level"], color="grey", lw=0.6, ls="--")
    times = [r["time_s"] for key in ("airbench_runs", "reglab_runs") for r in result.get(key, [])]
    if times and max(times) / min(times) < 3:
        # Under half a decade a log axis shows one labelled tick or none past 1000 s: a linear one reads better.
        ax.set_xlabel("time (s): reglab whole command; airbench94 its own timer")
    else:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(
            matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if str(int(v))[0] in "25" else "")
        )
        ax.set_xlabel("time (s, log scale): reglab whole command; airbench94 its own timer")
    ax.set_ylabel("CIFAR-10 test accuracy (%), JPEG-decoded copy")
    ax.set_title(f"Time to accuracy, same CPU and run: {result['machine']}, {result['precision']}", fontsize=8)
    ax.legend(fontsize=8, loc="best")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
