"""A run's checkpoint: model, optimizer, scaler, progress and random state, written atomically by rank 0.

Format (a dict, torch.save): version, run_id, model, optimizer, scaler, epoch, step, history, train_sums, elapsed_s,
world_size, rng_state (rank 0's), rng_states (every rank's), started_at. Version 1 is the only one so far; every
version-1 checkpoint loads, with or without the keys added later (rng_states, started_at).
"""
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .distributed import World
from .engine import Progress
from .files import atomic_open

CHECKPOINT_VERSION = 1


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file beside `path`, then rename: a kill never leaves half a checkpoint."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def save_checkpoint(path: os.PathLike, run_id: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, progress: Progress, world: World, sum_keys: tuple[str, ...],
                    started_at: str) -> None:
    """Rank 0 writes; every rank calls it (the sums and RNG states are gathered) and waits until it is on disk."""
    sums = dict(zip(sum_keys, world.sum([progress.train_sums[k] for k in sum_keys])))
    rng_states = world.gather(torch.get_rng_state())
    if world.is_main:
        save_atomic({"version": CHECKPOINT_VERSION, "run_id": run_id, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                     "epoch": progress.epoch, "step": progress.step, "history": progress.history,
                     "train_sums": sums, "elapsed_s": progress.elapsed_s, "world_size": world.size,
                     "rng_state": rng_states[0], "rng_states": rng_states, "started_at": started_at},
                    Path(path))
    world.barrier()


def load_checkpoint(path: os.PathLike, run_id: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, world: World, sum_keys: tuple[str, ...],
                    say: Callable[[str], None] = print) -> tuple[Progress, str | None]:
    """Load into `model`, `optimizer` and `scaler`; returns the progress and when the run first started.

    Every rank loads the same file; rank 0 takes the epoch's partial train sums (they are global).
    """
    ckpt = torch.load(path, map_location=world.device, weights_only=False)
    if ckpt.get("run_id") != run_id:
        raise ValueError(f"{path} belongs to run {ckpt.get('run_id')}, not {run_id}")
    if ckpt.get("version", CHECKPOINT_VERSION) > CHECKPOINT_VERSION:
        raise ValueError(f"{path} is a version {ckpt['version']} checkpoint; this code reads versions up to "
                         f"{CHECKPOINT_VERSION}")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    sums = ckpt["train_sums"] if world.is_main else dict.fromkeys(sum_keys, 0.0)
    progress = Progress(ckpt["epoch"], ckpt["step"], ckpt["history"], sums, ckpt["elapsed_s"])
    if progress.step:  # mid-epoch: continue the interrupted epoch's random stream
        states = ckpt.get("rng_states") or [ckpt["rng_state"]]
        if len(states) == world.size:
            progress.rng_state = states[world.rank].cpu()  # map_location may have moved it to the GPU
        else:  # the data still resumes exactly (the batch is global); only drop-path draws differ
            say(f"checkpoint of {len(states)} process(es) resumed mid-epoch on {world.size}: the rest of epoch "
                f"{progress.epoch + 1} draws new drop-path masks")
    return progress, ckpt.get("started_at")
