"""Atomic file writes: a temp file beside the target, fsync, rename. A kill never leaves half a file.

A write that fails raises an OSError of the same class and errno whose message is one line naming the file
(``is a directory writing /x/report.md``); its temp file is removed. A write that failed because the disk (or the
quota) is full raises the one OSError of a full disk, whatever the writer raised: ``no space left on device
writing /x/checkpoints/abc.pt (0 B free of 3.1 MB)``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
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
# Free space below which a failed write is read as a full disk whatever was raised (torch's zip writer raises
# "RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos ..." for a write that hit a full disk):
# 1 MiB, or 0.1 % of the filesystem (filesystems keep some blocks back for their metadata).
FULL_MARGIN = 1 << 20


def write_failure(err: OSError, path: str | os.PathLike) -> OSError:
    """``err`` as one line naming ``path``: "is a directory writing /x/y.pt"; same class and errno."""
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


def disk_usage(folder: str | os.PathLike) -> tuple[int, int] | None:
    """(free, total) bytes of the filesystem holding ``folder`` (or its nearest existing parent); None if unknown.

    Free is what an unprivileged process may still use (statvfs's f_bavail)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return None
    return usage.free, usage.total


def _full_errno(err: BaseException) -> int | None:
    """ENOSPC or EDQUOT if ``err`` or an error it was raised from (its cause, its context) carries one."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL:
            return current.errno
        current = current.__cause__ or current.__context__
    return None


def size_text(n: int) -> str:
    """Bytes in decimal units, as the suite writes every size: 0 B, 812 B, 3.1 MB, 1.2 TB."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def disk_full_error(code: int, path: str | os.PathLike, space: tuple[int, int] | None,
                    advice: str | None = None) -> OSError:
    """The one line of a write that ran out of space: "no space left on device writing X (0 B free of 3.1 MB)".

    ``advice`` goes inside the parentheses after the free space. The error keeps ``errno`` and, for rebuilding
    it elsewhere (another rank, the run adding its advice), ``path`` and ``space``."""
    room = "free space unknown" if space is None else f"{size_text(space[0])} free of {size_text(space[1])}"
    err = OSError(f"{os.strerror(code).lower()} writing {path} ({room}{'; ' + advice if advice else ''})")
    err.errno, err.path, err.space = code, str(path), space
    return err


def with_advice(err: OSError, advice: str) -> OSError:
    """A full disk's error with what to do added: "... (0 B free of 3.1 MB; <advice>)"."""
    if hasattr(err, "path"):
        return disk_full_error(err.errno, err.path, getattr(err, "space", None), advice)
    advised = OSError(f"{err} ({advice})")
    advised.errno = err.errno
    return advised


def portable(err: BaseException) -> tuple:
    """What another process needs to raise the same error (see ``from_portable``): plain picklable data."""
    if not isinstance(err, OSError):
        return (type(err).__name__, str(err), None, None, None)
    return ("OSError", str(err), err.errno, getattr(err, "path", None), getattr(err, "space", None))


def from_portable(shared: tuple) -> Exception:
    """The error ``portable`` described: a full disk's OSError as it was built, another OSError with its message
    and errno, anything else as a RuntimeError naming its type."""
    kind, message, code, path, space = shared
    if kind != "OSError":
        return RuntimeError(f"{kind}: {message}")
    if path is not None:
        return disk_full_error(code, path, space)
    err = OSError(message)
    err.errno = code
    return err


def as_full_disk(err: BaseException, path: str | os.PathLike) -> OSError | None:
    """``err``, raised by a write to ``path``, as a full disk's one-line error; None when the disk was not full.

    Called after the failure and before its partial file is removed: a full disk is an ENOSPC/EDQUOT anywhere in
    the error's chain or, for an error the OS gave no other errno to, a filesystem with (almost) no free space."""
    space = disk_usage(Path(path).parent)
    code = _full_errno(err)
    if code is None:
        if isinstance(err, OSError) and err.errno or space is None or space[0] >= max(FULL_MARGIN, space[1] // 1000):
            return None
        code = errno.ENOSPC
    return disk_full_error(code, path, space)


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
        raise as_full_disk(err, path) or write_failure(err, path) from err
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
        full = as_full_disk(err, path) if isinstance(err, Exception) else None  # measured with the temp file there
        Path(tmp).unlink(missing_ok=True)
        if full is not None:
            raise full from err
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
