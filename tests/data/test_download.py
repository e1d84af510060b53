"""reglab.data.download and the download path of reglab.data.cifar.ensure_files: a fake archive in the official
layout (tests/helpers/cifar_files.py) served from a file:// URL or a loopback HTTP server; the MD5 check, what a
failed download leaves, concurrent downloads, hostile archives, and a download into a partial dataset folder."""

from __future__ import annotations

import errno
import functools
import hashlib
import http.server
import os
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from reglab.config import DataConfig
from reglab.data import cifar, download, load_splits
from reglab.errors import UserError


def cfg100(root: Path, **kw) -> DataConfig:
    kw.setdefault("val_size", 0)
    kw.setdefault("download", False)
    return DataConfig(dataset="cifar100", dir=str(root), **kw)


@pytest.fixture
def archive100(tmp_path, cifar_tools):
    """A fake cifar-100-python.tar.gz, its md5 and the data it holds."""
    staging = tmp_path / "staging"
    fake = cifar_tools.write_cifar100(staging, per_class=1, test_per_class=1, seed=3)
    served = tmp_path / "served"
    served.mkdir(exist_ok=True)
    path = cifar_tools.make_archive(staging, "cifar-100-python", served / "cifar-100-python.tar.gz")
    return path, hashlib.md5(path.read_bytes()).hexdigest(), fake


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_download_from_file_url(tmp_path, archive100):
    archive, md5, fake = archive100
    root = tmp_path / "root"
    folder = cifar.ensure_files(cifar.CIFAR100, root, download=True, url=archive.as_uri(), md5=md5)
    assert folder == root / "cifar-100-python"
    assert _leftovers(root) == ["cifar-100-python"]  # no archive, no .download-* temp dir
    assert sorted(p.name for p in folder.iterdir()) == ["meta", "test", "train"]
    splits = load_splits(cfg100(root))
    assert np.array_equal(splits.train.images.numpy(), fake.train_x.reshape(-1, 3, 32, 32))
    assert np.array_equal(splits.train.labels.numpy(), fake.train_fine)
    # Present now: a second call neither downloads nor needs the URL.
    assert cifar.ensure_files(cifar.CIFAR100, root, download=False) == folder


def test_download_with_bad_md5_unpacks_nothing(tmp_path, archive100):
    archive, md5, _ = archive100
    root = tmp_path / "root"
    with pytest.raises(UserError) as exc:
        cifar.ensure_files(cifar.CIFAR100, root, download=True, url=archive.as_uri(), md5="0" * 32)
    msg = str(exc.value)
    assert md5 in msg and "0" * 32 in msg and "Nothing was unpacked" in msg
    assert not (root / "cifar-100-python").exists()
    assert not any(name.startswith(".download-") for name in _leftovers(root))
    assert _leftovers(root) == []


def test_download_via_environment_variables(tmp_path, archive100, monkeypatch):
    archive, md5, fake = archive100
    monkeypatch.setenv("REGLAB_CIFAR100_URL", archive.as_uri())
    monkeypatch.setenv("REGLAB_CIFAR100_MD5", md5)
    root = tmp_path / "root"
    splits = load_splits(DataConfig(dataset="cifar100", dir=str(root), download=True, val_size=0))
    assert np.array_equal(splits.test.labels.numpy(), fake.test_fine)
    assert _leftovers(root) == ["cifar-100-python"]

    monkeypatch.setenv("REGLAB_CIFAR100_MD5", "f" * 32)
    root2 = tmp_path / "root2"
    with pytest.raises(UserError, match="f" * 32):
        cifar.ensure_files(cifar.CIFAR100, root2, download=True)
    assert _leftovers(root2) == []


