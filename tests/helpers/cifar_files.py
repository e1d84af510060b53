"""Synthetic CIFAR files for the tests of the download and reading paths (reglab/data/cifar.py and its callers).

The writers write the official "python version" layouts of CIFAR-10 (``cifar-10-batches-py/``: five
``data_batch_N``, ``test_batch``, ``batches.meta``) and CIFAR-100 (``cifar-100-python/``: ``train``, ``test``,
``meta``), and ``.tar.gz`` archives of them, with synthetic pixels whose first two red values encode each
sample's id (:func:`id_images`, :func:`decode_ids`). The files are pickled the way the official ones were:
Python 2 ``cPickle`` protocol 2, where byte strings are ``str`` (SHORT_BINSTRING / BINSTRING opcodes) and images
are numpy arrays. Python 3's own protocol-2 pickler writes ``bytes`` through ``_codecs.encode`` instead, which the
official files never contain (see ``tests/data/test_cifar.py::test_python3_protocol2_pickle_loads`` for what
reglab does with such a file). tests/conftest.py's fixtures (``fake_cifar10``, ``fake_cifar100``,
``cifar_tools``) hand these to the tests.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------------------
# Python-2-style pickles


class Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that stores ``bytes`` as Python 2 ``str`` (what cPickle wrote for CIFAR)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_bytes_as_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_bytes_as_py2_str


def py2_dumps(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(py2_dumps(obj))


# ----------------------------------------------------------------------------------------------------------
# Fake datasets


def id_images(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random uint8 images (N x 3072, official row layout) whose first two red pixels encode the sample id."""
    x = rng.integers(0, 256, size=(len(ids), 3072), dtype=np.uint8)
    x[:, 0] = ids // 256
    x[:, 1] = ids % 256
    return x


def decode_ids(images: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`id_images` on N x 3 x 32 x 32 uint8 images."""
    r = images[:, 0, 0].to(torch.int64).numpy()
    return r[:, 0] * 256 + r[:, 1]


@dataclass
class FakeCifar10:
    root: Path  # holds cifar-10-batches-py/
    train_x: np.ndarray  # N x 3072 uint8, in file order
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    names: list[str]


@dataclass
class FakeCifar100:
    root: Path  # holds cifar-100-python/
    train_x: np.ndarray
    train_fine: np.ndarray
    train_coarse: np.ndarray
    test_x: np.ndarray
    test_fine: np.ndarray
    test_coarse: np.ndarray
    fine_names: list[str]
    coarse_names: list[str]


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, per_batch: int = 40, n_test: int = 30, seed: int = 0) -> FakeCifar10:
    """Five training batches of ``per_batch`` images and one test batch, official CIFAR-10 layout."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    xs, ys = [], []
    for b in range(5):
        ids = np.arange(b * per_batch, (b + 1) * per_batch)
        x = id_images(ids, rng)
        y = (ids * 7 + b) % 10  # every class present in every batch, not in label order
        write_pickle(
            folder / f"data_batch_{b + 1}",
            {
                b"batch_label": f"training batch {b + 1} of 5".encode(),
                b"labels": [int(v) for v in y],
                b"data": x,
                b"filenames": [f"img_{i:05d}.png".encode() for i in ids],
            },
        )
        xs.append(x)
        ys.append(y)
    test_ids = np.arange(10_000, 10_000 + n_test)
    test_x = id_images(test_ids, rng)
    test_y = test_ids % 10
    write_pickle(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(v) for v in test_y],
            b"data": test_x,
            b"filenames": [f"test_{i:05d}.png".encode() for i in test_ids],
        },
    )
    write_pickle(
        folder / "batches.meta",
        {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072},
    )
    return FakeCifar10(
        root,
        np.concatenate(xs),
        np.concatenate(ys).astype(np.int64),
        test_x,
        test_y.astype(np.int64),
        CIFAR10_NAMES,
    )


def write_cifar100(root: Path, per_class: int = 2, test_per_class: int = 1, seed: int = 0) -> FakeCifar100:
    """``cifar-100-python/{train,test,meta}``; coarse label of fine class f is ``f // 5``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"

    def split(n_per: int, offset: int, name: bytes):
        fine = rng.permutation(np.repeat(np.arange(100), n_per))
        coarse = fine // 5
        ids = np.arange(offset, offset + len(fine))
        x = id_images(ids, rng)
        return (
            x,
            fine.astype(np.int64),
            coarse.astype(np.int64),
            {
                b"filenames": [f"f{i}.png".encode() for i in ids],
                b"batch_label": name,
                b"fine_labels": [int(v) for v in fine],
                b"coarse_labels": [int(v) for v in coarse],
                b"data": x,
            },
        )

    tx, tf, tc, tdict = split(per_class, 0, b"training batch 1 of 1")
    sx, sf, sc, sdict = split(test_per_class, 50_000, b"testing batch 1 of 1")
    write_pickle(folder / "train", tdict)
    write_pickle(folder / "test", sdict)
    fine_names = [f"fine{i:02d}" for i in range(100)]
    coarse_names = [f"coarse{i:02d}" for i in range(20)]
    write_pickle(
        folder / "meta",
        {
            b"fine_label_names": [n.encode() for n in fine_names],
            b"coarse_label_names": [n.encode() for n in coarse_names],
        },
    )
    return FakeCifar100(root, tx, tf, tc, sx, sf, sc, fine_names, coarse_names)


def make_archive(src_root: Path, folder: str, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A .tar.gz of ``src_root/folder`` (members named ``folder/...``), plus raw ``extra`` members."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src_root / folder, arcname=folder)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive
