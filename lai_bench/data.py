"""Datasets and loaders: CIFAR-10/100, ImageNet (ImageFolder) and a learnable synthetic set.

Every loader is deterministic for a fixed ``seed``: shuffling, augmentation and worker seeds all derive from it.
"""
import hashlib
import math
import os
import pickle
import random
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchvision import datasets, transforms
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from .normalization import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "DATASETS", "CIFAR_MEAN", "CIFAR_STD", "IMAGENET_MEAN", "IMAGENET_STD", "DatasetInfo", "DatasetNotFoundError",
    "SyntheticDataset", "CIFAR10Files", "CIFAR100Files", "SeededSamples", "SeededRandomSampler",
    "SeededDistributedSampler", "EvalShardSampler",
    "DeviceCifarLoader", "dataset_info", "build_datasets", "build_loaders", "default_workers", "seed_worker",
]

DATASETS = ("cifar10", "cifar100", "imagenet", "synthetic")

_CIFAR = {  # name -> (torchvision-format folder, classes, train size, eval size, archive)
    "cifar10": ("cifar-10-batches-py", 10, 50000, 10000, "cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", 100, 50000, 10000, "cifar-100-python.tar.gz"),
}
_IMAGENET_SIZES = (1000, 1281167, 50000)  # ILSVRC-2012: classes, train images, val images
_SYNTHETIC_DEFAULTS = {"num_classes": 10, "image_size": 32, "train_size": 1024, "eval_size": 256, "seed": 0,
                       "noise": 1.0}
# build_loaders arguments that dataset_info accepts and ignores, so callers can pass one options dict to both.
_LOADER_OPTS = {"batch_size", "eval_batch_size", "download", "workers", "distributed", "device", "gpu_resident",
                "num_replicas", "rank"}


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a training loop need to know about a dataset."""

    name: str
    num_classes: int
    image_size: int
    train_size: int
    eval_size: int


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing; the message names the path looked at and how to get them."""


class DatasetError(ValueError):
    """A dataset's files exist but cannot be read; the message names the file and what to do."""


def _mix_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of ints/strings, so separate streams never share a seed by arithmetic accident."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


# --------------------------------------------------------------------------------------------------------------
# CIFAR


class CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR10, checking that the batch files exist instead of matching the official md5s.

    torchvision md5-hashes every batch file (~180 MB) on each construction and rejects any file that is not
    byte-identical to the official pickles, so the small CIFAR-format sets written by the tests could never load.
    Loading itself is torchvision's code; ``download=True`` still verifies the archive's md5 before extracting it.
    """

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class CIFAR100Files(datasets.CIFAR100):
    """torchvision's CIFAR100 with the same existence-only file check as `CIFAR10Files`."""

    train_list = [[name, None] for name, _ in datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR100.test_list]
    meta = {**datasets.CIFAR100.meta, "md5": None}


_CIFAR_CLASSES = {"cifar10": CIFAR10Files, "cifar100": CIFAR100Files}


def _missing_cifar_files(name: str, root: str) -> list[str]:
    cls = _CIFAR_CLASSES[name]
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [f for f in files if not os.path.isfile(os.path.join(root, cls.base_folder, f))]


def _cifar_transforms(train: bool) -> transforms.Compose:
    norm = [transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)]
    if not train:
        return transforms.Compose(norm)
    return transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), *norm])


def check_available(name: str, root: str | os.PathLike, download: bool = False) -> None:
    """Raise DatasetNotFoundError (what is missing, where, how to get it) unless ``name``'s files are under ``root``.

    Cheap (file existence only): a launcher checks a grid's data with it before submitting anything. COCO (a
    detection data set) is checked by the detection task (lai_bench.detection.data.check_coco).
    """
    _check_name(name)
    root = os.fspath(root)
    if name in _CIFAR_CLASSES and not download:
        folder, _, _, _, archive = _CIFAR[name]
        missing = _missing_cifar_files(name, root)
        if missing:
            path = os.path.join(os.path.abspath(root), folder)
            raise DatasetNotFoundError(
                f"{name} not found at {path} (missing: {', '.join(missing)}). Fetch it with download=True "
                f"(the --download flag), or extract {archive} from https://www.cs.toronto.edu/~kriz/cifar.html "
                f"into {os.path.abspath(root)} so that {path}/ holds the batch files."
            )
    elif name == "imagenet":
        _imagenet_dirs(root)


