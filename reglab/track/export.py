"""``reglab export RUN --format onnx|torchscript``: a trained model as a file other runtimes can load.

The exported model is :class:`ImageClassifier`: it takes **float32 RGB images in [0, 1], N x 3 x 32 x 32**
(any batch size; divide uint8 pixels by 255) and returns **logits, N x K**. Normalization with the training
split's per-channel mean and std happens inside the model, so a caller needs no reglab code and no
statistics; with TTA (``--tta``, default: as the run was trained, ``train.tta``) the logits are the mean of
those of the image and its mirror image, as ``reglab eval`` computes them.

* ONNX through :func:`torch.onnx.export` (the torch.export-based exporter), one self-contained file, the batch
  axis dynamic; checked after writing by running it in onnxruntime.
* TorchScript through :func:`torch.jit.trace` (deprecated by PyTorch in favour of torch.export, still
  loadable with ``torch.jit.load``); checked by loading it back. Like any TorchScript or pickle file, load
  only exports you trust.

Beside the model, ``<file>.json`` (e.g. ``model.onnx.json``) holds the metadata: classes, mean, std, the input and output layout, the
source checkpoint and the largest logit difference the check measured.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import UserError
from ..train.checkpoint import atomic_write_text, temp_name
from ..train.fsguard import ensure_dirs, open_new, refuse_links
from .inference import load_trained, resolve_checkpoint

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
MIN_OPSET = 18  # torch.export-based exporter: it writes opset 18+ natively; lower ones need a converter that
# may fail (it then keeps 18 and prints a traceback), so they are refused up front
TOLERANCE = 1e-4  # largest accepted |logit difference| relative to max(1, |logits|)


class ImageClassifier(nn.Module):
    """``logits = model((x - mean) / std)`` for images ``x`` in [0, 1]; with ``tta`` averaged with the
    logits of ``x.flip(3)`` (horizontal mirror)."""

    def __init__(self, model: nn.Module, mean, std, tta: bool = False):
        super().__init__()
        self.model = model
        self.tta = tta
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        logits = self.model(x)
        if self.tta:
            logits = 0.5 * (logits + self.model(x.flip(3)))
        return logits


def _run_tta(target: Path, which: str) -> bool:
    _, run_dir = resolve_checkpoint(target, which)
    if run_dir is None:
        return False
    from ..train.rundir import load_run_config

    return bool(load_run_config(run_dir).train.tta)


ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the exporter needs the first two, the check the third


def _require_onnx() -> None:
    """The export extra is not part of ``make train``'s set-up: say how to install it, before any work."""
    import importlib.util

    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"--format onnx needs the {', '.join(missing)} package{'s' if len(missing) > 1 else ''}; "
            f"pip install 'reglab[export]' (or {' '.join(missing)}), or use --format torchscript."
        )


def max_opset() -> int:
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
    except ImportError:  # pragma: no cover - a torch without the constant
        return 23
    return int(ONNX_MAX_OPSET)


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> None:
    import contextlib
    import io

    kwargs = {"opset_version": opset} if opset is not None else {}
    chatter = io.StringIO()  # the exporter prints progress and, for some failures, a traceback it then ignores
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
            **kwargs,
        )


def written_opset(path: Path) -> int | None:
    """The default-domain opset an ONNX file declares (None without the onnx package)."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _export_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated (FutureWarning); it still works
        traced = torch.jit.trace(module, example)
        traced.save(str(path))


def run_exported(path: Path, fmt: str, images: torch.Tensor) -> torch.Tensor:
    """Logits of an exported file on ``images`` (N x 3 x 32 x 32 in [0, 1]): onnxruntime or torch.jit."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path)).eval()(images).detach()