def test_explicit_url_beats_environment(tmp_path, archive100, monkeypatch):
    archive, md5, _ = archive100
    monkeypatch.setenv("REGLAB_CIFAR100_URL", (tmp_path / "nope.tar.gz").as_uri())
    monkeypatch.setenv("REGLAB_CIFAR100_MD5", "0" * 32)
    cifar.ensure_files(cifar.CIFAR100, tmp_path / "root", url=archive.as_uri(), md5=md5)
    assert not cifar.missing_files(cifar.CIFAR100, tmp_path / "root")


def test_concurrent_downloads_into_one_folder_take_turns(tmp_path, archive100):
    """Two processes starting on a fresh machine (`reglab study -j 2`, torchrun ranks) must not both download
    into one folder: the second waits for the first's lock, then finds the files and downloads nothing (here
    its URL does not exist, so it could only succeed by waiting)."""
    import threading

    archive, md5, _ = archive100
    root = tmp_path / "root"
    holding, release, second = threading.Event(), threading.Event(), {}

    def first():
        with download.download_lock(root):
            holding.set()
            release.wait(60)
            download.download_archive(archive.as_uri(), md5, root)

    def late():
        try:
            second["folder"] = cifar.ensure_files(
                cifar.CIFAR100, root, url=(tmp_path / "nope.tar.gz").as_uri(), md5="0" * 32
            )
        except Exception as exc:  # reported below
            second["error"] = exc

    a = threading.Thread(target=first)
    a.start()
    assert holding.wait(60)
    b = threading.Thread(target=late)
    b.start()
    b.join(0.5)
    assert b.is_alive() and not second, second  # blocked on the lock, not failing on its bad URL
    release.set()
    a.join(60)
    b.join(60)
    assert second.get("folder") == root / "cifar-100-python", second
    assert _leftovers(root) == ["cifar-100-python"]  # the lock file is gone


def test_unreachable_url_is_a_user_error(tmp_path):
    root = tmp_path / "root"
    with pytest.raises(UserError) as exc:
        cifar.ensure_files(cifar.CIFAR10, root, url=(tmp_path / "missing.tar.gz").as_uri(), md5="0" * 32)
    msg = str(exc.value)
    assert "cannot download" in msg and "--data-dir" in msg and "REGLAB_DATA" in msg
    assert not any(n.startswith(".download-") for n in _leftovers(root))


@pytest.mark.parametrize("bad", ["unreachable", "bad_md5"])
def test_failed_download_keeps_the_users_empty_folder(tmp_path, archive100, bad):
    """A failed download removes only what it created: the user's existing (empty) --data-dir stays."""
    archive, md5, _ = archive100
    root = tmp_path / "d1"
    root.mkdir()
    url, md5 = (
        ((tmp_path / "missing.tar.gz").as_uri(), md5) if bad == "unreachable" else (archive.as_uri(), "0" * 32)
    )
    with pytest.raises(UserError):
        cifar.ensure_files(cifar.CIFAR100, root, url=url, md5=md5)
    assert root.is_dir() and _leftovers(root) == []


