"""Using a trained run: ``reglab eval`` (loss, accuracy, per-class accuracy, confusion matrix) and
``reglab predict`` (top-k classes of image files of any size and mode)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from .._malloc import tune_malloc
from ..config import load_config
from ..data import DeviceLoader, load_splits
from ..errors import UserError
from ..models import model_from_config
from ..train.checkpoint import atomic_write_text, load_checkpoint
from ..train.ckschema import Inference, inference_fields
from ..train.device import autocast_for, precision_name
from ..train.evaluate import confusion_matrix, evaluate, per_class_accuracy
from ..train.fsguard import refuse_links
from ..train.rundir import RunDir, load_run_config
from .plots import plot_confusion


def resolve_checkpoint(target: Path, which: str = "best") -> tuple[Path, Path | None]:
    """(checkpoint file, run dir or None) for a run directory or a checkpoint file.

    A run directory without ``best`` (but with ``last``) uses ``last`` and says so on stderr; a ``best`` that
    exists but is not a regular file (a folder, a dangling link, a FIFO) is an error, never skipped."""
    import stat
    import sys

    if target.is_dir():
        RunDir.open(target)
        path = target / "checkpoints" / f"{which}.safetensors"
        if path.is_file():
            return path, target
        if os.path.lexists(path):
            kind = (
                "a dangling link"
                if not path.exists()
                else "a folder"
                if path.is_dir()
                else "a FIFO"
                if stat.S_ISFIFO(path.stat().st_mode)
                else "not a regular file"
            )
            raise UserError(
                f"{path} is {kind}, not a checkpoint; move it away or pick the other with "
                f"--checkpoint {'last' if which == 'best' else 'best'}."
            )
        last = target / "checkpoints" / "last.safetensors"
        if which != "last" and last.is_file():
            print(
                f"reglab: note: {target} has no checkpoints/{which}.safetensors; using last.safetensors.",
                file=sys.stderr,
                flush=True,
            )
            return last, target
        raise UserError(f"{target} has no checkpoints yet (checkpoints/{which}.safetensors); train it first.")
    if target.is_file():
        run_dir = target.parent.parent if target.parent.name == "checkpoints" else None
        return target, run_dir if run_dir is not None and (run_dir / "config.yaml").is_file() else None
    raise UserError(f"{target} is neither a run directory nor a checkpoint file.")


def load_trained(target: Path, which: str = "best", device: str = "cpu") -> tuple[nn.Module, dict[str, Any], Path]:
    """The model of a run directory or checkpoint (weights only; no pickle), its validated metadata and the
    file. The model is built from the metadata only after :mod:`reglab.train.ckschema` has checked it."""
    model, info, path = load_validated(target, which, device)
    return model, info.meta(), path


def load_validated(target: Path, which: str = "best", device: str = "cpu") -> tuple[nn.Module, Inference, Path]:
    tune_malloc()  # evaluation, prediction and the analyses start here (reglab/_malloc.py)
    path, _ = resolve_checkpoint(target, which)
    state = load_checkpoint(path, device)
    info = inference_fields(state, path)
    model = model_from_config(info.model, info.num_classes)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()[1:4]]
        raise UserError(
            f"{path}: the weights do not fit the model the checkpoint describes: {'; '.join(lines)}."
        ) from None
    return model.to(device).eval(), info, path


OUTPUTS = ("confusion_{split}.png", "reliability_{split}.png", "gap.png", "eval_{split}.json")


def evaluate_command(
    target: Path,
    split: str = "test",
    data_overrides: list[str] = (),
    checkpoint: str = "best",
    out_dir: Path | None = None,
    tta: bool | None = None,
    on_numbers: Callable[[dict[str, Any], str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a run's checkpoint; ``tta=None`` follows the run's own ``train.tta`` setting.

    Writes ``eval_<split>.json`` (loss, accuracy, per-class accuracy, confusion matrix, ECE/NLL/calibration
    bins, train-test gap), ``confusion_<split>.png``, ``reliability_<split>.png`` and, for a run directory,
    ``gap.png`` (gap over epochs). Every number is computed before the first file is written, and
    ``on_numbers(result, text)`` is called with them then, so a caller shows them even when the writing fails
    (a read-only run folder, a full disk). The returned dict holds the numbers, ``_text`` (the numbers' lines)
    and ``_files`` (the lines naming the files written)."""
    model, meta, path = load_trained(target, checkpoint)
    run_dir = (
        path.parent.parent
        if path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").is_file()
        else None
    )
    dest = out_dir or run_dir or path.parent
    for name in OUTPUTS:  # before any work: a linked output is refused, never written through
        refuse_links(dest / name.format(split=split), dest)
    if run_dir is not None:
        run_cfg = load_run_config(run_dir, list(data_overrides))
        data_cfg = run_cfg.data
        shifts = run_cfg.train.tta_shifts if tta is not False else []  # --no-tta: the plain network
        tta = run_cfg.train.tta if tta is None else tta
        amp = run_cfg.train.amp
    else:
        data_cfg = load_config(None, [f"data.dataset={meta.get('dataset') or 'cifar10'}", *data_overrides]).data
        tta, shifts, amp = bool(tta), [], "auto"
    autocast = autocast_for(amp, torch.device("cpu"))  # the precision the run's own evaluation had on this CPU
    data = load_splits(data_cfg)
    if data.num_classes != meta["num_classes"]:
        raise UserError(f"{path} predicts {meta['num_classes']} classes but {data.name} has {data.num_classes}.")
    chosen = data.test if split == "test" else data.val
    if chosen is None:
        raise UserError("this run has no validation split (data.val_size=0); evaluate --split test.")
    loader = DeviceLoader(chosen, 1000, meta["mean"], meta["std"])
    res = evaluate(model, loader, tta=tta, shifts=shifts, keep=True, autocast=autocast)
    cm = confusion_matrix(chosen.labels, res.preds, data.num_classes)
    per_class = per_class_accuracy(cm)
    out = {
        "checkpoint": str(path),
        "split": split,
        "tta": tta,
        "tta_shifts": shifts,
        "images": len(chosen),
        "precision": precision_name(autocast),
        "loss": round(res.loss, 5),
        "acc": round(res.acc, 3),
        "per_class_acc": {c: round(a, 2) for c, a in zip(data.classes, per_class)},
        "confusion_matrix": cm.tolist(),
    }
    width = max(len(c) for c in data.classes)
    views = tta_views(tta, shifts)
    lines = [
        f"{path}: {split} loss {res.loss:.4f}, accuracy {res.acc:.2f}% on {len(chosen)} images{views}"
        f", {precision_name(autocast)}",
        *(f"  {c:<{width}} {a:6.2f}%" for c, a in zip(data.classes, per_class)),
    ]
    lines += _diagnostics(out, res, chosen, data, model, meta, tta, split, autocast)
    text = "\n".join(lines)
    if on_numbers is not None:
        on_numbers(dict(out), text)
    # the files, now that every number is out
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {dest}: {exc.strerror or exc}.") from None
    conf = dest / f"confusion_{split}.png"
    plot_confusion(cm.numpy(), data.classes, conf, title=f"{split}: {res.acc:.2f}% ({path.name})")
    files = [f"confusion matrix: {conf}"] + _diagnostic_plots(out, split, dest, run_dir, path)
    atomic_write_text(dest / f"eval_{split}.json", json.dumps(out, indent=2) + "\n")
    out["_text"], out["_files"] = text, "\n".join(files)
    return out


