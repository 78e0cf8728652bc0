"""Device names and mixed precision, resolved the same way for training, measuring and benchmarking."""

from __future__ import annotations

import contextlib
import os
from contextlib import AbstractContextManager

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` is the GPU when one is visible, else the CPU; any other name is taken as torch spells it."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting on ``device``: CUDA only, CPU always runs float32."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"unknown amp {amp!r}; allowed: {', '.join(AMP_DTYPES)}")
    return AMP_DTYPES[amp] if device.type == "cuda" else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast to ``dtype`` on ``device``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def usable_cpus() -> int:
    """CPUs this process may use: SLURM_CPUS_PER_TASK inside a Slurm job, else its CPU affinity."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_threads(requested: int | None, local_processes: int = 1, current: int | None = None) -> int:
    """Intra-op threads for one process: ``requested``, else its share of the usable CPUs (at least 1), never more
    than the ``current`` setting (a caller that lowered it, e.g. for reproducible sums, keeps its choice)."""
    if requested:
        return requested
    share = usable_cpus() if "SLURM_CPUS_PER_TASK" in os.environ else usable_cpus() // max(1, local_processes)
    share = max(1, share)
    return min(share, current) if current else share
