"""The ``reglab`` command line: argument parsing and error presentation only.

Every user mistake arrives here as a :class:`~reglab.errors.UserError` and leaves as one line on stderr
with exit code 2; Ctrl-C exits with 130 (``reglab train``: naming the command that resumes the run); a closed
pipe on stdout (``reglab ... | head -1``) ends quietly with 141, as a shell reports a process killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
import time
from pathlib import Path

from . import __version__
from .errors import UserError

OVERRIDES_HELP = (
    "dotted config overrides, e.g. optim.lr=0.05 train.epochs=5 model.channels=[32,64,128] "
    "(values are YAML); budget=NAME picks one of the recipe's budgets (run.budget=NAME)"
)


def _recipe_and_overrides(items: list[str]) -> tuple[str | None, list[str]]:
    """The first positional item is a recipe unless it looks like ``key=value`` (``budget=NAME``, short for
    ``run.budget=NAME``, is expanded by :func:`reglab.api.load_config`)."""
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, list(items)


def _data_overrides(args) -> list[str]:
    return [f"data.dir={args.data_dir}"] if getattr(args, "data_dir", None) else []


def cmd_data_check(args) -> int:
    from .api import load_config
    from .data.check import check_dataset, format_summary

    cfg = load_config(None, [f"data.dataset={args.dataset}"], data_dir=args.data_dir)
    summary = check_dataset(cfg.data)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_models(args) -> int:
    from .api import list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}} {'params':>12} {'GFLOPs':>8}  also accepted as")
    for r in rows:
        print(f"{r['name']:<{width}} {r['params']:>12,} {r['gflops']:>8.3f}  {', '.join(r['aliases'])}".rstrip())
    print("GFLOPs: forward pass of one 32x32 image (2 x multiply-adds). Build options: `reglab train --help`.")
    print("Also accepted as: former names, still valid in configs (model.name=...) and saved runs.")
    return 0


def cmd_recipes(args) -> int:
    from .config import RECIPES_DIR

    files = sorted(RECIPES_DIR.glob("*.yaml"), key=lambda p: p.stem)
    if args.json:
        print(json.dumps([{"name": f.stem, "about": _about(f)} for f in files], indent=2))
        return 0
    width = max((len(f.stem) for f in files), default=0)
    for f in files:
        print(f"{f.stem:<{width}}  {_about(f)}".rstrip())
    print(
        f"{len(files)} recipes in {RECIPES_DIR}; `reglab config NAME` prints one's every key, `reglab train NAME` "
        "trains it."
    )
    return 0


def _about(recipe: Path, width: int = 100) -> str:
    """A recipe's header comment (its first lines starting with ``#``) as one line cut to ``width``, without the
    ``NAME:`` it may start with."""
    head = []
    for line in recipe.read_text(errors="replace").splitlines():
        if not line.startswith("#"):
            break
        head.append(line.lstrip("#").strip())
    text = " ".join(head).removeprefix(f"{recipe.stem}:").strip()
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _recipe_or_default(recipe: str | None, overrides: list[str], data_dir: str | None, say: bool = False) -> str:
    """The named recipe, or the default for this machine's precision (``reglab.default_recipe``)."""
    if recipe is not None:
        return recipe
    from .api import default_recipe
    from .config import DEFAULT_FP32_RECIPE

    chosen = default_recipe(overrides, data_dir=data_dir)
    if say and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 says it once
        why = "train.amp gives fp32 here" if chosen == DEFAULT_FP32_RECIPE else "bf16 autocast here"
        # stdout: stderr holds only progress and, on a mistake, the one-line error
        print(f"no recipe named: recipes/{chosen}.yaml ({why}; name a recipe to choose another)")
    return chosen


