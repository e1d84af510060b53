"""Per-epoch cost of each augmentation and mixing method on real CIFAR-10, next to the crop+flip baseline.

Runs the training data path only (DeviceLoader + transforms + mixer, no model) over full epochs of the
45,000-image training split, batch 256, on this machine. Each configuration is timed ``--repeats`` times,
interleaved, and the median is reported together with its ratio to the crop+flip baseline, and the extra
seconds per epoch.

    .venv/bin/python benchmarks/augment_cost.py [--data-dir ../shared/data] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reglab.config import load_config
from reglab.data import load_splits
from reglab.data.augment import training_loader
from reglab.data.mixing import build_mixer

CONFIGS = {
    "crop+flip (baseline)": [],
    "none": ["aug.crop_pad=0", "aug.flip=false"],
    "+ rotation 15": ["aug.rotation=15"],
    "+ cutout 1x8": ["aug.cutout_holes=1", "aug.cutout_size=8"],
    "+ cutout 4x4": ["aug.cutout_holes=4", "aug.cutout_size=4"],
    "+ random erasing p=0.5": ["aug.erasing_p=0.5"],
    "+ AutoAugment": ["aug.policy=autoaugment"],
    "+ RandAugment N2 M9": ["aug.policy=randaugment"],
    "+ TrivialAugment": ["aug.policy=trivialaugment"],
    "+ mixup (batch λ)": ["mix.mixup_alpha=1"],
    "+ mixup (per-sample λ)": ["mix.mixup_alpha=1", "mix.per_sample=true"],
    "+ cutmix": ["mix.cutmix_alpha=1"],
    "+ mixup/cutmix switch": ["mix.mixup_alpha=1", "mix.cutmix_alpha=1"],
    "+ decoupled λx=0.5, λy~U(0,1)": ["mix.lam_x=fixed", "mix.lam_x_range=[0.5,0.5]", "mix.lam_y=uniform"],
}


def epoch_seconds(data, overrides: list[str], batch: int) -> float:
    cfg = load_config(None, overrides)
    loader = training_loader(data, cfg.aug, batch, channels_last=True)
    mixer = build_mixer(cfg.mix, data.num_classes) if cfg.mix.enabled else None
    t0 = time.perf_counter()
    for x, y in loader:
        if mixer is not None:
            x, y = mixer(x, y, loader.generator)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    data = load_splits(load_config(None, [f"data.dir={args.data_dir}"]).data)
    times: dict[str, list[float]] = {k: [] for k in CONFIGS}
    for _ in range(args.repeats):
        for name, overrides in CONFIGS.items():
            times[name].append(epoch_seconds(data, overrides, args.batch))
    base = statistics.median(times["crop+flip (baseline)"])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(data.train)} images/epoch, "
        f"batch {args.batch}, median of {args.repeats}\n"
    )
    print("| pipeline | s/epoch | images/s | x baseline | extra s/epoch |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.2f} | {len(data.train) / med:,.0f} | {med / base:.2f} | {med - base:+.2f} |")


if __name__ == "__main__":
    main()
