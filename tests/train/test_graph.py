"""``train.cuda_graph`` (reglab/train/graph.py) on the CPU, through an emulation with a CUDA graph's memory
semantics: inputs, outputs and gradients are the tensors fixed at capture, a capture computes nothing usable
(its outputs and gradients are poisoned with NaN), and a replay rewrites them in place. The training loop with
the emulated graph must train bit-identically to the eager loop, re-capturing when a parameter freezes or mixing
switches on. tests/e2e/test_gpu.py runs the real graphs on a GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from reglab.config import load_config
from reglab.errors import UserError
from reglab.train.graph import StepGraph
from reglab.train.loop import Run
from tests.helpers.configs import SYN, TINY_FASTNET

CPU = torch.device("cpu")


class EmulatedGraph:
    def __init__(self, params, buffers=()):
        self.params, self.buffers, self.replays = params, list(buffers), 0

    def capture(self, fn, *args):
        self.fn, self.args = fn, args
        saved, rng = [b.clone() for b in self.buffers], torch.get_rng_state()
        outputs = tuple(t.detach() for t in fn(*args))
        self.grads = [p.grad for p in self.params]
        with torch.no_grad():  # a real capture records kernels without running them: no values, no side effects
            for t in [*outputs, *(g for g in self.grads if g is not None)]:
                t.fill_(float("nan"))
            for b, s in zip(self.buffers, saved):
                b.copy_(s)
        torch.set_rng_state(rng)
        self.outputs = outputs
        return outputs

    def replay(self):
        for p, g in zip(self.params, self.grads):
            assert p.grad is g, "a gradient was replaced or freed between replays: the graph would not see it"
        fresh = self.fn(*self.args)
        with torch.no_grad():
            for out, new in zip(self.outputs, fresh):
                out.copy_(new)
            for p, g in zip(self.params, self.grads):
                if g is not None:
                    g.copy_(p.grad)
                p.grad = g
        self.replays += 1


def emulate(run: Run) -> StepGraph:
    params, buffers = list(run.model.parameters()), list(run.model.buffers())
    run.step_graph = StepGraph(
        run.forward_backward, params, make_graph=lambda stream: EmulatedGraph(params, buffers)
    )
    return run.step_graph


def train(run: Run, epochs: int) -> None:
    for _ in range(epochs):
        run.train_epoch([])
        run.epoch += 1


def test_graphed_loop_trains_exactly_like_the_eager_loop_and_recaptures_on_changes(capsys):
    """fastnet with lookahead, label smoothing, 4x lr on the norms and clipping; the stem's bias freezes after
    epoch 1 and mixup starts in epoch 3: three captures, each after three eager warm-up steps."""
    cfg = load_config(
        None,
        [
            *SYN,
            *TINY_FASTNET,
            "train.epochs=3",
            "train.freeze=[{match: whiten.bias, start_epoch: 1}]",
            "optim.lookahead=true",
            "train.label_smoothing=0.2",
            "optim.param_groups=[{match: norm, lr_scale: 4, wd_scale: 0.25}]",
            "train.grad_clip=2.0",
            "mix.mixup_alpha=0.5",
            "mix.start_epoch=2",
            "train.cuda_graph=true",
            "optim.lr=0.05",
        ],
    )
    eager = Run(cfg, CPU)
    assert eager.step_graph is None  # CUDA only: ignored on the CPU, with a note
    assert "train.cuda_graph applies on CUDA only" in capsys.readouterr().err
    train(eager, 3)
    graphed = Run(cfg, CPU)
    graph = emulate(graphed)
    train(graphed, 3)
    assert graph.captures == 3
    assert graph.graph.replays == 10 - 3  # the last capture's replays: epoch 3's steps after its warm-up
    assert graphed.step == eager.step == 30
    for (name, a), b in zip(eager.model.state_dict().items(), graphed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.isfinite(graphed.model.whiten.bias).all()


def test_emulation_catches_a_gradient_freed_between_replays():
    """The mistake a graphed loop must not make (zero_grad between replays) is one the emulation sees."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def fn(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return (loss,)

    params = list(model.parameters())
    step = StepGraph(fn, params, warmup=1, make_graph=lambda stream: EmulatedGraph(params))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    step(x, y)  # eager warm-up
    (loss,) = step(x, y)  # capture, then replay
    assert torch.isfinite(loss) and step.captures == 1
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))
    opt.zero_grad(set_to_none=True)
    with pytest.raises(AssertionError, match="replaced or freed"):
        step(x, y)


def test_cuda_graph_and_compile_together_is_a_user_error():
    with pytest.raises(UserError, match="are both true: add train.compile=false"):
        load_config(None, ["train.cuda_graph=true", "train.compile=true"])
    assert load_config("fast-gpu-resnet18", ["train.cuda_graph=true", "train.compile=false"]).train.cuda_graph
