"""``reglab data check``: verify dataset files and summarize them (per-class counts, channel statistics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import UserError
from . import cifar
from .datasets import channel_stats, load_arrays
from .download import file_digest


def verify_sums(folder: Path) -> tuple[str, list[str]]:
    """Check files against a ``SHA256SUMS`` list beside the dataset folder or inside it, if there is one."""
    for sums in (folder / "SHA256SUMS", folder.parent / "SHA256SUMS"):
        if sums.is_file():
            bad = []
            for line in sums.read_text().splitlines():
                parts = line.split()
                if len(parts) != 2:
                    continue
                digest, name = parts[0], parts[1].lstrip("*")
                path = sums.parent / name
                if (
                    path.is_file()
                    and path.resolve().parent == folder.resolve()
                    and file_digest(path, "sha256") != digest
                ):
                    bad.append(path.name)
            return str(sums), bad
    return "", []


def check_dataset(cfg: DataConfig) -> dict:
    """Load every split of the dataset (raising UserError on any problem) and return a summary dict."""
    summary: dict = {"dataset": cfg.dataset}
    if cfg.dataset != "synthetic":
        layout = cifar.LAYOUTS[cfg.dataset]
        folder = cifar.ensure_files(layout, cifar.resolve_root(cfg.dir), download=cfg.download)
        sums, bad = verify_sums(folder)
        if bad:
            raise UserError(
                f"checksum mismatch for {', '.join(bad)} (listed in {sums}): the files are corrupt; "
                "download the dataset again."
            )
        summary.update(folder=str(folder.resolve()), checksums=f"ok ({sums})" if sums else "no SHA256SUMS file")
    classes, train_x, train_y, test_x, test_y = load_arrays(cfg)
    summary["classes"] = classes
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        mean, std = channel_stats(torch.from_numpy(x))
        summary[split] = {
            "images": int(len(y)),
            "per_class": np.bincount(y, minlength=len(classes)).tolist(),
            "mean": list(mean),
            "std": list(std),
        }
    return summary


def format_summary(s: dict) -> str:
    lines = [f"dataset   {s['dataset']}"]
    if "folder" in s:
        lines += [f"folder    {s['folder']}", f"checksums {s['checksums']}"]
    for split in ("train", "test"):
        d = s[split]
        lines.append(
            f"{split:<9} {d['images']} images, {len(s['classes'])} classes, "
            f"mean {tuple(round(m, 4) for m in d['mean'])}, std {tuple(round(v, 4) for v in d['std'])}"
        )
    width = max(len(c) for c in s["classes"])
    lines.append(f"{'class':<{width}}  {'train':>6}  {'test':>6}")
    for i, name in enumerate(s["classes"]):
        lines.append(f"{name:<{width}}  {s['train']['per_class'][i]:>6}  {s['test']['per_class'][i]:>6}")
    return "\n".join(lines)
