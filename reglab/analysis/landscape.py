"""Loss landscapes around a trained model: do mixup-trained models sit in wider basins than ERM ones?

**Filter-normalized random directions** (Li, Xu, Taylor, Studer & Goldstein, *Visualizing the Loss Landscape
of Neural Nets*, NeurIPS 2018, Sec. 4): a direction ``d`` is a Gaussian tensor shaped like the weights, then
every filter ``d_ij`` (slice ``j`` along the output dimension of layer ``i``; a row of a linear layer) is
rescaled to the norm of the matching filter of the trained weights::

    d_ij <- d_ij / ||d_ij|| * ||theta_ij||

Biases and batch-norm parameters (every parameter with <= 1 dimension) get a zero direction -- the paper's
choice ("we do not perturb bias and BN parameters", its ``ignore='biasbn'``) -- and the network is evaluated
in eval mode with the trained batch-norm running statistics, unchanged (as the paper's code, which calls
``net.eval()`` and perturbs weights only). Perturbed weights are evaluated with
``torch.func.functional_call``, so the model is never copied or modified.

* 1D: ``f(a) = L(theta + a d)``, ``a`` in [-1, 1]; 2D: ``f(a, b) = L(theta + a d1 + b d2)`` on [-1, 1]^2.
* **Grow-to-L** (the method of the mixup report this analysis reproduces, in its words "perturbing the
  parameters ... gradually adjusting its perturbation range; when the loss reaches a predetermined size, save
  these random tensors; then interpolate"; saved under the key ``report``): grow
  ``s`` along each random direction until ``L(theta + s d) = L_target`` (geometric growth, then bisection),
  then interpolate ``theta + t s1 d1 + u s2 d2`` for ``t, u`` in [-1, 1]. We use the same filter-normalized
  directions as above, so the two methods differ only in the scaling (the report gives no normalization).
* **Basin width** (to compare models in a table, not by eye): along a direction, the distance ``a`` at which
  the loss first reaches a level ``L`` (rays in both signs of several directions; mean and std, and a 95%
  bootstrap interval over the directions, each the mean of its two rays). ``a`` is in
  filter-normalized units: ``a = 0.1`` moves every filter by 10% of its own norm. Widths are grow-to-L's
  grow-stage scales ``s`` themselves.

Losses are the plain cross-entropy (mean) and top-1 accuracy on a fixed, stratified subset of the
**training** split, un-augmented (Li et al. plot the training loss); see :func:`fixed_subset`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..track.stats import bootstrap_mean_interval

Direction = dict[str, torch.Tensor]


def filter_normalize(d: torch.Tensor, w: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Rescale each filter (slice along dim 0) of ``d`` to the norm of the same filter of ``w``."""
    dn = d.flatten(1).norm(dim=1)
    wn = w.flatten(1).norm(dim=1)
    return d * (wn / (dn + eps)).view(-1, *([1] * (d.dim() - 1)))


def random_direction(model: nn.Module, generator: torch.Generator) -> Direction:
    """A filter-normalized Gaussian direction over ``model``'s parameters; zero on biases and BN (dim <= 1)."""
    out: Direction = {}
    for name, p in model.named_parameters():
        if p.dim() <= 1:
            out[name] = torch.zeros_like(p)
        else:
            r = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p)
            out[name] = filter_normalize(r, p.detach())
    return out


def directions(model: nn.Module, n: int, seed: int = 0) -> list[Direction]:
    g = torch.Generator().manual_seed(seed)
    return [random_direction(model, g) for _ in range(n)]


