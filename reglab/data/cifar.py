"""CIFAR-10 / CIFAR-100 in the official "python version" layout, read without running code from the files.

Krizhevsky, *Learning Multiple Layers of Features from Tiny Images* (2009). Each batch is a pickle holding a
dict with ``data`` (uint8, N x 3072, R then G then B planes, row-major 32x32) and ``labels`` (CIFAR-10) or
``fine_labels`` / ``coarse_labels`` (CIFAR-100). The files are read with :class:`RestrictedUnpickler`, which
admits only the three numpy globals such a file contains, so a crafted file cannot execute code.

Where the files are missing, :func:`ensure_files` downloads the official archive, checks its MD5 (the sums
the dataset's page publishes) and unpacks it with tar's ``data`` filter (:mod:`reglab.data.download`): the
archive's files replace those of the same name, other files in the dataset folder stay.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .download import download_archive, download_lock


@dataclass(frozen=True)
class Layout:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    url: str
    md5: str
    num_classes: int
    # Images in each training / test file of the official release; every file is checked against them, so a
    # truncated or short batch is refused. None skips the count (only the tests' small fake files need that).
    train_rows: int | None
    test_rows: int | None


CIFAR10 = Layout(
    "cifar10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "batches.meta",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
    10,
    10_000,
    10_000,
)
CIFAR100 = Layout(
    "cifar100",
    "cifar-100-python",
    ("train",),
    ("test",),
    "meta",
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "eb9058c3a382ffc7106e4002c42a8d85",
    100,
    50_000,
    10_000,
)
LAYOUTS = {"cifar10": CIFAR10, "cifar100": CIFAR100}


# ----------------------------------------------------------------------------------------------------------
# Restricted unpickling


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals an official CIFAR batch uses (numpy arrays and dtypes)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes into a protocol-2 pickle
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR file holds only numpy arrays, "
                "so this file is not one (or was tampered with)"
            )
        if name == "_reconstruct":
            return _multiarray()._reconstruct
        if name == "encode":
            return _latin1_encode
        return getattr(np, name)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """The only use of ``_codecs.encode`` a data pickle needs: text -> bytes in latin-1."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError("refusing _codecs.encode with anything but a latin-1 string")
    return text.encode("latin1")


def _multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def restricted_load(path: Path) -> dict:
    """Unpickle a CIFAR batch file with :class:`RestrictedUnpickler`; decode byte-string keys to str."""
    try:
        with open(path, "rb") as fh:
            obj = RestrictedUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise UserError(
            f"{path} is not a readable CIFAR batch ({exc}); delete it and download the dataset again, "
            "or point data.dir at a good copy."
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} does not hold a CIFAR batch dict; delete it and download the dataset again.")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


# ----------------------------------------------------------------------------------------------------------
# Locating, downloading, reading


