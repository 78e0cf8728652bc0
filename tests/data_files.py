"""Write small datasets in their real on-disk formats (CIFAR-10/100 pickles, ImageFolder JPEGs) for tests.

Import from a test module as ``from data_files import write_cifar10`` (pytest puts tests/ on sys.path).
"""
import io
import math
import os
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _Py2StrPickler(pickle._Pickler):
    """Protocol-2 pickler that writes ``bytes`` as Python 2 ``str`` opcodes, as the official CIFAR pickles do.

    The official files are Python 2 pickles: their keys load as str with ``encoding="latin1"`` (torchvision) and as
    bytes (b"data", b"labels") with ``encoding="bytes"`` (the CIFAR website's reader). A Python 3 pickle of either
    str or bytes keys satisfies only one of the two readers; py2 string opcodes satisfy both.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _dump_py2(obj: object, path: Path) -> None:
    buf = io.BytesIO()
    _Py2StrPickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _random_images(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def class_colours(num_classes: int) -> np.ndarray:
    """Distinct RGB colours [C, 3] (uint8): points of an evenly spaced grid in the RGB cube."""
    levels = math.ceil(num_classes ** (1 / 3))
    steps = np.linspace(32, 223, levels).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    return grid[:num_classes]


def separable_images(labels: np.ndarray, num_classes: int, rng: np.random.Generator, noise: float = 16.0) -> np.ndarray:
    """Images [N, 3, 32, 32] uint8 that are their class colour plus Gaussian noise (std ``noise`` grey levels)."""
    base = class_colours(num_classes)[labels].astype(np.float32)[:, :, None, None]
    x = base + rng.normal(0.0, noise, size=(len(labels), 3, 32, 32))
    return x.clip(0, 255).round().astype(np.uint8)


def _split(n: int, num_classes: int, rng: np.random.Generator, separable: bool, noise: float
           ) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.arange(n) % num_classes)  # balanced, shuffled
    images = separable_images(labels, num_classes, rng, noise) if separable else _random_images(n, rng)
    return images.reshape(n, 3072), labels


def write_cifar10(root: str | os.PathLike, n_train: int = 100, n_test: int = 50, seed: int = 0,
                  separable: bool = False, noise: float = 16.0) -> Path:
    """Write ``root/cifar-10-batches-py`` (data_batch_1..5, test_batch, batches.meta) and return that folder.

    Images are uniform noise, or class colour + noise with ``separable=True``; labels are balanced.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    data, labels = _split(n_train, 10, rng, separable, noise)
    for i, (d, lab) in enumerate(zip(np.array_split(data, 5), np.array_split(labels, 5)), 1):
        _dump_py2({b"batch_label": f"training batch {i} of 5".encode(), b"labels": lab.tolist(), b"data": d,
                   b"filenames": [f"train_{i}_{j}.png".encode() for j in range(len(lab))]}, folder / f"data_batch_{i}")
    data, labels = _split(n_test, 10, rng, separable, noise)
    _dump_py2({b"batch_label": b"testing batch 1 of 1", b"labels": labels.tolist(), b"data": data,
               b"filenames": [f"test_{j}.png".encode() for j in range(n_test)]}, folder / "test_batch")
    _dump_py2({b"num_cases_per_batch": math.ceil(n_train / 5), b"label_names": [c.encode() for c in CIFAR10_CLASSES],
               b"num_vis": 3072}, folder / "batches.meta")
    return folder


def write_cifar100(root: str | os.PathLike, n_train: int = 200, n_test: int = 100, seed: int = 0,
                   separable: bool = False, noise: float = 16.0) -> Path:
    """Write ``root/cifar-100-python`` (train, test, meta) and return that folder.

    Fine labels are balanced over 100 classes; the coarse label is fine // 5 (the real grouping is irregular) and
    the class names are placeholders.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        data, fine = _split(n, 100, rng, separable, noise)
        _dump_py2({b"filenames": [f"{split}_{j}.png".encode() for j in range(n)], b"batch_label": split.encode(),
                   b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(), b"data": data},
                  folder / split)
    _dump_py2({b"fine_label_names": [f"fine_{i:02d}".encode() for i in range(100)],
               b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)]}, folder / "meta")
    return folder


def make_separable_cifar(root: str | os.PathLike, num_classes: int = 10, n_train: int = 500, n_test: int = 200,
                         seed: int = 0, noise: float = 16.0) -> Path:
    """A CIFAR-10 (or, with ``num_classes=100``, CIFAR-100) set whose classes a tiny CNN separates in an epoch.

    Each image is its class colour (`class_colours`) + noise, so the class survives crop, flip and global pooling.
    """
    if num_classes not in (10, 100):
        raise ValueError(f"CIFAR formats have 10 or 100 classes, not {num_classes}")
    write = write_cifar10 if num_classes == 10 else write_cifar100
    return write(root, n_train, n_test, seed, separable=True, noise=noise)


def write_imagefolder(root: str | os.PathLike, classes: int | Sequence[str] = 3, per_class: int = 4,
                      size: int = 40, val_per_class: int | None = None, seed: int = 0) -> Path:
    """Write JPEGs to ``root/{train,val}/<class>/<i>.JPEG`` (class colour + noise, ``size`` x ``size``); return root."""
    names = [f"n{i:08d}" for i in range(classes)] if isinstance(classes, int) else list(classes)
    rng = np.random.default_rng(seed)
    colours = class_colours(len(names))
    for split, count in (("train", per_class), ("val", per_class if val_per_class is None else val_per_class)):
        for c, name in enumerate(names):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                x = colours[c].astype(np.float32) + rng.normal(0.0, 16.0, size=(size, size, 3))
                Image.fromarray(x.clip(0, 255).astype(np.uint8)).save(folder / f"{name}_{i}.JPEG", quality=90)
    return Path(root)
