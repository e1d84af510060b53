"""reglab.train.evaluate: translate TTA averages its six views, and ``reglab eval`` of a translate-TTA run reproduces
the run's test accuracy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reglab.config import load_config
from reglab.train import run
from reglab.train.evaluate import predict_logits
from tests.helpers.configs import SYN, TINY_FASTNET


def test_translate_tta_averages_six_views():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.randn(2, 3, 8, 8)
    model(x)

    def m(v):
        return 0.5 * (model(v) + model(v.flip(3)))

    pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
    expected = 0.5 * m(x) + 0.25 * (m(pad[:, :, :8, :8]) + m(pad[:, :, 2:, 2:]))
    assert torch.allclose(predict_logits(model, x, tta=True, shifts=[[-1, -1], [1, 1]]), expected, atol=1e-6)
    assert torch.allclose(predict_logits(model, x, tta=True), m(x), atol=1e-6)


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_eval_of_a_translate_tta_run_reproduces_its_test_accuracy(tmp_path, amp):
    """``reglab eval`` evaluates as the run did (its TTA views and its precision), so it reproduces the test
    accuracy the run reported; in bf16 an fp32 evaluation gave another accuracy."""
    import json

    from reglab.track.inference import evaluate_command

    cfg = load_config(
        None,
        [
            *SYN,
            *TINY_FASTNET,
            "train.epochs=1",
            "train.tta=true",
            "train.tta_shifts=[[-1, -1], [1, 1]]",
            "data.val_size=0",
            f"train.amp={amp}",
            f"run.dir={tmp_path / 'r'}",
        ],
    )
    result = run(cfg)
    out = evaluate_command(tmp_path / "r", checkpoint="last")
    saved = json.loads((tmp_path / "r" / "eval_test.json").read_text())
    assert saved["tta_shifts"] == [[-1, -1], [1, 1]]
    assert "images (TTA: flip x {no shift, (-1,-1), (+1,+1)}, 6 views)" in out["_text"]
    assert saved["precision"] == result.summary["precision"] == ("fp32" if amp == "off" else "bf16 autocast")
    assert saved["acc"] == pytest.approx(result.summary["test_acc"], abs=1e-3)


def test_tta_shifts_give_the_old_tta_translate_views_bit_for_bit():
    """train.tta_translate=k was six views computed as 0.5 * m(x) + 0.25 * (m(x @ -k) + m(x @ +k)); its
    replacement, tta_shifts [[-k, -k], [k, k]] (what the old key now reads as), must give the same bits."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.randn(3, 3, 12, 12)
    model(x)

    def m(v):
        return 0.5 * (model(v).float() + model(v.flip(3)).float())

    for k in (1, 2):
        pad = F.pad(x, (k, k, k, k), mode="reflect")
        old = 0.5 * m(x) + 0.25 * (m(pad[:, :, :12, :12]) + m(pad[:, :, 2 * k : 2 * k + 12, 2 * k : 2 * k + 12]))
        shifts = load_config(None, ["train.tta=true", f"train.tta_translate={k}"]).train.tta_shifts
        assert shifts == [[-k, -k], [k, k]]
        assert torch.equal(predict_logits(model, x, tta=True, shifts=shifts), old)
    # a shift view on its own (no flip): the window moved right by 2 px and up by 1 px
    pad = F.pad(x, (2, 2, 2, 2), mode="reflect")
    one = 0.5 * model(x) + 0.5 * model(pad[:, :, 1 : 1 + 12, 4 : 4 + 12])
    assert torch.allclose(predict_logits(model, x, shifts=[[2, -1]]), one, atol=1e-6)
