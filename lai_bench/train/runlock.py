"""One live owner per run: an OS lock on ``<run_id>.lock`` beside the record.

The training process takes it before it trains and holds it until it has written its last record; the OS releases
it when the process dies, however it dies (SIGKILL included), so a stale lock never blocks a rerun. A second job or
launcher that finds it held knows the run is live and leaves it alone; the lock file names the holder (host and pid)
so that the one who waits can say whom it waits for.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path


class RunBusy(RuntimeError):
    """Another live process holds the run's lock."""


def lock_path(record_path: str | os.PathLike) -> Path:
    path = Path(record_path)
    return path.with_name(f"{path.stem}.lock")


class RunLock:
    """``with RunLock(record_path):`` holds the run's lock, or raises RunBusy at once if another process holds it."""

    def __init__(self, record_path: str | os.PathLike) -> None:
        self.path = lock_path(record_path)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunBusy(f"{self.path}: another live process is running this run ({holder_text(self.path)})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *_) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def is_running(record_path: str | os.PathLike) -> bool:
    """True while some live process holds the run's lock (a lock file alone, left by a dead process, is not)."""
    path = lock_path(record_path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def holder_text(lock: Path) -> str:
    """Who the lock file says holds it: ``pid 123 on host node7``; lock files of older versions name only the pid."""
    try:
        words = lock.read_text().split()
    except OSError:
        words = []
    if len(words) >= 2:
        return f"pid {words[-1]} on host {words[0]}"
    if words:
        return f"pid {words[0]}"
    return "a process that has not named itself yet"  # the holder has taken the lock but not yet written to it


def live_holder(record_path: str | os.PathLike) -> str | None:
    """The live holder of the run's lock (as holder_text), or None when no live process holds it."""
    return holder_text(lock_path(record_path)) if is_running(record_path) else None
