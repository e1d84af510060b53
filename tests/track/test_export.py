"""``reglab export``: the exported ONNX (run in onnxruntime) and TorchScript models give PyTorch's logits on
real CIFAR-10 test images, normalization included, at any batch size; metadata beside them.

The run is a tiny model trained for one epoch on 1000 real CIFAR-10 images (synthetic data where the real
copy is absent): logit equality does not need a good model, but real pixels and real statistics are what an
exported model will see.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reglab.cli import main
from reglab.config import load_config
from reglab.track.inference import load_trained
from reglab.train import run
from reglab.train.evaluate import predict_logits
from tests.helpers.configs import TINY_RESNET

TINY = [
    *TINY_RESNET,
    "train.epochs=1",
    "train.batch_size=100",
    "train.eval_batch_size=1000",
    "run.device=cpu",
    "run.eval_test_every=100",
]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, maybe_real_data_dir):
    """(run dir, 500 test images as float N x 3 x 32 x 32 in [0, 1], whether they are real CIFAR-10)."""
    d = tmp_path_factory.mktemp("export") / "run"
    if maybe_real_data_dir is not None:
        from reglab.data.cifar import restricted_load

        data = [
            f"data.dir={maybe_real_data_dir}",
            "data.download=false",
            "data.train_subset=1000",
            "data.val_size=500",
        ]
        batch = restricted_load(maybe_real_data_dir / "cifar-10-batches-py" / "test_batch")
        images = torch.from_numpy(batch["data"][:500].reshape(-1, 3, 32, 32)).float() / 255
    else:
        from reglab.data.synthetic import make_synthetic

        data = ["data.dataset=synthetic", "data.synthetic_train=600", "data.val_size=100"]
        images = torch.from_numpy(make_synthetic(10, 500, seed=5)[2]).float() / 255
    run(load_config(None, [*TINY, *data, f"run.dir={d}"]))
    return d, images, maybe_real_data_dir is not None


def pytorch_logits(run_dir: Path, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """What reglab computes in PyTorch: the checkpoint's model on (x - mean) / std."""
    model, meta, _ = load_trained(run_dir)
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return predict_logits(model, (images - mean) / std, tta=tta)


def _assert_same_logits(got: torch.Tensor, want: torch.Tensor) -> float:
    diff = float((got - want).abs().max())
    assert got.shape == want.shape
    assert diff < 1e-4 * max(1.0, float(want.abs().max())), diff
    assert torch.equal(got.argmax(1), want.argmax(1))
    return diff


@pytest.fixture(scope="module")
def onnx_file(trained, tmp_path_factory):
    d, _, _ = trained
    out = tmp_path_factory.mktemp("onnx") / "cifar.onnx"
    assert main(["export", str(d), "--format", "onnx", "-o", str(out), "--no-tta"]) == 0
    return out


def test_onnx_logits_equal_pytorch_in_onnxruntime(trained, onnx_file):
    import onnxruntime as ort

    d, images, real = trained
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, outp.name) == ("images", "logits") and inp.type == "tensor(float)"
    want = pytorch_logits(d, images)
    got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])  # one batch of 500
    diff = _assert_same_logits(got, want)
    singles = torch.cat(
        [torch.from_numpy(session.run(None, {"images": images[i : i + 1].numpy()})[0]) for i in range(16)]
    )  # the batch axis is dynamic
    _assert_same_logits(singles, want[:16])
    print(
        f"\nonnxruntime vs PyTorch on {len(images)} {'real CIFAR-10' if real else 'synthetic'} test images: "
        f"max |logit difference| {diff:.2e}"
    )


def test_onnx_metadata(trained, onnx_file):
    d, _, real = trained
    info = json.loads(Path(f"{onnx_file}.json").read_text())
    _, meta, ckpt = load_trained(d)
    assert info["format"] == "onnx" and info["file"] == "cifar.onnx"
    assert info["classes"] == meta["classes"] and info["mean"] == meta["mean"] and info["std"] == meta["std"]
    if real:
        assert info["classes"] == CIFAR10
    assert info["input"]["shape"] == ["N", 3, 32, 32] and info["input"]["range"] == [0.0, 1.0]
    assert info["output"]["shape"] == ["N", 10] and info["tta"] is False
    assert info["source_checkpoint"] == str(ckpt) and info["epoch"] == 1
    assert info["check"]["runtime"] == "onnxruntime" and info["check"]["max_abs_logit_diff"] < 1e-4


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_torchscript_with_tta_equals_pytorch(trained, tmp_path, capsys):
    d, images, _ = trained
    assert main(["export", str(d), "--format", "torchscript", "--tta"]) == 0  # default place: RUN/export/
    path = d / "export" / "model.torchscript.pt"
    out = capsys.readouterr().out
    assert f"wrote {path}" in out and "flip TTA" in out and "torch.jit.load" in out
    loaded = torch.jit.load(str(path)).eval()
    with torch.no_grad():
        got = loaded(images)
    _assert_same_logits(got, pytorch_logits(d, images, tta=True))
    info = json.loads((d / "export" / "model.torchscript.pt.json").read_text())
    assert info["format"] == "torchscript" and info["tta"] is True


def test_export_mistakes_are_one_line_errors(trained, tmp_path, capsys):
    d, _, _ = trained
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert "not a reglab run directory" in capsys.readouterr().err
    folder = tmp_path / "somewhere"
    folder.mkdir()
    assert main(["export", str(d), "--format", "torchscript", "-o", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in folder.iterdir()) == []


def test_exported_model_is_the_wrapper_not_the_raw_network(trained):
    """Guard against a vacuous comparison: un-normalized input gives different logits."""
    d, images, _ = trained
    model, _, _ = load_trained(d)
    with torch.no_grad():
        raw = model(images)
    assert not np.allclose(raw.numpy(), pytorch_logits(d, images).numpy(), atol=1e-3)


def test_onnx_without_the_export_extra_says_how_to_install_it(monkeypatch, tmp_path):
    """`make train` installs the runtime set only: a missing ONNX package is one line naming the pip command,
    before any work."""
    import importlib.util

    from reglab.errors import UserError
    from reglab.track.export import export

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("onnxscript", "onnxruntime") else real(name, *a),
    )
    with pytest.raises(UserError, match=r"onnxscript, onnxruntime packages; pip install 'reglab\[export\]'"):
        export(tmp_path / "no-run", fmt="onnx")