def test_failed_download_removes_only_the_folders_it_made(tmp_path):
    """--data-dir a/b/c where only tmp_path exists: a failure leaves tmp_path as it was, and a parent that existed
    before stays even though the download created folders inside it."""
    (tmp_path / "mine").mkdir()
    for root in (tmp_path / "a" / "b" / "c", tmp_path / "mine" / "new"):
        with pytest.raises(UserError):
            cifar.ensure_files(cifar.CIFAR10, root, url=(tmp_path / "missing.tar.gz").as_uri(), md5="0" * 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"] and _leftovers(tmp_path / "mine") == []


def test_data_check_keeps_an_existing_empty_data_dir(tmp_path, monkeypatch, capsys):
    """`reglab data check --data-dir d1` on the user's empty d1 without network: exit 2, one line, d1 kept."""
    from reglab.cli import main

    monkeypatch.setenv("REGLAB_CIFAR10_URL", (tmp_path / "no-network.tar.gz").as_uri())
    root = tmp_path / "d1"
    root.mkdir()
    assert main(["data", "check", "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reglab: error: cifar10 not found") and len(err.strip().splitlines()) == 1
    assert root.is_dir() and _leftovers(root) == []


def test_download_replaces_a_partial_folder(tmp_path, archive100):
    archive, md5, fake = archive100
    root = tmp_path / "root"
    (root / "cifar-100-python").mkdir(parents=True)
    (root / "cifar-100-python" / "train").write_bytes(b"half-written")
    cifar.ensure_files(cifar.CIFAR100, root, url=archive.as_uri(), md5=md5)
    assert np.array_equal(load_splits(cfg100(root)).train.labels.numpy(), fake.train_fine)


def test_download_into_a_partial_folder_replaces_only_the_datasets_files(tmp_path, archive100):
    """A partial cifar-100-python/ (a half-written train, no test) that also holds the user's own files: the
    download replaces the dataset's files and leaves everything else as it was (it used to replace the whole
    folder, and the user's files with it). A link named like a dataset file is replaced, its target untouched."""
    archive, md5, fake = archive100
    root = tmp_path / "root"
    folder = root / "cifar-100-python"
    (folder / "mine").mkdir(parents=True)
    (folder / "train").write_bytes(b"half-written")
    (folder / "notes.txt").write_text("where this copy came from\n")
    (folder / "mine" / "results.csv").write_text("epoch,acc\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"not the dataset's to replace")
    (folder / "meta").symlink_to(elsewhere)
    assert cifar.ensure_files(cifar.CIFAR100, root, url=archive.as_uri(), md5=md5) == folder
    assert np.array_equal(load_splits(cfg100(root)).train.labels.numpy(), fake.train_fine)
    assert sorted(p.name for p in folder.iterdir()) == ["meta", "mine", "notes.txt", "test", "train"]
    assert (folder / "notes.txt").read_text() == "where this copy came from\n"
    assert (folder / "mine" / "results.csv").read_text() == "epoch,acc\n"
    assert not (folder / "meta").is_symlink() and elsewhere.read_bytes() == b"not the dataset's to replace"
    assert _leftovers(root) == ["cifar-100-python"]  # no .download-* folder, no lock file


def test_a_failed_download_leaves_a_partial_folder_as_it_was(tmp_path, archive100):
    archive, _, _ = archive100
    root = tmp_path / "root"
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "train").write_bytes(b"half-written")
    (folder / "notes.txt").write_text("mine\n")
    with pytest.raises(UserError, match="Nothing was unpacked"):
        cifar.ensure_files(cifar.CIFAR100, root, url=archive.as_uri(), md5="0" * 32)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "train"]
    assert (folder / "train").read_bytes() == b"half-written" and _leftovers(root) == ["cifar-100-python"]


def test_a_folder_in_the_way_of_a_dataset_file_is_refused_before_anything_moves(tmp_path, archive100):
    """A folder named like a dataset file (with the user's files in it) is neither deleted nor merged: one
    message naming it, and the dataset folder is left as it was."""
    archive, md5, _ = archive100
    root = tmp_path / "root"
    folder = root / "cifar-100-python"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "mine.txt").write_text("kept\n")
    with pytest.raises(UserError) as exc:
        cifar.ensure_files(cifar.CIFAR100, root, url=archive.as_uri(), md5=md5)
    msg = str(exc.value)
    assert f"{folder / 'train'} is in the way (a folder where the archive has a file)" in msg and "\n" not in msg
    assert sorted(p.name for p in folder.iterdir()) == ["train"]  # test and meta were not moved in either
    assert (folder / "train" / "mine.txt").read_text() == "kept\n"
    assert _leftovers(root) == ["cifar-100-python"]


