"""COCO 2017 (or synthetic shapes) as detection loaders: torchvision's CocoDetection with v2 transforms.

There is no resize here: torchvision's detectors resize inside the model (GeneralizedRCNNTransform: shorter side
``min_size`` = 800, longer at most ``max_size`` = 1333) and map their boxes back to the original image, so the
loaders yield images at their stored size and evaluation compares boxes in original coordinates.
Training drops crowd annotations and boxes under 1 px, then every image left without a box (as torchvision's
detection references and mmdetection's ``filter_empty_gt`` do); evaluation keeps every image.
"""
import contextlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.transforms import v2

from ...data import (
    DatasetError,
    DatasetInfo,
    DatasetNotFoundError,
    distributed_replicas,
    seeded_loaders,
)
from .shapes import make_shapes

__all__ = ["COCO_SPLITS", "COCO_URL", "SYNTHETIC_DEFAULTS", "Categories", "EvalSet", "CocoImages", "DetectionSamples",
           "check_coco", "build_detection_datasets", "build_detection_loaders", "collate"]

COCO_SPLITS = {  # split -> (image folder, annotation file), relative to data_root
    "train": ("train2017", os.path.join("annotations", "instances_train2017.json")),
    "eval": ("val2017", os.path.join("annotations", "instances_val2017.json")),
}
COCO_URL = "https://cocodataset.org/#download"
SYNTHETIC_DEFAULTS = {"num_classes": 3, "image_size": 96, "train_size": 32, "eval_size": 16, "seed": 0, "noise": 1.0}


class Categories:
    """Category ids <-> the detector's labels: sorted id i is label i + ``offset`` (1 when 0 is background)."""

    def __init__(self, categories: Sequence[dict[str, Any]], offset: int = 0) -> None:
        by_id = {int(c["id"]): c.get("name", str(c["id"])) for c in categories}
        self.ids = sorted(by_id)
        self.names = [by_id[i] for i in self.ids]
        self.offset = offset
        self._labels = {cat_id: k + offset for k, cat_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def to_label(self, cat_id: int) -> int:
        try:
            return self._labels[int(cat_id)]
        except KeyError:
            raise ValueError(f"unknown category id {cat_id}; the categories are {self.ids}") from None

    def to_category(self, label: int) -> int:
        index = int(label) - self.offset
        if not 0 <= index < len(self.ids):
            raise ValueError(f"label {label} is outside {self.offset}..{self.offset + len(self.ids) - 1} "
                             f"({len(self.ids)} categories, offset {self.offset})")
        return self.ids[index]


@dataclass(frozen=True)
class EvalSet:
    """What evaluation needs besides predictions: the eval split's ground truth and the category map."""

    coco: COCO
    categories: Categories
    image_ids: list[int]


def collate(batch: list[tuple[Tensor, dict]]) -> tuple[tuple[Tensor, ...], tuple[dict, ...]]:
    """(tuple of images, tuple of targets): detection images differ in size, so they are not stacked."""
    return tuple(zip(*batch)) if batch else ((), ())


# --------------------------------------------------------------------------------------------------------------
# Files


def check_coco(root: str | os.PathLike) -> None:
    """Raise one DatasetNotFoundError naming every missing COCO 2017 folder and annotation file under ``root``."""
    root = os.path.abspath(os.fspath(root))
    missing = []
    for folder, annotations in COCO_SPLITS.values():
        folder, annotations = os.path.join(root, folder), os.path.join(root, annotations)
        missing += [folder] if not os.path.isdir(folder) else []
        missing += [annotations] if not os.path.isfile(annotations) else []
    if missing:
        raise DatasetNotFoundError(
            f"COCO 2017 not found under {root}: missing {', '.join(missing)}. Download train2017.zip, val2017.zip "
            f"and annotations_trainval2017.zip from {COCO_URL} and unzip all three under {root} (giving "
            f"train2017/, val2017/ and annotations/instances_{{train,val}}2017.json), or pass another data_root.")


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); download annotations_trainval2017.zip again from "
                           f"{COCO_URL}") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path} is not a COCO annotation file (no 'images' list)")
    return data


def _index(data: dict[str, Any], source: str) -> COCO:
    """A pycocotools COCO over ``data``, after checking every annotation's category (COCO itself never does)."""
    allowed = {c["id"] for c in data.get("categories", [])}
    for ann in data.get("annotations", []):
        if ann.get("category_id") not in allowed:
            raise DatasetError(
                f"{source}: annotation {ann.get('id')} has category_id {ann.get('category_id')!r}, which is not in "
                f"its 'categories' (ids {sorted(allowed)})")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        coco.createIndex()
    return coco


