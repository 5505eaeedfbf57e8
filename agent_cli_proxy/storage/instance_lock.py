"""Which process serves this database: an exclusive lock on ``<DB_PATH>.lock``.

A serving proxy holds the lock for its whole life. At boot, holding it proves that no
other proxy writes to this database, so every row still ``pending`` was left by a process
that died (``kill -9``, a crash, a power cut) and can be recovered at once, however
young. Without the lock (another proxy is serving the same file), only rows older than
STALE_PENDING_MAX_AGE_MS are taken for orphans. The kernel drops the lock when the
process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import os


class InstanceLock:
    def __init__(self, fd: int, path: str) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def acquire_instance_lock(db_path: str) -> InstanceLock | None:
    """The lock, or None when another process holds it."""
    path = db_path + ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return InstanceLock(fd, path)
