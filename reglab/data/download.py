"""Downloading a dataset archive into a data folder (:func:`reglab.data.cifar.ensure_files` says what and where).

The archive is fetched into a temporary folder inside the data folder, its MD5 checked, and unpacked there with
tar's ``data`` filter; only then are its files moved into place: a folder the data folder lacks moves in whole
(one rename), one it has already (a partial ``cifar-10-batches-py/``) takes the archive's files one rename each,
replacing those of the same name, and everything else in it (a user's notes, a ``SHA256SUMS`` list) stays. A
failed download changes nothing there and removes only the folders it created itself. Processes that start
together take turns through :func:`download_lock`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import UserError


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _missing_dirs(root: Path) -> list[Path]:
    """``root`` and those of its parents that do not exist yet, deepest first: what ``root.mkdir(parents=True)``
    will create, and all that a failed download may remove again."""
    missing = []
    path = root.absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders of :func:`_missing_dirs` (deepest first) that are still empty; never any other."""
    for path in created:
        try:
            path.rmdir()  # fails on a folder something was put in meanwhile, which then stays
        except OSError:
            return


def download_archive(url: str, md5: str, root: Path, timeout: float = 60.0) -> None:
    """Download ``url`` into ``root``, check its MD5, unpack it and move its files in (:func:`install`); leaves
    nothing half-written behind, and on a failure removes only the folders it created itself (a folder that
    existed before stays, empty or not)."""
    created = _missing_dirs(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
            install(_fetch_and_unpack(url, md5, Path(tmp), timeout), root)
    except BaseException:
        _remove_empty(created)
        raise


def _fetch(url: str, archive: Path, timeout: float) -> None:
    """Write what ``url`` serves to ``archive``; ConnectionError when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(archive, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConnectionError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None


def _fetch_and_unpack(url: str, md5: str, tmp: Path, timeout: float) -> Path:
    """Download ``url`` into the temporary folder ``tmp``, check its MD5 and unpack it there (tar's ``data``
    filter: nothing outside, no device files); the folder holding the unpacked tree."""
    archive = tmp / "archive.tar.gz"
    _fetch(url, archive, timeout)
    got = file_digest(archive, "md5")
    if got != md5:
        raise UserError(
            f"the archive downloaded from {url} has MD5 {got}, expected {md5}: it is corrupt or not "
            "the official file. Nothing was unpacked; try again or download it by hand."
        )
    unpacked = tmp / "x"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(unpacked, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(
            f"cannot unpack the archive from {url} ({exc}); it is damaged or not a CIFAR archive. "
            "Nothing was unpacked."
        ) from None
    return unpacked


def _is_folder(path: Path) -> bool:
    """A real folder, not a link to one."""
    return path.is_dir() and not path.is_symlink()


def _clashes(src: Path, dest: Path) -> list[Path]:
    """Paths under ``dest`` where the unpacked tree ``src`` has a file and ``dest`` a folder, or the other way
    round: moving in there would delete the folder's contents, or fail half-way."""
    found = []
    for item in sorted(src.iterdir()):
        target = dest / item.name
        if not os.path.lexists(target):
            continue
        if _is_folder(item) and target.is_dir():  # a link to a folder (data on another disk): filled in place
            found += _clashes(item, target)
        elif _is_folder(item) or _is_folder(target):
            found.append(target)
    return found


def _merge(src: Path, dest: Path) -> None:
    """Move every entry of ``src`` into the folder ``dest``: a folder ``dest`` lacks in one rename, one it has
    entry by entry; a file replaces the file or link of its name (never what a link points to). What ``dest``
    holds besides stays."""
    for item in sorted(src.iterdir()):
        target = dest / item.name
        if _is_folder(item) and target.is_dir():
            _merge(item, target)
        else:
            _move(item, target)


def _move(item: Path, target: Path) -> None:
    """Rename ``item`` to ``target`` (``os.replace``: atomic); where ``target`` is on another file system (a
    dataset folder linked to another disk), copy ``item`` beside ``target`` first and rename that, so a reader
    never finds half a file."""
    try:
        os.replace(item, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    copy = target.with_name(f".{target.name}.download-{os.getpid()}")
    try:
        if _is_folder(item):
            shutil.copytree(item, copy, symlinks=True)
        else:
            shutil.copy2(item, copy, follow_symlinks=False)
        os.replace(copy, target)
    except BaseException:
        if _is_folder(copy):
            shutil.rmtree(copy, ignore_errors=True)
        else:
            copy.unlink(missing_ok=True)
        raise


def install(unpacked: Path, root: Path) -> None:
    """Move the unpacked archive into ``root`` (:func:`_merge`): the dataset's own files replace those of the
    same name, any other file a user put in the dataset folder stays. Refused, before anything moves, where a
    folder stands in the way of an archive file (or a file in the way of an archive folder)."""
    clashes = _clashes(unpacked, root)
    if clashes:
        raise UserError(
            f"cannot unpack the dataset into {root}: {clashes[0]} is in the way (a "
            f"{'folder' if _is_folder(clashes[0]) else 'file'} where the archive has a "
            f"{'file' if _is_folder(clashes[0]) else 'folder'}). Move it away and run the command again."
        )
    try:
        _merge(unpacked, root)
    except OSError as exc:
        raise UserError(
            f"cannot move the unpacked dataset into {root}: {exc.strerror or exc}"
            f"{f' ({exc.filename})' if exc.filename else ''}."
        ) from None


@contextlib.contextmanager
def download_lock(root: Path):
    """Hold an exclusive lock on ``root`` while its files are checked and downloaded, so processes that start
    together on a fresh machine (``reglab study -j 2``, torchrun ranks, sweep workers; on a shared file system
    several nodes) download once and never unpack over each other. A ``flock`` on ``root/.download.lock``,
    removed on the way out, as is ``root`` itself when this call created it and nothing else is in it (a folder
    that existed before, even an empty one, is the user's and stays); no lock off POSIX."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one process at a time is then the user's to ensure
        yield
        return
    created = _missing_dirs(root)
    root.mkdir(parents=True, exist_ok=True)
    lock = root / ".download.lock"
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                lock.unlink()
                _remove_empty(created)  # leave no empty folder of ours behind a failed download
            fcntl.flock(fh, fcntl.LOCK_UN)