def fixed_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of a stratified subset of ``n`` images drawn with a fixed seed (all of them if n >= N)."""
    from ..data import stratified_split

    if n >= len(labels):
        return torch.arange(len(labels))
    _, held = stratified_split(labels.numpy(), n, seed)
    return torch.from_numpy(held)


class Evaluator:
    """``ev(coeffs, dirs) -> (loss, acc%)`` of ``theta + sum_k coeffs[k] * dirs[k]`` on a fixed batch set.

    The model is evaluated in eval mode (BN running statistics of the trained model) through
    ``functional_call``; its own parameters are left untouched. ``autocast`` (a factory of an autocast context,
    as :func:`reglab.train.device.autocast_for` returns; None: fp32) is the forward's precision; logits, loss and
    accuracy are always computed in fp32. ``channels_last`` holds the images in that layout (what the training
    loop's evaluation feeds the same model)."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int = 1000,
        *,
        autocast=None,
        channels_last: bool = False,
    ):
        self.model = model.eval()
        self.theta = {n: p.detach() for n, p in model.named_parameters()}
        self.buffers = {n: b for n, b in model.named_buffers()}
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
            # conv filters in the images' layout once, not per batch: theta + c d keeps theta's layout
            self.theta = {
                n: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                for n, t in self.theta.items()
            }
        self.x, self.y, self.batch_size = x, y, batch_size
        self.autocast = autocast
        self.calls = 0

    def weights(self, coeffs: Sequence[float], dirs: Sequence[Direction]) -> dict[str, torch.Tensor]:
        """The parameters at ``theta + sum_k coeffs[k] * dirs[k]`` (new tensors; theta itself where all are 0)."""
        params = {}
        for n, t in self.theta.items():
            p = t
            for c, d in zip(coeffs, dirs):
                if c != 0.0:
                    p = p + c * d[n]
            params[n] = p
        return params

    @torch.no_grad()
    def __call__(self, coeffs: Sequence[float], dirs: Sequence[Direction]) -> tuple[float, float]:
        params = self.weights(coeffs, dirs)
        loss = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        for s in range(0, len(self.y), self.batch_size):
            xb, yb = self.x[s : s + self.batch_size], self.y[s : s + self.batch_size]
            if self.autocast is not None:
                with self.autocast():
                    logits = functional_call(self.model, (params, self.buffers), (xb,))
            else:
                logits = functional_call(self.model, (params, self.buffers), (xb,))
            logits = logits.float()
            loss += F.cross_entropy(logits, yb, reduction="sum").double()
            correct += (logits.argmax(1) == yb).sum()
        self.calls += 1
        n = max(len(self.y), 1)
        return float(loss) / n, 100.0 * float(correct) / n


def evaluator_for(
    run, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000, amp: str | None = None
) -> Evaluator:
    """The :class:`Evaluator` of a loaded run's model on normalized images ``x`` with labels ``y``, evaluating as
    the run's own evaluation did: in its precision (``train.amp`` as this CPU resolves it; ``amp`` overrides,
    ``off`` = fp32) and its memory format (``train.channels_last``)."""
    return Evaluator(
        run.model, x, y, batch_size, autocast=run.autocast(amp), channels_last=getattr(run, "channels_last", False)
    )


def scan_1d(ev: Evaluator, d: Direction, alphas: Sequence[float]) -> dict[str, list[float]]:
    """Loss and accuracy at ``theta + a d`` for each ``a``."""
    res = [ev([a], [d]) for a in alphas]
    return {"alpha": [float(a) for a in alphas], "loss": [r[0] for r in res], "acc": [r[1] for r in res]}


