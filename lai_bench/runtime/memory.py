"""Peak memory of one call: on CUDA torch's max_memory_allocated; on CPU the growth of the current resident set
(sampled from /proc/self/statm after freed heap memory is returned to the OS), with the process's lifetime peak
beside it (lai_bench.runtime.measure reads it)."""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import sys
import threading
from collections.abc import Callable
from typing import Any

import torch

DeviceLike = torch.device | str


def _synchronize(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock timings cover the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------


@functools.cache
def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hand the memory malloc keeps after frees back to the OS (glibc's malloc_trim; a no-op elsewhere)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _current_rss_bytes() -> int | None:
    """Current resident set size from /proc (Linux); None where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int:
    """Process-lifetime peak RSS; ru_maxrss is KiB on Linux but bytes on macOS."""
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max_rss if sys.platform == "darwin" else max_rss * 1024


class PeakMemoryTracker:
    """Context manager measuring peak memory of the enclosed code on ``device``.

    ``peak_bytes`` is CUDA max-allocated on GPU and sampled current-RSS growth on CPU.
    """

    def __init__(self, device: DeviceLike, interval_s: float = 0.002) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.kind = "cuda_max_allocated" if self.device.type == "cuda" else "cpu_rss_growth"
        self.peak_bytes = 0
        self.peak_rss_bytes = 0
        self._baseline = 0
        self._max_seen = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)
        self._sample()  # one last look so a peak right before exit is not missed

    def _sample(self) -> None:
        rss = _current_rss_bytes()
        if rss is not None:
            self._max_seen = max(self._max_seen, rss)

    def __enter__(self) -> PeakMemoryTracker:
        if self.kind == "cuda_max_allocated":
            _synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        # Return freed heap to the OS first: otherwise RSS growth only sees what exceeds the pages earlier
        # calls left resident, and in a process measuring several models every one after the largest shows ~0.
        release_freed_memory()
        rss = _current_rss_bytes()
        if rss is None:
            # No /proc: fall back to the growth of the lifetime peak, which
            # only registers allocations that exceed every earlier peak.
            self._baseline = _max_rss_bytes()
        else:
            self._baseline = self._max_seen = rss
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample_loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "cuda_max_allocated":
            _synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        else:
            self._max_seen = _max_rss_bytes()
        self.peak_rss_bytes = _max_rss_bytes()
        self.peak_bytes = max(0, self._max_seen - self._baseline)

    def as_dict(self) -> dict[str, int]:
        """CUDA: ``cuda_max_allocated_bytes``; CPU: ``peak_rss_bytes`` and ``rss_growth_bytes``."""
        if self.kind == "cuda_max_allocated":
            return {"cuda_max_allocated_bytes": self.peak_bytes}
        return {"peak_rss_bytes": self.peak_rss_bytes, "rss_growth_bytes": self.peak_bytes}


def track_peak_memory(device: DeviceLike, interval_s: float = 0.002) -> PeakMemoryTracker:
    """``with track_peak_memory(dev) as t: ...`` then read ``t.peak_bytes`` / ``t.as_dict()``."""
    return PeakMemoryTracker(device, interval_s)


def peak_memory(fn: Callable[[], Any], device: DeviceLike) -> dict[str, int]:
    """Call ``fn()`` and return its peak memory (see ``PeakMemoryTracker.as_dict``)."""
    with track_peak_memory(device) as tracker:
        fn()
    return tracker.as_dict()


# ---------------------------------------------------------------------------
# Everything at once
# ---------------------------------------------------------------------------