def cmd_train(args) -> int:
    from .api import fit, load_config, load_run_config

    recipe, overrides = _recipe_and_overrides(args.items)
    if args.resume:
        if recipe is not None:
            raise UserError(
                "--resume continues a run with its saved config; drop the recipe argument "
                "(overrides such as train.epochs=N are allowed)."
            )
        cfg = load_run_config(args.resume, overrides, data_dir=args.data_dir)
    else:
        recipe = _recipe_or_default(recipe, overrides, args.data_dir, say=True)
        cfg = load_config(recipe, overrides, data_dir=args.data_dir)
    started = time.time()
    try:
        result = fit(
            cfg, resume=bool(args.resume), overwrite=args.overwrite, progress="lines" if args.quiet else "bar"
        )
    except KeyboardInterrupt:
        # Ctrl-C: nothing more is saved (every file is written atomically, so what is there is whole); say how to
        # go on where this run left a checkpoint (its own, or the one a --resume started from).
        last = Path(cfg.run.dir) / "checkpoints" / "last.safetensors" if cfg.run.dir else None
        if os.environ.get("RANK", "0") == "0" and last is not None and last.is_file():
            if args.resume or last.stat().st_mtime >= started:  # not a replaced run's (--overwrite)
                _say(f"reglab: interrupted; resume with: reglab train --resume {shlex.quote(str(cfg.run.dir))}")
                return 130
        raise
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    print(f"run dir: {result.run_dir}")
    s = result.summary
    val = (
        f"best val {s['best_val_acc']:.2f}% at epoch {s['best_epoch']}"
        if s["best_val_acc"] is not None
        else "no validation split"
    )
    print(f"test accuracy {s['test_acc']:.2f}%  ({val}, {s['wall_time_s']:.0f}s)")
    return 0


def cmd_eval(args) -> int:
    from .track.inference import evaluate_command

    def show(numbers: dict, text: str) -> None:  # before any file is written: a failed write still shows them
        print(json.dumps(numbers, indent=2) if args.json else text, flush=True)

    out = evaluate_command(
        Path(args.target),
        split=args.split,
        data_overrides=_data_overrides(args),
        checkpoint=args.checkpoint,
        out_dir=Path(args.out) if args.out else None,
        tta=args.tta,
        on_numbers=show,
    )
    if not args.json:
        print(out["_files"])
    return 0


