"""``reglab sweep best DIR``: retrain the best trial's config with the validation split folded into the
training set, and report its test accuracy -- once.

The sweep chose on validation accuracy only; the test set is evaluated here, at the end of the retrain, and
the result is kept in ``<sweep_dir>/best/`` (a normal run directory plus ``retrain.json``). Asking again
prints the stored result instead of training (and looking at the test set) again; ``--overwrite`` retrains.

Folding in: ``data.val_size=0``; when the sweep trained on a subset (``data.train_subset=S`` with
``data.val_size=V``), the retrain draws a stratified subset of ``S + V`` images from the whole training set,
the same amount of data the trial saw plus its validation images (not the very same images).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..config import load_config
from .analysis import best_config
from .storage import load_optuna_study, read_sweep_dir

FULL_TRAIN = 50_000  # CIFAR-10/100 training images


def retrain_best(
    sweep_dir: Path,
    overrides: list[str] | tuple[str, ...] = (),
    overwrite: bool = False,
    quiet: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    from ..track import CurvesCallback, Progress
    from ..train import run

    sweep_dir = Path(sweep_dir)
    spec = read_sweep_dir(sweep_dir)
    study = load_optuna_study(spec, sweep_dir)
    best, cfg = best_config(study, spec, sweep_dir)
    out = sweep_dir / "best"
    record = out / "retrain.json"
    if record.is_file() and not overwrite:
        saved = json.loads(record.read_text())
        log(
            f"the best config was already retrained ({out}): test accuracy {saved['test_acc']:.2f}%. The test set "
            "is reported once; pass --overwrite to retrain anyway."
        )
        return saved
    subset, val = cfg.data.train_subset, cfg.data.val_size
    total = subset + val if subset is not None else None
    if total is not None and cfg.data.dataset != "synthetic" and total >= FULL_TRAIN:
        total = None
    fold = ["data.val_size=0", f"data.train_subset={'null' if total is None else total}"]
    retrain = load_config(
        None, [*fold, f"run.dir={out}", f"run.name={spec.name}-best", *overrides], base=cfg.to_dict()
    )
    log(
        f"retraining trial {best.number} ({spec.objective} {best.value:.2f}%) on train+val "
        f"({'all training images' if total is None else f'{total} images'}) for {retrain.train.epochs} epochs"
    )
    result = run(retrain, overwrite=True, callbacks=[Progress(quiet=quiet), CurvesCallback()])
    params = {p.key: p.decode(best.params[p.key]) for p in spec.space if p.key in best.params}
    saved = {
        "trial": best.number,
        "params": params,
        "objective": spec.objective,
        "val_value": best.value,
        "test_acc": result.summary["test_acc"],
        "test_loss": result.summary["test_loss"],
        "train_images": total,
        "epochs": result.summary["epochs"],
        "run_dir": str(result.run_dir),
    }
    record.write_text(json.dumps(saved, indent=2) + "\n")
    log(f"test accuracy of the best config (trial {best.number}) retrained on train+val: {saved['test_acc']:.2f}%")
    return saved
