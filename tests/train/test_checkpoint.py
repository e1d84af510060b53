"""Checkpoints: the JSON+safetensors encoding, refusal of pickles and broken files, atomic writes."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

import reglab.train.checkpoint as ckmod
from reglab.config import SchedConfig, load_config
from reglab.errors import UserError
from reglab.models import create
from reglab.train.checkpoint import flatten, load_checkpoint, save_checkpoint, unflatten
from reglab.train.optim import build_scheduler
from tests.helpers.configs import ONE_EPOCH_150

REPO = Path(__file__).resolve().parents[2]


def assert_same(a, b, path="root"):
    """Deep equality that distinguishes tuple/list, int/float/bool, tensor dtypes, and treats NaN == NaN."""
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, equal_nan=True)), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def nested_state():
    g = torch.Generator().manual_seed(0)
    return {
        "ints": {0: "zero", 7: [1, 2, 3], -1: None},
        "tuple": (1, "two", (3.0, None), [True, False]),
        "flags": [True, False, None],
        "floats": [0.5, float("nan"), float("inf"), float("-inf"), -0.0, 1e-300],
        "np": {
            "u32": np.arange(624, dtype=np.uint32),
            "f64": np.linspace(0, 1, 5),
            "i64": np.array([[1, -2], [3, 4]], dtype=np.int64),
            "u8": np.zeros((2, 3), dtype=np.uint8),
        },
        "t": {
            "f32": torch.randn(3, 4, generator=g),
            "f16": torch.randn(5, generator=g).half(),
            "bf16": torch.randn(2, 2, generator=g).bfloat16(),
            "f64": torch.randn(2, generator=g).double(),
            "i64": torch.arange(6).view(2, 3),
            "i32": torch.tensor([1, -1], dtype=torch.int32),
            "u8": torch.tensor([0, 255], dtype=torch.uint8),
            "bool": torch.tensor([True, False]),
            "scalar": torch.tensor(3.5),
            "nan": torch.tensor([float("nan"), 1.0]),
            "strided": torch.arange(12.0).view(3, 4).t(),
            "empty": torch.zeros(0, 3),
        },
        "np_scalars": [np.int64(3), np.float32(0.25)],
        "str": "héllo",
        "deep": [{"a": ({1: {"b": [torch.ones(1)]}},)}],
    }


def test_flatten_unflatten_round_trip():
    state = nested_state()
    tensors: dict[str, torch.Tensor] = {}
    tree = flatten(state, tensors)
    text = json.dumps(tree)  # must be plain JSON ...
    assert "NaN" not in text and "Infinity" not in text  # ... strict JSON, no NaN extension
    back = unflatten(json.loads(text), tensors)
    expected = dict(state)
    expected["np_scalars"] = [3, 0.25]  # numpy scalars become Python numbers
    expected["t"] = dict(state["t"], strided=state["t"]["strided"].contiguous())
    assert_same(back, expected)
    assert isinstance(back["ints"], dict) and set(back["ints"]) == {0, 7, -1}
    assert isinstance(back["tuple"][2], tuple) and isinstance(back["tuple"][3], list)
    assert back["floats"][2] == math.inf and back["floats"][3] == -math.inf
    assert math.copysign(1, back["floats"][4]) == -1


def test_flatten_refuses_arbitrary_objects():
    with pytest.raises(TypeError):
        flatten({"x": object()}, {})


def test_save_load_round_trip_of_nested_state(tmp_path):
    state = nested_state()
    save_checkpoint(tmp_path / "x.safetensors", state)
    back = load_checkpoint(tmp_path / "x.safetensors")
    assert back["ints"] == {0: "zero", 7: [1, 2, 3], -1: None}
    assert back["tuple"] == (1, "two", (3.0, None), [True, False])
    assert math.isnan(back["floats"][1])
    for k, t in state["t"].items():
        assert back["t"][k].dtype == t.dtype and torch.allclose(back["t"][k], t.contiguous(), equal_nan=True), k
    for k, a in state["np"].items():
        assert isinstance(back["np"][k], np.ndarray) and back["np"][k].dtype == a.dtype
        np.testing.assert_array_equal(back["np"][k], a)


def _train_objects(seed: int):
    torch.manual_seed(seed)
    model = create("resnet20", 10, channels=[8, 16, 32], blocks=[1, 1, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = build_scheduler(
        opt, SchedConfig(name="cosine", warmup_epochs=0.5), epochs=3, steps_per_epoch=4, base_lr=0.1
    )
    return model, opt, sched


def test_real_training_state_round_trip(tmp_path):
    model, opt, sched = _train_objects(0)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        loss = nn.functional.cross_entropy(
            model(torch.randn(8, 3, 32, 32, generator=g)), torch.randint(0, 10, (8,), generator=g)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "epoch": 1,
    }
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, state)
    back = load_checkpoint(path)

    model2, opt2, sched2 = _train_objects(1)  # different init: loading must overwrite everything
    model2.load_state_dict(back["model"])
    opt2.load_state_dict(back["optimizer"])
    sched2.load_state_dict(back["scheduler"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    assert s1["state"].keys() == s2["state"].keys() and all(isinstance(k, int) for k in s2["state"])
    for i in s1["state"]:
        assert torch.equal(s1["state"][i]["momentum_buffer"], s2["state"][i]["momentum_buffer"]), i
    assert sched2.state_dict() == sched.state_dict()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    # the restored pair continues exactly like the original
    for o, s in ((opt, sched), (opt2, sched2)):
        o.step()
        s.step()
    assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]
    assert torch.equal(back["torch_rng"], state["torch_rng"])
    np_back = back["numpy_rng"]
    assert np_back[0] == "MT19937" and np.array_equal(np_back[1], state["numpy_rng"][1])


# ----------------------------------------------------------------------------------------------------------
# Hostile and broken files


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class ExecExploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import builtins

        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_sanity_the_exploit_pickles_work(tmp_path):
    """Guard against a vacuous test: unpickling these really does create the marker files."""
    m1, m2 = tmp_path / "m1", tmp_path / "m2"
    pickle.loads(pickle.dumps(Exploit(m1)))
    pickle.loads(pickle.dumps(ExecExploit(m2)))
    assert m1.exists() and m2.exists()


@pytest.mark.parametrize("name", ["last.safetensors", "model.pt", "weights.pth"])
@pytest.mark.parametrize("kind", ["pickle_system", "pickle_exec", "torch_save"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, name, kind):
    marker = tmp_path / "MARKER"
    path = tmp_path / name
    if kind == "pickle_system":
        path.write_bytes(pickle.dumps({"model": Exploit(marker)}, protocol=2))
    elif kind == "pickle_exec":
        path.write_bytes(pickle.dumps(ExecExploit(marker), protocol=4))
    else:
        torch.save({"model": {"w": torch.zeros(2)}, "x": Exploit(marker)}, path)  # zip-format .pt
    with pytest.raises(UserError) as exc:
        load_checkpoint(path)
    assert not marker.exists(), "loading the file executed code"
    assert str(path) in str(exc.value)


def test_malicious_pickle_through_load_trained(tmp_path):
    """The inference path (reglab eval / predict) goes through the same loader."""
    from reglab.track.inference import load_trained

    marker = tmp_path / "MARKER"
    path = tmp_path / "checkpoints" / "best.safetensors"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(UserError):
        load_trained(path)
    assert not marker.exists()


def _real_checkpoint(path: Path) -> None:
    model, opt, sched = _train_objects(0)
    save_checkpoint(
        path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    )


@pytest.mark.parametrize("keep", [0.5, 0.999, 8, 100])
def test_truncated_checkpoint_is_user_error(tmp_path, keep):
    path = tmp_path / "last.safetensors"
    _real_checkpoint(path)
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:n])
    with pytest.raises(UserError, match="not a readable reglab checkpoint"):
        load_checkpoint(path)


def test_empty_and_missing_files_are_user_errors(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / "empty.safetensors")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_plain_safetensors_file_without_reglab_metadata(tmp_path):
    path = tmp_path / "hf.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(UserError, match="not a reglab checkpoint"):
        load_checkpoint(path)
    save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(UserError, match="not a reglab checkpoint"):
        load_checkpoint(path)
    # a "reglab" entry alone is not enough: the format tag must match too
    save_file({"t.0": torch.zeros(3)}, str(path), metadata={"reglab": json.dumps({"__tensor__": "t.0"})})
    with pytest.raises(UserError, match="not a reglab checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("meta", ["{not json", '{"__tensor__": "missing"}'])
def test_corrupt_reglab_metadata_is_user_error(tmp_path, meta):
    """A file that claims the reglab format but whose JSON is broken or points at absent tensors."""
    path = tmp_path / "last.safetensors"
    save_file({"t.0": torch.zeros(3)}, str(path), metadata={"format": ckmod.FORMAT, "reglab": meta})
    with pytest.raises(UserError):
        load_checkpoint(path)


# ----------------------------------------------------------------------------------------------------------
# Atomic writes


def test_save_leaves_no_temporary_files(tmp_path):
    for i in range(3):
        save_checkpoint(tmp_path / "last.safetensors", {"i": i, "w": torch.full((4,), float(i))})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]
    assert load_checkpoint(tmp_path / "last.safetensors")["i"] == 2


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(1000)})
    before = path.read_bytes()

    def disk_full(fd, data):
        # write part of the file first, as a real full disk would, then fail
        os.write(fd, data[:100])
        os.close(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckmod, "write_file", disk_full)
    with pytest.raises(UserError, match="No space left on device"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(1000)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]
    assert load_checkpoint(path)["epoch"] == 1


def test_real_io_error_from_safetensors_is_user_error(tmp_path):
    """A real write failure surfaces from safetensors' Rust writer as SafetensorError, not OSError.

    Reproduced with a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored -> EFBIG) in a child process.
    """
    script = textwrap.dedent(f"""
        import resource, signal, sys, torch
        from pathlib import Path
        from reglab.errors import UserError
        from reglab.train.checkpoint import save_checkpoint
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        d = Path({str(tmp_path)!r})
        save_checkpoint(d / "last.safetensors", {{"epoch": 1, "w": torch.ones(10)}})
        before = (d / "last.safetensors").read_bytes()
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))
        try:
            save_checkpoint(d / "last.safetensors", {{"epoch": 2, "w": torch.ones(100_000)}})
        except UserError as exc:
            print("USERERROR", exc)
        except BaseException as exc:
            print("OTHER", type(exc).__name__, exc)
        else:
            print("NOERROR")
        assert (d / "last.safetensors").read_bytes() == before
        print("FILES", sorted(p.name for p in d.iterdir()))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "USERERROR" in proc.stdout, proc.stdout
    assert "FILES ['last.safetensors']" in proc.stdout, proc.stdout