@pytest.mark.parametrize("other_disk", [False, True], ids=["same-disk", "other-disk"])
def test_a_dataset_folder_that_links_elsewhere_is_filled_in_place(tmp_path, archive100, monkeypatch, other_disk):
    """cifar-100-python/ as a link to a folder elsewhere: the files go there and the link stays (the whole-folder
    replacement used to fail on it with a traceback: rmtree refuses a link). On another file system, where a
    rename cannot reach (EXDEV, simulated), each file is copied beside its place and renamed there."""
    archive, md5, fake = archive100
    root, disk = tmp_path / "root", tmp_path / "disk" / "c100"
    disk.mkdir(parents=True)
    (disk / "notes.txt").write_text("mine\n")
    root.mkdir()
    (root / "cifar-100-python").symlink_to(disk, target_is_directory=True)
    if other_disk:
        real_replace, refused = os.replace, []

        def replace(src, dst):
            from_temp = any(part.startswith(".download-") for part in Path(src).parts[:-1])
            if from_temp and Path(dst).resolve().parent == disk.resolve():
                refused.append(Path(dst).name)
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
    cifar.ensure_files(cifar.CIFAR100, root, url=archive.as_uri(), md5=md5)
    assert (root / "cifar-100-python").is_symlink()
    assert sorted(p.name for p in disk.iterdir()) == ["meta", "notes.txt", "test", "train"]  # no copies left
    assert np.array_equal(load_splits(cfg100(root)).test.labels.numpy(), fake.test_fine)
    assert not other_disk or refused == ["meta", "test", "train"]


def test_archive_without_the_expected_files(tmp_path, cifar_tools):
    staging = tmp_path / "staging"
    cifar_tools.write_cifar100(staging, per_class=1)
    (staging / "cifar-100-python" / "test").unlink()
    archive = cifar_tools.make_archive(staging, "cifar-100-python", tmp_path / "a.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(UserError, match="did not contain cifar-100-python/test"):
        cifar.ensure_files(cifar.CIFAR100, tmp_path / "root", url=archive.as_uri(), md5=md5)


def test_archive_with_path_traversal_cannot_escape(tmp_path, cifar_tools):
    staging = tmp_path / "staging"
    cifar_tools.write_cifar100(staging, per_class=1)
    archive = cifar_tools.make_archive(
        staging, "cifar-100-python", tmp_path / "evil.tar.gz", extra={"../escaped.txt": b"gotcha"}
    )
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "deep" / "root"
    with pytest.raises((UserError, tarfile.TarError)):
        cifar.ensure_files(cifar.CIFAR100, root, url=archive.as_uri(), md5=md5)
    assert not (root.parent / "escaped.txt").exists() and not (root / "escaped.txt").exists()
    assert _leftovers(root) == []


def test_unreadable_archive_is_a_user_error(tmp_path):
    bogus = tmp_path / "mirror.tar.gz"
    bogus.write_bytes(b"<html>503 Service Unavailable</html>")
    root = tmp_path / "root"
    with pytest.raises(UserError):
        cifar.ensure_files(
            cifar.CIFAR100, root, url=bogus.as_uri(), md5=hashlib.md5(bogus.read_bytes()).hexdigest()
        )
    assert _leftovers(root) == []


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """An HTTP server on 127.0.0.1 (loopback only) serving tmp_path/served; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir(exist_ok=True)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_download_over_http(tmp_path, archive100, http_root):
    archive, md5, fake = archive100
    assert archive.parent == tmp_path / "served"
    root = tmp_path / "root"
    cifar.ensure_files(cifar.CIFAR100, root, url=f"{http_root}/{archive.name}", md5=md5)
    splits = load_splits(cfg100(root, cifar100_labels="coarse"))
    assert np.array_equal(splits.train.labels.numpy(), fake.train_coarse)
    with pytest.raises(UserError, match="cannot download"):  # 404
        cifar.ensure_files(cifar.CIFAR100, tmp_path / "root2", url=f"{http_root}/missing.tar.gz", md5=md5)
    assert _leftovers(tmp_path / "root2") == []
