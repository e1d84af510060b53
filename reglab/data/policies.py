"""AutoAugment, RandAugment and TrivialAugment with per-sample randomness and no per-image loop.

torchvision's ``transforms.v2`` policies draw one operation per *call*, so a batch tensor would get the same
operation on every image. Here each sample draws its own operations with the policy's own probabilities,
then samples are grouped by (operation, magnitude) and each group is transformed in one call of
torchvision's implementation (``_apply_image_or_video_transform`` of the v2 policy class, so the
operations and magnitude tables are torchvision's exactly). The loop runs over the distinct operations
present in a batch (at most a few dozen), never over images.

* AutoAugment (Cubuk et al., 2019), CIFAR-10 policy: one of 25 sub-policies per sample, each two
  operations applied with their own probability and fixed magnitude (random sign for signed operations).
* RandAugment (Cubuk et al., 2020): ``N`` operations drawn uniformly, all at magnitude ``M`` (of 31 bins).
* TrivialAugment (Müller & Hutter, 2021, "wide" space): one operation, magnitude drawn uniformly.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

_SPACE_TOOLS = {"autoaugment", "randaugment", "trivialaugment"}


class BatchPolicy:
    """``policy(x_uint8, generator) -> x_uint8`` applying a torchvision policy independently per sample."""

    def __init__(self, name: str, num_ops: int = 2, magnitude: int = 9, num_bins: int = 31, size: int = 32):
        if name not in _SPACE_TOOLS:
            raise ValueError(f"unknown policy {name!r}; choose from {sorted(_SPACE_TOOLS)}")
        self.name = name
        if name == "autoaugment":
            self.tv = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
        elif name == "randaugment":
            self.tv = v2.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_bins)
        else:
            self.tv = v2.TrivialAugmentWide(num_magnitude_bins=num_bins)
        space = self.tv._AUGMENTATION_SPACE
        self.ops = list(space)
        self.num_ops, self.magnitude, self.num_bins = num_ops, magnitude, num_bins
        # table[(op, magnitude)] -> code; code 0 is the identity
        self.table: list[tuple[str, float]] = [("Identity", 0.0)]
        self._codes: dict[tuple[str, float], int] = {("Identity", 0.0): 0}
        self.size = size

    def _code(self, op: str, mag: float) -> int:
        key = (op, float(mag))
        if key not in self._codes:
            self._codes[key] = len(self.table)
            self.table.append(key)
        return self._codes[key]

    def _magnitudes(self, op: str, bins: int) -> torch.Tensor | None:
        fn, _ = self.tv._AUGMENTATION_SPACE[op]
        return fn(bins, self.size, self.size)

    def sample_codes(self, n: int, gen: torch.Generator, device) -> torch.Tensor:
        """Integer codes (steps x n) into ``self.table``: what each sample gets at each step."""
        space = self.tv._AUGMENTATION_SPACE
        if self.name == "autoaugment":
            policies = self.tv._policies
            choice = torch.randint(len(policies), (n,), generator=gen, device=device)
            coins = torch.rand(2, n, generator=gen, device=device)
            signs = torch.rand(2, n, generator=gen, device=device) <= 0.5
            codes = torch.zeros(2, n, dtype=torch.long, device=device)
            for k, policy in enumerate(policies):
                for j, (op, p, mag_idx) in enumerate(policy):
                    mags = self._magnitudes(op, 10)
                    mag = 0.0 if mags is None else float(mags[mag_idx])
                    chosen = (choice == k) & (coins[j] <= p)
                    plus, minus = self._code(op, mag), self._code(op, -mag if space[op][1] else mag)
                    codes[j] = torch.where(chosen & ~signs[j], plus, codes[j])
                    codes[j] = torch.where(chosen & signs[j], minus, codes[j])
            return codes
        steps = self.num_ops if self.name == "randaugment" else 1
        lut = []  # (op index, bin, sign) -> code, flattened
        for op in self.ops:
            mags = self._magnitudes(op, self.num_bins)
            for b in range(self.num_bins):
                mag = 0.0 if mags is None else float(mags[b])
                signed = space[op][1] and mags is not None
                lut += [self._code(op, mag), self._code(op, -mag if signed else mag)]
        lut_t = torch.tensor(lut, device=device).view(len(self.ops), self.num_bins, 2)
        op_idx = torch.randint(len(self.ops), (steps, n), generator=gen, device=device)
        if self.name == "randaugment":
            bins = torch.full((steps, n), self.magnitude, dtype=torch.long, device=device)
        else:
            bins = torch.randint(self.num_bins, (steps, n), generator=gen, device=device)
        sign = (torch.rand(steps, n, generator=gen, device=device) <= 0.5).long()
        return lut_t[op_idx, bins, sign]

    def apply_codes(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        for step in codes:
            for code in torch.unique(step).tolist():
                if code == 0:
                    continue
                idx = (step == code).nonzero().squeeze(1)
                op, mag = self.table[code]
                out[idx] = self.tv._apply_image_or_video_transform(
                    out[idx], op, mag, interpolation=self.tv.interpolation, fill=self.tv._fill
                )
        return out

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.apply_codes(x, self.sample_codes(len(x), gen, x.device))