def export(
    target: Path,
    fmt: str = "onnx",
    out: Path | None = None,
    checkpoint: str = "best",
    tta: bool | None = None,
    opset: int | None = None,
) -> dict[str, Any]:
    """Export the model of a run directory or checkpoint; return the metadata written beside it."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not supported; use one of {', '.join(FORMATS)}.")
    if opset is not None and fmt != "onnx":
        raise UserError(f"--opset applies to --format onnx only; drop it for --format {fmt}.")
    if opset is not None and not MIN_OPSET <= opset <= max_opset():
        raise UserError(
            f"--opset {opset} is not an ONNX opset this exporter writes; use {MIN_OPSET} to "
            f"{max_opset()}, or leave --opset out for the exporter's default."
        )
    if fmt == "onnx":
        _require_onnx()
    model, meta, ckpt = load_trained(target, checkpoint)
    tta = _run_tta(target, checkpoint) if tta is None else tta
    module = ImageClassifier(model, meta["mean"], meta["std"], tta=tta).eval()
    if out is None:
        root = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        out = root / "export" / ("model" + FORMATS[fmt])
    else:
        out = Path(out)
        root = out.parent
    meta_path = out.with_name(out.name + ".json")
    refuse_links(out, root)  # RUN/export a link, or the file itself: refused, never written through
    refuse_links(meta_path, root)
    if out.is_dir():
        raise UserError(
            f"{out} is a directory; give the file to write with -o, e.g. -o {out / ('model' + FORMATS[fmt])}."
        )
    try:
        ensure_dirs(out.parent, root)
    except OSError as exc:
        raise UserError(f"cannot create {out.parent}: {exc.strerror}.") from None
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(4, 3, 32, 32, generator=gen)
    tmp = temp_name(out)
    try:
        with torch.no_grad():
            reference = module(example)
        os.close(open_new(tmp))  # a fresh file of ours at the temporary name, never a planted link
        (_export_onnx(module, example, tmp, opset) if fmt == "onnx" else _export_torchscript(module, example, tmp))
        if fmt == "onnx":
            wrote = written_opset(tmp)
            if opset is not None and wrote is not None and wrote != opset:
                raise UserError(
                    f"the exporter could not write opset {opset} (it wrote {wrote}); nothing was "
                    f"written. Use --opset {wrote}, or leave --opset out."
                )
            opset = wrote if wrote is not None else opset
        check = torch.rand(7, 3, 32, 32, generator=gen)  # another batch size: the batch axis is dynamic
        with torch.no_grad():
            expected = module(check)
        try:
            got = run_exported(tmp, fmt, check)
        except (OSError, UserError):
            raise
        except Exception as exc:  # onnxruntime's own exception types (e.g. an opset it does not support)
            raise UserError(
                f"the {fmt} export of {ckpt} does not run in "
                f"{'onnxruntime' if fmt == 'onnx' else 'torch.jit'} ({str(exc).splitlines()[0][:200]}); "
                "nothing was written. Try another --opset or the other --format."
            ) from None
        diff = float((got - expected).abs().max())
        scale = max(1.0, float(expected.abs().max()), float(reference.abs().max()))
        if not diff <= TOLERANCE * scale:
            raise UserError(
                f"the {fmt} export of {ckpt} gives logits that differ from PyTorch's by {diff:.3g}; "
                "nothing was written. Try the other --format."
            )
        os.replace(tmp, out)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}.") from None
    finally:
        tmp.unlink(missing_ok=True)
    info = {
        "format": fmt,
        "file": out.name,
        "source_checkpoint": str(ckpt),
        "epoch": _checkpoint_epoch(ckpt),
        "classes": meta["classes"],
        "num_classes": len(meta["classes"]),
        "mean": meta["mean"],
        "std": meta["std"],
        "input": {
            "name": "images",
            "shape": ["N", 3, 32, 32],
            "dtype": "float32",
            "layout": "NCHW, RGB",
            "range": [0.0, 1.0],
            "normalization": "inside the model ((x - mean) / std)",
        },
        "output": {"name": "logits", "shape": ["N", len(meta["classes"])], "softmax": "not applied"},
        "tta": tta,
        "model": meta.get("model"),
        "dataset": meta.get("dataset"),
        "check": {
            "runtime": "onnxruntime" if fmt == "onnx" else "torch.jit.load",
            "images": len(check),
            "max_abs_logit_diff": diff,
        },
        "opset": opset if fmt == "onnx" else None,
        "torch": torch.__version__,
    }
    atomic_write_text(meta_path, json.dumps(info, indent=2) + "\n", root=root)
    info["metadata_file"] = str(meta_path)
    info["path"] = str(out)
    return info


def _checkpoint_epoch(path: Path) -> int | None:
    from ..train.checkpoint import load_checkpoint

    epoch = load_checkpoint(path).get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
