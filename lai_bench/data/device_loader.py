"""The GPU-resident CIFAR loader: the whole set on the device, augmented there."""
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import datasets

from ..core.normalization import CIFAR_MEAN, CIFAR_STD
from .datasets import _mix_seed


class DeviceCifarLoader:
    """CIFAR batches built on ``device``: the uint8 set stays there, crop/flip/normalise run as batched tensor ops.

    Iterates like a DataLoader over (float images [B, 3, H, W], int64 labels), both on ``device``. Train: reshuffled
    each epoch, random crop with ``padding`` zero pixels + horizontal flip, last partial batch dropped. Eval: fixed
    order, no augmentation, every sample. Epoch e's batches are a function of (seed, e, rank) alone; the epoch
    advances by itself after each pass, `set_epoch` pins it. With ``num_replicas`` > 1 each rank takes an equal,
    disjoint shard of a permutation shared by all ranks (train) or every R-th sample (eval), like the samplers above.
    """

    def __init__(self, images: Tensor | np.ndarray, labels: Tensor | np.ndarray | list, batch_size: int,
                 train: bool, device: str | torch.device = "cpu", seed: int = 0,
                 mean: tuple[float, ...] = CIFAR_MEAN, std: tuple[float, ...] = CIFAR_STD, padding: int = 4,
                 num_replicas: int = 1, rank: int = 0) -> None:
        self.device = torch.device(device)
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 [N, H, W, 3] or [N, 3, H, W], got {images.dtype} {list(images.shape)}")
        if images.shape[1] != 3:  # torchvision's CIFAR .data is channels-last
            images = images.permute(0, 3, 1, 2)
        self.images = images.to(self.device).contiguous()
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for num_replicas={num_replicas}")
        self.batch_size, self.train, self.seed, self.padding = batch_size, train, seed, padding
        self.drop_last = train
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        # Normalise as (x - 255 mean) / (255 std): one subtract and one divide on the uint8 values.
        self._shift = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self._scale = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255

    @classmethod
    def from_dataset(cls, dataset: datasets.CIFAR10, batch_size: int, train: bool,
                     **kwargs: Any) -> "DeviceCifarLoader":
        """Wrap a torchvision CIFAR10/CIFAR100 (its raw ``.data`` and ``.targets``; its transform is not used)."""
        return cls(dataset.data, dataset.targets, batch_size, train, **kwargs)

    @property
    def sampler(self) -> "DeviceCifarLoader":
        # Lets a training loop call loader.sampler.set_epoch(e) whichever loader it was given.
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard_size(self) -> int:
        n = len(self.images)
        if self.train:  # equal shards: unequal batch counts would stall DDP's gradient all-reduce
            return n // self.num_replicas
        return len(range(self.rank, n, self.num_replicas))

    def __len__(self) -> int:
        size = self._shard_size()
        return size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)

    def _generator(self, *parts: Any) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(_mix_seed("device-cifar", self.seed, *parts))

    def _indices(self, epoch: int) -> Tensor:
        n = len(self.images)
        if not self.train:
            return torch.arange(self.rank, n, self.num_replicas, device=self.device)
        # The permutation's seed leaves out the rank: all ranks must agree on it for the shards to be disjoint.
        order = torch.randperm(n, generator=self._generator("perm", epoch), device=self.device)
        return order[: self._shard_size() * self.num_replicas][self.rank:: self.num_replicas]

    def _augment(self, x: Tensor, g: torch.Generator) -> Tensor:
        b, c, h, w = x.shape
        p = self.padding
        x = F.pad(x, (p, p, p, p))  # zero fill, like RandomCrop(padding=4) before ToTensor
        dy = torch.randint(0, 2 * p + 1, (b, 1), generator=g, device=self.device)
        dx = torch.randint(0, 2 * p + 1, (b, 1), generator=g, device=self.device)
        flip = torch.rand(b, 1, generator=g, device=self.device) < 0.5
        cols = torch.arange(w, device=self.device)
        # The flip is folded into the column gather: flipped column j reads crop column w - 1 - j.
        cols = dx + torch.where(flip, cols.flip(0), cols)
        rows = dy + torch.arange(h, device=self.device)
        bi = torch.arange(b, device=self.device).view(b, 1, 1, 1)
        ci = torch.arange(c, device=self.device).view(1, c, 1, 1)
        return x[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        indices = self._indices(epoch)
        g = self._generator("augment", epoch, self.rank) if self.train else None
        for i in range(len(self)):
            idx = indices[i * self.batch_size: (i + 1) * self.batch_size]
            x = self.images[idx]
            if g is not None:
                x = self._augment(x, g)
            yield x.float().sub_(self._shift).div_(self._scale), self.labels[idx]


