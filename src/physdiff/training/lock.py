"""An exclusive lock on a run folder, so that two training processes never write into the same one.

``with RunLock(run_dir):`` takes ``run_dir/run.lock`` with ``fcntl.flock`` (non-blocking) and writes the
holder's pid, host and start time into it (opened through :func:`physdiff.outputs.open_regular`: a
link or non-regular file named ``run.lock`` is refused, never followed); a second writer fails at once with
:class:`RunLockedError` naming the folder and the holder. The kernel drops a ``flock`` when its process
dies, so a lock file left by a killed process (its pid no longer running) is stale: it is taken over with a
warning. The lock is released, and the file removed, when the block ends, also on exceptions.

Within one process the lock is re-entrant (a harness may lock a folder and then call ``train`` on it).
Readers (sampling, evaluation, ``load_checkpoint``) do not lock. Importable without torch.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
import warnings
from pathlib import Path

from physdiff.outputs import WriteError, open_regular
from physdiff.training.errors import RunLockedError

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "read_lock_holder"]

LOCK_NAME = "run.lock"

_held: dict[str, list] = {}  # realpath of a folder → [pid, fd or None, depth] of this process's locks
_registry = threading.Lock()


class RunLock:
    """Context manager: hold the exclusive writer lock of ``run_dir`` for the duration of the block."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._key = os.path.realpath(self.run_dir)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunLockedError` at once if another process holds it."""
        with _registry:
            mine = _held.get(self._key)
            if mine is not None and mine[0] == os.getpid():
                mine[2] += 1
                return
            try:
                fd, stale = self._lock_file()
            except OSError as e:
                if isinstance(e, WriteError) or e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                warnings.warn(
                    f"run folder {self.run_dir}: this filesystem cannot lock files ({e}); "
                    "continuing without the lock: do not start a second training in it",
                    stacklevel=3,
                )
                fd, stale = None, None
            _held[self._key] = [os.getpid(), fd, 1]
        if stale:
            warnings.warn(
                f"run folder {self.run_dir}: taking over the stale lock {self.path} of {_describe(stale)}, "
                "which no longer holds it (the process was killed or crashed)",
                stacklevel=3,
            )

    def release(self) -> None:
        """Release the lock (the outermost release of this process removes the lock file)."""
        with _registry:
            mine = _held.get(self._key)
            if mine is None or mine[0] != os.getpid():
                return
            mine[2] -= 1
            if mine[2]:
                return
            del _held[self._key]
            fd = mine[1]
            if fd is None:  # the filesystem could not lock
                return
            try:
                if _same_file(self.path, fd):
                    self.path.unlink()
            finally:
                os.close(fd)  # drops the flock

    def _lock_file(self) -> tuple[int, dict | None]:
        """Open and flock the lock file; returns the fd and the previous (stale) holder's record, if any."""
        while True:
            fd = open_regular(self.path, os.O_RDWR | os.O_CREAT)  # never through a link; the user's umask
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = _read_record(fd, wait=True)
                os.close(fd)
                raise RunLockedError(
                    f"run folder {self.run_dir} is locked by another training process ({_describe(holder)}); "
                    "wait for it to finish or stop it, or use another run folder",
                    run_dir=str(self.run_dir),
                    pid=(holder or {}).get("pid"),
                    host=(holder or {}).get("host", ""),
                ) from None
            if not _same_file(self.path, fd):  # the previous holder removed the file as we opened it: retry
                os.close(fd)
                continue
            stale = _read_record(fd, wait=False)
            record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            return fd, stale


def read_lock_holder(run_dir: str | Path) -> dict | None:
    """The record (pid, host, since) of the process whose lock file is in ``run_dir``, or None."""
    try:
        return json.loads((Path(run_dir) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None


def _read_record(fd: int, *, wait: bool) -> dict | None:
    """The JSON record in the lock file; with ``wait``, give a holder that just locked it time to write it."""
    for _ in range(20):
        data = os.pread(fd, 4096, 0)
        if data.strip():
            try:
                return json.loads(data)
            except ValueError:
                pass
        if not wait:
            return None
        time.sleep(0.025)
    return None


def _same_file(path: Path, fd: int) -> bool:
    try:
        a, b = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _describe(record: dict | None) -> str:
    if not record:
        return "pid unknown"
    return f"pid {record.get('pid')} on host {record.get('host')}, since {record.get('since')}"