def scan_2d(ev: Evaluator, d1: Direction, d2: Direction, a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Loss and accuracy on the grid ``theta + a_i d1 + b_j d2``; arrays indexed ``[j, i]`` (rows: b)."""
    loss = np.zeros((len(b), len(a)))
    acc = np.zeros((len(b), len(a)))
    for j, bj in enumerate(b):
        for i, ai in enumerate(a):
            loss[j, i], acc[j, i] = ev([ai, bj], [d1, d2])
    return {"a": [float(v) for v in a], "b": [float(v) for v in b], "loss": loss.tolist(), "acc": acc.tolist()}


def first_crossings(
    ev: Evaluator,
    d: Direction,
    levels: Sequence[float],
    loss0: float,
    start: float = 0.01,
    growth: float = 1.5,
    max_alpha: float = 10.0,
    bisect: int = 7,
) -> list[float | None]:
    """For each level, the smallest ``a > 0`` (to within the bisection) with ``L(theta + a d) >= level``:
    grow ``a`` geometrically from ``start`` until the loss passes the highest level (or ``a > max_alpha``),
    then bisect inside the first bracket that crosses each level. None where it never gets there."""
    pts = [(0.0, loss0)]
    a = start
    top = max(levels)
    while a <= max_alpha:
        pts.append((a, ev([a], [d])[0]))
        if pts[-1][1] >= top:
            break
        a *= growth
    out: list[float | None] = []
    for level in levels:
        k = next((i for i, (_, loss) in enumerate(pts) if loss >= level), None)
        if k is None:
            out.append(None)
            continue
        if k == 0:
            out.append(0.0)
            continue
        lo, hi = pts[k - 1][0], pts[k][0]
        for _ in range(bisect):
            mid = 0.5 * (lo + hi)
            if ev([mid], [d])[0] >= level:
                hi = mid
            else:
                lo = mid
        out.append(0.5 * (lo + hi))
    return out


def resolve_levels(specs: Sequence[str | float], loss0: float) -> list[tuple[str, float]]:
    """Loss levels as (label, value): a number is absolute; ``"+x"`` means ``x`` above the loss at the minimum
    (a fairer comparison of models whose minima differ, e.g. mixup's higher clean loss)."""
    out = []
    for spec in specs:
        text = str(spec).strip()
        out.append((text, loss0 + float(text[1:])) if text.startswith("+") else (f"{float(text):g}", float(text)))
    return out


def basin_width(ev: Evaluator, dirs: Sequence[Direction], levels: Sequence[str | float], **kw) -> dict[str, Any]:
    """Distance to each loss level (see :func:`resolve_levels`) along ``+d`` and ``-d`` of every direction:
    per level the mean, std, min and the raw values (None = not reached within ``max_alpha``; such rays are
    left out of the mean and counted in ``not_reached``). A level at or below the loss at the minimum has
    width 0 and ``below_minimum`` set."""
    loss0, acc0 = ev([], [])
    resolved = resolve_levels(levels, loss0)
    labels, levels = [lab for lab, _ in resolved], [v for _, v in resolved]
    per_ray = []
    for d in dirs:
        for sign in (1.0, -1.0):
            dd = d if sign > 0 else {n: -t for n, t in d.items()}
            per_ray.append(first_crossings(ev, dd, levels, loss0, **kw))
    out: dict[str, Any] = {"loss0": loss0, "acc0": acc0, "rays": len(per_ray), "levels": {}}
    for i, (label, level) in enumerate(zip(labels, levels)):
        vals = [r[i] for r in per_ray]
        got = np.array([v for v in vals if v is not None])
        per_dir = direction_means(vals)
        ci = bootstrap_mean_interval(per_dir)
        out["levels"][label] = {
            "loss": level,
            "mean": float(got.mean()) if len(got) else None,
            "std": float(got.std()) if len(got) else None,
            "min": float(got.min()) if len(got) else None,
            "ci95": [ci[1], ci[2]] if ci and ci[1] is not None else None,  # >= 2 directions reached it
            "per_direction": per_dir,
            "not_reached": int(sum(v is None for v in vals)),
            "below_minimum": level <= loss0,
            "values": vals,
        }
    return out


def direction_means(ray_values: Sequence[float | None]) -> list[float | None]:
    """Per direction, the mean width of its two rays (+d, -d; rays come in that order), over the rays that
    reached the level (None if neither did). Directions, not rays, are the independent draws."""
    out = []
    for k in range(0, len(ray_values), 2):
        got = [v for v in ray_values[k : k + 2] if v is not None]
        out.append(float(np.mean(got)) if got else None)
    return out


def paired_width_difference(
    a: Sequence[float | None], b: Sequence[float | None], replicates: int = 1000, seed: int = 0
) -> tuple[float, float, float] | None:
    """Mean of a - b over directions (the same seed draws the same Gaussian directions for two models of one
    architecture, so direction k pairs with direction k) with its 95% bootstrap interval over directions
    (``lo``, ``hi`` None with a single pair: no interval)."""
    return bootstrap_mean_interval(
        [x - y for x, y in zip(a, b) if x is not None and y is not None], replicates, seed
    )


def scale_direction(d: Direction, s: float) -> Direction:
    return {n: s * t for n, t in d.items()}


def grow_to_loss_surface(
    ev: Evaluator, d1: Direction, d2: Direction, target: float, resolution: int, loss0: float, **kw
) -> dict[str, Any]:
    """The grow-to-L surface (grow, then interpolate): scales ``s1, s2`` with ``L(theta + s_k d_k) = target``,
    then the grid ``theta + t s1 d1 + u s2 d2``, ``t, u`` in [-1, 1]. Grid axes are returned in ``a`` units
    (``t * s1``, ``u * s2``). Without a crossing (loss never reaches ``target``) that axis uses ``max_alpha``."""
    max_alpha = kw.get("max_alpha", 10.0)
    s = []
    for d in (d1, d2):
        c = first_crossings(ev, d, [target], loss0, **kw)[0]
        s.append(max_alpha if c is None else c)
    t = np.linspace(-1, 1, resolution)
    grid = scan_2d(ev, scale_direction(d1, s[0]), scale_direction(d2, s[1]), t, t)
    grid["a"] = [float(v * s[0]) for v in t]
    grid["b"] = [float(v * s[1]) for v in t]
    return {"target": target, "scales": s, **grid}


def landscape_of_run(
    run,
    *,
    subset: int = 1000,
    split: str = "train",
    resolution: int = 15,
    points_1d: int | None = None,
    n_dirs: int = 3,
    levels: Sequence[str | float] = ("+0.5", "+1", "2.3026", "5"),
    target: float = 5.0,
    report_resolution: int | None = None,
    seed: int = 0,
    do_2d: bool = True,
    batch_size: int = 1000,
    amp: str | None = None,
    log=lambda msg: None,
) -> dict[str, Any]:
    """Everything above for one loaded run (:class:`reglab.analysis.common.LoadedRun`): the 1D scan along
    direction 1, the 2D grid on directions 1-2 (``resolution`` per axis), the basin widths over ``n_dirs``
    directions (both signs) at ``levels``, and the grow-to-L surface for ``target`` (key ``report``). The same
    ``seed`` gives every model of the same architecture the same Gaussian draws before filter normalization.
    Evaluated in the run's own evaluation precision and memory format (:func:`evaluator_for`; ``amp="off"``:
    fp32), recorded under ``precision``."""
    chosen = run.data.train if split == "train" else run.data.val
    if chosen is None:
        raise ValueError("the run has no validation split")
    idx = fixed_subset(chosen.labels, subset, seed)
    ev = evaluator_for(run, run.normalize(chosen.images[idx]), chosen.labels[idx], batch_size, amp)
    precision = "bf16 autocast" if ev.autocast is not None else "fp32"
    dirs = directions(run.model, max(2, n_dirs), seed)
    loss0, acc0 = ev([], [])
    out: dict[str, Any] = {
        "split": split,
        "subset": len(idx),
        "subset_seed": seed,
        "precision": precision,
        "loss0": loss0,
        "acc0": acc0,
    }
    log(f"  minimum: loss {loss0:.4f}, accuracy {acc0:.2f}% on {len(idx)} {split} images ({precision})")
    out["1d"] = scan_1d(ev, dirs[0], np.linspace(-1, 1, points_1d or 2 * resolution - 1))
    log(f"  1D scan: {len(out['1d']['alpha'])} points")
    out["basin"] = basin_width(ev, dirs[:n_dirs], levels)
    log(
        "  basin widths: "
        + ", ".join(
            f"L={k}: {v['mean']:.3f}" if v["mean"] is not None else f"L={k}: n/a"
            for k, v in out["basin"]["levels"].items()
        )
    )
    if do_2d:
        grid = np.linspace(-1, 1, resolution)
        out["2d"] = scan_2d(ev, dirs[0], dirs[1], grid, grid)
        log(f"  2D grid: {resolution}x{resolution}")
        out["report"] = grow_to_loss_surface(ev, dirs[0], dirs[1], target, report_resolution or resolution, loss0)
        log(
            f"  grow-to-L: L={target:g} reached at s = {out['report']['scales'][0]:.3f}, "
            f"{out['report']['scales'][1]:.3f}"
        )
    out["evaluations"] = ev.calls
    return out
