"""``reglab study STUDY.yaml`` (run a set of runs) and ``reglab report DIRS -o OUT`` (tables, curves, HTML)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def _seeds_arg(text: str) -> int | list[int]:
    """``--seeds``: ``3`` (seeds 0, 1, 2) or ``3,4,5`` (those seeds)."""
    import argparse

    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a count (3) nor a list of seeds (3,4,5)") from None
    return values[0] if len(values) == 1 and "," not in text else values


def cmd_study(args) -> int:
    from ..api import prepare_study, run_study

    study, out = prepare_study(
        args.study,
        args.items,
        seeds=args.seeds,
        parallel=args.parallel,
        only=args.only.split(",") if args.only else None,
        output=args.output,
    )
    launcher = args.launcher or study.launcher.get("type", "local")
    cli_slurm = _slurm_items(args.slurm or [])
    if launcher != "slurm" and (cli_slurm or args.wait):
        raise UserError(
            f"{'--slurm' if cli_slurm else '--wait'} is for Slurm runs: add --launcher slurm (or "
            "type: slurm in the study file's launcher: section)."
        )
    if args.status:
        from ..study.slurmstate import print_status

        print_status(study, out)
        return 0
    if args.dry_run:
        refused = _dry_run(study, out, args.data_dir, args.parallel or study.parallel)
        if refused:  # the real run would stop here: the same one-line error, after the whole list
            raise UserError(f"{len(refused)} run(s) would be refused: {refused[0]}")
        if launcher == "slurm":
            from ..study.slurm import describe, settings_for

            settings = settings_for(study, cli_slurm, args.parallel)
            print(f"launcher slurm: one job array of the runs not done ({describe(settings)})")
        return 0
    if launcher == "slurm":
        return _study_on_slurm(args, study, out, cli_slurm)
    try:
        result = run_study(
            study, output=out, parallel=args.parallel, data_dir=args.data_dir, report=not args.no_report
        )
    except KeyboardInterrupt:
        print(f"interrupted: rerun the same command to resume ({out})")
        return 130
    if result.report:
        print(f"report: {result.report['markdown']}  {result.report['html']}")
    return _failed(result.failed, len(result.outcomes), out)


def _dry_run(study, out: Path, data_dir: str | None, parallel: int) -> list[str]:
    """List every run with the state the real run would find (:func:`checked_state`: a run trained with another
    config is ``refused``, as the real run refuses it) and its command, quoted for a shell; return the
    refusals."""
    import shlex

    from ..study.runner import checked_state, threads_per_run, train_command

    refused = []
    for run in study.runs:
        run_dir = out / "runs" / run.key
        try:
            state = checked_state(run_dir, run)
        except UserError as exc:
            refused.append(str(exc))
            print(f"{run.key:<32} {'refused':<8} {exc}")
            continue
        command = train_command(run, run_dir, state, threads_per_run(parallel), data_dir)[3:]
        print(f"{run.key:<32} {state:<8} {shlex.join(command)}")
    return refused


def _failed(failed: list, total: int, out: Path) -> int:
    if failed:
        print(
            f"{len(failed)} of {total} runs failed: {', '.join(o.key for o in failed)} "
            f"(logs in {out / 'logs'}); fix the cause and rerun the same command."
        )
        return 1
    return 0


def _study_on_slurm(args, study, out: Path, cli_slurm: dict) -> int:
    """``--launcher slurm``: submit what is left as one job array; with ``--wait`` (or nothing left to wait
    for) wait, then report as a local study does. The study directory is locked meanwhile, as for a local study
    (:func:`reglab.study.runner.study_lock`): two submissions at once would submit the same runs twice."""
    from ..study.runner import study_lock

    with study_lock(out):
        return _submit_and_wait(args, study, out, cli_slurm)


def _submit_and_wait(args, study, out: Path, cli_slurm: dict) -> int:
    """:func:`_study_on_slurm` under the study directory's lock."""
    from ..api import write_report
    from ..study.slurm import settings_for, submit_study
    from ..study.slurmstate import wait_for

    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    keys = submit_study(study, out, settings_for(study, cli_slurm, args.parallel), data_dir=data_dir)
    again = " ".join(["reglab study", args.study, *args.items, *(["-o", str(args.output)] if args.output else [])])
    if keys and not args.wait:
        print(f"follow with: {again} --status   (rerun the same command later to continue stopped runs)")
        return 0
    try:
        outcomes = wait_for(study, out, keys)
    except KeyboardInterrupt:
        print(f"stopped waiting; the Slurm jobs go on: {again} --status")
        return 130
    if not args.no_report:
        files = write_report(out / "runs", out / "report", title=f"study {study.name}")
        print(f"report: {files['markdown']}  {files['html']}")
    return _failed([o for o in outcomes if o.status == "failed"], len(outcomes), out)