def _build_cifar(name: str, root: str, download: bool) -> tuple[Dataset, Dataset]:
    _, _, _, _, archive = _CIFAR[name]
    check_available(name, root, download)
    cls = _CIFAR_CLASSES[name]
    try:
        # Download once, through the train split; the eval split then finds the files in place.
        train = cls(root, train=True, transform=_cifar_transforms(True), download=download)
        test = cls(root, train=False, transform=_cifar_transforms(False))
    except (EOFError, pickle.UnpicklingError, KeyError, ValueError, TypeError) as err:
        raise DatasetError(_unreadable_cifar_file(cls, root, err)) from err
    except urllib.error.URLError as err:
        raise DatasetError(
            f"could not download {name} ({err.reason}): this machine may have no internet access. Download "
            f"{archive} from https://www.cs.toronto.edu/~kriz/cifar.html elsewhere and extract it into "
            f"{os.path.abspath(root)}, then run without --download") from err
    return train, test


def _unreadable_cifar_file(cls: type, root: str, err: Exception) -> str:
    """Name the batch file that does not unpickle (truncated or not a CIFAR batch), for the error message."""
    for name, _ in cls.train_list + cls.test_list:
        path = os.path.join(root, cls.base_folder, name)
        try:
            with open(path, "rb") as handle:
                batch = pickle.load(handle, encoding="latin1")
            if not isinstance(batch, dict) or "data" not in batch:
                raise ValueError("not a CIFAR batch (no 'data' entry)")
        except Exception as bad:  # any failure here is the answer we are looking for
            return (f"{os.path.abspath(path)} is not a readable CIFAR batch ({type(bad).__name__}: {bad}); "
                    "delete the folder and fetch the data again (--download, or the archive from "
                    "https://www.cs.toronto.edu/~kriz/cifar.html)")
    return f"the CIFAR files under {os.path.abspath(root)} could not be read: {type(err).__name__}: {err}"


# --------------------------------------------------------------------------------------------------------------
# ImageNet (any ImageFolder tree with train/ and val/)


def _imagenet_transforms(train: bool, size: int) -> transforms.Compose:
    norm = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train:
        return transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), *norm])
    # The standard 0.875 centre crop: Resize(256) + CenterCrop(224) at the default size.
    return transforms.Compose([transforms.Resize(math.floor(size * 256 / 224)), transforms.CenterCrop(size), *norm])


def _imagenet_dirs(root: str) -> tuple[str, str]:
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    for path in (train_dir, val_dir):
        if not os.path.isdir(path):
            raise DatasetNotFoundError(
                f"imagenet not found: {os.path.abspath(path)} is not a directory. It cannot be downloaded "
                f"automatically: extract ILSVRC-2012 under {os.path.abspath(root)} as train/<wnid>/*.JPEG and "
                f"val/<wnid>/*.JPEG (val sorted into class folders), or pass another data_root."
            )
    return train_dir, val_dir


def _build_imagenet(root: str, size: int) -> tuple[Dataset, Dataset]:
    train_dir, val_dir = _imagenet_dirs(root)
    train = datasets.ImageFolder(train_dir, transform=_imagenet_transforms(True, size))
    val = datasets.ImageFolder(val_dir, transform=_imagenet_transforms(False, size))
    # ImageFolder numbers classes by sorted folder name, so a val tree missing one class silently shifts every
    # later label by one; refuse instead.
    if val.classes != train.classes:
        raise ValueError(f"class folders of {val_dir} differ from those of {train_dir}")
    return train, val


# --------------------------------------------------------------------------------------------------------------
# Synthetic