def _check_first_image(coco: COCO, folder: str, annotations: str) -> None:
    """Catch a wrong layout (say train2017/train2017/) now rather than at the first batch: look for one image."""
    if coco.imgs:
        path = os.path.join(folder, coco.imgs[min(coco.imgs)]["file_name"])
        if not os.path.isfile(path):
            raise DatasetNotFoundError(
                f"{path}, named in {annotations}, is missing: the images must lie directly in {folder}/ "
                f"(unzip the image archive from {COCO_URL} under {os.path.dirname(folder)})")


# --------------------------------------------------------------------------------------------------------------
# Datasets


class CocoImages(datasets.CocoDetection):
    """torchvision's CocoDetection over a ready COCO index, images from ``root`` or from memory (``images``).

    Targets keep only non-crowd boxes of at least 1 px (clipped to the image); with ``drop_empty`` the images left
    without one are left out, as the detection references do for training.
    """

    def __init__(self, coco: COCO, root: str | None, images: dict[int, np.ndarray] | None = None,
                 drop_empty: bool = False, transforms: Any = None) -> None:
        datasets.VisionDataset.__init__(self, root, transforms=transforms)  # the index is built already
        self.coco, self.images = coco, images
        self.ids = sorted(coco.imgs)
        if drop_empty:
            self.ids = [i for i in self.ids if self._load_target(i)]

    def _load_image(self, id: int) -> Image.Image:
        if self.images is None:
            return super()._load_image(id)
        return Image.fromarray(self.images[id])

    def _load_target(self, id: int) -> list[dict[str, Any]]:
        info = self.coco.imgs[id]
        kept = []
        for ann in super()._load_target(id):
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = ann["bbox"]
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, info["width"]), min(y + h, info["height"])
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                # A copy: the index is also the ground truth that COCOeval reads.
                kept.append({**ann, "bbox": [x1, y1, x2 - x1, y2 - y1]})
        return kept


class DetectionSamples(Dataset):
    """(float image [3, H, W] in [0, 1], {boxes [N, 4] xyxy, labels, image_id[, masks uint8 [N, H, W]]}).

    CocoImages wrapped for the v2 transforms; labels are category index + the categories' offset. Train: random
    horizontal flip (torch's global RNG, which `SeededSamples` seeds per sample).
    """

    def __init__(self, source: CocoImages, categories: Categories, masks: bool, train: bool) -> None:
        flip = [v2.RandomHorizontalFlip(0.5)] if train else []
        source.transforms = v2.Compose([v2.ToImage(), *flip, v2.ToDtype(torch.float32, scale=True)])
        keys = {"image_id", "boxes", "labels", *(["masks"] if masks else [])}
        self.source = datasets.wrap_dataset_for_transforms_v2(source, target_keys=keys)
        self.categories, self.masks = categories, masks
        self.ids = source.ids

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        image, target = self.source[index]
        image = image.as_subclass(Tensor)
        height, width = image.shape[-2:]
        out: dict[str, Any] = {"image_id": int(target["image_id"])}
        if "boxes" in target:
            out["boxes"] = target["boxes"].as_subclass(Tensor).float()
            out["labels"] = torch.tensor([self.categories.to_label(c) for c in target["labels"].tolist()],
                                         dtype=torch.int64)
        else:  # the v2 wrapper gives an image without annotations its image_id alone
            out["boxes"], out["labels"] = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
        if self.masks:
            masks = target.get("masks")
            out["masks"] = (masks.as_subclass(Tensor) if masks is not None
                            else torch.zeros(0, height, width, dtype=torch.uint8))
        return image, out


