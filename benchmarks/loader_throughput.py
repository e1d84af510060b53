"""Images/s of reglab's DeviceLoader training path next to a torchvision per-image pipeline, on real CIFAR-10.

Both produce the same thing: shuffled batches of 512 normalized float images, randomly cropped after 4 pixels of
reflect padding and randomly flipped.

* reglab: ``DeviceLoader`` over the training split held as one uint8 tensor on the device, crop + flip as
  batched tensor ops, normalization fused with the uint8 -> float conversion; channels_last on and off. Timed
  over full epochs.
* torchvision: ``transforms.v2`` ``RandomCrop(32, padding=4, padding_mode="reflect")`` +
  ``RandomHorizontalFlip()`` + ``ToDtype(float32, scale=True)`` + ``Normalize`` applied per image in a
  ``Dataset`` of uint8 tensors, batched by ``torch.utils.data.DataLoader`` with ``num_workers=0`` and ``2``.
  Timed over passes of ``--tv-images`` images (default 10000); workers are persistent and warmed up first, so
  their start-up is not counted. The main process runs the per-image transforms with ``--tv-threads`` (default
  1) intra-op threads, as DataLoader workers do: with more, every tiny per-image op pays OpenMP fork/join, and
  on a busy 2-core machine that made ``num_workers=0`` over 10x slower.

Each measurement is repeated ``--repeats`` times (default 3); the table shows the median images/s and the ratio
to the torchvision ``num_workers=0`` pipeline. Run from the repository root::

    .venv/bin/python benchmarks/loader_throughput.py [--data-dir ../shared/data] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reglab.config import AugConfig, DataConfig  # noqa: E402
from reglab.data import DeviceLoader, load_splits  # noqa: E402
from reglab.data.augment import build_transforms  # noqa: E402


class UInt8Dataset(torch.utils.data.Dataset):
    """Per-image access to an N x 3 x 32 x 32 uint8 tensor, with a per-image transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_passes(loader, device, repeats: int, to_device: bool = False) -> list[float]:
    """Images/s of ``repeats`` full passes over ``loader`` (batches moved to ``device`` if asked)."""
    rates = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        n = 0
        for x, y in loader:
            if to_device:
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
            n += len(y)
        sync(device)
        rates.append(n / (time.perf_counter() - t0))
    return rates


def time_reglab(split, mean, std, device, channels_last: bool, batch_size: int, repeats: int) -> tuple[list, int]:
    uint8_stage, float_stage = build_transforms(AugConfig(crop_pad=4, pad_mode="reflect", flip=True))
    assert not float_stage, "the benchmark compares crop + flip + normalize only"
    loader = DeviceLoader(
        split,
        batch_size,
        mean,
        std,
        device=device,
        shuffle=True,
        drop_last=True,
        seed=0,
        uint8_transforms=uint8_stage,
        float_transforms=float_stage,
        channels_last=channels_last,
    )
    for i, _ in enumerate(loader):  # warm-up: allocator, kernels
        if i == 3:
            break
    return timed_passes(loader, device, repeats), loader.num_samples


def time_torchvision(
    split, mean, std, device, workers: int, batch_size: int, n_images: int, repeats: int, threads: int
) -> tuple[list, int]:
    from torchvision.transforms import v2

    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)

    transform = v2.Compose(
        [
            v2.RandomCrop(32, padding=4, padding_mode="reflect"),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )
    subset = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n_images]
    ds = UInt8Dataset(split.images[subset].contiguous(), split.labels[subset].contiguous(), transform)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )
    for i, _ in enumerate(loader):  # warm-up: starts the persistent workers
        if i == 2:
            break
    rates = timed_passes(loader, device, repeats, to_device=True)
    per_pass = len(loader) * batch_size
    del loader
    torch.set_num_threads(saved_threads)
    return rates, per_pass


def default_data_dir() -> str:
    for cand in (Path("../shared/data"), REPO.parent / "shared" / "data"):
        if (cand / "cifar-10-batches-py").is_dir():
            return str(cand)
    return os.environ.get("REGLAB_DATA", "../shared/data")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=default_data_dir(), help="folder holding cifar-10-batches-py/")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tv-images", type=int, default=10000, help="images per torchvision timing pass")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="torchvision DataLoader num_workers")
    p.add_argument("--tv-threads", type=int, default=1, help="intra-op threads of the torchvision main process")
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="intra-op thread counts to time reglab with (default on CPU: 1 and torch's default)",
    )
    args = p.parse_args(argv)

    default_threads = torch.get_num_threads()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    t0 = time.perf_counter()
    splits = load_splits(DataConfig(dataset="cifar10", dir=args.data_dir, download=False))
    print(
        f"loaded CIFAR-10 from {args.data_dir} in {time.perf_counter() - t0:.1f}s: "
        f"train split {len(splits.train)} images (val {len(splits.val)} held out)"
    )
    print(
        f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )

    rows = []  # (pipeline, images per timed pass, rates)
    for workers in args.workers:
        rates, n = time_torchvision(
            splits.train,
            splits.mean,
            splits.std,
            device,
            workers,
            args.batch_size,
            args.tv_images,
            args.repeats,
            args.tv_threads,
        )
        rows.append(
            (
                f"torchvision v2 per-image, DataLoader num_workers={workers}, main process "
                f"{args.tv_threads} thread{'s' if args.tv_threads > 1 else ''}",
                n,
                rates,
            )
        )
        print(f"  {rows[-1][0]}: {[round(r) for r in rates]} img/s", flush=True)
    thread_counts = args.threads or (
        [1, default_threads] if device.type == "cpu" and default_threads > 1 else [default_threads]
    )
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for cl in (False, True):
            rates, n = time_reglab(
                splits.train, splits.mean, splits.std, device, cl, args.batch_size, args.repeats
            )
            rows.append(
                (
                    f"reglab DeviceLoader, channels_last={'on' if cl else 'off'}, {threads} thread"
                    f"{'s' if threads > 1 else ''}",
                    n,
                    rates,
                )
            )
            print(f"  {rows[-1][0]}: {[round(r) for r in rates]} img/s", flush=True)
    torch.set_num_threads(default_threads)

    base = next((statistics.median(r) for name, _, r in rows if "num_workers=0," in name), None)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print()
    print(
        f"Batch {args.batch_size}, random crop (pad 4, reflect) + flip + normalize, device {device.type}; "
        f"median of {args.repeats} passes."
    )
    print()
    print("| pipeline | images per timed pass | median images/s | vs torchvision num_workers=0 |")
    print("| --- | ---: | ---: | ---: |")
    for name, n, rates in rows:
        med = statistics.median(rates)
        ratio = f"{med / base:.1f}x" if base else "n/a"
        print(f"| {name} | {n} | {med:,.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
