"""The data sets: CIFAR-10/100 (torchvision's files), ImageNet (ImageFolder) and a learnable synthetic set; their
info and the cheap check that their files are there."""
import hashlib
import os
import pickle
import urllib.error
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ..core.normalization import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD
from .augment import Augment, cifar_transform, imagenet_transform, tensor_transform

DATASETS = ("cifar10", "cifar100", "imagenet", "synthetic")
GPU_RESIDENT = ("cifar10", "cifar100")  # the sets the device loader can hold (data/device_loader.py)

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


def check_available(name: str, root: str | os.PathLike, download: bool = False) -> None:
    """Raise DatasetNotFoundError (what is missing, where, how to get it) unless ``name``'s files are under ``root``.

    Cheap (file existence only): a launcher checks a grid's data with it before submitting anything. COCO (a
    detection data set) is checked by the detection task (lai_bench.tasks.detection.data.check_coco).
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


def _build_cifar(name: str, root: str, download: bool, aug: Augment = Augment()) -> tuple[Dataset, Dataset]:
    _, _, _, _, archive = _CIFAR[name]
    check_available(name, root, download)
    cls = _CIFAR_CLASSES[name]
    try:
        # Download once, through the train split; the eval split then finds the files in place.
        train = cls(root, train=True, transform=cifar_transform(True, CIFAR_MEAN, CIFAR_STD, aug), download=download)
        test = cls(root, train=False, transform=cifar_transform(False, CIFAR_MEAN, CIFAR_STD))
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


def _build_imagenet(root: str, size: int, aug: Augment = Augment()) -> tuple[Dataset, Dataset]:
    train_dir, val_dir = _imagenet_dirs(root)
    train = datasets.ImageFolder(train_dir, transform=imagenet_transform(True, size, IMAGENET_MEAN, IMAGENET_STD, aug))
    val = datasets.ImageFolder(val_dir, transform=imagenet_transform(False, size, IMAGENET_MEAN, IMAGENET_STD, aug))
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
                 train: bool = True, noise: float = 1.0, transform: Any = None) -> None:
        if num_classes < 1 or image_size < 1 or size < 0:
            raise ValueError(f"bad synthetic options: num_classes={num_classes}, image_size={image_size}, size={size}")
        self.num_classes, self.image_size, self.noise, self.transform = num_classes, image_size, noise, transform
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
        image = self.prototypes[label] + self.noise * noise
        return (image if self.transform is None else self.transform(image)), label


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


def _build_synthetic(opts: dict, aug: Augment = Augment()) -> tuple[Dataset, Dataset]:
    common = dict(num_classes=opts["num_classes"], image_size=opts["image_size"], seed=opts["seed"],
                  noise=opts["noise"])
    return (SyntheticDataset(size=opts["train_size"], train=True, transform=tensor_transform(aug), **common),
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
                   image_size: int | None = None, synthetic: dict | None = None, augment: Augment = Augment()
                   ) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Train and eval datasets with their transforms, plus a `DatasetInfo` with the sizes actually loaded.

    ``download`` applies to CIFAR only; a missing dataset raises `DatasetNotFoundError` (a FileNotFoundError).
    ``synthetic`` holds the synthetic set's options (num_classes, image_size, train_size, eval_size, seed, noise).
    ``augment``: the recipe's training augmentations (data/augment.py); the eval sets never augment.
    """
    _check_name(name)
    root = os.fspath(data_root)
    if name in _CIFAR:
        if image_size not in (None, 32):
            raise ValueError(f"{name} images are 32x32; got image_size={image_size}")
        train, test = _build_cifar(name, root, download, augment)
        return train, test, DatasetInfo(name, _CIFAR[name][1], 32, len(train), len(test))
    if name == "imagenet":
        size = image_size or 224
        train, val = _build_imagenet(root, size, augment)
        return train, val, DatasetInfo(name, len(train.classes), size, len(train), len(val))
    opts = _synthetic_opts(synthetic, image_size)
    train, test = _build_synthetic(opts, augment)
    return train, test, DatasetInfo(name, opts["num_classes"], opts["image_size"], len(train), len(test))


