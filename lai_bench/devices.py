"""Device names and mixed precision, resolved the same way for training, measuring and benchmarking."""

from __future__ import annotations

import contextlib
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
