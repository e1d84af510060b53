"""``reglab analyze landscape``: loss landscapes of trained runs along filter-normalized directions (Li et al.,
*Visualizing the Loss Landscape of Neural Nets*, 2018), the grow-to-L surface and basin widths, written as PNGs,
``landscape.json``, ``landscape.md`` and ``landscape.html``. Its arguments are declared in ``analyze.register``."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .analyze import eval_precision, load_runs, set_threads, write_outputs


def _levels(text: str) -> list[str]:
    """``--levels``: comma-separated positive numbers, absolute or ``+x`` (above the minimum's loss)."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    try:
        ok = bool(items) and all(float(v.lstrip("+")) > 0 for v in items)
    except ValueError:
        ok = False
    if not ok:
        raise UserError(
            f"--levels must be comma-separated positive numbers, absolute (5) or above the loss at "
            f"the minimum (+1), e.g. +0.5,+1,2.3,5; got {text!r}."
        )
    return items


def _precisions(results: dict) -> str:
    """How the landscapes were evaluated, e.g. 'evaluated in bf16 autocast' (per model where they differ)."""
    found = {name: res.get("precision", "fp32") for name, res in results.items()}
    if len(set(found.values())) == 1:
        return f"evaluated in {next(iter(found.values()))}"
    return "evaluated in " + ", ".join(f"{p} ({n})" for n, p in found.items())


def cmd_landscape(args) -> int:
    from ..analysis.landscape import landscape_of_run

    set_threads(args)
    if args.subset < 1 or args.resolution < 3 or args.directions < 1:
        raise UserError("--subset must be >= 1, --resolution >= 3 and --directions >= 1.")
    levels = _levels(args.levels)
    if args.target_loss <= 0:
        raise UserError(f"--target-loss must be > 0, got {args.target_loss}.")
    runs, names = load_runs(args)
    out = Path(args.output or (Path(args.runs[0]) / "landscape" if len(args.runs) == 1 else "landscape"))
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, r in zip(names, runs):
        print(f"{name} ({r.path}):")
        if args.split == "val" and r.data.val is None:
            raise UserError(f"{r.path} has no validation split; use --split train.")
        res = landscape_of_run(
            r,
            subset=args.subset,
            split=args.split,
            resolution=args.resolution,
            n_dirs=args.directions,
            levels=levels,
            target=args.target_loss,
            report_resolution=args.report_resolution,
            seed=args.seed,
            do_2d=not args.no_2d,
            amp=eval_precision(args),
            log=print,
        )
        res["test_acc"], res["test_acc_precision"] = r.test_accuracy()
        res["checkpoint"] = args.checkpoint
        print(
            f"  test accuracy of the {args.checkpoint} checkpoint: {res['test_acc']:.2f}% "
            f"({res['test_acc_precision']})"
        )
        results[name] = res
    render_landscape(results, {n: str(r.path) for n, r in zip(names, runs)}, out, args)
    return 0


def render_landscape(results: dict, run_paths: dict, out: Path, args) -> None:
    """Figures, table, JSON and HTML of landscape results (also usable on a saved landscape.json's results)."""
    from ..analysis.figures import contour_levels, plot_1d, plot_contour, plot_surface
    from ..analysis.interpolation import markdown_table
    from ..analysis.landscape import paired_width_difference
    from ..track.html import embed_png, html_table

    rows = []
    for name, res in results.items():
        row = [name, res["test_acc"], round(res["loss0"], 4), round(res["acc0"], 2)]
        for lv in res["basin"]["levels"].values():
            if lv["below_minimum"]:
                row.append("0 (minimum is above L)")
            else:
                ci = lv.get("ci95")
                n_dirs = sum(v is not None for v in lv.get("per_direction") or [])
                row.append(
                    "not reached"
                    if lv["mean"] is None
                    else f"{lv['mean']:.3f}"
                    + (
                        f" [{ci[0]:.3f}, {ci[1]:.3f}]"
                        if ci
                        else f" (n={n_dirs}, no CI)"
                        if n_dirs == 1
                        else f" ± {lv['std']:.3f}"  # a landscape.json written before per_direction was kept
                    )
                    + (f" ({lv['not_reached']} rays not reached)" if lv["not_reached"] else "")
                )
        rows.append(row)
    names = list(results)
    level_keys = list(next(iter(results.values()))["basin"]["levels"])
    diff_rows = []
    for name in names[1:]:
        row = [f"{name} − {names[0]}"]
        for k in level_keys:
            d = paired_width_difference(
                results[name]["basin"]["levels"][k].get("per_direction") or [],
                results[names[0]]["basin"]["levels"][k].get("per_direction") or [],
            )
            row.append(
                "-"
                if d is None
                else f"{d[0]:+.3f} (n=1, no CI)"  # one pair of directions: no spread, so no verdict
                if d[1] is None
                else f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
                + (" wider" if d[1] > 0 else " narrower" if d[2] < 0 else "")
            )
        diff_rows.append(row)
    sections = []
    with_2d = [res for res in results.values() if "2d" in res]
    if with_2d:  # contour levels shared by all models, so their plots compare by eye
        li_levels = contour_levels(*(res["2d"]["loss"] for res in with_2d))
        rep_levels = contour_levels(*(res["report"]["loss"] for res in with_2d))
    for name, res in results.items():
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        zmax = args.zmax or 2 * args.target_loss
        figs = []
        if "2d" in res:
            figs.append(
                plot_contour(
                    res["2d"],
                    out / f"{safe}_contour.png",
                    levels=li_levels,
                    title=f"{name}: Li et al. filter-normalized plane, {res['subset']} {args.split} images",
                )
            )
            figs.append(
                plot_surface(
                    res["2d"], out / f"{safe}_surface.png", zmax=zmax, title=f"{name}: loss surface (Li et al.)"
                )
            )
            rep = res["report"]
            figs.append(
                plot_surface(
                    rep,
                    out / f"{safe}_report_surface.png",
                    zmax=zmax,
                    title=f"{name}: grow-to-L, L={rep['target']:g} at s = "
                    f"{rep['scales'][0]:.3f} / {rep['scales'][1]:.3f}",
                    xlabel="t * s1",
                    ylabel="u * s2",
                )
            )
            figs.append(
                plot_contour(
                    rep,
                    out / f"{safe}_report_contour.png",
                    xlabel="t * s1",
                    ylabel="u * s2",
                    levels=rep_levels,
                    title=f"{name}: grow-to-L (grown to L={rep['target']:g})",
                )
            )
        sections.append((name, "".join(embed_png(f) for f in figs)))
    png = plot_1d(results, out / "landscape_1d.png")
    acc_title = f"test acc ({next(iter(results.values())).get('checkpoint', 'best')} checkpoint)"
    cols = ["model", acc_title, "loss at minimum", "acc at minimum"] + [
        f"width L={'min' if k.startswith('+') else ''}{k}" for k in next(iter(results.values()))["basin"]["levels"]
    ]
    note = (
        f"Basin width: distance a (filter-normalized units; a = 0.1 moves every filter by 10% of its norm) "
        f"at which the loss on {args.subset} {args.split} images (fixed stratified subset, seed {args.seed}, "
        f"eval-mode BN, no augmentation; {_precisions(results)}) first reaches L; mean over {args.directions} random "
        f"directions x 2 signs, with a 95% bootstrap interval over the directions in brackets (from one "
        f"direction: n=1, no CI and no verdict). The test "
        f"accuracy is the analysed checkpoint's, in the run's own precision.\n\n"
    )
    dcols = ["models (paired by direction)"] + cols[4:]
    md = note + markdown_table(cols, rows) + ("\n" + markdown_table(dcols, diff_rows) if diff_rows else "")
    payload = {
        "settings": {
            k: getattr(args, k)
            for k in (
                "subset",
                "split",
                "resolution",
                "directions",
                "levels",
                "target_loss",
                "report_resolution",
                "seed",
                "checkpoint",
            )
        },
        "runs": run_paths,
        "results": results,
    }
    write_outputs(
        out,
        "landscape",
        payload,
        md,
        "Loss landscape",
        [
            ("1D (direction 1)", embed_png(png)),
            ("Basin width", html_table(cols, rows)),
            *([("Basin width against the first model", html_table(dcols, diff_rows))] if diff_rows else []),
            *sections,
        ],
    )
    print(md, end="")
    written = [
        "landscape_1d.png",
        *(["*_contour.png", "*_surface.png"] if with_2d else []),
        "landscape.json",
        "landscape.md",
        "landscape.html",
    ]
    print(f"wrote {out}/ ({', '.join(written)})" + ("" if with_2d else "; no contour or surface plots (--no-2d)"))
