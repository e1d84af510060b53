"""The forward, loss and backward of a training step replayed as one CUDA graph, without ``torch.compile``.

A small CIFAR net at a large batch is bound by kernel launches on a fast GPU: each step is ~180 kernel launches
(profiled on an H100) of a few microseconds each, and the CPU issuing them is slower than the GPU running them.
A CUDA graph records the kernels once and replays them with a single launch (PyTorch documentation, "CUDA Graphs", whole-network capture;
Nguyen et al., 2021, "Accelerating PyTorch with CUDA Graphs"). ``torch.compile(mode="reduce-overhead")`` does
the same after a compile that costs far more than a 3-second run; this captures the eager step as it is, in
milliseconds. The optimizer, scheduler, lookahead, EMA and the loop's bookkeeping stay eager and unchanged, so
the learning rate stays a Python float that the scheduler sets as usual.

What keeps a replay equal to the eager step:

- static inputs: each batch is copied into the tensors the graph reads;
- gradients: every ``.grad`` is set to None before capture, so the backward allocates them in the graph's
  memory; each replay rewrites them in place, so nothing may zero, free or replace them between steps (the
  captured function's ``zero_grad(set_to_none=True)`` is plain Python and records nothing);
- after any change of what the graph depends on (input shape, dtype or layout, which parameters require a
  gradient), the next ``warmup`` steps run eagerly on a side stream (real training steps, which also let
  cuDNN and cuBLAS initialize), then the step is captured again;
- random ops in the model (dropout, stochastic depth) draw from the default CUDA generator, whose offset every
  replay advances; augmentation and mixing run before the copy, outside the graph;
- bf16 autocast runs with ``cache_enabled=False`` (a cast cache does not survive capture).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


class CudaGraph:
    """``torch.cuda.CUDAGraph`` behind the small interface :class:`StepGraph` uses (tests pass an emulation). It
    captures on ``stream``, the stream the warm-up steps ran on (as ``torch.cuda.make_graphed_callables`` does, so
    that lazily made library handles exist before the capture)."""

    def __init__(self, stream):
        self.graph, self.stream = torch.cuda.CUDAGraph(), stream

    def capture(self, fn: Callable, *args):
        with torch.cuda.graph(self.graph, stream=self.stream):
            return fn(*args)

    def replay(self) -> None:
        self.graph.replay()


class StepGraph:
    """Call as ``fn(x, y)`` -> ``fn``'s outputs; ``fn`` runs forward, loss and backward (filling ``.grad`` of
    ``params``). Eager for the first ``warmup`` calls after a change of inputs or of ``requires_grad``, then
    captured once and replayed; the outputs of a replay are the same tensors every step (read them before the
    next call)."""

    def __init__(
        self,
        fn: Callable,
        params: Sequence[torch.Tensor],
        warmup: int = 3,
        make_graph: Callable[[object], object] = CudaGraph,
    ):
        self.fn, self.params, self.warmup, self.make_graph = fn, list(params), max(1, warmup), make_graph
        self.key: tuple | None = None
        self.graph = self.inputs = self.outputs = None
        self.left = self.warmup
        self.stream = None  # CUDA: the side stream of the warm-up steps and the capture
        self.captures = 0  # how many times a graph was recorded (a test reads it)

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        key = (
            x.shape,
            x.dtype,
            x.stride(),
            y.shape,
            y.dtype,
            y.stride(),
            tuple(p.requires_grad for p in self.params),
        )
        if key != self.key:
            self.key, self.graph, self.inputs, self.outputs, self.left = key, None, None, None, self.warmup
        if self.graph is None:
            if self.left > 0:
                self.left -= 1
                return self._eager(x, y)
            self._capture(x, y)
        for static, new in zip(self.inputs, (x, y)):
            static.copy_(new)
        self.graph.replay()
        return self.outputs

    def _eager(self, x, y):
        if not x.is_cuda:
            return self.fn(x, y)
        self.stream = self.stream or torch.cuda.Stream(x.device)
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = self.fn(x, y)
        torch.cuda.current_stream().wait_stream(self.stream)
        return out

    def _capture(self, x, y) -> None:
        self.inputs = (x.clone(), y.clone())  # clone keeps the memory format (channels_last)
        for p in self.params:
            p.grad = None
        self.graph = self.make_graph(self.stream)
        self.outputs = self.graph.capture(self.fn, *self.inputs)
        self.captures += 1