def resolve_root(data_dir: str | os.PathLike | None) -> Path:
    """``data.dir`` / ``--data-dir`` if given, else ``$REGLAB_DATA``, else ``./data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("REGLAB_DATA")
    return Path(env).expanduser() if env else Path("data")


def missing_files(layout: Layout, root: Path) -> list[str]:
    folder = root / layout.folder
    return [f for f in (*layout.train_files, *layout.test_files, layout.meta_file) if not (folder / f).is_file()]


def ensure_files(
    layout: Layout, root: Path, download: bool = True, url: str | None = None, md5: str | None = None
) -> Path:
    """Return the dataset folder, downloading the official archive if files are missing and allowed."""
    if not missing_files(layout, root):
        return root / layout.folder
    if not download:
        return _download_missing(layout, root, download, url, md5)
    with download_lock(root):  # another process may be downloading right now: wait, then look again
        return _download_missing(layout, root, download, url, md5)


def _download_missing(layout: Layout, root: Path, download: bool, url: str | None, md5: str | None) -> Path:
    missing = missing_files(layout, root)
    if not missing:
        return root / layout.folder
    how = (
        f"Point reglab at a folder that contains {layout.folder}/ with --data-dir DIR, the config key "
        f"data.dir=DIR, or the environment variable REGLAB_DATA=DIR"
    )
    if not download:
        raise UserError(
            f"{layout.name} not found in {root.resolve()} (missing {', '.join(missing)}). {how}; "
            "or allow downloading with data.download=true."
        )
    url = url or os.environ.get(f"REGLAB_{layout.name.upper()}_URL") or layout.url
    md5 = md5 or os.environ.get(f"REGLAB_{layout.name.upper()}_MD5") or layout.md5
    try:
        download_archive(url, md5, root)
    except ConnectionError as exc:
        raise UserError(f"{layout.name} not found in {root.resolve()} and {exc}. {how}.") from None
    still = missing_files(layout, root)
    if still:
        raise UserError(
            f"the archive from {url} did not contain {layout.folder}/{still[0]}; it is not the "
            f"official {layout.name} archive."
        )
    return root / layout.folder


AGAIN = "Delete it and download the dataset again, or point data.dir at a good copy."


def _images(batch: dict, path: Path, rows: int | None) -> np.ndarray:
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise UserError(
            f"{path}: 'data' should be a uint8 array of shape (N, 3072), found {shape}; the file is "
            "corrupt or truncated. Download the dataset again."
        )
    if rows is not None and len(data) != rows:
        raise UserError(
            f"{path}: 'data' holds {len(data)} images, expected {rows} (shape ({rows}, 3072)); the file is "
            f"truncated or not the official one. {AGAIN}"
        )
    return data.reshape(-1, 3, 32, 32)


def _labels(batch: dict, key: str, path: Path, n: int, num_classes: int) -> np.ndarray:
    if key not in batch:
        raise UserError(f"{path}: no {key!r} entry; the file is not a {num_classes}-class CIFAR batch.")
    want = f"{path}: {key!r} should be {n} integer labels in [0, {num_classes}), one per image"
    try:
        labels = np.asarray(batch[key])
    except (ValueError, TypeError):  # ragged or otherwise not an array of numbers
        raise UserError(f"{want}; found a ragged or non-numeric list; the file is corrupt. {AGAIN}") from None
    if labels.ndim != 1 or labels.shape != (n,):
        raise UserError(f"{want}; found shape {labels.shape}; the file is truncated or corrupt. {AGAIN}")
    if labels.dtype.kind not in "iu":
        raise UserError(f"{want}; found values of type {labels.dtype}; the file is corrupt. {AGAIN}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(
            f"{want}; found values from {labels.min()} to {labels.max()}; the file is corrupt. {AGAIN}"
        )
    return labels.astype(np.int64)


def read_split(
    layout: Layout,
    folder: Path,
    files: tuple[str, ...],
    label_key: str,
    num_classes: int,
    rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The files' images (N x 3 x 32 x 32 uint8) and labels, each file checked: it decodes with the restricted
    unpickler, its ``data`` is uint8 of shape (``rows``, 3072) (any row count when ``rows`` is None), and it has
    one integer label in [0, ``num_classes``) per image. Any problem is a UserError naming the file."""
    xs, ys = [], []
    for name in files:
        path = folder / name
        batch = restricted_load(path)
        x = _images(batch, path, rows)
        xs.append(x)
        ys.append(_labels(batch, label_key, path, len(x), num_classes))
    return np.concatenate(xs), np.concatenate(ys)


def class_names(layout: Layout, folder: Path, coarse: bool = False) -> list[str]:
    meta = restricted_load(folder / layout.meta_file)
    key = {"cifar10": "label_names", "cifar100": "coarse_label_names" if coarse else "fine_label_names"}[
        layout.name
    ]
    names = meta.get(key)
    if not isinstance(names, list):
        raise UserError(f"{folder / layout.meta_file}: no {key!r} list; the meta file is corrupt.")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