def tta_views(tta: bool, shifts) -> str:
    """The evaluation's views as the eval line names them: ``" (flip TTA)"``, or with ``shifts`` (``[[dx, dy],
    ...]`` px) every offset, the unshifted view included: ``" (TTA: flip x {no shift, (-1,-1), (+1,+1)}, 6
    views)"``; ``""`` for the plain network."""
    if not shifts:
        return " (flip TTA)" if tta else ""
    offsets = ", ".join(["no shift", *(f"({dx:+g},{dy:+g})" for dx, dy in shifts)])
    n_views = (2 if tta else 1) * (1 + len(shifts))
    return f" (TTA: {'flip x ' if tta else ''}{{{offsets}}}, {n_views} views)"


DIAG_TRAIN_IMAGES = 5000  # un-augmented training images evaluated for the final train-test gap


def _diagnostics(out, res, chosen, data, model, meta, tta, split, autocast) -> list[str]:
    """Calibration (ECE over 15 equal-width bins, NLL) and the train-test gap (clean training images for this
    checkpoint), added to ``out``; their text lines. Nothing is written here (:func:`_diagnostic_plots`)."""
    from ..data import Split
    from .calibration import calibration, summary_line
    from .diagnostics import clean_train_gap

    cal = calibration(res.probs, chosen.labels, n_bins=15)
    out["ece"], out["nll"] = round(cal["ece"], 5), round(cal["nll"], 5)
    out["calibration"] = cal
    lines = [f"calibration: {summary_line(cal)}"]
    n = min(DIAG_TRAIN_IMAGES, len(data.train))
    idx = torch.linspace(0, len(data.train) - 1, n).round().long()  # evenly spaced, fixed
    sub = Split(data.train.images[idx], data.train.labels[idx])
    tr = evaluate(model, DeviceLoader(sub, 1000, meta["mean"], meta["std"]), tta=tta, autocast=autocast)
    out["gap"] = clean_train_gap(tr.acc, tr.loss, res.acc, res.loss, split, n)
    lines.append(
        f"train-{split} gap: {out['gap']['acc_gap']:+.2f} points ({tr.acc:.2f}% on {n} un-augmented "
        f"training images vs {res.acc:.2f}%), loss gap {out['gap']['loss_gap']:+.4f}"
    )
    return lines