# ----------------------------------------------------------------------------------------------------------
# A checkpoint that does not fit the model it describes


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    from reglab.train import run

    d = tmp_path_factory.mktemp("ck") / "run"
    cfg = load_config(None, [*ONE_EPOCH_150, f"run.dir={d}"])
    run(cfg)
    return d


def _rewrite_meta_model(src: Path, dst: Path, **changes) -> None:
    state = load_checkpoint(src)
    state["meta"]["model"].update(changes)
    save_checkpoint(dst, state)


def test_load_trained_round_trip(trained_dir):
    from reglab.track.inference import load_trained

    model, meta, path = load_trained(trained_dir)
    assert path.name == "best.safetensors" and meta["num_classes"] == 10
    assert not model.training
    state = load_checkpoint(path)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize(
    "changes,words",
    [
        ({"channels": [16, 32, 64]}, "shape (checkpoint vs model)"),
        ({"blocks": [2, 1, 1]}, "missing in checkpoint"),
        ({"name": "resnet18", "blocks": None, "channels": None, "shortcut": None}, "in checkpoint"),
    ],
)
def test_load_trained_with_mismatched_architecture(trained_dir, tmp_path, changes, words):
    from reglab.track.inference import load_trained

    dst = tmp_path / "checkpoints" / "last.safetensors"
    dst.parent.mkdir()
    _rewrite_meta_model(trained_dir / "checkpoints" / "last.safetensors", dst, **changes)
    with pytest.raises(UserError) as exc:
        load_trained(dst)
    msg = str(exc.value)  # checked on the meta device, before the model is built for real
    assert "not a valid reglab checkpoint: model weights do not fit" in msg and words in msg, msg
    assert "\n" not in msg  # one line for the CLI


def test_load_trained_without_meta(tmp_path):
    from reglab.track.inference import load_trained

    path = tmp_path / "x.safetensors"
    save_checkpoint(path, {"model": {"w": torch.zeros(1)}})
    with pytest.raises(UserError, match="not written by"):
        load_trained(path)
