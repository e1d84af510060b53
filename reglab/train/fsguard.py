"""Files inside a run directory: never through a symbolic link, and one process per run directory.

* :func:`refuse_links` raises a :class:`UserError` when the file reglab is about to write or delete, or a
  folder between the run directory (``root``) and it, is a symbolic link. The run directory itself may be a
  link (the user chose it, e.g. ``runs -> /scratch/runs``); nothing *inside* it is followed.
* :func:`open_new` creates a temporary file with ``O_CREAT | O_EXCL | O_NOFOLLOW``: a link planted at the
  temporary name is removed (the link, never its target) and the file is created afresh.
* :class:`RunLock` is an advisory ``flock`` on ``RUN/.reglab.lock`` held for a whole run. The kernel drops it
  when the process ends, killed or not, so a lock is never stale; the file keeps the holder's pid and host
  for the message a second process gets. The descriptor is close-on-exec, so child processes (git, ...) do
  not inherit the lock.

The checks run right before each write or delete; a link swapped in between a check and the write by another
process is outside what this guards against (the rename that finishes every write replaces a link at the
final name, it never writes through it).
"""
from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

from ..errors import UserError

LOCK_NAME = ".reglab.lock"


def is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def refuse_links(path: Path, root: Path | None = None) -> None:
    """Raise if ``path`` or a folder between ``root`` (default: its parent) and it is a symbolic link."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        root, parts = path.parent, (path.name,)
    cur = root
    for part in parts:
        cur = cur / part
        if is_link(cur):
            try:
                target = os.readlink(cur)
            except OSError:
                target = "?"
            raise UserError(f"{cur} is a symbolic link (to {target}); reglab never writes or deletes files through "
                            f"a link. Remove the link (rm {cur}) or use another folder.")


def ensure_dirs(folder: Path, root: Path) -> list[Path]:
    """Create the missing folders from ``root`` down to ``folder`` (none of them a link); return the new ones."""
    folder, root = Path(folder), Path(root)
    try:
        parts = folder.relative_to(root).parts
    except ValueError:
        root, parts = folder, ()
    made = []
    if not root.is_dir():
        root.mkdir(parents=True, exist_ok=True)
    cur = root
    for part in parts:
        cur = cur / part
        if is_link(cur):
            refuse_links(cur, root)
        try:
            cur.mkdir()
            made.append(cur)
        except FileExistsError:
            if not cur.is_dir():
                raise UserError(f"{cur} is not a folder; move it away so reglab can create the folder there.") \
                    from None
    return made


def open_new(path: Path) -> int:
    """A new file at ``path`` for writing, never a link's target; a leftover there (an old temporary file or a
    planted link) is removed first."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except FileExistsError:
        os.unlink(path)  # removes a link itself, not what it points to
        return os.open(path, flags, 0o666)


class RunLock:
    """An exclusive advisory lock on a run directory (see the module docstring)."""

    def __init__(self, fd: int | None, path: Path):
        self.fd, self.path = fd, path

    @classmethod
    def acquire(cls, run_dir: Path) -> "RunLock":
        path = Path(run_dir) / LOCK_NAME
        refuse_links(path, run_dir)
        import fcntl

        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise UserError(f"cannot create the lock file {path}: {exc.strerror or exc}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            except OSError:
                holder = []
            os.close(fd)
            who = f"pid {holder[0]}" + (f" on {holder[1]}" if len(holder) > 1 else "") if holder else "another process"
            raise UserError(f"run directory {run_dir} is in use by another reglab process ({who}); two processes "
                            "would overwrite each other's checkpoints. Wait for it to finish or stop it, then run "
                            "the command again.") from None
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):  # no locks on this fs
                os.close(fd)
                return cls(None, path)
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass  # the lock holds without the pid (a full disk): the message then says "another process"
        return cls(fd, path)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # drops the flock; the file stays (unlinking it would race with a new locker)
            self.fd = None
