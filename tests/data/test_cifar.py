"""reglab.data: restricted unpickling, the CIFAR layouts, locating the data, splits, statistics, synthetic data,
and the real CIFAR-10 copy (skipped where it is absent); downloading is tested in tests/data/test_download.py."""

from __future__ import annotations

import hashlib
import os
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from reglab.config import DataConfig
from reglab.data import channel_stats, cifar, load_splits, stratified_split
from reglab.data.check import check_dataset, format_summary, verify_sums
from reglab.data.datasets import load_arrays
from reglab.data.synthetic import make_synthetic
from reglab.errors import UserError


def cfg10(root: Path, **kw) -> DataConfig:
    kw.setdefault("val_size", 0)
    return DataConfig(dataset="cifar10", dir=str(root), download=False, **kw)


def cfg100(root: Path, **kw) -> DataConfig:
    kw.setdefault("val_size", 0)
    kw.setdefault("download", False)
    return DataConfig(dataset="cifar100", dir=str(root), **kw)


# ----------------------------------------------------------------------------------------------------------
# Restricted unpickling


class _ShellPayload:
    """Unpickling this runs ``touch marker`` through os.system (the classic pickle exploit)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class _ExecPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


class _PathPayload:
    """Pure-Python variant: pathlib.Path(marker).touch()."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


