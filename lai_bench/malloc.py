"""glibc malloc controls for CPU runs; each is a no-op where the C library is not glibc.

glibc serves big allocations with fresh mmap()s and hands freed heap tops back to the OS, so a training step
page-faults its large temporaries in anew every time (measured here: ~1.5 us per 4 KB page, 5-20 % of a
MRLA-light or DLA-L step on CPU). `keep_freed_memory` makes the process keep and reuse what it frees, as
jemalloc or tcmalloc (PyTorch's CPU tuning advice) do. Allocations of 32 MB and more (glibc's limit for
the setting) are still mmap()ed; serving those from the heap too (M_MMAP_MAX = 0) made ResNet-164 steps
16 % slower here.
"""
import ctypes
from functools import lru_cache
from typing import Any, Optional

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
LARGEST_HEAP_ALLOCATION = 32 * 2**20  # glibc's maximum mmap threshold on 64-bit
NEVER_TRIM = 2**31 - 1


@lru_cache(maxsize=None)
def _glibc() -> Optional[Any]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version, libc.mallopt, libc.malloc_trim  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Serve allocations below 32 MB from the heap and never trim it; True if applied (glibc)."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, LARGEST_HEAP_ALLOCATION)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


def release_freed_memory() -> None:
    """Hand the memory malloc keeps after frees back to the OS (malloc_trim)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
