"""Deterministic sampling: every shuffle, augmentation and worker seed derives from (seed, epoch, rank)."""
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from .datasets import _mix_seed


def seed_worker(worker_id: int) -> None:
    """Seed `random` and numpy in a loader worker from its torch seed (PyTorch's reproducibility recipe).

    torch derives each worker's seed from the loader's generator, so this ties every library a transform might use
    to the loader ``seed``, whatever torch does by default.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class SeededSamples(Dataset):
    """Training-set view whose items are (index, seed): the random transforms of each sample run on its own seed.

    torchvision's transforms draw from the global torch RNG, i.e. the main process's when ``num_workers=0`` (whose
    state depends on model init, dropout...) or a worker's, seeded once per worker and, with persistent workers,
    carried across epochs. Seeding per sample makes a batch a function of the sampler's seeds alone: the same
    whatever the worker count, persistence, or how many epochs this process has run (so a resumed run matches).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        outer = torch.get_rng_state(), random.getstate(), np.random.get_state()
        # The CPU generator only: torch.manual_seed would also reseed CUDA, which the training step uses. python's
        # random and numpy too: timm's RandAugment and RandomErasing draw from them.
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(outer[0])
            random.setstate(outer[1])
            np.random.set_state(outer[2])


def _with_seeds(indices: Iterator[int], seed: int, epoch: int, rank: int) -> Iterator[tuple[int, int]]:
    base = _mix_seed("augment", seed, epoch, rank) >> 1  # 62 bits: base + position stays a valid seed
    return ((index, base + position) for position, index in enumerate(indices))


def _shuffled(num_samples: int, seed: int, epoch: int) -> list[int]:
    """Epoch `epoch`'s order of the samples: the one every sampler here (one process or a shard of N) follows."""
    g = torch.Generator().manual_seed(_mix_seed("shuffle", seed, epoch))
    return torch.randperm(num_samples, generator=g).tolist()


class SeededRandomSampler(Sampler):
    """Shuffling sampler yielding (index, seed) for `SeededSamples`; epoch e's order and seeds depend on (seed, e).

    The epoch advances by itself after each pass; `set_epoch` pins it, as for DistributedSampler. Unlike a
    RandomSampler on the loader's generator, the order then does not depend on how often the DataLoader itself drew
    from that generator (once per pass without workers, once per lifetime with persistent ones).
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.num_samples, self.seed, self.epoch = len(dataset), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        yield from _with_seeds(_shuffled(self.num_samples, self.seed, epoch), self.seed, epoch, 0)


class SeededDistributedSampler(DistributedSampler):
    """DistributedSampler yielding (index, seed) for `SeededSamples`, in `SeededRandomSampler`'s global order.

    Rank r takes the global positions r, r + R, r + 2R, ... of that order, and each sample's augmentation seed
    follows its global position. With per-rank batches of B / R, the ranks' step-k batches together are then exactly
    the one-process step-k batch of size B, augmentation included: N processes see what one process sees.
    """

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = _shuffled(len(self.dataset), self.seed, self.epoch)
        else:
            order = list(range(len(self.dataset)))
        if self.drop_last:
            order = order[: self.total_size]
        else:  # pad with the first samples again, as the stock sampler does, so shards are equal
            order += (order * math.ceil(self.total_size / max(len(order), 1)))[: self.total_size - len(order)]
        seeds = list(_with_seeds(order, self.seed, self.epoch, 0))
        return iter(seeds[self.rank: self.total_size: self.num_replicas])


class RepeatedAugSampler(Sampler):
    """timm's RepeatAugSampler (DeiT's repeated augmentation) yielding (index, seed) for `SeededSamples`.

    Each epoch shuffles, repeats every sample `repeats` times in a row and spreads the copies over the processes,
    taking len(dataset) // 256 * 256 / processes positions per process (all of them for sets under 256 samples):
    so an epoch sees about 1/repeats of the distinct images, each `repeats` times with its own augmentation seed.
    timm seeds its shuffle with the epoch alone; here with (seed, epoch), so seeds differ in order too.
    """

    def __init__(self, dataset: Dataset, repeats: int, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        from timm.data.distributed_sampler import RepeatAugSampler

        self.inner = RepeatAugSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                                      num_repeats=repeats)
        self.seed, self.rank, self.replicas, self.epoch = seed, rank, num_replicas, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        self.inner.set_epoch(_mix_seed("shuffle", self.seed, epoch))  # timm seeds its generator with this value
        base = _mix_seed("augment", self.seed, epoch, 0) >> 1
        # A copy's augmentation seed follows its position in the repeated order, shared by all processes.
        positions = range(self.rank, self.inner.total_size, self.replicas)
        return ((index, base + position) for position, index in zip(positions, self.inner))


class EvalShardSampler(DistributedSampler):
    """Eval-time DistributedSampler: rank r takes indices r, r + R, ... with no padding, so every sample counts once.

    The stock sampler pads the last round with repeated samples to equalise shards, which biases the metric.
    Shards may differ by one sample: reduce (correct, total) sums across ranks, not per-rank means.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(self.rank, len(self.dataset), self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))


