"""Bit-identity check of the training loop: every recipe in ``recipes/`` trained briefly on the CPU, summarised.

A refactoring of :mod:`reglab.train` (the loop, its components, the save policy, the augmentation pipeline)
must not change a single bit of what a run computes. This script trains each recipe with its own model,
optimizer, schedule, augmentation, mixing, EMA and lookahead, but on a tiny synthetic dataset (96 training
images, 32 of them held out for validation unless the recipe has no validation split; 32 test images), batch
16, for ``--epochs`` epochs (default 1), on one CPU thread. Per recipe it records every epoch's metrics row
(without its timings), the running training loss and accuracy after every step, and SHA-256 digests of the
final model, EMA and optimizer state, and writes them as one JSON file. A recipe that diverges on this data
(a :class:`~reglab.errors.UserError`) records the error, the steps up to it and the model's state then. Run it before and after a change and compare the two files::

    .venv/bin/python benchmarks/loop_identity.py --out /tmp/before.json
    ... change the code ...
    .venv/bin/python benchmarks/loop_identity.py --out /tmp/after.json
    .venv/bin/python benchmarks/loop_identity.py --compare /tmp/before.json /tmp/after.json

``--only NAME,NAME`` restricts it to some recipes (file stems); ``--epochs 3`` also exercises what changes
between epochs (alternating flip parity, the whitening bias freeze, mixing start epochs). The numbers are only
comparable between runs on the same machine and torch build (one thread; bf16 autocast where ``train.amp``
resolves to it). Exit status of ``--compare``: 0 when every recipe is equal, 1 otherwise. All 48 recipes take
~25 minutes on a loaded 2-core machine, ten of them for ``fast-gpu-resnet18`` (``train.compile`` on a CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reglab.config import RECIPES_DIR, load_config  # noqa: E402
from reglab.errors import UserError  # noqa: E402

TIMINGS = ("epoch_s", "images_per_s", "wall_time_s")  # differ from run to run: left out


def overrides(recipe: Path, run_dir: Path, epochs: int) -> list[str]:
    """The recipe's own training configuration on a tiny synthetic dataset, on one CPU thread."""
    keep_no_val = load_config(recipe).data.val_size == 0  # recipes without a validation split keep none
    return [
        "data.dataset=synthetic",
        "data.synthetic_train=96",
        "data.synthetic_test=32",
        f"data.val_size={0 if keep_no_val else 32}",
        "data.train_subset=null",
        f"train.epochs={epochs}",
        "train.batch_size=16",
        "train.eval_batch_size=32",
        "train.init_images=64",
        "run.device=cpu",
        "run.threads=1",
        "run.checkpoint_every=0",
        "run.save_every_s=0",
        "run.eval_test_every=1",
        "run.loggers=[]",
        f"run.dir={run_dir}",
    ]


def digest(obj: Any) -> str:
    """SHA-256 over a nested structure of tensors, numbers and strings: every tensor's name, dtype, shape and
    bytes, in order."""
    h = hashlib.sha256()

    def feed(x: Any, where: str) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{where}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            for k in x:
                feed(x[k], f"{where}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                feed(v, f"{where}/{i}")
        else:
            h.update(f"{where}={x!r};".encode())

    feed(obj, "")
    return h.hexdigest()


class Recorder:
    """A callback that keeps the running loss and accuracy of every step and digests the run's state."""

    def __init__(self):
        self.run = None
        self.steps: list[list[float]] = []  # [epoch, step, running mean loss, running accuracy]

    def on_start(self, run) -> None:
        self.run = run

    def on_step(self, run, step, loss, acc) -> None:
        self.steps.append([run.epoch + 1, step, loss, acc])

    def hashes(self) -> dict[str, str | None]:
        r = self.run
        return {
            "model": digest(r.model.state_dict()),
            "ema": digest(r.ema.state_dict()) if r.ema is not None else None,
            "optimizer": digest(r.optimizer.state_dict()),
        }


def train_one(recipe: Path, workdir: Path, epochs: int) -> dict[str, Any]:
    """One recipe's metrics rows (timings left out), per-step running loss and accuracy and final-state
    digests; or, if it ends with an error, the error, the steps before it and the state then."""
    from reglab.train import run

    cfg = load_config(recipe, overrides(recipe, workdir / recipe.stem, epochs))
    rec = Recorder()
    try:
        result = run(cfg, callbacks=[rec])
    except UserError as exc:  # e.g. a divergence: deterministic too, so it is compared like a result
        error = f"{type(exc).__name__}: {exc}".replace(str(workdir), "<tmp>")
        return {"error": error, "steps": rec.steps, "state_sha256": rec.hashes() if rec.run else None}
    rows = [{k: v for k, v in row.items() if k not in TIMINGS} for row in result.metrics]
    return {"metrics": rows, "steps": rec.steps, "state_sha256": rec.hashes()}


def compare(a_path: Path, b_path: Path) -> int:
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    names = sorted(set(a) | set(b))
    differ = [n for n in names if json.dumps(a.get(n), sort_keys=True) != json.dumps(b.get(n), sort_keys=True)]
    for n in differ:
        print(f"DIFFERENT {n}:\n  {a_path}: {json.dumps(a.get(n))}\n  {b_path}: {json.dumps(b.get(n))}")
    print(f"{len(names) - len(differ)} of {len(names)} recipes identical ({len(differ)} different)")
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    p.add_argument("--only", default="", help="comma-separated recipe names (default: every recipe)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two JSON files and exit")
    args = p.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    recipes = sorted(RECIPES_DIR.glob("*.yaml"))
    if args.only:
        wanted = set(args.only.split(","))
        recipes = [r for r in recipes if r.stem in wanted]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="loop_identity_") as tmp:
        for recipe in recipes:
            t0 = time.perf_counter()
            out[recipe.stem] = train_one(recipe, Path(tmp), args.epochs)
            print(f"{recipe.stem}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    text = json.dumps(out, indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