class SyntheticDataset(Dataset):
    """Deterministic learnable images: each class has a fixed random prototype, a sample is prototype + noise.

    Images are float [3, S, S] with zero-mean, order-one values, so they need no transform. Prototypes are low-
    frequency (a random colour plus an upsampled 4x4 random grid) so they survive striding and global average
    pooling: ResNet-8 reaches ~100% eval accuracy on 10 classes x 512 samples in 2 epochs at the default noise.
    Item i is a pure function of (seed, split, i): independent of the global RNG and of worker assignment.
    """

    def __init__(self, num_classes: int = 10, image_size: int = 32, size: int = 1024, seed: int = 0,
                 train: bool = True, noise: float = 1.0) -> None:
        if num_classes < 1 or image_size < 1 or size < 0:
            raise ValueError(f"bad synthetic options: num_classes={num_classes}, image_size={image_size}, size={size}")
        self.num_classes, self.image_size, self.noise = num_classes, image_size, noise
        self.classes = [str(c) for c in range(num_classes)]
        g = torch.Generator().manual_seed(_mix_seed("synthetic-prototypes", seed))
        # A class colour (what global average pooling sees) plus a smooth pattern (what convolutions see).
        grid = torch.randn(num_classes, 3, 1, 1, generator=g) + torch.randn(num_classes, 3, 4, 4, generator=g)
        self.prototypes = F.interpolate(grid, size=(image_size, image_size), mode="bilinear", align_corners=False)
        split = "train" if train else "eval"
        g = torch.Generator().manual_seed(_mix_seed("synthetic-labels", seed, split))
        # Balanced classes in a random order: accuracy tests then compare against an exact chance level.
        self.targets = (torch.arange(size) % num_classes)[torch.randperm(size, generator=g)].tolist()
        self._item_seed = _mix_seed("synthetic-items", seed, split)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        label = self.targets[index]
        g = torch.Generator().manual_seed((self._item_seed + index) % 2**63)
        noise = torch.randn(self.prototypes.shape[1:], generator=g)
        return self.prototypes[label] + self.noise * noise, label


