"""Cost measurements for benchmark models: parameters, FLOPs, throughput, memory.

Units and conventions
---------------------
* Parameters are raw counts (``int``).
* FLOPs are raw counts (``int``) as reported by fvcore, where one fused
  multiply-add counts as ONE FLOP (so a ``Conv2d`` costs
  ``C_out * C_in/groups * k_h * k_w * H_out * W_out`` per image). They are
  counted in eval mode at batch 1 unless asked otherwise.
* Reports scale by powers of ten: M = 1e6, G = 1e9 (never 2**20 / 2**30).
* Ops fvcore has no formula for are not guessed at: they are listed with their
  occurrence counts in ``FlopReport.unsupported`` and contribute 0 to ``total``.
* Throughput is samples per second computed from the MEDIAN step time after
  warm-up; step times are wall-clock seconds from ``time.perf_counter``.
* Memory is in bytes. On CUDA it is ``torch.cuda.max_memory_allocated`` (an
  absolute figure that includes tensors already resident, such as weights). On
  CPU the headline figure is the growth of the *current* resident set size
  during the measured call, sampled from ``/proc/self/statm`` after freed heap
  memory has been returned to the OS (glibc ``malloc_trim``); the process-wide
  peak RSS (``ru_maxrss``) is reported alongside but is a lifetime high-water
  mark and therefore says little about one call.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.devices import autocast
from .memory import PeakMemoryTracker, _synchronize, peak_memory, release_freed_memory, track_peak_memory  # noqa: F401

with warnings.catch_warnings():
    # fvcore.nn scripts its focal losses at import time, which recent torch
    # flags as deprecated; that is fvcore's business, not the benchmark user's.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

__all__ = [
    "FlopReport",
    "PeakMemoryTracker",
    "count_flops",
    "count_params",
    "measure_model",
    "measure_throughput",
    "peak_memory",
    "track_peak_memory",
]

DeviceLike = torch.device | str


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Exact number of parameter elements (shared parameters are counted once)."""
    # ``parameters()`` already de-duplicates tied weights, so no extra bookkeeping.
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------


@dataclass
class FlopReport:
    """fvcore FLOP count (1 multiply-add = 1 FLOP) with what it could not count."""

    total: int
    by_operator: dict[str, int] = field(default_factory=dict)
    unsupported: dict[str, int] = field(default_factory=dict)  # op name -> occurrences
    uncalled_modules: list[str] = field(default_factory=list)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore every submodule's own flag on exit."""
    # Restoring per module (not just ``model.train(was_training)``) keeps
    # deliberate mixes such as frozen BatchNorm inside a training model intact.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _first_param_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (CPU/float32 if none)."""
    for p in model.parameters():
        dtype = p.dtype if p.is_floating_point() else torch.get_default_dtype()
        return p.device, dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _has_forward(module: nn.Module) -> bool:
    """False for containers and Identity, which legitimately never show up in a trace."""
    no_forward = (nn.Module, nn.ModuleList, nn.ModuleDict, nn.Identity)
    return not any(type(module).forward is cls.forward for cls in no_forward)


def attention_flops(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle of `F.scaled_dot_product_attention` (q [..., N, d], k [..., M, d], v [..., M, e]): the
    multiply-adds of q k^T and of the weights times v, N M d + N M e per batch and head (the softmax and the scale
    not counted, as fvcore counts no elementwise op); fvcore would count the op as 0."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def count_flops(
    model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32), batch: int = 1
) -> FlopReport:
    """Count FLOPs of one forward pass with fvcore, in eval mode, on the model's device."""
    device, dtype = _first_param_device_dtype(model)
    inputs = torch.randn(batch, *input_size, device=device, dtype=dtype)
    with _eval_mode(model), torch.no_grad():
        analysis = (
            FlopCountAnalysis(model, inputs)
            # fvcore logs a warning per unsupported op / uncalled module; we
            # return both in the report instead, so the log output is noise.
            .unsupported_ops_warnings(False)
            .uncalled_modules_warnings(False)
            .set_op_handle("aten::scaled_dot_product_attention", attention_flops)
        )
        total = int(analysis.total())
        by_operator = {op: int(n) for op, n in analysis.by_operator().items()}
        unsupported = {op: int(n) for op, n in analysis.unsupported_ops().items()}
        uncalled = analysis.uncalled_modules()
    named = dict(model.named_modules())
    uncalled_modules = sorted(n for n in uncalled if n in named and _has_forward(named[n]))
    return FlopReport(total, by_operator, unsupported, uncalled_modules)


# ---------------------------------------------------------------------------
# Throughput
# ---------------------------------------------------------------------------