def _synthetic_opts(synthetic: dict | None) -> dict[str, Any]:
    opts = dict(synthetic or {})
    unknown = set(opts) - set(SYNTHETIC_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown synthetic options {sorted(unknown)}; expected {sorted(SYNTHETIC_DEFAULTS)}")
    return {**SYNTHETIC_DEFAULTS, **opts}


def _coco_sources(root: str) -> tuple[CocoImages, CocoImages, list[dict], str]:
    check_coco(root)
    coco, files = {}, {}
    for split, (folder, annotations) in COCO_SPLITS.items():
        files[split], folder = os.path.join(root, annotations), os.path.join(root, folder)
        coco[split] = _index(_read_json(files[split]), files[split])
        _check_first_image(coco[split], folder, files[split])
    cats = coco["train"].dataset.get("categories", [])
    if sorted(coco["train"].cats) != sorted(coco["eval"].cats):
        raise DatasetError(f"the category ids of {files['train']} and {files['eval']} differ: "
                           f"{sorted(coco['train'].cats)} vs {sorted(coco['eval'].cats)}")
    return (CocoImages(coco["train"], os.path.join(root, COCO_SPLITS["train"][0]), drop_empty=True),
            CocoImages(coco["eval"], os.path.join(root, COCO_SPLITS["eval"][0])), cats, "coco")


def _synthetic_sources(synthetic: dict | None) -> tuple[CocoImages, CocoImages, list[dict], str]:
    o = _synthetic_opts(synthetic)
    common = dict(image_size=o["image_size"], num_categories=o["num_classes"], seed=o["seed"], noise=o["noise"])
    # Eval ids follow the train ids: as in COCO, an image id names one image across both splits.
    train_images, train = make_shapes(o["train_size"], **common)
    eval_images, evaluation = make_shapes(o["eval_size"], first_image_id=o["train_size"] + 1, **common)
    sources = []
    for images, data, name in ((train_images, train, "train"), (eval_images, evaluation, "eval")):
        pixels = {record["id"]: image for record, image in zip(data["images"], images)}
        sources.append(CocoImages(_index(data, f"synthetic {name} set"), None, pixels, drop_empty=name == "train"))
    return sources[0], sources[1], train["categories"], "synthetic"


def build_detection_datasets(dataset: str, *, data_root: str | os.PathLike = "./data", masks: bool = False,
                             label_offset: int = 1, synthetic: dict | None = None,
                             ) -> tuple[DetectionSamples, DetectionSamples, DatasetInfo, EvalSet]:
    """Train and eval `DetectionSamples`, the `DatasetInfo` and the eval split's `EvalSet`.

    ``dataset`` "coco": COCO 2017 under ``data_root`` (see `check_coco`); "synthetic": `make_shapes` images in
    memory (``synthetic`` options: num_classes, image_size, train_size, eval_size, seed, noise). The info's
    image_size is the synthetic side, and 0 for COCO, whose images keep their own sizes (the detector resizes).
    """
    if dataset == "coco":
        train, evaluation, cats, name = _coco_sources(os.path.abspath(os.fspath(data_root)))
        image_size = 0
    elif dataset == "synthetic":
        train, evaluation, cats, name = _synthetic_sources(synthetic)
        image_size = _synthetic_opts(synthetic)["image_size"]
    else:
        raise ValueError(f"unknown detection dataset {dataset!r}; expected coco or synthetic")
    categories = Categories(cats, label_offset)
    eval_set = EvalSet(evaluation.coco, categories, list(evaluation.ids))
    train_set = DetectionSamples(train, categories, masks, train=True)
    eval_samples = DetectionSamples(evaluation, categories, masks, train=False)
    info = DatasetInfo(name, len(categories), image_size, len(train_set), len(eval_samples))
    return train_set, eval_samples, info, eval_set


def build_detection_loaders(dataset: str, batch_size: int, eval_batch_size: int, *,
                            data_root: str | os.PathLike = "./data", masks: bool = False, label_offset: int = 1,
                            synthetic: dict | None = None, workers: int | None = None, seed: int = 0,
                            device: str | torch.device = "cpu", distributed: bool = False,
                            num_replicas: int | None = None, rank: int | None = None,
                            ) -> tuple[DataLoader, DataLoader, DatasetInfo, EvalSet]:
    """Train and eval loaders of (images, targets) tuples, the `DatasetInfo` and the `EvalSet`.

    Seeding and sharding as lai_bench.data.build_loaders: epoch e's batches (order and flips) depend only on
    (seed, e), whatever ``workers``; ``train_loader.sampler.set_epoch(e)`` pins the epoch (required when
    ``distributed``, where the train set is sharded in the one-process order and the eval set once per sample).
    """
    train_set, eval_samples, info, eval_set = build_detection_datasets(
        dataset, data_root=data_root, masks=masks, label_offset=label_offset, synthetic=synthetic)
    replicas, rank = distributed_replicas(num_replicas, rank) if distributed else (1, 0)
    train, evaluation = seeded_loaders(train_set, eval_samples, batch_size, eval_batch_size, seed=seed, device=device,
                                       workers=workers, distributed=distributed, replicas=replicas, rank=rank,
                                       collate_fn=collate)
    return train, evaluation, info, eval_set
