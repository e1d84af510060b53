"""``reglab analyze``: analyses of trained runs that ask why mixup works (after Liang et al., *Understanding
Mixup Training Methods*, 2018).

* ``reglab analyze interpolation RUN... -o OUT`` -- accuracy on mixed test pairs, lam = 0..1 by 0.01.
* ``reglab analyze landscape RUN... [-o OUT] [--subset N] [--resolution R]`` -- loss landscapes along
  filter-normalized directions, the grow-to-L surface, basin widths (``commands/landscape.py``).
* ``reglab analyze ratio STUDY_DIR -o OUT`` -- the decoupled mixing-ratio panels of a study.

Each writes PNGs, a JSON file with every number, a Markdown table and an offline ``index.html`` in OUT.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError


def set_threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def load_runs(args):
    from ..analysis.common import load_run, unique_names

    overrides = [f"data.dir={args.data_dir}"] if args.data_dir else []
    runs = [load_run(Path(r), args.checkpoint, overrides) for r in args.runs]
    return runs, unique_names(runs)


def write_outputs(
    out: Path, stem: str, payload: dict, table_md: str, title: str, sections: list[tuple[str, str]]
) -> None:
    from ..track.html import write_page
    from ..train.checkpoint import atomic_write_text

    atomic_write_text(out / f"{stem}.json", json.dumps(payload, indent=1) + "\n")
    atomic_write_text(out / f"{stem}.md", table_md)
    write_page(out / "index.html" if stem != "landscape" else out / "landscape.html", title, sections)


def eval_precision(args) -> str | None:
    """``--amp``: None = the run's own ``train.amp``, else the override (``off``, ``bf16``)."""
    return None if args.amp == "run" else args.amp


def cmd_interpolation(args) -> int:
    from ..analysis.interpolation import (
        bootstrap_summaries,
        curves_from_hits,
        difference_table,
        hits_options,
        markdown_table,
        pair_hits,
        plot_interpolation,
        sample_pairs,
        summary_table,
    )
    from ..track.html import embed_png, html_table

    set_threads(args)
    if args.pairs < 1:
        raise UserError(f"--pairs must be >= 1, got {args.pairs}.")
    if args.bootstrap < 0 or args.bootstrap == 1:
        raise UserError(f"--bootstrap must be 0 (off) or >= 2 replicates, got {args.bootstrap}.")
    runs, names = load_runs(args)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    test = runs[0].data.test
    for r in runs[1:]:
        if len(r.data.test) != len(test) or not bool((r.data.test.labels == test.labels).all()):
            raise UserError(f"{r.path} uses another test set than {runs[0].path}; compare runs of one dataset.")
    i1, i2 = sample_pairs(test.labels, args.pairs, args.seed)
    results, hits = {}, {}
    for name, r in zip(names, runs):
        x1, x2 = r.normalize(test.images[i1]), r.normalize(test.images[i2])
        hits[name] = pair_hits(
            r.model, x1, test.labels[i1], x2, test.labels[i2], **hits_options(r, eval_precision(args))
        )
        results[name] = curves_from_hits(hits[name])
        print(
            f"{name}: acc(x1) at lam=1 {results[name]['acc_x1_at_1']:.2f}%, slope at 0.5 "
            f"{results[name]['slope_mid']:.1f} points/unit, top-2 peak {results[name]['top2_peak']:.2f}% at "
            f"lam={results[name]['top2_peak_lambda']:.2f}"
        )
    if args.bootstrap:
        for name, ci in bootstrap_summaries(hits, args.bootstrap, args.seed).items():
            results[name]["ci95"] = ci
    png = plot_interpolation(
        results,
        out / "interpolation.png",
        title=f"interpolation test: {len(i1)} test pairs of different classes (seed {args.seed})",
    )
    cols, rows = summary_table(results)
    dcols, drows = difference_table(results)
    boot = (
        (
            f" Brackets: 95% percentile-bootstrap intervals over the pairs ({args.bootstrap} replicates); "
            "differences are paired (the same resampled pairs for every model); each Δ is the difference of the "
            "numbers in the summary table, its interval the bootstrap's."
        )
        if args.bootstrap
        else ""
    )
    md = (
        f"Interpolation test, {len(i1)} pairs of different classes from the test set (seed {args.seed}), "
        f"x = lam * x1 + (1 - lam) * x2, lam = 0..1 by 0.01, no TTA.{boot}\n\n"
        + markdown_table(cols, rows)
        + ("\n" + markdown_table(dcols, drows) if drows else "")
    )
    payload = {
        "pairs": len(i1),
        "seed": args.seed,
        "bootstrap": args.bootstrap,
        "runs": {n: str(r.path) for n, r in zip(names, runs)},
        "results": results,
    }
    write_outputs(
        out,
        "interpolation",
        payload,
        md,
        "Interpolation test",
        [
            ("Accuracy on mixed pairs", embed_png(png)),
            ("Summary", html_table(cols, rows)),
            *([("Against the first model (paired bootstrap)", html_table(dcols, drows))] if drows else []),
        ],
    )
    print(md, end="")
    print(f"wrote {png}, {out / 'interpolation.json'}")
    return 0


