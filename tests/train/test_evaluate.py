"""reglab.train.evaluate: translate TTA averages its six views, and ``reglab eval`` of a translate-TTA run reproduces
the run's test accuracy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reglab.config import load_config
from reglab.train import run
from reglab.train.evaluate import predict_logits
from tests.helpers.configs import SYN


def test_translate_tta_averages_six_views():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.randn(2, 3, 8, 8)
    model(x)

    def m(v):
        return 0.5 * (model(v) + model(v.flip(3)))

    pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
    expected = 0.5 * m(x) + 0.25 * (m(pad[:, :, :8, :8]) + m(pad[:, :, 2:, 2:]))
    assert torch.allclose(predict_logits(model, x, tta=True, translate=1), expected, atol=1e-6)
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
            "model.name=fastnet",
            "model.channels=[8,16,16]",
            "train.epochs=1",
            "train.tta=true",
            "train.tta_translate=1",
            "data.val_size=0",
            f"train.amp={amp}",
            f"run.dir={tmp_path / 'r'}",
        ],
    )
    result = run(cfg)
    out = evaluate_command(tmp_path / "r", checkpoint="last")
    saved = json.loads((tmp_path / "r" / "eval_test.json").read_text())
    assert saved["tta_translate"] == 1 and "6 views" in out["_text"]
    assert saved["precision"] == result.summary["precision"] == ("fp32" if amp == "off" else "bf16 autocast")
    assert saved["acc"] == pytest.approx(result.summary["test_acc"], abs=1e-3)
