"""Atomic file writes: a temp file beside the target, fsync, rename. A kill never leaves half a file.

A write that fails raises an OSError of the same class and errno whose message is one line naming the file:
``no space left on device writing /x/checkpoints/abc.pt``; its temp file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _read_umask() -> int:
    """The process umask (read once, at import: reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; results are shared, so they get the usual 0666 & ~umask.
_FILE_MODE = 0o666 & ~_read_umask()


def fsync_dir(folder: str | os.PathLike) -> None:
    """Persist a rename in ``folder`` (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_failure(err: OSError, path: str | os.PathLike) -> OSError:
    """``err`` as one line naming ``path``: "no space left on device writing /x/y.pt"; same class and errno."""
    reason = os.strerror(err.errno).lower() if err.errno else str(err)
    try:
        named = type(err)(f"{reason} writing {path}")
    except TypeError:  # a subclass with another constructor
        named = OSError(f"{reason} writing {path}")
    named.errno = err.errno
    return named


def is_disk_full(err: BaseException) -> bool:
    """A full disk or an exhausted quota."""
    return isinstance(err, OSError) and err.errno in DISK_FULL


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", previous: str | os.PathLike | None = None,
                **open_kwargs) -> Iterator[IO]:
    """Open a temp file beside ``path`` for writing; on a clean exit it replaces ``path``, on an error it is removed.

    ``mode`` is "w" (text, utf-8 unless ``encoding`` is given) or "wb". The parent folder is created. With
    ``previous``, the file at ``path`` (if any) is renamed to ``previous`` once the new one is on disk, just before
    the new one takes its place: there is always one complete file of the two. An OSError is re-raised naming
    ``path`` (see ``write_failure``).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_failure(err, path) from err
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            os.fchmod(handle.fileno(), _FILE_MODE)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if previous is not None:
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_failure(err, path) from err
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; return the path."""
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def set_aside(path: str | os.PathLike, why: str = "corrupt") -> Path:
    """Rename ``path`` to ``<name>.<why>-<UTC timestamp>`` beside it (never deleted); return the new path."""
    from datetime import UTC, datetime

    path = Path(path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.{why}-{stamp}")
    os.replace(path, target)
    return target
