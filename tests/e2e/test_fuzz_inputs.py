"""Fuzzing the two kinds of file reglab reads from outside: checkpoint metadata and recipe bytes.

Whatever the input, the outcome is a result or a :class:`UserError` (one line at the CLI), never another
exception and never a hang (each example has a deadline). About 150 examples per test, a few seconds each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from reglab.config import load_config
from reglab.errors import UserError
from reglab.train.checkpoint import load_checkpoint
from reglab.train.ckschema import resume_fields
from tests.helpers.configs import ONE_EPOCH_150

SYN = [*ONE_EPOCH_150, "run.threads=1"]
FUZZ = settings(
    max_examples=150,
    deadline=5000,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=25,
)
interesting = st.one_of(
    json_values,
    st.just([100000, 100000, 100000]),
    st.just(-3),
    st.just([0.5]),
    st.just(["a", "b"]),
    st.just({"__tensor__": "t.0"}),
    st.just({"__tensor__": "nope"}),
    st.just({"__items__": [[1]]}),
    st.just({"__float__": "nan"}),
    st.just(10**6),
)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from reglab.train import run

    d = tmp_path_factory.mktemp("fuzz") / "run"
    run(load_config(None, [*SYN, f"run.dir={d}"]))
    path = d / "checkpoints" / "last.safetensors"
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    return {
        "tensors": load_file(str(path)),
        "format": meta["format"],
        "tree": json.loads(meta["reglab"]),
        "dir": d,
    }


def _paths(tree, prefix=()):
    """Every place in the JSON tree where a value sits (its path of keys/indices)."""
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree[:6]):
            out += _paths(v, (*prefix, i))
    return out


def _use(path: Path) -> None:
    """Everything reglab does with a checkpoint someone hands it: eval/predict/export's loader and resume's
    checks. A UserError is the only acceptable failure."""
    from reglab.track.inference import load_trained

    try:
        model, meta, _ = load_trained(path)
        with torch.no_grad():
            out = model(torch.zeros(1, 3, 32, 32))
        assert out.shape == (1, len(meta["classes"]))
    except UserError as exc:
        assert "\n" not in str(exc)
    try:
        resume_fields(load_checkpoint(path), path)
    except UserError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(data=st.data())
def test_fuzzed_checkpoint_metadata_never_crashes(source, tmp_path_factory, data):
    import copy

    tree = copy.deepcopy(source["tree"])
    places = _paths(tree)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        where = data.draw(st.sampled_from(places), label="where")
        value = data.draw(interesting, label="value")
        if not where:
            tree = value
            break
        node = tree
        try:
            for key in where[:-1]:
                node = node[key]
            if data.draw(st.booleans(), label="delete") and isinstance(node, dict):
                node.pop(where[-1], None)
            else:
                node[where[-1]] = value
        except (KeyError, IndexError, TypeError):
            pass
    path = tmp_path_factory.mktemp("f") / "checkpoints" / "last.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(source["tensors"], str(path), metadata={"format": source["format"], "reglab": json.dumps(tree)})
    _use(path)


@FUZZ
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.text(alphabet='[]{}":,0123456789', max_size=3000),
        st.builds(lambda n: "[" * n + "]" * n, st.integers(0, 200_000)),
    )
)
def test_fuzzed_metadata_text_never_crashes(source, tmp_path_factory, text):
    path = tmp_path_factory.mktemp("t") / "best.safetensors"
    save_file(source["tensors"], str(path), metadata={"format": source["format"], "reglab": text})
    _use(path)


RECIPE = (Path(__file__).resolve().parents[2] / "recipes" / "quick.yaml").read_bytes()


def _mutate(data: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    for pos, chunk in edits:
        pos %= len(data) + 1
        data = data[:pos] + chunk + data[pos + len(chunk) // 2 :]
    return data


yaml_bits = st.sampled_from(
    [
        b"\xff",
        b"\xe9",
        b"\x00",
        b"&a [1]",
        b"*a",
        b"{",
        b"[" * 500,
        b": ",
        b"\n  ",
        b"- ",
        b"!!python/object:os.system",
        b"2021-13-45",
        b"9" * 5000,
        b"<<: *a",
        b"? ",
        b"\t",
        b"'",
        b"optim:\n  lr: 1\n",
        b"optim:\n",
        b"---\n",
        b"%YAML 1.1\n",
    ]
)


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=400),
        st.builds(
            _mutate,
            st.just(RECIPE),
            st.lists(
                st.tuples(st.integers(0, 10_000), st.one_of(yaml_bits, st.binary(max_size=8))),
                min_size=1,
                max_size=4,
            ),
        ),
    )
)
def test_fuzzed_recipe_bytes_never_crash(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("r") / "recipe.yaml"
    path.write_bytes(raw)
    try:
        cfg = load_config(path)
    except UserError as exc:
        assert "\n" not in str(exc).strip()
        assert len(str(exc)) < 5000
    else:
        load_config(None, base=cfg.to_dict())  # what a run directory's config.yaml gives back