def _synthetic_opts(synthetic: dict | None, image_size: int | None) -> dict:
    opts = dict(synthetic or {})
    unknown = set(opts) - set(_SYNTHETIC_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown synthetic options {sorted(unknown)}; expected {sorted(_SYNTHETIC_DEFAULTS)}")
    if image_size is not None:
        if opts.get("image_size", image_size) != image_size:
            raise ValueError(f"image_size={image_size} conflicts with synthetic image_size={opts['image_size']}")
        opts["image_size"] = image_size
    return {**_SYNTHETIC_DEFAULTS, **opts}


def _build_synthetic(opts: dict) -> tuple[Dataset, Dataset]:
    common = dict(num_classes=opts["num_classes"], image_size=opts["image_size"], seed=opts["seed"],
                  noise=opts["noise"])
    return (SyntheticDataset(size=opts["train_size"], train=True, **common),
            SyntheticDataset(size=opts["eval_size"], train=False, **common))


# --------------------------------------------------------------------------------------------------------------
# Public API


def dataset_info(name: str, **opts: Any) -> DatasetInfo:
    """Classes, image size and split sizes of a dataset, without decoding any image.

    CIFAR gives the official sizes; ImageNet reads classes and file counts from ``data_root`` when the tree exists
    (ILSVRC-2012's numbers otherwise); synthetic takes its options flat or as ``synthetic={...}``.
    Accepts and ignores the other `build_loaders` arguments, so one options dict can feed both.
    """
    _check_name(name)
    known = {"data_root", "image_size", "synthetic"} | _LOADER_OPTS | set(_SYNTHETIC_DEFAULTS)
    unknown = set(opts) - known
    if unknown:
        raise TypeError(f"dataset_info() got unexpected options {sorted(unknown)}")
    image_size = opts.get("image_size")
    if name in _CIFAR:
        _, num_classes, train_size, eval_size, _ = _CIFAR[name]
        return DatasetInfo(name, num_classes, 32, train_size, eval_size)
    if name == "imagenet":
        size = image_size or 224
        root = opts.get("data_root") or "./data"
        train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
        if not (os.path.isdir(train_dir) and os.path.isdir(val_dir)):
            return DatasetInfo(name, _IMAGENET_SIZES[0], size, *_IMAGENET_SIZES[1:])
        classes, class_to_idx = find_classes(train_dir)
        # make_dataset is ImageFolder's own file walk: counts the images it would load, opening none of them.
        sizes = [len(make_dataset(d, class_to_idx, extensions=IMG_EXTENSIONS)) for d in (train_dir, val_dir)]
        return DatasetInfo(name, len(classes), size, *sizes)
    flat = {k: v for k, v in opts.items() if k in _SYNTHETIC_DEFAULTS and k != "image_size"}
    s = _synthetic_opts({**(opts.get("synthetic") or {}), **flat}, image_size)
    return DatasetInfo(name, s["num_classes"], s["image_size"], s["train_size"], s["eval_size"])


def build_datasets(name: str, data_root: str | os.PathLike = "./data", download: bool = False,
                   image_size: int | None = None, synthetic: dict | None = None
                   ) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Train and eval datasets with their transforms, plus a `DatasetInfo` with the sizes actually loaded.

    ``download`` applies to CIFAR only; a missing dataset raises `DatasetNotFoundError` (a FileNotFoundError).
    ``synthetic`` holds the synthetic set's options (num_classes, image_size, train_size, eval_size, seed, noise).
    """
    _check_name(name)
    root = os.fspath(data_root)
    if name in _CIFAR:
        if image_size not in (None, 32):
            raise ValueError(f"{name} images are 32x32; got image_size={image_size}")
        train, test = _build_cifar(name, root, download)
        return train, test, DatasetInfo(name, _CIFAR[name][1], 32, len(train), len(test))
    if name == "imagenet":
        size = image_size or 224
        train, val = _build_imagenet(root, size)
        return train, val, DatasetInfo(name, len(train.classes), size, len(train), len(val))
    opts = _synthetic_opts(synthetic, image_size)
    train, test = _build_synthetic(opts)
    return train, test, DatasetInfo(name, opts["num_classes"], opts["image_size"], len(train), len(test))


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
        outer = torch.get_rng_state()
        # The CPU generator only: torch.manual_seed would also reseed CUDA, which the training step uses.
        torch.default_generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(outer)


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
                  ) -> tuple[Any, Any, DatasetInfo]:
    """Train and eval loaders plus the `DatasetInfo`; epoch e's batches depend only on (seed, e).

    Same seed, same batches, whatever ``workers`` is (augmentation runs on per-sample seeds, see `SeededSamples`).
    The train loader reshuffles every pass; ``train_loader.sampler.set_epoch(epoch)`` pins the epoch, and when
    ``distributed`` the caller MUST call it before every epoch (DistributedSampler does not advance by itself).
    ``workers=None`` uses `default_workers`. ``distributed=True`` shards the train set with DistributedSampler
    (the one-process order, see `SeededDistributedSampler`; ``batch_size`` is then per process) and the eval set
    with `EvalShardSampler` (each sample once); ``num_replicas``/``rank`` default to the process group's.
    ``gpu_resident=True`` (CIFAR only) returns `DeviceCifarLoader`s holding the data on ``device``: meant for CUDA,
    where it removes the CPU pipeline; it runs on CPU too.
    """
    train_set, eval_set, info = build_datasets(name, data_root, download, image_size, synthetic)
    replicas, rank = distributed_replicas(num_replicas, rank) if distributed else (1, 0)

    if gpu_resident:
        if name not in _CIFAR:
            raise ValueError(f"gpu_resident supports {', '.join(_CIFAR)} only, not {name!r}")
        common = dict(device=device, seed=seed, num_replicas=replicas, rank=rank)
        return (DeviceCifarLoader.from_dataset(train_set, batch_size, train=True, **common),
                DeviceCifarLoader.from_dataset(eval_set, eval_batch_size, train=False, **common), info)

    train, evaluate = seeded_loaders(train_set, eval_set, batch_size, eval_batch_size, seed=seed, device=device,
                                     workers=workers, distributed=distributed, replicas=replicas, rank=rank)
    return train, evaluate, info


def seeded_loaders(train_set: Dataset, eval_set: Dataset, batch_size: int, eval_batch_size: int, *, seed: int,
                   device: str | torch.device, workers: int | None, distributed: bool, replicas: int, rank: int,
                   collate_fn: Any = None) -> tuple[DataLoader, DataLoader]:
    """The train and eval DataLoaders of `build_loaders` over any datasets: seeded sampling and per-sample seeds,
    DDP sharding over `replicas` when `distributed`, `default_workers` when `workers` is None."""
    workers = default_workers(device) if workers is None else workers
    common = dict(num_workers=workers, pin_memory=torch.device(device).type == "cuda", collate_fn=collate_fn,
                  persistent_workers=workers > 0, worker_init_fn=seed_worker)
    if distributed:
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
