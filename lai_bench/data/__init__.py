"""Datasets and loaders: CIFAR-10/100, ImageNet (ImageFolder) and a learnable synthetic set (datasets.py), the
deterministic samplers (samplers.py), the GPU-resident CIFAR loader (device_loader.py) and loader assembly
(loaders.py).

Every loader is deterministic for a fixed ``seed``: shuffling, augmentation and worker seeds all derive from it.
"""
from ..core.normalization import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD
from .datasets import (
    _SYNTHETIC_DEFAULTS,
    DATASETS,
    GPU_RESIDENT,
    CIFAR10Files,
    CIFAR100Files,
    DatasetError,
    DatasetInfo,
    DatasetNotFoundError,
    SyntheticDataset,
    _build_cifar,
    build_datasets,
    check_available,
    dataset_info,
)
from .device_loader import DeviceCifarLoader
from .loaders import build_loaders, default_workers, distributed_replicas, seeded_loaders
from .samplers import EvalShardSampler, SeededDistributedSampler, SeededRandomSampler, SeededSamples, seed_worker

__all__ = [
    "DATASETS", "GPU_RESIDENT", "CIFAR_MEAN", "CIFAR_STD", "IMAGENET_MEAN", "IMAGENET_STD", "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError", "SyntheticDataset", "CIFAR10Files", "CIFAR100Files", "SeededSamples",
    "SeededRandomSampler", "SeededDistributedSampler", "EvalShardSampler", "DeviceCifarLoader", "dataset_info",
    "build_datasets", "build_loaders", "check_available", "default_workers", "distributed_replicas",
    "seeded_loaders", "seed_worker", "_SYNTHETIC_DEFAULTS", "_build_cifar",
]
