"""``reglab augment preview``: real training images as a recipe's pipeline (augmentations, mixing) sees them."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..config import Config  # noqa: E402
from ..data import load_splits  # noqa: E402
from ..data.augment import AUGMENTATIONS, training_loader, training_size  # noqa: E402
from ..data.mixing import build_mixer  # noqa: E402
from ..errors import UserError  # noqa: E402


def _label(target: torch.Tensor, classes: list[str]) -> str:
    """The (at most two) classes with weight, e.g. ``cat 0.63 / dog 0.37``."""
    w, idx = target.topk(min(2, len(classes)))
    parts = [f"{classes[i]} {v:.2f}" for v, i in zip(w.tolist(), idx.tolist()) if v > 0.005]
    return "\n".join(parts)


def output_path(out: Path) -> Path:
    """The file ``-o`` names, as it will be written: without an extension matplotlib adds ``.png``, so the name
    gets it here (and the path printed is the real one); an extension matplotlib cannot write, or a folder, is
    refused before any work."""
    from matplotlib.backend_bases import FigureCanvasBase

    out = Path(out)
    if out.is_dir():
        raise UserError(f"-o {out} is a folder; name the image file, e.g. -o {out / 'preview.png'}.")
    if not out.suffix:
        return out.with_name(out.name + ".png")
    kind = out.suffix[1:].lower()
    if kind not in FigureCanvasBase.get_supported_filetypes():
        raise UserError(f"-o {out}: cannot write a .{kind} image; name a .png file (or .jpg, .svg, .pdf).")
    return out


def preview(cfg: Config, out: Path, n: int = 32, columns: int = 8, seed: int = 0) -> Path:
    """Save a grid of ``n`` training images after the configured pipeline, labels (mixed) under each, to
    :func:`output_path` of ``out``; return the file written."""
    out = output_path(out)
    data = load_splits(cfg.data)
    n = min(n, len(data.train))
    loader = training_loader(data, cfg.aug, n, seed=seed)
    loader.size = training_size(cfg.aug, cfg.train.epochs, 0)  # the first epoch's images
    x, y = next(iter(loader))
    targets = torch.nn.functional.one_hot(y, data.num_classes).float()
    if cfg.mix.enabled:
        x, targets = build_mixer(cfg.mix, data.num_classes)(x, y, loader.generator)
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    images = (x.float().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.25, rows * 1.6))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], interpolation="nearest")
            ax.set_title(_label(targets[i].cpu(), data.classes), fontsize=6.5)
    fig.suptitle(_describe(cfg), fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def _describe(cfg: Config) -> str:
    a, m = cfg.aug, cfg.mix
    parts = [aug.label(a) for aug in AUGMENTATIONS if aug.enabled(a)]
    if m.mixup_alpha or m.lam_x != "beta":
        parts.append(
            f"mixup λx={m.lam_x}"
            + (f"(α={m.mixup_alpha:g})" if m.lam_x == "beta" else f"{m.lam_x_range}")
            + ("" if m.lam_y == "tied" else f" λy={m.lam_y}{m.lam_y_range if m.lam_y != 'beta' else ''}")
        )
    if m.cutmix_alpha:
        parts.append(f"cutmix α={m.cutmix_alpha:g}")
    low = training_size(a, cfg.train.epochs, 0)
    if low:
        parts.append(f"{low} px in the first {min(a.low_res_epochs, cfg.train.epochs - 1)} epoch(s) (shown)")
    return ", ".join(parts) or "no augmentation"
