"""Progressive resizing (``aug.low_res``, ``aug.low_res_epochs``): the config's checks, the loader's downsample
and the loop's schedule of training sizes, across a resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reglab.config import load_config
from reglab.data import DeviceLoader, Split
from reglab.errors import UserError
from reglab.train import run
from reglab.train.checkpoint import load_checkpoint
from reglab.train.rundir import load_run_config
from tests.helpers.configs import BATCHES, SYNTHETIC_300, TINY_FASTNET, TINY_RESNET

CFG = [*SYNTHETIC_300, *TINY_FASTNET, *BATCHES, "train.epochs=3", "run.device=cpu", "run.threads=1"]
LOW = ["aug.low_res=16", "aug.low_res_epochs=2"]


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["aug.low_res=7", "aug.low_res_epochs=1"], "aug.low_res=7 must be a side in [8, 32)"),
        (["aug.low_res=32", "aug.low_res_epochs=1"], "aug.low_res=32 must be a side in [8, 32)"),
        (["aug.low_res=24", "aug.low_res_epochs=-1"], "must be >= 0 (0 = off)"),
    ],
)
def test_bad_low_res_settings_are_refused_with_the_fix(overrides, says):
    with pytest.raises(UserError) as err:
        load_config(None, overrides)
    assert says in str(err.value)


@pytest.mark.parametrize("overrides", [["aug.low_res=24"], ["aug.low_res_epochs=3"], ["train.epochs=1", *LOW]])
def test_either_key_at_zero_or_one_epoch_is_accepted(overrides):
    """Either key at 0 switches it off (one override turns a recipe's low_res off, sweeps may search either), and
    low_res_epochs may cover every epoch (budgets and sweeps shorten train.epochs): the loop keeps the last one
    at full size."""
    load_config(None, overrides)


class ShapeSpy:
    """A float-stage transform that records the side of each batch it sees and passes it on unchanged."""

    def __init__(self):
        self.sides: list[int] = []

    def __call__(self, x, gen):
        self.sides.append(x.shape[-1])
        return x


@pytest.mark.parametrize("epoch_batched", [False, True])
def test_loader_downsamples_after_every_augmentation(epoch_batched):
    """The float transforms still see 32x32 images and the batch is downsampled after them, keeping its layout: at
    half size each output pixel is the mean of a 2x2 block (``avg_pool2d``); at the stored size (or ``size=None``)
    the batch is untouched."""
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(8))
    spy = ShapeSpy()
    kw = dict(mean=[0.5] * 3, std=[0.25] * 3, float_transforms=[spy], channels_last=True)
    loader = DeviceLoader(split, 4, epoch_batched=epoch_batched, **kw)
    full = torch.cat([x for x, _ in loader])
    loader.size = 16
    half = list(loader)
    assert [x.shape for x, _ in half] == [(4, 3, 16, 16)] * 2
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in half)
    torch.testing.assert_close(torch.cat([x for x, _ in half]), F.avg_pool2d(full, 2))
    assert set(spy.sides) == {32}
    loader.size = 32
    torch.testing.assert_close(torch.cat([x for x, _ in loader]), full)
    loader.size = 24
    torch.testing.assert_close(torch.cat([x for x, _ in loader]), F.adaptive_avg_pool2d(full, 24))


class TrainingSizes:
    """Record the input side of every forward, per epoch and mode (a forward pre-hook on the model)."""

    def __init__(self):
        self.sizes: dict[int, set[int]] = {}
        self.eval_sizes: set[int] = set()

    def on_start(self, r):
        def hook(module, args):
            if module.training:
                self.sizes.setdefault(r.epoch + 1, set()).add(args[0].shape[-1])
            else:
                self.eval_sizes.add(args[0].shape[-1])

        r.model.register_forward_pre_hook(hook)


class StopAfter:
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, r, row):
        return r.epoch >= self.epoch


def test_first_epochs_train_small_then_full_size_and_a_resume_keeps_the_schedule(tmp_path):
    """Epochs 1-2 train on 16x16 batches and epoch 3 on 32x32; a run stopped after epoch 1 and resumed trains
    epoch 2 small again and ends bit-identical to the uninterrupted run; without low_res every epoch is 32x32."""
    sizes = TrainingSizes()
    a = run(load_config(None, [*CFG, *LOW, f"run.dir={tmp_path / 'A'}"]), callbacks=[sizes])
    assert sizes.sizes == {1: {16}, 2: {16}, 3: {32}} and sizes.eval_sizes == {32}

    run(load_config(None, [*CFG, *LOW, f"run.dir={tmp_path / 'B'}"]), callbacks=[StopAfter(1)])
    cfg = load_run_config(tmp_path / "B")
    cfg.run.dir = str(tmp_path / "B")
    resumed_sizes = TrainingSizes()
    b = run(cfg, resume=True, callbacks=[resumed_sizes])
    assert resumed_sizes.sizes == {2: {16}, 3: {32}}
    assert [r["train_loss"] for r in b.metrics] == [r["train_loss"] for r in a.metrics]
    sa, sb = (load_checkpoint(x.run_dir / "checkpoints" / "last.safetensors")["model"] for x in (a, b))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    plain = TrainingSizes()
    c = run(load_config(None, [*CFG, f"run.dir={tmp_path / 'C'}"]), callbacks=[plain])
    assert plain.sizes == {1: {32}, 2: {32}, 3: {32}}
    assert c.metrics[0]["train_loss"] != a.metrics[0]["train_loss"]


def test_low_res_epochs_never_include_the_last_one(tmp_path):
    sizes = TrainingSizes()
    run(
        load_config(None, [*CFG, "aug.low_res=16", "aug.low_res_epochs=5", f"run.dir={tmp_path}"]),
        callbacks=[sizes],
    )
    assert sizes.sizes == {1: {16}, 2: {16}, 3: {32}}


def test_a_resnet_trains_small_and_evaluates_full_size(tmp_path):
    """A CIFAR ResNet's head pools whatever map a smaller image leaves onto the grid its classifier expects."""
    sizes = TrainingSizes()
    cfg = [*SYNTHETIC_300, *TINY_RESNET, *BATCHES, "train.epochs=2", "aug.low_res=24", "aug.low_res_epochs=1"]
    result = run(
        load_config(None, [*cfg, "run.device=cpu", "run.threads=1", f"run.dir={tmp_path}"]), callbacks=[sizes]
    )
    assert sizes.sizes == {1: {24}, 2: {32}} and result.summary["test_acc"] is not None


def test_a_model_that_cannot_take_the_small_images_is_refused_before_writing(tmp_path):
    """VGG's five 2x2 pools take 24 px to nothing: a message naming the key, and no run directory."""
    cfg = load_config(
        None,
        [
            *SYNTHETIC_300,
            *BATCHES,
            "train.epochs=3",
            "run.device=cpu",
            "model.name=vgg11_bn",
            "aug.low_res=24",
            "aug.low_res_epochs=1",
            f"run.dir={tmp_path / 'r'}",
        ],
    )
    with pytest.raises(
        UserError, match=r"aug.low_res=24: model vgg11_bn cannot take 24x24 images .* aug.low_res=0"
    ):
        run(cfg)
    assert not (tmp_path / "r").exists()


def test_augment_preview_shows_and_names_the_first_epochs_size():
    from reglab.track.preview import _describe

    assert _describe(load_config("fast-cpu-88")).endswith("24 px in the first 1 epoch(s) (shown)")
    assert "px in the first" not in _describe(load_config("fast-cpu-88", ["train.epochs=1"]))


def test_resnet_head_at_full_size_is_the_fixed_pool_and_smaller_maps_pool_onto_its_grid():
    """At 32 px the head is exactly ``avg_pool2d(pool_size)`` (old runs and checkpoints unchanged); a 24-px image's
    smaller map is pooled adaptively onto the same grid (here 2x2 with ``pool_size=4``), so the classifier fits."""
    from reglab.models.resnet import cifar_resnet

    torch.manual_seed(0)
    net = cifar_resnet((1, 1, 1), (8, 16, 32), pool_size=4).eval()
    with torch.no_grad():
        feats = net.forward_features(torch.randn(2, 3, 32, 32))
        assert torch.equal(net.forward_head(feats), net.fc(F.avg_pool2d(feats, 4).flatten(1)))
        small = net.forward_features(torch.randn(2, 3, 24, 24))
        assert small.shape[-1] == 6
        torch.testing.assert_close(net.forward_head(small), net.fc(F.adaptive_avg_pool2d(small, 2).flatten(1)))


def test_the_small_image_check_leaves_weights_buffers_and_rng_as_they_were():
    """The forward at aug.low_res px that refuses an unfit model runs in eval mode on zeros: a run with the check
    starts from the same weights, BN buffers and random state as one without it."""
    from reglab.train.components import build_components
    from reglab.train.distributed import Dist

    def built(overrides):
        c = build_components(
            load_config(None, [*CFG, *overrides]), torch.device("cpu"), Dist(device=torch.device("cpu"))
        )
        return c.model.state_dict(), torch.get_rng_state()

    (with_check, rng_a), (without, rng_b) = built(LOW), built([])
    assert with_check.keys() == without.keys() and all(torch.equal(with_check[k], without[k]) for k in without)
    assert torch.equal(rng_a, rng_b)
