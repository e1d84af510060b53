"""Files inside a run directory: never through a symbolic link, and one process per run directory.

* :func:`refuse_links` raises a :class:`UserError` when the file reglab is about to write or delete, or a
  folder between the run directory (``root``) and it, is a symbolic link. The run directory itself may be a
  link (the user chose it, e.g. ``runs -> /scratch/runs``); nothing *inside* it is followed.
* :func:`open_new` creates a temporary file with ``O_CREAT | O_EXCL | O_NOFOLLOW``: a link planted at the
  temporary name is removed (the link, never its target) and the file is created afresh.
* :class:`RunLock` is an advisory ``flock`` on ``RUN/.reglab.lock`` held for a whole run (and by ``reglab
  study`` on its study directory for the whole study). The kernel drops it
  when the process ends, killed or not, so a lock is never stale; the file keeps the holder's pid and host
  for the message a second process gets. The descriptor is close-on-exec, so child processes (git, ...) do
  not inherit the lock, and :meth:`RunLock.release` unlocks before it closes (a forked child holding a copy
  of the descriptor would otherwise keep the lock). The lock file is never deleted while the run directory
  is in use; :meth:`RunLock.acquire` checks after locking that the file it locked is still the one at
  ``RUN/.reglab.lock`` (not one removed meanwhile). Where the file system has no ``flock`` the run goes on
  unlocked and one ``reglab: note:`` line says so.

The checks run right before each write or delete; a link swapped in between a check and the write by another
process is outside what this guards against (the rename that finishes every write replaces a link at the
final name, it never writes through it).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
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
            raise UserError(
                f"{cur} is a symbolic link (to {target}); reglab never writes or deletes files through "
                f"a link. Remove the link (rm {cur}) or use another folder."
            )


def ensure_dirs(folder: Path, root: Path, root_must_exist: bool = False) -> list[Path]:
    """Create the missing folders from ``root`` down to ``folder`` (none of them a link); return the new ones.
    ``root_must_exist``: ``root`` is a run directory, which is never created here: if it is gone (deleted or
    moved by another process), raise instead of silently making an empty one."""
    folder, root = Path(folder), Path(root)
    try:
        parts = folder.relative_to(root).parts
    except ValueError:
        root, parts = folder, ()
    made = []
    if not root.is_dir():
        if root_must_exist:
            raise UserError(
                f"run directory {root} has disappeared (deleted or moved while reglab was using it); "
                "nothing more is written. Start the run again."
            )
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
                raise UserError(
                    f"{cur} is not a folder; move it away so reglab can create the folder there."
                ) from None
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


NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)  # flock unsupported on this file system


class RunLock:
    """An exclusive advisory lock on a run directory (see the module docstring)."""

    def __init__(self, fd: int | None, path: Path):
        self.fd, self.path = fd, path

    @classmethod
    def acquire(cls, run_dir: Path, busy: str | None = None) -> "RunLock":
        """Lock ``run_dir``. ``busy``: the refusal when another process holds the lock, with ``{who}`` for that
        process (default: the message for a run directory)."""
        path = Path(run_dir) / LOCK_NAME
        import fcntl

        for _ in range(10):  # another attempt only when the locked file was replaced in between (rare)
            refuse_links(path, run_dir)
            if not Path(run_dir).is_dir():
                raise UserError(f"run directory {run_dir} has disappeared (deleted or moved by another process).")
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
                who = (
                    f"pid {holder[0]}" + (f" on {holder[1]}" if len(holder) > 1 else "")
                    if holder
                    else "another process"
                )
                raise UserError(
                    busy.format(who=who)
                    if busy
                    else f"run directory {run_dir} is in use by another reglab process ({who}); two "
                    "processes would overwrite each other's checkpoints. Wait for it to finish or stop "
                    "it, then run the command again."
                ) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in NO_LOCKS:
                    print(
                        f"reglab: note: {run_dir} is not locked: its file system does not support flock "
                        f"({exc.strerror or exc}), so nothing stops a second reglab process from writing to it "
                        "at the same time.",
                        file=sys.stderr,
                        flush=True,
                    )
                    return cls(None, path)
                raise
            if _same_file(fd, path):
                break
            os.close(fd)  # we locked a lock file that was removed meanwhile: lock the one there now
        else:
            raise UserError(f"cannot lock {path}: it keeps being replaced by another process.")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass  # the lock holds without the pid (a full disk): the message then says "another process"
        return cls(fd, path)

    def release(self) -> None:
        """Unlock and close. The file stays: unlinking it would let a new locker lock a removed file."""
        if self.fd is not None:
            import fcntl

            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)  # also for copies of the descriptor a forked child holds
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is (still) the file at ``path``."""
    try:
        there, mine = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)
