"""A run's record: what ran (config, code, environment), how it went (status, history, metrics), what it cost.

Built here, written by the run (lai_bench.records.store.write_record checks the schema).
"""
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig, effective_lr
from ..core.devices import amp_dtype
from ..core.plugins import describe as describe_plugin
from ..core.plugins import load_plugins
from ..data import DatasetInfo
from ..runtime.distributed import World, describe
from ..runtime.engine import Progress


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads, {socket.gethostname()})"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def environment(world: World) -> dict[str, Any]:
    """Where the run ran: code version, torch, device, host, intra-op threads and the processes.

    ``torch_threads``: on CPU, the same seed at another thread count sums floats in another order, so its
    numbers may differ in the last digits under the same run id; the record says which count produced them.
    """
    return {"code_version": git_commit(), "torch_version": torch.__version__, "device": device_name(world.device),
            "hostname": socket.gethostname(), "torch_threads": torch.get_num_threads(), **describe(world)}


def build_record(status: str, progress: Progress, *, run_id: str, config: RunConfig, world: World,
                 metrics: dict[str, Any], grid: str | None = None, started_at: str | None = None,
                 compile_s: float | None = None, **extra: Any) -> dict[str, Any]:
    """The record of a run in `status` ("running", "completed", "failed", "diverged"); `extra`: error,
    diverged_epoch, weights (a completed run's final weights file, see train.Run), measurements."""
    c = config
    return {
        "run_id": run_id, "name": c.name(), "grid": grid, "status": status,
        "error": extra.pop("error", None), "diverged_epoch": extra.pop("diverged_epoch", None),
        "config": c.to_dict(), "plugins": [describe_plugin(m) for m in load_plugins(c.plugins)],
        "metrics": metrics, "history": progress.history,
        "epochs_completed": progress.epoch, "wall_time_s": progress.elapsed_s,
        **environment(world), "global_batch_size": c.batch_size,
        "batch_per_process": c.batch_size // world.size if c.batch_size % world.size == 0 else None,
        "lr_effective": effective_lr(c), "compile_s": compile_s,
        "started_at": started_at, "finished_at": now() if status != "running" else None,
        **extra,
    }


def measure_run(model: torch.nn.Module, info: DatasetInfo, c: RunConfig, world: World) -> dict[str, Any]:
    """Params, FLOPs (fvcore, batch 1, eval), throughput and peak memory, for the record.

    Throughput is measured at the per-process batch: what one device runs.
    """
    from ..runtime.measure import count_flops, count_params, measure_model

    device = world.device
    batch = c.batch_size // world.size
    size = (3, info.image_size, info.image_size)
    out: dict[str, Any] = {"params": count_params(model)}
    if not c.measure:
        flops = count_flops(model, size)
        out.update(flops=flops.total, flops_unsupported=flops.unsupported)
    else:  # measure_model counts the FLOPs too: counted once (fvcore traces the model, a second a run on CPU)
        m = measure_model(model, size, info.num_classes, device, batch_size=batch,
                          steps=c.measure_steps, warmup=2, amp_dtype=amp_dtype(c.amp, device),
                          channels_last=device.type == "cuda" and c.channels_last, compile=c.compile)
        out.update(flops=m["flops"], flops_unsupported=m["flops_unsupported"])
        out["throughput"] = {"train_samples_per_s": m["train_samples_per_s"],
                             "infer_samples_per_s": m["infer_samples_per_s"],
                             "train_step_time_s": m["train_step_time_s"],
                             "infer_step_time_s": m["infer_step_time_s"], "batch_size": batch}
        out.update(peak_memory_bytes=m["peak_memory_bytes"], peak_memory_kind=m["peak_memory_kind"])
    return out