def _diagnostic_plots(out, split, dest, run_dir, path) -> list[str]:
    """The reliability diagram and, for a run directory, the gap over epochs (from the run's metrics), written
    to ``dest``; the lines naming them."""
    from .calibration import plot_reliability
    from .diagnostics import plot_gap

    who = f"{run_dir.name}/{path.name}" if run_dir is not None else path.name
    rel = plot_reliability(out["calibration"], dest / f"reliability_{split}.png", title=f"{split}: {who}")
    lines = [f"reliability diagram: {rel}"]
    rows = RunDir(run_dir).read_metrics() if run_dir is not None else []
    if rows:
        cfg = load_run_config(run_dir)
        gap_png = plot_gap(rows, dest / "gap.png", title=cfg.run.name or "", mixed=cfg.mix.enabled)
        lines.append(f"gap over epochs (logged train vs val/test): {gap_png}")
    return lines


def load_image(path: Path, size: int = 32) -> np.ndarray:
    """Any common image file -> uint8 array 3 x size x size (center square crop, then resize).

    Palette and alpha images are composited on white; 16-bit and float grayscale are rescaled to 8 bits.
    Images up to PIL's hard decompression-bomb limit (about 179 megapixels) are read without a warning;
    larger ones are refused.
    """
    import stat
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:  # a FIFO, socket or device would block open() or read() forever
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # open() below says why
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ValueError(f"is {kind}, not an image file; give a regular file")
    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fh)
            img.draft("RGB", (size * 4, size * 4))  # JPEG: decode at reduced scale, cheap for huge photos
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
                img = Image.fromarray(arr.astype(np.uint8), "L")
            if img.mode == "P":
                img = img.convert("RGBA")
            if img.mode in ("RGBA", "LA", "PA"):
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, img.convert("RGBA"))
            img = img.convert("RGB")
            w, h = img.size
            side = min(w, h)
            box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
            img = img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()
    except FileNotFoundError:
        raise ValueError("file not found; check the path") from None
    except IsADirectoryError:
        raise ValueError("is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ValueError("not an image file reglab can read (or empty)") from None
    except PermissionError:
        raise ValueError("permission denied: the file is not readable (check its permissions)") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(
            f"image is too large to decode safely ({str(exc).split(',')[0]}); shrink it first"
        ) from None
    except OSError as exc:
        if exc.errno is not None:  # the operating system failed to read it (I/O error, ...)
            raise ValueError(f"cannot read the file ({exc.strerror or exc})") from None
        raise ValueError(f"cannot decode the image ({exc})") from None
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot decode the image ({exc})") from None


@torch.no_grad()
def predict_command(
    target: Path, images: list[Path], top_k: int = 3, checkpoint: str = "best"
) -> tuple[list[dict[str, Any]], bool]:
    if top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {top_k}.")
    model, info, _ = load_validated(target, checkpoint)
    meta = info.meta()
    classes = meta["classes"]
    top_k = min(top_k, len(classes))
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    results, ok = [], True
    for path in images:
        try:
            x = torch.from_numpy(load_image(path))[None].float() / 255
        except ValueError as exc:
            results.append({"file": str(path), "error": str(exc)})
            ok = False
            continue
        probs = model((x - mean) / std).softmax(1)[0]
        p, idx = probs.topk(top_k)
        results.append(
            {
                "file": str(path),
                "top": [
                    {"class": classes[i], "prob": round(float(q), 5)} for q, i in zip(p.tolist(), idx.tolist())
                ],
            }
        )
    return results, ok
