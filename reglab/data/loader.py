"""DeviceLoader: a whole split held as one uint8 tensor on the training device, batched without workers.

In the spirit of airbench's GPU-resident loader: the images never leave the device, each epoch is one
``randperm`` plus per-batch gathers, augmentations are batched tensor ops, and uint8 -> float conversion,
normalization and the channels_last layout happen in one pass per batch. Randomness comes from the
loader's own ``torch.Generator`` (on the data's device), whose state is saved with checkpoints, so a resumed
run sees exactly the batches an uninterrupted one would.

Multi-process training (``rank``/``world_size``): every process holds the whole split and draws the same
per-epoch permutation (same seed, same generator), so global batch ``i`` is ``order[i*B:(i+1)*B]`` everywhere
and rank ``r`` takes its contiguous slice of ``B / world_size`` images. Augmentation randomness then comes from
a second generator, seeded per (seed, rank, epoch) by :meth:`DeviceLoader.set_epoch`: different on every rank,
and reproducible after a resume at an epoch boundary without saving any per-rank state. With one process the
single generator does both jobs, exactly as before.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from .datasets import Split

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """A 63-bit seed for (seed, rank, epoch): distinct streams per rank and epoch, the same on every rerun."""
    import hashlib

    digest = hashlib.sha256(f"reglab/{seed}/{rank}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class DeviceLoader:
    """Iterate over ``(images, labels)`` batches of a :class:`Split` resident on ``device``.

    Args:
        split: uint8 images (N x 3 x 32 x 32) and int64 labels.
        batch_size: images per batch.
        mean, std: per-channel normalization in 0-1 units.
        device: where the data lives and the batches are produced.
        shuffle: new random order every epoch (training).
        drop_last: drop the final short batch (training; keeps mixup's pairs and BN statistics sane).
        uint8_transforms: batch transforms on raw pixels, applied in order before normalization. An indexed
            one (``t.indexed``: :class:`~reglab.data.augment.AlternatingFlip`) is bound to this loader's split
            and generator here (``t.bind(n, generator)``) and called ``t(x, generator, idx, epoch)`` with the
            batch's indices into the split and the pass number.
        float_transforms: batch transforms on normalized float images, applied after.
        seed: seeds the loader's generator (order and augmentation randomness).
        channels_last: produce batches in channels_last memory format.
        rank, world_size: this process's shard of every batch (``batch_size`` is the global batch and must be
            divisible by ``world_size``); 0 and 1 outside multi-process training.
        epoch_batched: gather and augment (``uint8_transforms``) a whole epoch's images
            at the start of the epoch, in chunks of :attr:`CHUNK`, then hand out slices; ``None`` (default) means
            on CUDA only. On a GPU a step is bound by kernel launches, and this turns ~30 small launches per
            batch into a few large ones per epoch (the augmentation is per image either way, so the batches
            differ only in which random numbers each image draws); on a CPU, batch by batch stays in cache.
    """

    CHUNK = 16384  # images augmented at once in epoch_batched mode (bounds the temporary memory)

    def __init__(
        self,
        split: Split,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        drop_last: bool = False,
        uint8_transforms: Sequence[Transform] = (),
        float_transforms: Sequence[Transform] = (),
        seed: int = 0,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        rank: int = 0,
        world_size: int = 1,
        epoch_batched: bool | None = None,
    ):
        if batch_size % world_size or (world_size > 1 and not drop_last):
            raise ValueError(
                f"sharded batches need drop_last and batch_size ({batch_size}) divisible by "
                f"world_size ({world_size})"
            )
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        # An indexed transform holds per-image state for one split: each loader binds a copy of its own.
        self.uint8_transforms = [copy.copy(t) if getattr(t, "indexed", False) else t for t in uint8_transforms]
        self.float_transforms = list(float_transforms)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.dtype = dtype
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.scale = (1.0 / (255.0 * std_t)).to(dtype)
        self.shift = (-mean_t / std_t).to(dtype)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.local_batch = batch_size // world_size
        self.aug_generator = self.generator
        self.epoch_batched = self.device.type == "cuda" if epoch_batched is None else epoch_batched
        self.epoch = 0  # passes started (what indexed transforms are told)
        # Side of the batches handed out, set per pass by the training loop (aug.low_res); None: as stored.
        self.size: int | None = None
        for t in self.uint8_transforms:
            if getattr(t, "indexed", False):
                t.bind(len(self.labels), self.generator)
        if world_size > 1:
            self.aug_generator = torch.Generator(device=self.device)
            self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Multi-process only: reseed this rank's augmentation generator for ``epoch`` (a no-op for one process,
        whose single generator simply continues)."""
        if self.world_size > 1:
            self.aug_generator.manual_seed(epoch_seed(self.seed, self.rank, epoch))

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self) * self.batch_size if self.drop_last else len(self.labels)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float in the target layout, then ``(x/255 - mean) / std`` as one fused multiply-add."""
        x = x.to(self.dtype, memory_format=self.memory_format)
        return torch.addcmul(self.shift, x, self.scale)

    def _augment(self, x: torch.Tensor, idx, epoch: int) -> torch.Tensor:
        """Raw-pixel stage for the images ``x`` = ``images[idx]`` in pass ``epoch``: ``uint8_transforms``."""
        for t in self.uint8_transforms:
            x = t(x, self.aug_generator, idx, epoch) if getattr(t, "indexed", False) else t(x, self.aug_generator)
        return x

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized-float stage of one batch: :meth:`normalize`, then ``float_transforms``, then (progressive
        resizing) a downsample to ``size`` x ``size``, so every augmentation works at the stored size."""
        x = self.normalize(x)
        for t in self.float_transforms:
            x = t(x, self.aug_generator)
        if self.size is not None and self.size != x.shape[-1]:
            # "area" = adaptive average pooling: each output pixel is the mean of the input window it maps to
            # (2x2 blocks at half size; overlapping 1-2 px windows for 32 -> 24), a box-filtered downsample
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
        return x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator, device=self.device) if self.shuffle else None
        epoch = self.epoch
        self.epoch += 1
        if self.epoch_batched and (order is not None or self.uint8_transforms):
            yield from self._iter_epoch(order, epoch)
            return
        for i in range(len(self)):
            start = i * self.batch_size + self.rank * self.local_batch
            sl = slice(start, min(start + self.local_batch, n))
            idx = sl if order is None else order[sl]
            yield self._finish(self._augment(self.images[idx], idx, epoch)), self.labels[idx]

    def _iter_epoch(self, order, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``epoch_batched``: this rank's images of the whole epoch, in batch order, augmented up front."""
        n, nb = len(self.labels), len(self)
        idx = torch.arange(n, device=self.device) if order is None else order
        if self.drop_last:  # this rank's contiguous slice of every global batch
            idx = idx[: nb * self.batch_size].view(nb, self.batch_size)
            idx = idx[:, self.rank * self.local_batch : (self.rank + 1) * self.local_batch].reshape(-1)
        images = torch.cat([self._augment(self.images[c], c, epoch) for c in idx.split(self.CHUNK)])
        labels = self.labels[idx]
        for i in range(nb):
            sl = slice(i * self.local_batch, (i + 1) * self.local_batch)
            yield self._finish(images[sl]), labels[sl]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The order generator's state (identical on every rank; the augmentation generator of a multi-process
        run is reseeded from the epoch, see :meth:`set_epoch`)."""
        return {"generator": self.generator.get_state(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"].cpu())
        self.epoch = int(state.get("epoch", 0))