PAYLOADS = [_ShellPayload, _ExecPayload, _PathPayload]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
def test_payloads_are_live(tmp_path, payload):
    """Control: plain pickle really runs each payload, so the refusals below mean something."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(payload(marker), protocol=2))
    assert marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_restricted_load_refuses_malicious_pickle(tmp_path, payload, protocol):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    path = folder / "data_batch_1"
    path.write_bytes(pickle.dumps(payload(marker), protocol=protocol))
    with pytest.raises(UserError) as exc:
        cifar.restricted_load(path)
    assert not marker.exists()
    assert "data_batch_1" in str(exc.value)
    assert "refusing to load" in str(exc.value)


def test_malicious_batch_inside_a_complete_dataset(tmp_path, cifar_tools):
    """The payload hidden in a real-looking batch dict of an otherwise valid folder: load_splits refuses it."""
    fake = cifar_tools.write_cifar10(tmp_path / "data", per_batch=10, n_test=10)
    marker = tmp_path / "pwned"
    evil = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [0] * 10,
        b"data": np.zeros((10, 3072), np.uint8),
        b"filenames": _ShellPayload(marker),
    }
    (fake.root / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(UserError, match="data_batch_1"):
        load_splits(cfg10(fake.root))
    assert not marker.exists()


@pytest.mark.parametrize(
    "content", [b"", b"garbage, not a pickle", b"\x80\x02}q\x00(U\x04data"], ids=["empty", "garbage", "truncated"]
)
def test_restricted_load_rejects_unreadable_files(tmp_path, content):
    path = tmp_path / "data_batch_1"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a readable CIFAR batch"):
        cifar.restricted_load(path)


def test_restricted_load_rejects_non_dict(tmp_path, cifar_tools):
    path = tmp_path / "data_batch_1"
    cifar_tools.write_pickle(path, [1, 2, 3])
    with pytest.raises(UserError, match="does not hold a CIFAR batch dict"):
        cifar.restricted_load(path)


def test_restricted_load_reads_official_style_pickle(tmp_path, cifar_tools):
    path = tmp_path / "b"
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    cifar_tools.write_pickle(path, {b"data": data, b"labels": [3, 4], b"batch_label": b"x"})
    out = cifar.restricted_load(path)
    assert set(out) == {"data", "labels", "batch_label"}  # bytes keys decoded to str
    assert out["data"].dtype == np.uint8 and np.array_equal(out["data"], data)
    assert out["labels"] == [3, 4]


def test_python3_protocol4_pickle_loads(tmp_path):
    path = tmp_path / "b"
    data = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2, 3]}, protocol=4))
    assert np.array_equal(cifar.restricted_load(path)["data"], data)


def test_python3_protocol2_pickle_loads(tmp_path):
    path = tmp_path / "b"
    data = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2, 3]}, protocol=2))
    assert np.array_equal(cifar.restricted_load(path)["data"], data)


# ----------------------------------------------------------------------------------------------------------
# The official layouts


def test_cifar10_layout_loads_in_file_order(fake_cifar10):
    splits = load_splits(cfg10(fake_cifar10.root))
    assert splits.name == "cifar10" and splits.classes == fake_cifar10.names and splits.num_classes == 10
    assert splits.val is None
    assert splits.train.images.shape == (200, 3, 32, 32) and splits.train.images.dtype == torch.uint8
    assert splits.train.labels.dtype == torch.int64
    assert np.array_equal(splits.train.images.numpy(), fake_cifar10.train_x.reshape(-1, 3, 32, 32))
    assert np.array_equal(splits.train.labels.numpy(), fake_cifar10.train_y)
    assert np.array_equal(splits.test.images.numpy(), fake_cifar10.test_x.reshape(-1, 3, 32, 32))
    assert np.array_equal(splits.test.labels.numpy(), fake_cifar10.test_y)
    assert (splits.mean, splits.std) == channel_stats(splits.train.images)


def test_pixel_layout_is_r_then_g_then_b_row_major(tmp_path, cifar_tools):
    fake = cifar_tools.write_cifar10(tmp_path / "data", per_batch=4, n_test=4)
    folder = fake.root / "cifar-10-batches-py"
    row = (np.arange(3072) % 251).astype(np.uint8)  # value = (plane*1024 + y*32 + x) mod 251
    data = np.stack([row, 255 - row, row, row])
    data[2, 1 * 1024 + 5 * 32 + 7] = 250  # one marked pixel: G plane, y=5, x=7
    cifar_tools.write_pickle(
        folder / "data_batch_1",
        {
            b"batch_label": b"training batch 1 of 5",
            b"labels": [0, 1, 2, 3],
            b"data": data,
            b"filenames": [b"a", b"b", b"c", b"d"],
        },
    )
    images = load_splits(cfg10(fake.root)).train.images
    c, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    expected = (c * 1024 + y * 32 + x) % 251
    assert np.array_equal(images[0].numpy(), expected)
    assert np.array_equal(images[1].numpy(), 255 - expected)
    assert images[2, 1, 5, 7].item() == 250
    assert (
        images[2, 0, 5, 7].item() == (5 * 32 + 7) % 251 and images[2, 1, 5, 8].item() == (1024 + 5 * 32 + 8) % 251
    )
    assert images[0, 2, 0, 0].item() == 2048 % 251  # first blue value sits at offset 2048


def test_cifar100_fine_labels(fake_cifar100, cifar_tools):
    splits = load_splits(cfg100(fake_cifar100.root, val_size=100))
    assert splits.classes == fake_cifar100.fine_names and splits.num_classes == 100
    assert splits.train.images.shape == (100, 3, 32, 32)
    assert splits.val.images.shape == (100, 3, 32, 32)
    assert splits.test.images.shape == (100, 3, 32, 32)
    # The held-out split is stratified: one image of each fine class.
    assert np.bincount(splits.val.labels.numpy(), minlength=100).tolist() == [1] * 100
    # Every image keeps its own label (ids are written into the pixels).
    for split, labels in (
        (splits.train, fake_cifar100.train_fine),
        (splits.val, fake_cifar100.train_fine),
        (splits.test, None),
    ):
        ids = cifar_tools.decode_ids(split.images)
        if labels is None:
            assert np.array_equal(split.labels.numpy(), fake_cifar100.test_fine[ids - 50_000])
        else:
            assert np.array_equal(split.labels.numpy(), labels[ids])
    train_ids = cifar_tools.decode_ids(splits.train.images)
    val_ids = cifar_tools.decode_ids(splits.val.images)
    assert sorted(np.concatenate([train_ids, val_ids]).tolist()) == list(range(200))


def test_cifar100_coarse_labels(fake_cifar100):
    splits = load_splits(cfg100(fake_cifar100.root, cifar100_labels="coarse"))
    assert splits.classes == fake_cifar100.coarse_names and splits.num_classes == 20
    assert np.array_equal(splits.train.labels.numpy(), fake_cifar100.train_coarse)
    assert np.array_equal(splits.test.labels.numpy(), fake_cifar100.test_coarse)
    assert splits.train.labels.max().item() == 19
    assert np.array_equal(splits.train.images.numpy(), fake_cifar100.train_x.reshape(-1, 3, 32, 32))
    # Stratification then runs over the 20 coarse classes.
    val = load_splits(cfg100(fake_cifar100.root, cifar100_labels="coarse", val_size=40)).val
    assert np.bincount(val.labels.numpy(), minlength=20).tolist() == [2] * 20


def test_corrupt_data_array(fake_cifar10, cifar_tools):
    folder = fake_cifar10.root / "cifar-10-batches-py"
    cifar_tools.write_pickle(folder / "data_batch_3", {b"labels": [0] * 5, b"data": np.zeros((5, 3000), np.uint8)})
    with pytest.raises(UserError, match=r"data_batch_3.*\(N, 3072\)"):
        load_splits(cfg10(fake_cifar10.root))
    cifar_tools.write_pickle(folder / "data_batch_3", {b"labels": [0] * 5, b"data": np.zeros((5, 3072), np.int32)})
    with pytest.raises(UserError, match="uint8"):
        load_splits(cfg10(fake_cifar10.root))


@pytest.mark.parametrize("labels", [[0, 1, 2, 3, 10], [0, 1, 2, -1, 0], [0, 1, 2]])
def test_corrupt_labels(fake_cifar10, cifar_tools, labels):
    folder = fake_cifar10.root / "cifar-10-batches-py"
    cifar_tools.write_pickle(folder / "test_batch", {b"labels": labels, b"data": np.zeros((5, 3072), np.uint8)})
    with pytest.raises(UserError, match="test_batch"):
        load_splits(cfg10(fake_cifar10.root))


def test_missing_label_key(fake_cifar10, cifar_tools):
    folder = fake_cifar10.root / "cifar-10-batches-py"
    cifar_tools.write_pickle(folder / "test_batch", {b"fine_labels": [0], b"data": np.zeros((1, 3072), np.uint8)})
    with pytest.raises(UserError, match="'labels'"):
        load_splits(cfg10(fake_cifar10.root))


def test_meta_with_wrong_class_count(fake_cifar10, cifar_tools):
    folder = fake_cifar10.root / "cifar-10-batches-py"
    cifar_tools.write_pickle(folder / "batches.meta", {b"label_names": [b"a", b"b"]})
    with pytest.raises(UserError, match="names 2 classes, expected 10"):
        load_splits(cfg10(fake_cifar10.root))
    cifar_tools.write_pickle(folder / "batches.meta", {b"num_vis": 3072})
    with pytest.raises(UserError, match="label_names"):
        load_splits(cfg10(fake_cifar10.root))


def test_official_layouts_check_the_official_image_counts(official_cifar_rows):
    assert (cifar.LAYOUTS["cifar10"].train_rows, cifar.LAYOUTS["cifar10"].test_rows) == (10_000, 10_000)
    assert (cifar.LAYOUTS["cifar100"].train_rows, cifar.LAYOUTS["cifar100"].test_rows) == (50_000, 10_000)


@pytest.fixture
def counted_cifar10(fake_cifar10, monkeypatch):
    """The fake CIFAR-10 with its own per-file image counts checked (40 per training file, 30 in test_batch), as
    the official counts are checked on real files."""
    import dataclasses

    monkeypatch.setitem(cifar.LAYOUTS, "cifar10", dataclasses.replace(cifar.CIFAR10, train_rows=40, test_rows=30))
    return fake_cifar10


def _rewrite(cifar_tools, path: Path, keep: int, **changes) -> None:
    """Rewrite a fake batch keeping its first ``keep`` images (and labels), then apply ``changes``."""
    batch = cifar.restricted_load(path)
    out = {b"batch_label": b"x", b"labels": batch["labels"][:keep], b"data": batch["data"][:keep]}
    out.update({k.encode(): v for k, v in changes.items()})
    cifar_tools.write_pickle(path, out)


def test_files_with_the_expected_counts_load(counted_cifar10):
    classes, train_x, train_y, test_x, test_y = load_arrays(cfg10(counted_cifar10.root))
    assert (len(train_x), len(train_y), len(test_x), len(test_y)) == (200, 200, 30, 30)


@pytest.mark.parametrize("name, keep", [("data_batch_5", 20), ("data_batch_1", 39), ("test_batch", 29)])
def test_a_batch_with_too_few_images_is_refused(counted_cifar10, cifar_tools, name, keep):
    """A short batch that still unpickles (consistent data and labels, just fewer rows) is refused, naming it."""
    path = counted_cifar10.root / "cifar-10-batches-py" / name
    _rewrite(cifar_tools, path, keep)
    expected = 30 if name == "test_batch" else 40
    with pytest.raises(UserError, match=rf"{name}: 'data' holds {keep} images, expected {expected}"):
        load_splits(cfg10(counted_cifar10.root))
    with pytest.raises(UserError, match=rf"{name}: 'data' holds {keep} images"):
        check_dataset(cfg10(counted_cifar10.root))


@pytest.mark.parametrize(
    "labels, found",
    [
        (["cat"] * 40, "of type"),
        ([0.5] * 40, "of type float64"),
        ([[0, 1]] * 20 + [0] * 20, "ragged"),
        ([0] * 39, r"shape \(39,\)"),
        ([0] * 39 + [10], "from 0 to 10"),
    ],
)
def test_labels_must_be_one_integer_in_range_per_image(counted_cifar10, cifar_tools, labels, found):
    path = counted_cifar10.root / "cifar-10-batches-py" / "data_batch_5"
    _rewrite(cifar_tools, path, 40, labels=labels)
    with pytest.raises(
        UserError, match=rf"data_batch_5: 'labels' should be 40 integer labels in \[0, 10\).*{found}"
    ):
        load_splits(cfg10(counted_cifar10.root))


def test_data_check_refuses_a_short_batch_in_one_line(counted_cifar10, cifar_tools, capsys):
    """`reglab data check` without a SHA256SUMS file: the short data_batch_5 is exit 2, one line, no traceback."""
    from reglab.cli import main

    _rewrite(cifar_tools, counted_cifar10.root / "cifar-10-batches-py" / "data_batch_5", 20)
    assert main(["data", "check", "--data-dir", str(counted_cifar10.root)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert (
        captured.err.startswith("reglab: error: ")
        and "data_batch_5: 'data' holds 20 images, expected 40" in captured.err
    )


# ----------------------------------------------------------------------------------------------------------
# Locating the data (downloading it: tests/data/test_download.py)


def test_missing_files_without_download_explains_how_to_point_at_data(tmp_path):
    with pytest.raises(UserError) as exc:
        cifar.ensure_files(cifar.CIFAR100, tmp_path, download=False)
    msg = str(exc.value)
    for needle in ("--data-dir", "data.dir", "REGLAB_DATA", "cifar-100-python", "data.download=true", "train"):
        assert needle in msg
    assert not (tmp_path / "cifar-100-python").exists()


def test_data_dir_falls_back_to_env_then_cwd(fake_cifar10, monkeypatch, tmp_path):
    monkeypatch.setenv("REGLAB_DATA", str(fake_cifar10.root))
    assert cifar.resolve_root(None) == fake_cifar10.root
    assert len(load_splits(DataConfig(dir=None, download=False, val_size=0)).train) == 200
    monkeypatch.delenv("REGLAB_DATA")
    assert cifar.resolve_root(None) == Path("data")
    assert cifar.resolve_root(str(tmp_path)) == tmp_path


# ----------------------------------------------------------------------------------------------------------
# Splits and statistics


IMBALANCED = np.repeat(np.arange(5), [50, 30, 17, 3, 23])  # n = 123


@pytest.mark.parametrize("size", [0, 1, 7, 33, 61, 100, 122])
def test_stratified_split_sizes_and_proportions(size):
    labels = np.random.default_rng(1).permutation(IMBALANCED)
    rest, held = stratified_split(labels, size, seed=0)
    n = len(labels)
    assert len(held) == size and len(rest) == n - size
    assert np.array_equal(np.sort(np.concatenate([rest, held])), np.arange(n))  # disjoint and covering
    assert np.all(np.diff(held) > 0) and np.all(np.diff(rest) > 0)  # sorted, no duplicates
    counts = np.bincount(labels, minlength=5)
    held_counts = np.bincount(labels[held], minlength=5)
    assert np.all(np.abs(held_counts - counts * size / n) < 1)
    assert rest.dtype.kind == "i" and held.dtype.kind == "i"


def test_stratified_split_is_seeded():
    labels = np.random.default_rng(2).integers(0, 10, 1000)
    a = stratified_split(labels, 100, seed=5)
    b = stratified_split(labels, 100, seed=5)
    c = stratified_split(labels, 100, seed=6)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])
    # Another seed changes the members, not the per-class quotas.
    assert np.array_equal(np.bincount(labels[a[1]], minlength=10), np.bincount(labels[c[1]], minlength=10))


@pytest.mark.parametrize("size", [123, 124, -1])
def test_stratified_split_rejects_impossible_sizes(size):
    with pytest.raises(UserError, match="val_size"):
        stratified_split(IMBALANCED, size, seed=0)


def test_val_size_too_large_in_load_splits():
    with pytest.raises(UserError, match="data.val_size=100"):
        load_splits(DataConfig(dataset="synthetic", synthetic_train=100, synthetic_test=10, val_size=100))


def test_train_subset_is_stratified_and_disjoint_from_val(fake_cifar10, cifar_tools):
    full = load_splits(cfg10(fake_cifar10.root, val_size=50))
    sub = load_splits(cfg10(fake_cifar10.root, val_size=50, train_subset=60))
    assert len(sub.train) == 60 and len(sub.val) == 50 and len(sub.test) == 30
    train_ids = cifar_tools.decode_ids(sub.train.images)
    val_ids = cifar_tools.decode_ids(sub.val.images)
    assert set(train_ids).isdisjoint(val_ids)
    assert np.array_equal(val_ids, cifar_tools.decode_ids(full.val.images))  # subset does not move val
    assert set(train_ids) <= set(cifar_tools.decode_ids(full.train.images))
    assert np.array_equal(sub.train.labels.numpy(), fake_cifar10.train_y[train_ids])
    assert np.bincount(sub.train.labels.numpy(), minlength=10).tolist() == [6] * 10
    assert (sub.mean, sub.std) == channel_stats(sub.train.images)  # stats come from the train split actually used
    # A subset at least as large as the train split is a no-op.
    assert len(load_splits(cfg10(fake_cifar10.root, val_size=50, train_subset=1000)).train) == 150


def test_channel_stats_matches_torch():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x[:, 2] //= 3  # make the channels differ
    mean, std = channel_stats(x)
    f = x.double() / 255
    ref_mean = f.mean(dim=(0, 2, 3))
    ref_std = f.transpose(0, 1).reshape(3, -1).std(dim=1, correction=0)  # population std
    assert len(mean) == len(std) == 3
    assert np.allclose(mean, ref_mean.numpy(), atol=1e-5, rtol=0)
    assert np.allclose(std, ref_std.numpy(), atol=1e-5, rtol=0)
    assert mean[2] < 0.2 < mean[0]


def test_channel_stats_constant_and_tiny_images():
    x = torch.full((2, 3, 4, 4), 51, dtype=torch.uint8)
    assert channel_stats(x) == ((0.2, 0.2, 0.2), (0.0, 0.0, 0.0))
    # Population std (divide by N, not N - 1): half 0, half 255 -> std exactly 0.5 (sample std would be 0.577).
    x = torch.tensor([0, 255, 0, 255], dtype=torch.uint8).view(1, 1, 2, 2).expand(1, 3, 2, 2).contiguous()
    assert channel_stats(x) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


# ----------------------------------------------------------------------------------------------------------
# Synthetic data


def test_synthetic_is_deterministic_and_balanced():
    a = make_synthetic(300, 100, 10, seed=0)
    b = make_synthetic(300, 100, 10, seed=0)
    c = make_synthetic(300, 100, 10, seed=1)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    train_x, train_y, test_x, test_y = a
    assert train_x.shape == (300, 3, 32, 32) and train_x.dtype == np.uint8
    assert test_x.shape == (100, 3, 32, 32) and train_y.dtype == np.int64
    assert np.bincount(train_y, minlength=10).tolist() == [30] * 10
    assert np.bincount(test_y, minlength=10).tolist() == [10] * 10
    assert not np.array_equal(train_y[:30], np.arange(30) % 10)  # shuffled, not in class order
    y7 = make_synthetic(100, 10, 7, seed=0)[1]
    assert np.bincount(y7).max() - np.bincount(y7).min() <= 1


def _nearest_class_mean_accuracy(train_x, train_y, test_x, test_y, k):
    tx = torch.from_numpy(train_x).float().flatten(1)
    sx = torch.from_numpy(test_x).float().flatten(1)
    means = torch.stack([tx[torch.from_numpy(train_y) == c].mean(0) for c in range(k)])
    pred = torch.cdist(sx, means).argmin(1).numpy()
    return float((pred == test_y).mean())


def test_synthetic_is_learnable():
    """A nearest-class-mean classifier scores 100% on this seed (chance is 10%); with the training labels
    shuffled it falls to about chance, so the structure is in the images, not in the evaluation."""
    train_x, train_y, test_x, test_y = make_synthetic(1000, 300, 10, seed=0)
    acc = _nearest_class_mean_accuracy(train_x, train_y, test_x, test_y, 10)
    assert acc >= 0.9
    shuffled = np.random.default_rng(0).permutation(train_y)
    assert _nearest_class_mean_accuracy(train_x, shuffled, test_x, test_y, 10) < 0.3


def test_synthetic_through_load_splits():
    cfg = DataConfig(dataset="synthetic", synthetic_train=400, synthetic_test=50, synthetic_classes=4, val_size=40)
    s = load_splits(cfg)
    assert s.classes == ["class0", "class1", "class2", "class3"]
    assert (len(s.train), len(s.val), len(s.test)) == (360, 40, 50)
    assert np.bincount(s.val.labels.numpy()).tolist() == [10] * 4
    summary = check_dataset(cfg)
    assert summary["train"]["images"] == 400 and summary["train"]["per_class"] == [100] * 4
    assert "folder" not in summary


# ----------------------------------------------------------------------------------------------------------
# `data check` on fake folders


def test_check_verifies_sha256sums(fake_cifar10):
    folder = fake_cifar10.root / "cifar-10-batches-py"
    lines = [
        f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  cifar-10-batches-py/{n}"
        for n in sorted(os.listdir(folder))
    ]
    (fake_cifar10.root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    summary = check_dataset(cfg10(fake_cifar10.root))
    assert summary["checksums"].startswith("ok")
    assert summary["train"]["per_class"] == np.bincount(fake_cifar10.train_y, minlength=10).tolist()
    assert summary["test"]["images"] == 30
    text = format_summary(summary)
    assert "airplane" in text and "truck" in text
    # Flip one byte of one file: the checksum catches it (the file still unpickles).
    path = folder / "data_batch_2"
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert verify_sums(folder)[1] == ["data_batch_2"]
    with pytest.raises(UserError, match="checksum mismatch for data_batch_2"):
        check_dataset(cfg10(fake_cifar10.root))


# ----------------------------------------------------------------------------------------------------------
# The real CIFAR-10 copy


def test_real_cifar10_splits(real_splits):
    s = real_splits
    assert (len(s.train), len(s.val), len(s.test)) == (45000, 5000, 10000)
    assert s.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert np.bincount(s.val.labels.numpy(), minlength=10).tolist() == [500] * 10
    assert np.bincount(s.train.labels.numpy(), minlength=10).tolist() == [4500] * 10
    assert np.bincount(s.test.labels.numpy(), minlength=10).tolist() == [1000] * 10
    assert s.train.images.shape == (45000, 3, 32, 32) and s.train.images.dtype == torch.uint8
    assert np.allclose(s.mean, (0.4913, 0.4821, 0.4465), atol=2e-3)


def test_real_cifar10_data_batch_1_counts(real_arrays):
    classes, train_x, train_y, test_x, test_y = real_arrays
    assert train_x.shape == (50000, 3, 32, 32) and test_x.shape == (10000, 3, 32, 32)
    # The training files are read in order (checked on fake data above), so data_batch_1 is the first 10000.
    assert np.bincount(train_y[:10000], minlength=10).tolist() == [
        1005,
        974,
        1032,
        1016,
        999,
        937,
        1030,
        1001,
        1025,
        981,
    ]
    assert np.bincount(test_y, minlength=10).tolist() == [1000] * 10


def test_real_cifar10_check(real_check):
    s = real_check
    assert s["checksums"].startswith("ok")
    assert s["train"]["images"] == 50000 and s["test"]["images"] == 10000
    assert s["train"]["per_class"] == [5000] * 10 and s["test"]["per_class"] == [1000] * 10
    assert np.allclose(s["train"]["mean"], (0.4913, 0.4821, 0.4465), atol=1e-4)
    assert np.allclose(s["train"]["std"], (0.2452, 0.2428, 0.2606), atol=1e-4)


def _real_copy_with(tmp_path: Path, real_dir: Path, name: str, data: bytes) -> Path:
    """A folder holding links to the real CIFAR-10 files, with ``name`` replaced by ``data``."""
    folder = tmp_path / "copy" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for f in sorted((real_dir / "cifar-10-batches-py").iterdir()):
        (folder / f.name).symlink_to(f)
    (folder / name).unlink()
    (folder / name).write_bytes(data)
    return folder.parent


@pytest.mark.parametrize("how", ["half_the_bytes", "5000_rows"])
def test_real_cifar10_short_data_batch_5_fails_check(
    tmp_path, real_data_dir, official_cifar_rows, cifar_tools, capsys, how
):
    """The real copy with data_batch_5 cut to half its bytes, or rewritten with its first 5000 images, and no
    SHA256SUMS beside it: `reglab data check` refuses it (the real files pass the same check: test_real_cifar10_check)."""
    from reglab.cli import main

    real = real_data_dir / "cifar-10-batches-py" / "data_batch_5"
    if how == "half_the_bytes":
        data = real.read_bytes()[: real.stat().st_size // 2]
        expected = "data_batch_5 is not a readable CIFAR batch"
    else:
        batch = cifar.restricted_load(real)
        data = cifar_tools.py2_dumps({b"labels": batch["labels"][:5000], b"data": batch["data"][:5000]})
        expected = "data_batch_5: 'data' holds 5000 images, expected 10000"
    root = _real_copy_with(tmp_path, real_data_dir, "data_batch_5", data)
    assert main(["data", "check", "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reglab: error: ") and expected in err and len(err.strip().splitlines()) == 1