def _make_batch(
    input_size: tuple[int, ...],
    batch_size: int,
    num_classes: int,
    device: torch.device,
    channels_last: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic random images and labels on ``device``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_size, generator=gen)
    y = torch.randint(0, num_classes, (batch_size,), generator=gen)
    x = x.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device)


def _build_step(
    model: nn.Module,
    input_size: tuple[int, ...],
    batch_size: int,
    num_classes: int,
    device: torch.device,
    train: bool,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    compile: bool = False,
) -> Callable[[], None]:
    """Return a closure running one train or inference step on a private model copy.

    With ``compile`` the copy's forward (and so its backward) runs through ``torch.compile``; the first call
    compiles. Dynamo's caches are reset first, so every model compiles afresh and no cache limit is reached.
    """
    # A throwaway copy: training mutates weights, BN statistics and optimizer
    # state, and eval()/channels_last would change the caller's module.
    net = copy.deepcopy(model).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    x, y = _make_batch(input_size, batch_size, num_classes, device, channels_last)
    net.train(train)
    if compile:
        torch._dynamo.reset()
    forward = torch.compile(net) if compile else net

    if not train:

        def infer_step() -> None:
            with torch.inference_mode(), autocast(device, amp_dtype):
                forward(x)

        return infer_step

    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    # float16 needs loss scaling in real training, so its cost belongs in the step.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def train_step() -> None:
        with autocast(device, amp_dtype):
            loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return train_step


def _time_steps(
    step: Callable[[], None], steps: int, warmup: int, device: torch.device
) -> list[float]:
    """Run ``warmup`` untimed steps, then time ``steps`` steps individually."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        _synchronize(device)
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def measure_throughput(
    model: nn.Module,
    input_size: tuple[int, ...],
    batch_size: int,
    num_classes: int,
    device: DeviceLike,
    steps: int = 20,
    warmup: int = 5,
    train: bool = True,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    compile: bool = False,
) -> dict[str, Any]:
    """Median-based throughput of a train step (fwd + CE bwd + SGD) or an inference pass.

    The caller's model is never modified; a deep copy is moved to ``device``. With ``compile`` the first call
    (compilation included) is timed apart as ``first_step_s`` and is not one of the warm-up steps.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = torch.device(device)
    step = _build_step(
        model, input_size, batch_size, num_classes, device, train, amp_dtype, channels_last, compile
    )
    first = None
    if compile:
        first = _time_steps(step, 1, 0, device)[0]
    times = _time_steps(step, steps, warmup, device)
    median = statistics.median(times)
    return {
        "samples_per_s": batch_size / median,
        "step_time_s_median": median,
        "step_times_s": times,
        "first_step_s": first,
    }


def measure_model(
    model: nn.Module,
    input_size: tuple[int, ...],
    num_classes: int,
    device: DeviceLike,
    batch_size: int = 128,
    steps: int = 20,
    warmup: int = 5,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    compile: bool = False,
) -> dict[str, Any]:
    """Params, FLOPs, train/inference throughput and train-step memory as a JSON-ready dict.

    ``compile_s``: with ``compile``, how much longer the first (compiling) train step took than a compiled one.
    """
    device = torch.device(device)
    flops = count_flops(model, input_size)
    common = dict(
        input_size=input_size,
        batch_size=batch_size,
        num_classes=num_classes,
        device=device,
        steps=steps,
        warmup=warmup,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        compile=compile,
    )
    # Memory first, from a fresh copy: on CPU, RSS growth is measured against
    # the current footprint, which earlier runs would inflate with cached pages.
    # Two steps so gradients and momentum buffers exist during the measurement.
    # Compiled, the compilation comes first, outside the measurement (its own
    # memory is the compiler's, not the model's). The same copy is then timed.
    train_step = _build_step(
        model, input_size, batch_size, num_classes, device, True, amp_dtype, channels_last, compile
    )
    first_step_s = _time_steps(train_step, 1, 0, device)[0] if compile else None
    with track_peak_memory(device) as mem:
        train_step()
        train_step()
    train_times = _time_steps(train_step, steps, warmup, device)
    del train_step
    train_median = statistics.median(train_times)

    infer = measure_throughput(model, train=False, **common)
    compile_s = None if first_step_s is None else max(first_step_s - train_median, 0.0)
    return {
        "params": count_params(model),
        "flops": flops.total,
        "flops_unsupported": flops.unsupported,
        "train_samples_per_s": batch_size / train_median,
        "train_step_time_s": train_median,
        "infer_samples_per_s": infer["samples_per_s"],
        "infer_step_time_s": infer["step_time_s_median"],
        "peak_memory_bytes": mem.peak_bytes,
        "peak_memory_kind": mem.kind,
        "device": str(device),
        "compile_s": compile_s,
    }
