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
from tests.helpers.configs import BATCHES, SYNTHETIC_300, TINY_FASTNET

CFG = [*SYNTHETIC_300, *TINY_FASTNET, *BATCHES, "train.epochs=3", "run.device=cpu", "run.threads=1"]
LOW = ["aug.low_res=16", "aug.low_res_epochs=2"]


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["aug.low_res=7", "aug.low_res_epochs=1"], "aug.low_res=7 must be a side in [8, 32)"),
        (["aug.low_res=32", "aug.low_res_epochs=1"], "aug.low_res=32 must be a side in [8, 32)"),
        (["aug.low_res=24"], "set both or neither"),
        (["aug.low_res_epochs=2"], "set both or neither"),
        (["aug.low_res=24", "aug.low_res_epochs=-1"], "must be >= 0"),
        (["train.epochs=2", "aug.low_res=24", "aug.low_res_epochs=2"], "aug.low_res_epochs < train.epochs"),
    ],
)
def test_bad_low_res_settings_are_refused_with_the_fix(overrides, says):
    with pytest.raises(UserError) as err:
        load_config(None, overrides)
    assert says in str(err.value)


def test_loader_downsamples_by_area_after_every_augmentation():
    """At half size each output pixel is the mean of a 2x2 block (``avg_pool2d``); off (``size=None``) or at the
    stored size the batch is untouched."""
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(8))
    loader = DeviceLoader(split, 8, mean=[0.5] * 3, std=[0.25] * 3)
    ((full, _),) = list(loader)
    loader.size = 16
    ((half, _),) = list(loader)
    assert half.shape == (8, 3, 16, 16)
    torch.testing.assert_close(half, F.avg_pool2d(full, 2))
    loader.size = 32
    torch.testing.assert_close(next(iter(loader))[0], full)
    loader.size = 24
    assert next(iter(loader))[0].shape[-2:] == (24, 24)


class TrainingSizes:
    """Record the input side of every training-mode forward, per epoch (a forward pre-hook on the model)."""

    def __init__(self):
        self.sizes: dict[int, set[int]] = {}

    def on_start(self, r):
        def hook(module, args):
            if module.training:
                self.sizes.setdefault(r.epoch + 1, set()).add(args[0].shape[-1])

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
    assert sizes.sizes == {1: {16}, 2: {16}, 3: {32}}

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
