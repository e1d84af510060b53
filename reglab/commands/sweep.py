"""``reglab sweep``: hyperparameter sweeps (Optuna).

    reglab sweep SWEEP.yaml [--workers N] [--storage URL] [--trials N] [-o DIR] [KEY=VALUE ...]
    reglab sweep SWEEP.yaml --launcher slurm --workers N [--slurm KEY=VALUE ...] [--wait]
    reglab sweep report DIR [-o OUT] [--importance ped_anova|fanova]
    reglab sweep best DIR [--overwrite] [KEY=VALUE ...]
    reglab sweep dashboard DIR [--host 127.0.0.1] [--port 8080]

The first positional word is ``report``, ``best`` or ``dashboard`` (sub-forms) or the sweep file. KEY=VALUE
overrides with a sweep file apply to every trial. Those that change what a trial trains are recorded in the
sweep directory's sweep.yaml, and a resume with other ones is refused (one study must not mix trials of two
experiments); where trials run and what they write (``data.dir``, ``run.device``, ``run.threads``, loggers,
``data.download``, ...: ``reglab.config.PLACEMENT_KEYS`` and ``OUTPUT_KEYS``) may differ from run to run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError

FORMS = ("report", "best", "dashboard")


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="hyperparameter sweeps (Optuna): run/resume a sweep, `report DIR`, `best DIR`, `dashboard DIR`",
        description="Run or resume a sweep: a base recipe plus a search space (sweeps/*.yaml, docs/sweeps.md), "
        "objective = validation accuracy. `reglab sweep report DIR` writes the analysis (best config as "
        "a recipe, importance, figures); `reglab sweep best DIR` retrains the best config on "
        "train+val and reports test accuracy once; `reglab sweep dashboard DIR` serves the study live in "
        "optuna-dashboard (pip install 'reglab[dashboard]').",
    )
    p.add_argument("items", nargs="*", metavar="SWEEP.yaml|report DIR|best DIR|dashboard DIR [KEY=VALUE ...]")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument(
        "--storage",
        help="Optuna storage URL shared by workers/machines: sqlite:///FILE, journal:FILE, "
        "postgresql://... (default: study.db in the sweep directory)",
    )
    p.add_argument("--trials", type=int, help="finished trials to reach (default: the sweep file's trials)")
    p.add_argument(
        "-o",
        "--out",
        help="sweep directory (default runs/sweeps/<name>); with `report DIR`: the report's folder (default "
        "DIR/report)",
    )
    p.add_argument("--no-report", action="store_true", help="do not write the report when the sweep ends")
    p.add_argument(
        "--importance",
        choices=["ped_anova", "fanova"],
        default="ped_anova",
        help="importance method for the report (fanova needs scikit-learn)",
    )
    p.add_argument("--overwrite", action="store_true", help="best: retrain even when already done")
    p.add_argument("--quiet", action="store_true", help="best: plain log lines instead of a progress bar")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="dashboard: address to listen on (default 127.0.0.1, this machine only)",
    )
    p.add_argument("--port", type=int, default=8080, help="dashboard: port (default 8080; 0 = any free port)")
    p.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="local worker processes "
        "(default) or --workers N Slurm array tasks on the sweep's storage (docs/cluster.md)",
    )
    p.add_argument(
        "--slurm",
        action="append",
        metavar="KEY=VALUE",
        help="a Slurm setting, as for reglab study: "
        "partition, time, cpus_per_task, gpus_per_task, mem_gb, qos, account, constraint, setup, ...",
    )
    p.add_argument("--wait", action="store_true", help="with --launcher slurm: wait for the workers, then report")
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_sweep)


def _log(prefix: str = ""):
    def log(msg: str) -> None:
        print(f"{prefix}{msg}", flush=True)

    return log


def _overrides(items: list[str], what: str) -> list[str]:
    bad = [i for i in items if "=" not in i]
    if bad:
        raise UserError(f"{what}: unexpected argument(s) {' '.join(bad)}; only KEY=VALUE overrides may follow.")
    return items


def cmd_sweep(args) -> int:
    items = list(args.items)
    if not items:
        raise UserError(
            "give a sweep file (reglab sweep sweeps/cpu_quick.yaml), or `reglab sweep report DIR` / "
            "`reglab sweep best DIR` / `reglab sweep dashboard DIR`."
        )
    if items[0] in FORMS and not Path(items[0]).is_file():
        if len(items) < 2 or "=" in items[1]:
            raise UserError(f"reglab sweep {items[0]} DIR: give the sweep directory (default runs/sweeps/<name>).")
        sweep_dir, rest = Path(items[1]), items[2:]
        if items[0] == "report":
            _overrides(rest, "sweep report")
            if rest:
                raise UserError("sweep report takes no KEY=VALUE overrides.")
            return _report(sweep_dir, args.importance, Path(args.out) if args.out else None)
        if args.out:  # the sweep directory is DIR itself: an -o here would be ignored
            does = "retrains into DIR/best/" if items[0] == "best" else "only serves DIR's study"
            raise UserError(f"sweep {items[0]} DIR takes no -o/--out: it {does}; drop -o.")
        if items[0] == "dashboard":
            if rest:
                raise UserError("sweep dashboard takes no KEY=VALUE overrides; options: --host, --port.")
            from ..sweep.dashboard import serve

            return serve(sweep_dir, args.host, args.port, _log())
        from ..sweep.best import retrain_best

        retrain_best(sweep_dir, _overrides(rest, "sweep best"), overwrite=args.overwrite, quiet=args.quiet)
        return 0
    return _run(args, Path(items[0]), _overrides(items[1:], "sweep"))


def _report(sweep_dir: Path, method: str, out: Path | None = None) -> int:
    from ..sweep.report import summary_lines, write_sweep_report

    s = write_sweep_report(sweep_dir, method, out)
    print("\n".join(summary_lines(s)))
    if s.get("importance"):
        print(
            "importance ("
            + s["importance_method"]
            + "): "
            + ", ".join(f"{k} {v:.2f}" for k, v in s["importance"].items())
        )
    print(f"report: {s['files']['dir']}/report.md, report.html, best.yaml, trials.csv and PNGs")
    return 0


def _default_dir(path: Path, name: str) -> Path:
    from ..sweep.storage import DB_FILE, SWEEP_FILE

    parent = path.resolve().parent
    if path.name == SWEEP_FILE and ((parent / DB_FILE).is_file() or (parent / "trials").is_dir()):
        return parent  # rerunning the copy inside a sweep directory resumes that sweep
    return Path("runs") / "sweeps" / name


def _run(args, path: Path, extra: list[str]) -> int:
    from ..sweep.runner import Worker, counts, recover_stale
    from ..sweep.spec import load_sweep, recorded_overrides, resolve_sweep, searched_override_error
    from ..sweep.storage import SWEEP_FILE, ask_lock, prepare, shown_url, storage_url

    path = resolve_sweep(path)
    spec = load_sweep(path)
    if args.storage:
        spec.storage = args.storage
    if args.trials is not None:
        if args.trials < 1:
            raise UserError(f"--trials must be >= 1, got {args.trials}.")
        if spec.sampler.name == "grid" and args.trials > spec.grid_size():
            raise UserError(f"--trials {args.trials} is more than the grid's {spec.grid_size()} points.")
        spec.trials = args.trials
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}.")
    sweep_dir = Path(args.out) if args.out else _default_dir(path, spec.name)
    if args.launcher != "slurm" and (args.slurm or args.wait):
        raise UserError(f"{'--slurm' if args.slurm else '--wait'} is for Slurm workers: add --launcher slurm.")
    if spec.cli_overrides is not None and path.resolve() != (sweep_dir / SWEEP_FILE).resolve():
        raise UserError(_foreign_cli_overrides(path, sweep_dir))
    spec.cli_overrides = recorded_overrides(extra)  # checked against the saved ones by prepare()
    searched = searched_override_error(extra, spec.space, str(path))
    if searched:
        raise UserError(searched)
    try:
        spec.config({}, extra)
    except UserError as exc:
        raise UserError(f"command-line overrides: {exc}") from None
    if args.worker_index is not None:  # a process started by --workers
        import signal

        # answer the launcher's SIGINT even when started from a shell that ignores it (nohup, `&`)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        Worker(spec, sweep_dir, spec.trials, args.worker_index, extra, _log(f"[w{args.worker_index}] ")).run()
        return 0
    study = prepare(spec, sweep_dir)
    with ask_lock(sweep_dir):
        recover_stale(study, spec)
    c = counts(study)
    print(
        f"sweep {spec.name}: {c['done']}/{spec.trials} trials finished so far | sampler {spec.sampler.name}, "
        f"pruner {spec.pruner.name}, objective {spec.objective} | {shown_url(storage_url(spec, sweep_dir))} | "
        f"{sweep_dir}",
        flush=True,
    )
    code = 0
    if args.launcher == "slurm":
        if not _slurm_workers(args, spec, sweep_dir, extra):
            return 0
    elif args.workers > 1:
        from ..sweep.workers import run_workers

        code = run_workers(sweep_dir, spec.trials, args.workers, extra)
    else:
        Worker(spec, sweep_dir, spec.trials, 0, extra, _log()).run()
    c = counts(study)
    print(
        f"sweep {spec.name}: {c['done']}/{spec.trials} finished ({c['complete']} complete, {c['pruned']} pruned, "
        f"{c['failed']} failed)",
        flush=True,
    )
    if not args.no_report and c["done"]:
        _report(sweep_dir, args.importance)
    if code:
        print("reglab: some workers failed; rerun the same command to resume the sweep", file=sys.stderr)
    return code


def _foreign_cli_overrides(path: Path, sweep_dir: Path) -> str:
    """The refusal of a sweep file with ``cli_overrides`` run into ``sweep_dir``, of which it is not the own
    ``sweep.yaml``. ``reglab sweep`` records there the command-line overrides a sweep started with, and a resume of
    that directory checks the command line against them; anywhere else the command line would silently replace
    them."""
    from ..sweep.storage import SWEEP_FILE

    if path.name == SWEEP_FILE:  # another sweep directory's saved copy
        return (
            f"{path} records the command-line overrides (cli_overrides) of the sweep in {path.parent}, not of one "
            f"in {sweep_dir}: resume that sweep with -o {path.parent}, or start a new one from a copy of the file "
            "without its cli_overrides: entry, giving those KEY=VALUE overrides on the command line."
        )
    return (
        f"{path}: cli_overrides is written by reglab sweep into a sweep directory's {SWEEP_FILE} (the command-line "
        "overrides that sweep started with), not set by hand; delete it and give those KEY=VALUE overrides after "
        "the file on the command line, or put them in overrides:."
    )


def _slurm_workers(args, spec, sweep_dir: Path, extra: list[str]) -> bool:
    """``--launcher slurm``: the ``--workers N`` workers as one Slurm job array (each the same worker process as
    ``--workers`` starts locally) on the sweep's storage; with ``--wait``, wait for them and return True."""
    from ..study.slurm import DEFAULTS, CommandTask, describe, queue_states, submit_tasks
    from ..study.slurmstate import wait_gone
    from ..sweep.storage import storage_url
    from ..sweep.workers import worker_command
    from .study import _slurm_items

    settings = {**DEFAULTS, **_slurm_items(args.slurm or [])}
    settings.pop("type", None)
    if str(storage_url(spec, sweep_dir)).startswith("sqlite"):
        print(
            "note: a SQLite study is safe for workers on one node only; for workers on several nodes give "
            "--storage journal:FILE (on a shared file system) or postgresql://...",
            flush=True,
        )
    if not any(e.startswith("run.threads=") for e in extra):
        extra = [*extra, f"run.threads={settings['cpus_per_task']}"]
    folder = sweep_dir / "slurm"
    queue_states(folder, settings)
    tasks = [
        CommandTask(
            worker_command(sweep_dir.resolve(), spec.trials, i, extra), (folder / f"worker{i}.log").resolve()
        )
        for i in range(args.workers)
    ]
    ids = submit_tasks(folder, f"reglab-sweep-{spec.name}", tasks, settings)
    array = ids[0].split("_")[0]
    print(
        f"submitted job array {array} ({len(ids)} worker{'s' if len(ids) > 1 else ''}; {describe(settings)}); "
        f"worker logs in {folder}",
        flush=True,
    )
    if not args.wait:
        print(
            f"follow with: squeue -j {array}; when it ends: reglab sweep report {sweep_dir} (rerunning this "
            "command resumes the sweep)",
            flush=True,
        )
        return False
    wait_gone(
        {f"worker {i}": job for i, job in enumerate(ids)},
        lambda name, job: print(f"  {name} (job {job}) ended", flush=True),
    )
    return True