def _slurm_items(items: list[str]) -> dict:
    """``--slurm KEY=VALUE`` items -> validated launcher settings (``setup=LINE`` repeats, ``sbatch.OPTION=V``)."""
    from ..study.spec import LAUNCHER_KEYS, parse_launcher
    from ..typedyaml import suggest

    raw: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UserError(
                f"--slurm {item!r}: expected KEY=VALUE, e.g. --slurm partition=gpu --slurm time=2:00:00."
            )
        if key.startswith("sbatch."):
            raw.setdefault("sbatch", {})[key[len("sbatch.") :]] = value
        elif key == "setup":
            raw.setdefault("setup", []).append(value)
        elif key in ("cpus_per_task", "gpus_per_task", "max_running", "max_timeouts", "mem_gb"):
            try:
                raw[key] = float(value) if key == "mem_gb" else int(value)
            except ValueError:
                raise UserError(f"--slurm {key}={value}: must be {LAUNCHER_KEYS[key]}.") from None
        elif key in LAUNCHER_KEYS:
            raw[key] = value
        else:
            raise UserError(
                f"--slurm {key}: unknown key{suggest(key, LAUNCHER_KEYS)}; the keys are: "
                f"{', '.join(LAUNCHER_KEYS)} (and sbatch.OPTION=VALUE for any other sbatch option)."
            )
    return parse_launcher(raw, "--slurm")


def cmd_report(args) -> int:
    from ..api import write_report

    files = write_report(args.dirs, args.output, title=args.title, reference=args.reference)
    print(open(files["markdown"]).read().split("![curves]")[0].rstrip())
    print(f"\nwrote {', '.join(str(p) for p in files.values())}")
    return 0


def cmd_findings(args) -> int:
    """One table of every claim of the given study directories, with its measured effect and verdict."""
    import yaml

    from ..track.comparison import claim_rows, study_settings
    from ..track.records import by_group, load_records

    lines = [
        "| claim | report says | measured effect [95% CI] | n | verdict | regenerate |",
        "| --- | --- | --- | ---: | --- | --- |",
    ]
    counts: dict[str, int] = {}
    for d in map(Path, args.study_dirs):
        if not (d / "study.yaml").is_file():
            raise UserError(f"{d} is not a study directory (no study.yaml); give folders written by reglab study.")
        raw = yaml.safe_load((d / "study.yaml").read_text()) or {}
        records = load_records([d / "runs"])
        settings = study_settings([r.path for r in records])
        if not settings.get("claims"):
            continue
        groups = {
            g: [{"seed": r.seed, **r.row} for r in recs if r.summary is not None]
            for g, recs in by_group(records).items()
        }
        budget = f" budget={raw['budget']}" if raw.get("budget") else ""
        seeds = raw.get("seeds") or [0]
        seeds_arg = str(len(seeds)) if seeds == list(range(len(seeds))) else ",".join(map(str, seeds))
        extra = "".join(f" {o}" for o in raw.get("cli_overrides") or [])
        if isinstance(raw.get("runs"), dict) and set(groups) < set(raw["runs"]):  # ran with --only
            extra += " --only " + ",".join(g for g in raw["runs"] if g in groups)
        command = f"`reglab study {raw.get('name', d.name)}{budget}{extra} --seeds {seeds_arg}`"
        for row in claim_rows(groups, settings["claims"]):
            counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
            effect = f"{row['effect of']}: {row['effect']} ({row['metric']}; expected {row['expected']})"
            lines.append(
                f"| {row['claim']} | {row['source']} | {effect} | {row['n']} | **{row['verdict']}** | {command} |"
            )
    lines += ["", "Verdicts: " + ", ".join(f"{v} {n}" for v, n in sorted(counts.items())) + "."]
    text = "\n".join(lines) + "\n"
    if args.output:
        from ..train.checkpoint import atomic_write_text

        atomic_write_text(Path(args.output), text)
    print(text, end="")
    return 0


