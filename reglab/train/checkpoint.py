"""Checkpoints that load without unpickling: tensors in safetensors, everything else as JSON metadata.

A checkpoint is one ``.safetensors`` file. Any nested state (model and optimizer state dicts, scheduler
state, EMA, RNG states, epoch counters) is split by :func:`flatten` into a JSON tree, in which each tensor is
replaced by a reference ``{"__tensor__": "<key>"}``, and a flat ``{key: tensor}`` dict. The JSON goes into the
file's ``__metadata__`` under ``"reglab"``. Files are written to a temporary name (``.<name>.tmp<pid>``,
created with ``O_EXCL | O_NOFOLLOW``), fsynced and renamed, so a crash never leaves a half-written checkpoint
behind the final name; a killed writer leaves at most a temporary file, which :func:`remove_temporaries`
clears on the next start. No file is written through a symbolic link (:mod:`reglab.train.fsguard`).

:func:`load_checkpoint` bounds what it parses (metadata size, JSON nesting depth); what the fields mean is
checked by :mod:`reglab.train.ckschema` before a model is built from them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as serialize

from ..errors import UserError
from .fsguard import ensure_dirs, open_new, refuse_links

FORMAT = "reglab-checkpoint-1"
MAX_METADATA_CHARS = 64 << 20  # the JSON of a real checkpoint is a few hundred KB
MAX_DEPTH = 64  # nesting of that JSON; a real checkpoint's is about 10


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """JSON-able copy of ``obj`` with tensors (and numpy arrays) moved into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__tensor__": key, "numpy": True}
    if isinstance(obj, dict):
        items = [[flatten(k, tensors, prefix), flatten(v, tensors, prefix)] for k, v in obj.items()]
        if all(isinstance(k, str) for k, _ in items):
            return {"__dict__": {k: v for k, v in items}}
        return {"__items__": items}  # int keys (optimizer state) survive a JSON round trip this way
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [flatten(v, tensors, prefix) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            t = tensors[obj["__tensor__"]]
            return t.numpy() if obj.get("numpy") else t
        if "__dict__" in obj:
            return {k: unflatten(v, tensors) for k, v in obj["__dict__"].items()}
        if "__items__" in obj:
            return {unflatten(k, tensors): unflatten(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
    return obj


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


TEMPORARY = re.compile(r"^\..+\.tmp(?P<pid>\d+)(\.png)?$|^\..+\.tmp\.png$|^\.tmp[A-Za-z0-9]{6}$")


def _alive(pid: str | None) -> bool:
    if not pid or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):
        return True
    return True


def remove_temporaries(folder: Path, root: Path | None = None) -> list[Path]:
    """Delete the temporary files killed writers left in ``folder``: ``.<name>.tmp<pid>`` (reglab's, unless that
    process still runs), ``.<name>.tmp.png`` (older reglab plots) and ``.tmpXXXXXX`` (safetensors before reglab
    wrote checkpoint bytes itself); return them. Links are removed as links, never followed. ``root``: the run
    directory ``folder`` is in (or is); no folder below it may be a link, while ``root`` itself may be one."""
    gone = []
    if not folder.is_dir():
        return gone
    refuse_links(folder, root if root is not None else folder.parent)
    for entry in os.scandir(folder):
        m = TEMPORARY.match(entry.name)
        if m and (entry.is_symlink() or entry.is_file(follow_symlinks=False)) and not _alive(m.group("pid")):
            Path(entry.path).unlink(missing_ok=True)
            gone.append(Path(entry.path))
    return gone


def write_file(fd: int, data: bytes) -> None:
    """Write ``data`` to the new file ``fd``, fsync and close it (tests replace this: a full disk, a pause inside a checkpoint write)."""
    with open(fd, "wb", closefd=True) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(
    path: Path,
    data: bytes,
    root: Path | None = None,
    what: str = "",
    advice: str = "files written earlier are unchanged",
    root_must_exist: bool = False,
) -> None:
    """Write ``data`` to ``path`` via a new temporary file, fsync and rename (all or nothing). Neither ``path``
    nor a folder between ``root`` (default: its parent) and it may be a symbolic link; missing folders below
    ``root`` are created (and removed again if the write fails). ``root_must_exist``: ``root`` is a run
    directory; if it has disappeared the write raises instead of creating it anew."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    refuse_links(path, root)
    tmp = temp_name(path)
    made: list[Path] = []
    try:
        made = ensure_dirs(path.parent, root, root_must_exist)
        write_file(open_new(tmp), data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass
        raise UserError(
            f"cannot write {what + ' ' if what else ''}{path}: {exc.strerror or exc}. Free some space or "
            f"choose another run.dir; {advice}."
        ) from None
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, root: Path | None = None, root_must_exist: bool = False) -> None:
    atomic_write_bytes(path, text.encode(), root, root_must_exist=root_must_exist)


def save_checkpoint(path: Path, state: dict[str, Any], root: Path | None = None) -> None:
    """Write ``state`` to ``path`` (see the module docstring); ``root``: the run directory, for the link check
    (it must exist then: a run directory removed under a running process is not created anew)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = flatten(state, tensors)
    meta = {"format": FORMAT, "reglab": json.dumps(tree)}
    try:
        data = serialize(tensors, metadata=meta)
    except SafetensorError as exc:
        raise UserError(f"cannot write checkpoint {path}: {exc}.") from None
    atomic_write_bytes(
        path,
        data,
        root,
        what="checkpoint",
        advice="the previous checkpoint is unchanged",
        root_must_exist=root is not None,
    )


def _shape(t: Any) -> str:
    return "x".join(map(str, t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def state_mismatch(expected: dict[str, torch.Tensor], saved: dict[str, Any], limit: int = 4) -> str:
    """One line listing how a saved state dict differs from a model's: missing and unexpected keys and
    tensors of another shape (at most ``limit`` of each); empty when they fit."""
    parts = []
    missing = [k for k in expected if k not in saved]
    extra = [k for k in saved if k not in expected]
    shapes = [
        f"{k} {_shape(saved[k])} vs {_shape(v)}"
        for k, v in expected.items()
        if k in saved and (not isinstance(saved[k], torch.Tensor) or saved[k].shape != v.shape)
    ]
    for label, items in (
        ("shape (checkpoint vs model)", shapes),
        ("missing in checkpoint", missing),
        ("not in model", extra),
    ):
        if items:
            more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def run_mismatch(
    state: dict[str, Any],
    model_cfg: dict[str, Any],
    num_classes: int,
    optimizer: str,
    model_state: dict[str, torch.Tensor],
) -> list[str]:
    """How a checkpoint's model config, class count and optimizer differ from a run's ("checkpoint vs run"),
    and, when those agree, its model tensors from ``model_state``; empty when the checkpoint fits."""
    meta = state.get("meta") or {}
    diffs = []
    saved = meta.get("model")
    if isinstance(saved, dict):
        diffs += [
            f"model.{k} {saved.get(k)!r} vs {model_cfg.get(k)!r}"
            for k in sorted(set(saved) | set(model_cfg))
            if saved.get(k) != model_cfg.get(k)
        ]
    if "num_classes" in meta and meta["num_classes"] != num_classes:
        diffs.append(f"{meta['num_classes']} vs {num_classes} classes")
    if "optimizer" in meta and meta["optimizer"] != optimizer:
        diffs.append(f"optim.name {meta['optimizer']!r} vs {optimizer!r}")
    if not diffs and isinstance(state.get("model"), dict):
        found = state_mismatch(model_state, state["model"])
        diffs += [found] if found else []
    return diffs


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; no pickle is involved."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path), device=str(device))
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist.") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(
            f"{path} is not a readable reglab checkpoint ({exc}). reglab reads only its own "
            "safetensors checkpoints; pickled .pt files are refused on purpose."
        ) from None
    if meta.get("format") != FORMAT or "reglab" not in meta:
        raise UserError(f"{path} is a safetensors file but not a reglab checkpoint (no reglab metadata).")
    text = meta["reglab"]
    if len(text) > MAX_METADATA_CHARS:
        raise UserError(
            f"{path} is not a valid reglab checkpoint: metadata is {len(text)} characters (at most "
            f"{MAX_METADATA_CHARS}). Use another checkpoint (e.g. --checkpoint last) or retrain."
        )
    reason = ""
    try:
        tree = json.loads(text)
        if nesting_depth(tree, MAX_DEPTH) > MAX_DEPTH:
            raise RecursionError
        state = unflatten(tree, tensors)
        if not isinstance(state, dict):
            reason = f"holds {type(state).__name__}, not a mapping"
    except RecursionError:
        reason = f"is nested deeper than {MAX_DEPTH} levels"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = f"cannot be decoded ({exc!r})"
    if reason:
        raise UserError(
            f"{path} is not a valid reglab checkpoint: metadata {reason[:300]}; it cannot be loaded. "
            "Use another checkpoint (e.g. --checkpoint last) or retrain."
        )
    return state


def nesting_depth(tree: Any, limit: int) -> int:
    """Depth of nested lists and dicts in ``tree`` (without recursion); stops counting past ``limit``."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, dict)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest
