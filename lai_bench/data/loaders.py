"""Loader assembly: the train and eval loaders of a run, sharded over its processes."""
import os
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .augment import Augment
from .datasets import _CIFAR, DatasetInfo, _mix_seed, build_datasets
from .device_loader import DeviceCifarLoader
from .samplers import (
    EvalShardSampler,
    RepeatedAugSampler,
    SeededDistributedSampler,
    SeededRandomSampler,
    SeededSamples,
    seed_worker,
)


def default_workers(device: str | torch.device) -> int:
    """Loader worker processes when the caller does not choose: enough to feed a GPU, none on CPU.

    On CPU the workers compete with the model for the same cores. Measured on a 2-core CPU box, CIFAR-format data,
    batch 128 (scripts/bench_data.py): the train loader alone gives ~6.2k samples/s with 0 workers and ~10.4k with 2,
    but ResNet-20 trains at only ~0.45-0.5k samples/s, and a full training loop ran at ~420-460 samples/s with 0
    workers vs ~415 with 2, so 0 it is.
    """
    if torch.device(device).type != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cpus)


def distributed_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None or rank is None:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise RuntimeError("distributed=True needs an initialised process group or explicit num_replicas and rank")
        num_replicas = torch.distributed.get_world_size() if num_replicas is None else num_replicas
        rank = torch.distributed.get_rank() if rank is None else rank
    return num_replicas, rank


def build_loaders(name: str, batch_size: int, eval_batch_size: int, data_root: str | os.PathLike = "./data",
                  download: bool = False, workers: int | None = None, seed: int = 0, distributed: bool = False,
                  device: str | torch.device = "cpu", synthetic: dict | None = None, image_size: int | None = None,
                  gpu_resident: bool = False, num_replicas: int | None = None, rank: int | None = None,
                  augment: Augment = Augment(), repeats: int = 1) -> tuple[Any, Any, DatasetInfo]:
    """Train and eval loaders plus the `DatasetInfo`; epoch e's batches depend only on (seed, e).

    Same seed, same batches, whatever ``workers`` is (augmentation runs on per-sample seeds, see `SeededSamples`).
    The train loader reshuffles every pass; ``train_loader.sampler.set_epoch(epoch)`` pins the epoch, and when
    ``distributed`` the caller MUST call it before every epoch (DistributedSampler does not advance by itself).
    ``workers=None`` uses `default_workers`. ``distributed=True`` shards the train set with DistributedSampler
    (the one-process order, see `SeededDistributedSampler`; ``batch_size`` is then per process) and the eval set
    with `EvalShardSampler` (each sample once); ``num_replicas``/``rank`` default to the process group's.
    ``gpu_resident=True`` (CIFAR only) returns `DeviceCifarLoader`s holding the data on ``device``: meant for CUDA,
    where it removes the CPU pipeline; it runs on CPU too. ``augment`` adds the ViT recipes' augmentations
    (data/augment.py) and ``repeats`` > 1 their repeated augmentation (`RepeatedAugSampler`); neither with
    ``gpu_resident``.
    """
    if gpu_resident and (not augment.plain or repeats > 1):
        raise ValueError("gpu_resident has its own CIFAR augmentation: it takes no auto_augment, interpolation, "
                         "reprob or repeated_aug (allowed with them: gpu_resident false)")
    train_set, eval_set, info = build_datasets(name, data_root, download, image_size, synthetic, augment)
    replicas, rank = distributed_replicas(num_replicas, rank) if distributed else (1, 0)

    if gpu_resident:
        if name not in _CIFAR:
            raise ValueError(f"gpu_resident supports {', '.join(_CIFAR)} only, not {name!r}")
        common = dict(device=device, seed=seed, num_replicas=replicas, rank=rank)
        return (DeviceCifarLoader.from_dataset(train_set, batch_size, train=True, **common),
                DeviceCifarLoader.from_dataset(eval_set, eval_batch_size, train=False, **common), info)

    train, evaluate = seeded_loaders(train_set, eval_set, batch_size, eval_batch_size, seed=seed, device=device,
                                     workers=workers, distributed=distributed, replicas=replicas, rank=rank,
                                     repeats=repeats)
    return train, evaluate, info


def seeded_loaders(train_set: Dataset, eval_set: Dataset, batch_size: int, eval_batch_size: int, *, seed: int,
                   device: str | torch.device, workers: int | None, distributed: bool, replicas: int, rank: int,
                   collate_fn: Any = None, repeats: int = 1) -> tuple[DataLoader, DataLoader]:
    """The train and eval DataLoaders of `build_loaders` over any datasets: seeded sampling and per-sample seeds,
    DDP sharding over `replicas` when `distributed`, `default_workers` when `workers` is None, repeated
    augmentation when `repeats` > 1."""
    workers = default_workers(device) if workers is None else workers
    common = dict(num_workers=workers, pin_memory=torch.device(device).type == "cuda", collate_fn=collate_fn,
                  persistent_workers=workers > 0, worker_init_fn=seed_worker)
    if repeats > 1:
        train_sampler = RepeatedAugSampler(train_set, repeats, seed, replicas, rank)
        eval_sampler = EvalShardSampler(eval_set, num_replicas=replicas, rank=rank) if distributed else None
    elif distributed:
        # drop_last: equal shards without repeated samples, and as many steps as one process takes (N // B).
        train_sampler = SeededDistributedSampler(train_set, num_replicas=replicas, rank=rank, shuffle=True, seed=seed,
                                                 drop_last=True)
        eval_sampler = EvalShardSampler(eval_set, num_replicas=replicas, rank=rank)
    else:
        train_sampler, eval_sampler = SeededRandomSampler(train_set, seed), None
    # The loaders' own generators only seed the workers (python random and numpy, through seed_worker); without
    # one, a DataLoader draws that seed from the global torch RNG on every pass and so shifts the model's stream.
    train = DataLoader(SeededSamples(train_set), batch_size, sampler=train_sampler, drop_last=True,
                       generator=torch.Generator().manual_seed(_mix_seed("loader", seed, "train", rank)), **common)
    evaluate = DataLoader(eval_set, eval_batch_size, sampler=eval_sampler, shuffle=False,
                          generator=torch.Generator().manual_seed(_mix_seed("loader", seed, "eval", rank)), **common)
    return train, evaluate
