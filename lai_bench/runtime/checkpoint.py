"""A run's checkpoints: model, optimizer, scaler, progress and random state, written atomically by rank 0.

Files in the run's checkpoint folder (`<out>/checkpoints/` unless given):

    <run_id>.pt             the latest training checkpoint
    <run_id>.prev.pt        the one before it: a save writes a temp file, renames the latest to prev, then the temp
                            file to latest, so a good checkpoint is on disk at every moment
    <run_id>.final.pt       a completed run's weights (`save_weights`): a header and the model's state_dict
    <name>.corrupt-<time>   an unreadable checkpoint found on resume, set aside (never deleted)

Format of a training checkpoint (a dict, torch.save): version, run_id, model, optimizer, scaler, epoch, step,
history, train_sums, elapsed_s, world_size, rng_state (rank 0's), rng_states (every rank's), started_at. Version 1
is the only one so far; every version-1 checkpoint loads, with or without the keys added later (rng_states,
started_at), and so does one written before prev files existed.
"""
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..core.files import atomic_open, set_aside
from .distributed import World
from .engine import Progress

CHECKPOINT_VERSION = 1
WEIGHTS_FORMAT = "lai_bench.weights/1"
REQUIRED_KEYS = ("model", "optimizer", "scaler", "epoch", "step", "history", "train_sums", "elapsed_s")


class CorruptCheckpoint(ValueError):
    """A file that cannot be read as a checkpoint (truncated, not a torch file, keys missing)."""


def previous_path(path: os.PathLike) -> Path:
    """`<run_id>.pt` -> `<run_id>.prev.pt`."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def final_path(path: os.PathLike) -> Path:
    """`<run_id>.pt` -> `<run_id>.final.pt`: the completed run's weights."""
    path = Path(path)
    return path.with_name(f"{path.stem}.final{path.suffix}")


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file beside `path`; the file at `path` becomes `<run_id>.prev.pt`, then the temp file
    takes its place: a kill never leaves half a checkpoint, nor none."""
    with atomic_open(path, "wb", previous=previous_path(path)) as handle:
        torch.save(obj, handle)


def save_checkpoint(path: os.PathLike, run_id: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, progress: Progress, world: World, sum_keys: tuple[str, ...],
                    started_at: str, ema: torch.nn.Module | None = None) -> None:
    """Rank 0 writes; every rank calls it (the sums and RNG states are gathered) and waits until it is on disk.
    `ema`: the model EMA's module, saved beside the model when the run keeps one.

    A failed write (a full disk) raises its error on rank 0 and the same one-line error on every other rank.
    """
    sums = dict(zip(sum_keys, world.sum([progress.train_sums[k] for k in sum_keys])))
    rng_states = world.gather(torch.get_rng_state())
    world.main_writes(lambda: save_atomic(
        {"version": CHECKPOINT_VERSION, "run_id": run_id, "model": model.state_dict(),
         "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "epoch": progress.epoch,
         "step": progress.step, "history": progress.history, "train_sums": sums, "elapsed_s": progress.elapsed_s,
         "world_size": world.size, "rng_state": rng_states[0], "rng_states": rng_states, "started_at": started_at,
         **({} if ema is None else {"ema": ema.state_dict()})},
        Path(path)))


def read_checkpoint(path: os.PathLike, run_id: str, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint at `path` as a dict. CorruptCheckpoint if it cannot be read (the reason in one line);
    ValueError if it belongs to another run or is of a newer version; OSError if the file cannot be opened."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except OSError:
        raise
    except Exception as err:  # truncated zip, garbage, an empty file: torch raises many kinds
        reason = " ".join(str(err).split()).split(". ")[0][:200] or type(err).__name__  # torch adds advice
        raise CorruptCheckpoint(f"{path} is not a readable checkpoint ({reason})") from err
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in REQUIRED_KEYS):
        raise CorruptCheckpoint(f"{path} is not a readable checkpoint (not a training checkpoint's keys)")
    if ckpt.get("run_id") != run_id:
        raise ValueError(f"{path} belongs to run {ckpt.get('run_id')}, not {run_id}")
    if ckpt.get("version", CHECKPOINT_VERSION) > CHECKPOINT_VERSION:
        raise ValueError(f"{path} is a version {ckpt['version']} checkpoint; this code reads versions up to "
                         f"{CHECKPOINT_VERSION}")
    return ckpt


def newest_readable(path: os.PathLike, run_id: str,
                    warn: Callable[[str], None] = print) -> tuple[Path, dict[str, Any]] | None:
    """The latest checkpoint that reads, else the previous one, else None (rank 0 decides; see `load_into`).

    An unreadable one is set aside (`<name>.corrupt-<time>`) with a one-line warning naming it and the reason.
    """
    for candidate in (Path(path), previous_path(path)):
        if not candidate.exists():
            continue
        try:
            return candidate, read_checkpoint(candidate, run_id)
        except CorruptCheckpoint as err:
            moved = set_aside(candidate)
            warn(f"warning: {err}; set aside as {moved.name}")
    return None


def load_into(ckpt: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler, world: World, sum_keys: tuple[str, ...],
              say: Callable[[str], None] = print, ema: torch.nn.Module | None = None) -> tuple[Progress, str | None]:
    """Load a read checkpoint into `model`, `optimizer`, `scaler` (and the model EMA's module `ema`); returns the
    progress and the run's start.

    Rank 0 takes the epoch's partial train sums (they are global).
    """
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    if ema is not None:
        ema.load_state_dict(ckpt["ema"])
    sums = ckpt["train_sums"] if world.is_main else dict.fromkeys(sum_keys, 0.0)
    progress = Progress(ckpt["epoch"], ckpt["step"], list(ckpt["history"]), sums, ckpt["elapsed_s"])
    if progress.step:  # mid-epoch: continue the interrupted epoch's random stream
        states = ckpt.get("rng_states") or [ckpt["rng_state"]]
        if len(states) == world.size:
            progress.rng_state = states[world.rank].cpu()  # map_location may have moved it to the GPU
        else:  # the data still resumes exactly (the batch is global); only drop-path draws differ
            say(f"checkpoint of {len(states)} process(es) resumed mid-epoch on {world.size}: the rest of epoch "
                f"{progress.epoch + 1} draws new drop-path masks")
    return progress, ckpt.get("started_at")


def load_checkpoint(path: os.PathLike, run_id: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, world: World, sum_keys: tuple[str, ...],
                    say: Callable[[str], None] = print) -> tuple[Progress, str | None]:
    """Read `path` and load it (every rank the same file); returns the progress and when the run first started."""
    return load_into(read_checkpoint(path, run_id, world.device), model, optimizer, scaler, world, sum_keys, say)


def save_weights(path: os.PathLike, run_id: str, config: dict[str, Any], epochs: int,
                 model: torch.nn.Module) -> Path:
    """Write a completed run's weights atomically: {"format", "run_id", "config", "epochs", "model"}.

    "model" is the state_dict (CPU tensors); `torch.load(path, weights_only=True)["model"]` loads into a model
    built from the same config with `load_state_dict(strict=True)`.
    """
    path = Path(path)
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    with atomic_open(path, "wb") as handle:
        torch.save({"format": WEIGHTS_FORMAT, "run_id": run_id, "config": config, "epochs": epochs,
                    "model": state}, handle)
    return path


def remove_training_checkpoints(path: os.PathLike) -> list[Path]:
    """Delete the latest and previous training checkpoints (set-aside corrupt files stay); return what went."""
    removed = []
    for candidate in (Path(path), previous_path(path)):
        if candidate.exists():
            candidate.unlink()
            removed.append(candidate)
    return removed