def cmd_predict(args) -> int:
    from .track.inference import predict_command

    results, ok = predict_command(
        Path(args.target), [Path(p) for p in args.images], top_k=args.top_k, checkpoint=args.checkpoint
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:  # one line per file it could not read; the others are still predicted
                _say(f"reglab: error: {r['file']}: {r['error']}")
            else:
                preds = ", ".join(f"{p['class']} {p['prob'] * 100:.1f}%" for p in r["top"])
                print(f"{r['file']}: {preds}")
    return 0 if ok else 2  # an image that cannot be read is a mistake to fix, as everywhere (exit 2)


def cmd_config(args) -> int:
    from .api import load_config

    recipe, overrides = _recipe_and_overrides(args.items)
    print(load_config(_recipe_or_default(recipe, overrides, None), overrides).to_yaml(), end="")
    return 0


def cmd_augment_preview(args) -> int:
    from .api import load_config
    from .track.preview import output_path, preview

    output_path(Path(args.output))  # a name it cannot write is refused before the data loads
    recipe, overrides = _recipe_and_overrides(args.items)
    recipe = _recipe_or_default(recipe, overrides, args.data_dir)
    cfg = load_config(recipe, overrides, data_dir=args.data_dir)
    if args.n < 1:
        raise UserError(f"-n must be >= 1, got {args.n}.")
    out = preview(cfg, Path(args.output), n=args.n, seed=args.seed)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reglab", description="Train, regularize, tune and study ResNets on CIFAR.")
    # the code that runs (a checkout on PYTHONPATH may differ from what pip installed); pyproject.toml holds the same
    p.add_argument(
        "--version", action="version", version=f"reglab {__version__}", help="print the version and exit"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    data = sub.add_parser("data", help="dataset utilities").add_subparsers(dest="data_command", metavar="ACTION")
    chk = data.add_parser("check", help="verify the dataset files; print per-class counts and channel mean/std")
    chk.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (else $REGLAB_DATA, else ./data)")
    chk.add_argument("--dataset", default="cifar10", help="cifar10 | cifar100 | synthetic (default cifar10)")
    chk.add_argument("--json", action="store_true", help="machine-readable output")
    chk.set_defaults(func=cmd_data_check)

    aug = sub.add_parser("augment", help="augmentation utilities").add_subparsers(
        dest="aug_command", metavar="ACTION"
    )
    prev = aug.add_parser(
        "preview", help="save a grid of training images as the recipe's pipeline transforms them"
    )
    prev.add_argument("items", nargs="*", metavar="[RECIPE] [KEY=VALUE ...]", help=OVERRIDES_HELP)
    prev.add_argument(
        "-o",
        "--output",
        default="preview.png",
        help="PNG file to write (default preview.png; .png is added to a name without one)",
    )
    prev.add_argument("-n", type=int, default=32, help="number of images (default 32)")
    prev.add_argument("--seed", type=int, default=0)
    prev.add_argument("--data-dir")
    prev.set_defaults(func=cmd_augment_preview)

    models = sub.add_parser("models", help="list model presets with parameters and GFLOPs")
    models.add_argument("--json", action="store_true", help="print a JSON list of {name, params, gflops, aliases}")
    models.set_defaults(func=cmd_models)

    train = sub.add_parser(
        "train",
        help="train a recipe (none named: default.yaml, or default-fp32.yaml where train.amp gives fp32)",
        description="Train a model. RECIPE is a YAML file or a name from recipes/; "
        "then any number of section.key=value overrides. `reglab config RECIPE` "
        "prints every key with its value.",
    )
    train.add_argument("items", nargs="*", metavar="[RECIPE] [KEY=VALUE ...]", help=OVERRIDES_HELP)
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped")
    train.add_argument("--data-dir", help="folder holding the dataset (same as data.dir=...)")
    train.add_argument("--quiet", action="store_true", help="plain log lines instead of a progress bar")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.set_defaults(func=cmd_train)

    rec = sub.add_parser("recipes", help="list the recipes in recipes/ (the names train and config accept)")
    rec.add_argument("--json", action="store_true", help="print a JSON list of {name, about}")
    rec.set_defaults(func=cmd_recipes)

    conf = sub.add_parser("config", help="print the fully resolved config of a recipe plus overrides (all keys)")
    conf.add_argument("items", nargs="*", metavar="[RECIPE] [KEY=VALUE ...]", help=OVERRIDES_HELP)
    conf.set_defaults(func=cmd_config)

    ev = sub.add_parser(
        "eval", help="evaluate a trained run: loss, accuracy, per-class accuracy, confusion matrix"
    )
    ev.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT")
    ev.add_argument("--split", choices=["test", "val"], default="test")
    ev.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint of a run dir")
    ev.add_argument("--data-dir")
    ev.add_argument(
        "--out",
        help="folder for eval_SPLIT.json, confusion_SPLIT.png, reliability_SPLIT.png and, for a run dir, gap.png "
        "(SPLIT: test or val; default: the run dir, or the checkpoint's folder)",
    )
    ev.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flip test-time augmentation (default: as the run was trained, train.tta)",
    )
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="classify image files with a trained run")
    pr.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT")
    pr.add_argument("images", nargs="+", metavar="IMAGE")
    pr.add_argument("--top-k", type=int, default=3)
    pr.add_argument("--checkpoint", choices=["best", "last"], default="best")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)

    # Larger command groups live in reglab/commands/, one module each, with `register(subparsers)`.
    from .commands import register_all

    register_all(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from ._malloc import tune_malloc

    tune_malloc()  # before any tensor is allocated (reglab/_malloc.py; REGLAB_MALLOC=default opts out)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides may come after options: `reglab train quick --quiet optim.lr=0.1`
        if hasattr(args, "items") and not any(e.startswith("-") for e in extra):
            args.items = [*args.items, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UserError as exc:
        _say(f"reglab: error: {' '.join(str(exc).split(chr(10)))}")
        return 2
    except KeyboardInterrupt:
        _say("reglab: interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly. Point stdout at /dev/null so the interpreter's
        # final flush does not raise again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        return 141
    except OSError as exc:  # after BrokenPipeError, one of its kinds
        if exc.errno not in USER_FS_ERRORS or exc.filename is None:
            raise  # not a path the user can fix: a bug, keep its traceback
        # A folder that is read-only, full, missing or not a folder: the user's to fix, not a crash. Writers go
        # through temporary files and renames, so what was already written is intact.
        _say(f"reglab: error: cannot write or read {exc.filename}: {exc.strerror}. {USER_FS_HINT}")
        return 2


USER_FS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT, errno.ENOTDIR}
USER_FS_ERRORS |= {errno.EISDIR, errno.EEXIST}
USER_FS_HINT = "Check that path and its folder's permissions and free space, or choose another (-o/--out)."


def _say(line: str) -> None:
    """One line on stderr, whatever its characters (a stray byte of a command line is shown escaped)."""
    enc = getattr(sys.stderr, "encoding", None) or "utf-8"
    line = line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    print(line.encode(enc, "backslashreplace").decode(enc, "replace"), file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