def cmd_ratio(args) -> int:
    from ..analysis.interpolation import markdown_table
    from ..analysis.ratio import PANELS, collect, panel_points, plot_panels
    from ..track.html import embed_png, html_table

    records = collect(Path(args.study_dir), args.metric)
    points = panel_points(records)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_panels(
        points,
        out / "ratio.png",
        metric=args.metric,
        title=f"Decoupled mixing ratios ({Path(args.study_dir).name})",
    )
    cols = ["panel", "range", args.metric, "std", "seeds", "runs"]
    rows = [
        [
            f"({p}) {PANELS[p]}",
            pt["label"],
            round(pt["mean"], 2),
            round(pt["std"], 2),
            pt["n"],
            ", ".join(pt["runs"]),
        ]
        for p, pts in points.items()
        for pt in pts
    ]
    md = markdown_table(cols, rows)
    write_outputs(
        out,
        "ratio",
        {"metric": args.metric, "records": records, "panels": points},
        md,
        "Mixing-ratio study",
        [("Panels", embed_png(png)), ("Table", html_table(cols, rows))],
    )
    print(md, end="")
    print(f"wrote {png}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("analyze", help="analyses of trained runs: interpolation test, loss landscape, ratio study")
    acts = p.add_subparsers(dest="analyze_command", metavar="ANALYSIS")

    def common(a, many: bool = True) -> None:
        a.add_argument("runs", nargs="+" if many else 1, metavar="RUN", help="run directories")
        a.add_argument("--checkpoint", choices=["best", "last"], default="best")
        a.add_argument("--data-dir", help="dataset folder (same as data.dir=...)")
        a.add_argument("--threads", type=int, help="torch threads (default: torch's)")

    def precision(a) -> None:
        a.add_argument(
            "--amp",
            choices=["run", "off", "bf16"],
            default="run",
            help="evaluation precision: run = the run's own train.amp as this machine resolves it (default; bf16 "
            "autocast on CPUs with bf16 instructions), off = fp32 (e.g. to compare with fp32 analyses)",
        )

    it = acts.add_parser("interpolation", help="accuracy on mixed test pairs as lam goes 0..1")
    common(it)
    it.add_argument("-o", "--output", required=True, help="output folder")
    it.add_argument("--pairs", type=int, default=1000, help="test pairs of different classes (default 1000)")
    it.add_argument("--seed", type=int, default=0, help="seed of the pair draw and the bootstrap (default 0)")
    it.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="bootstrap replicates over the pairs for the 95%% intervals (default 1000; 0 = off)",
    )
    precision(it)
    it.set_defaults(func=cmd_interpolation)

    ls = acts.add_parser("landscape", help="loss landscape along filter-normalized directions, basin widths")
    common(ls)
    ls.add_argument("-o", "--output", help="output folder (default RUN/landscape for one run, else ./landscape)")
    precision(ls)
    ls.add_argument("--subset", type=int, default=1000, help="fixed stratified subset size (default 1000)")
    ls.add_argument(
        "--split",
        choices=["train", "val"],
        default="train",
        help="subset drawn from (default train: Li et al. plot the training loss)",
    )
    ls.add_argument(
        "--resolution", type=int, default=15, help="2D grid points per axis; 1D uses 2R-1 (default 15)"
    )
    ls.add_argument("--report-resolution", type=int, help="grid of the grow-to-L surface (default --resolution)")
    ls.add_argument("--directions", type=int, default=3, help="random directions for basin widths (default 3)")
    ls.add_argument(
        "--levels",
        default="+0.5,+1,2.3026,5",
        help="loss levels of the basin widths: absolute, or +x above the loss at the minimum "
        "(default +0.5,+1,2.3026,5; 2.3026 = ln 10, chance level on CIFAR-10)",
    )
    ls.add_argument(
        "--target-loss",
        type=float,
        default=5.0,
        help="L of the grow-to-L surface: each direction is scaled until the loss reaches L (default 5)",
    )
    ls.add_argument("--zmax", type=float, help="clip surface plots at this loss (default 2 x --target-loss)")
    ls.add_argument("--no-2d", action="store_true", help="1D scan and basin widths only")
    ls.add_argument("--seed", type=int, default=0, help="seed of the directions and the subset (default 0)")
    from .landscape import cmd_landscape  # here: landscape.py imports this module's helpers

    ls.set_defaults(func=cmd_landscape)

    ra = acts.add_parser("ratio", help="plot a decoupled mixing-ratio study's panels")
    ra.add_argument("study_dir", metavar="STUDY_DIR", help="a study directory (holding runs/)")
    ra.add_argument("-o", "--output", required=True, help="output folder")
    ra.add_argument("--metric", choices=["final_val_acc", "best_val_acc"], default="final_val_acc")
    ra.set_defaults(func=cmd_ratio)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
