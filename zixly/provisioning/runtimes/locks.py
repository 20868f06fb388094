"""Advisory file locks (``flock``) shared by processes and threads on one machine."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class LockTimeout(TimeoutError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"timed out waiting for the lock {path}")
        self.path = path


@contextmanager
def file_lock(
    path: Path,
    *,
    timeout: float | None = None,
    on_wait: Callable[[], None] | None = None,
    poll: float = 0.2,
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    ``timeout=None`` waits forever; ``on_wait`` is called once when the lock is busy.
    The kernel releases the lock if the holder dies, so a crashed install never wedges it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if on_wait is not None and not told:
                    on_wait()
                    told = True
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(path) from None
                time.sleep(poll)
        yield
    finally:
        os.close(fd)