def register(sub) -> None:
    st = sub.add_parser(
        "study",
        help="run a named set of runs (overrides or a grid, n seeds each), then report",
        description="Run every run of a study file, each a `reglab train` process with its own "
        "run directory under the study directory. Rerunning skips finished runs and "
        "resumes interrupted ones. Study files: studies/*.yaml.",
    )
    st.add_argument("study", metavar="STUDY", help="a study YAML file or the name of one in studies/")
    st.add_argument(
        "items",
        nargs="*",
        metavar="KEY=VALUE",
        help="overrides for every run; budget=NAME picks the recipes' budget (e.g. budget=cpu)",
    )
    st.add_argument("-o", "--output", help="study directory (default runs/studies/<name>)")
    st.add_argument(
        "-j",
        "--parallel",
        type=int,
        help="runs at a time (default: the file's `parallel`, else 1; "
        "with Slurm: array tasks at a time, default all)",
    )
    st.add_argument(
        "--seeds",
        type=_seeds_arg,
        metavar="N|S1,S2,...",
        help="seeds per run, as a count (seeds 0..N-1) or a list (e.g. 3,4,5 for three new seeds); "
        "replaces the file's `seeds`",
    )
    st.add_argument("--only", help="comma-separated run names to run")
    st.add_argument("--data-dir", help="dataset folder for every run")
    st.add_argument("--dry-run", action="store_true", help="list the runs, their state and command; run nothing")
    st.add_argument("--no-report", action="store_true", help="skip writing report/ at the end")
    st.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        help="local processes (default) or one Slurm job "
        "array through submitit (default: the study file's launcher: type); see docs/cluster.md",
    )
    st.add_argument(
        "--slurm",
        action="append",
        metavar="KEY=VALUE",
        help="a Slurm setting (repeatable; wins over "
        "the file's launcher:): partition, time, cpus_per_task, gpus_per_task, mem_gb, qos, account, "
        "constraint, max_running, max_timeouts, setup, python, sbatch.OPTION",
    )
    st.add_argument("--wait", action="store_true", help="with --launcher slurm: wait for the jobs, then report")
    st.add_argument(
        "--status", action="store_true", help="each run's Slurm job state and run directory; runs nothing"
    )
    st.set_defaults(func=cmd_study)

    rp = sub.add_parser(
        "report",
        help="comparison table (Markdown, CSV), overlaid curves and an HTML page",
        description="Summarize run directories: pass study directories, run directories or "
        "folders holding them. Runs with the same run.name are seeds of one group.",
    )
    rp.add_argument("dirs", nargs="+", metavar="DIR")
    rp.add_argument("-o", "--output", default="report", help="output folder (default ./report)")
    rp.add_argument("--title", help="page title")
    rp.add_argument(
        "--reference",
        metavar="GROUP",
        help="the group every other is compared with, paired by "
        "seed (default: the study file's reference:, else the first group)",
    )
    rp.set_defaults(func=cmd_report)

    fd = sub.add_parser(
        "findings",
        help="every claim of the given studies: measured effect, 95%% CI, verdict",
        description="Collect the claims of study directories (their study file's claims:) into "
        "one Markdown table: the report's statement, the measured paired effect with "
        "its 95% interval over seeds, the verdict, and the command that reruns it.",
    )
    fd.add_argument("study_dirs", nargs="+", metavar="STUDY_DIR")
    fd.add_argument("-o", "--output", help="also write the table to this file")
    fd.set_defaults(func=cmd_findings)
