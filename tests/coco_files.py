"""Write a tiny COCO 2017 layout (JPEGs and instances_*.json) of shapes on noise, for detection tests.

Import from a test module as ``from coco_files import write_coco`` (pytest puts tests/ on sys.path).
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lai_bench.tasks.detection.shapes import make_shapes


@dataclass(frozen=True)
class CocoFiles:
    """Where `write_coco` put things and what is in them."""

    root: Path
    train_dir: Path
    val_dir: Path
    train_json: Path
    val_json: Path
    category_ids: list[int]
    train_images: int  # images written, the empty one included
    val_images: int
    empty_ids: dict[str, int]  # split -> id of its image without objects
    crowd_ids: dict[str, int]  # split -> id of its crowd annotation


def write_coco(root: str | os.PathLike, train_images: int = 6, val_images: int = 4,
               image_size: int | tuple[int, int] = (96, 112), num_categories: int = 3, seed: int = 0) -> CocoFiles:
    """Write root/{train2017,val2017}/*.jpg and root/annotations/instances_{train,val}2017.json.

    Each split has one image without objects (its last) and one crowd region (in its first image); category ids
    are non-contiguous (2, 5, 9, ...). Images are (height, width) ``image_size``, not square by default.
    """
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    empty_ids, crowd_ids, category_ids = {}, {}, []
    first_id = 1
    for split, count in (("train", train_images), ("val", val_images)):
        images, data = make_shapes(count, image_size, num_categories, seed, first_image_id=first_id,
                                   empty_every=count, crowd=True)
        data["info"] = {"description": f"lai_bench test shapes, {split}", "version": "1.0"}
        folder = root / f"{split}2017"
        folder.mkdir(exist_ok=True)
        for record, image in zip(data["images"], images):
            Image.fromarray(image).save(folder / record["file_name"], quality=95)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
        empty_ids[split] = data["images"][-1]["id"]
        crowd_ids[split] = next(a["id"] for a in data["annotations"] if a["iscrowd"])
        category_ids = [c["id"] for c in data["categories"]]
        first_id += count
    return CocoFiles(root, root / "train2017", root / "val2017", root / "annotations" / "instances_train2017.json",
                     root / "annotations" / "instances_val2017.json", category_ids, train_images, val_images,
                     empty_ids, crowd_ids)
