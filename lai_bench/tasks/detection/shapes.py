"""A learnable COCO-format detection set: coloured shapes on noise, with boxes and polygon masks.

Each category is one shape kind (rectangle, ellipse, triangle, cycling) in its own colour, so a small detector
learns it in minutes; category ids are non-contiguous (2, 5, 9, ...) as COCO's are, so id mapping gets tested.
"""
import colorsys
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["KINDS", "category_ids", "make_shapes"]

KINDS = ("rectangle", "ellipse", "triangle")
_MAX_TRIES = 50  # placements tried per object before giving up on it (objects never overlap)


def category_ids(num_categories: int) -> list[int]:
    """The ids of the first ``num_categories`` categories: 2, 5, 9, 14, ... (gaps grow, never contiguous)."""
    return [2 + 3 * k + k * (k - 1) // 2 for k in range(num_categories)]


def _colours(num_categories: int) -> list[tuple[int, int, int]]:
    # Saturated hues spread around the wheel: far from each other and from the grey noise behind them.
    return [tuple(round(255 * c) for c in colorsys.hsv_to_rgb(k / num_categories, 1.0, 1.0))
            for k in range(num_categories)]


def _outline(kind: str, x: float, y: float, w: float, h: float) -> list[tuple[float, float]]:
    """The polygon of a shape filling the box (x, y, w, h); ellipses as 24-gons so drawing and mask agree."""
    if kind == "rectangle":
        return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    if kind == "triangle":
        return [(x + w / 2, y), (x + w, y + h), (x, y + h)]
    cx, cy = x + w / 2, y + h / 2
    return [(cx + w / 2 * math.cos(a), cy + h / 2 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 24, False)]


def _polygon_area(points: list[tuple[float, float]]) -> float:
    xs, ys = np.array(points).T
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)  # shoelace


def _bbox(points: list[tuple[float, float]]) -> list[float]:
    xs, ys = np.array(points).T
    return [round(float(xs.min()), 2), round(float(ys.min()), 2), round(float(np.ptp(xs)), 2),
            round(float(np.ptp(ys)), 2)]


def _overlaps(box: tuple[float, ...], taken: list[tuple[float, ...]], margin: float = 2.0) -> bool:
    x, y, w, h = box
    return any(x < tx + tw + margin and tx < x + w + margin and y < ty + th + margin and ty < y + h + margin
               for tx, ty, tw, th in taken)


def _place(rng: np.random.Generator, height: int, width: int, low: float, high: float,
           taken: list[tuple[float, ...]]) -> tuple[float, ...] | None:
    """A box of sides in [low, high] x the shorter image side, inside the image and clear of ``taken``; or None."""
    side = min(height, width)
    for _ in range(_MAX_TRIES):
        w, h = (float(v) for v in np.round(rng.uniform(low, high, 2) * side))
        x, y = float(rng.integers(0, width - w + 1)), float(rng.integers(0, height - h + 1))
        if not _overlaps((x, y, w, h), taken):
            return x, y, w, h
    return None


def _run_lengths(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts of a binary mask: column-major runs, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    return [0, *counts] if flat[0] else counts


def make_shapes(num_images: int, image_size: int | tuple[int, int], num_categories: int = 3, seed: int = 0, *,
                first_image_id: int = 1, empty_every: int = 0, crowd: bool = False, noise: float = 1.0,
                ) -> tuple[list[np.ndarray], dict[str, Any]]:
    """``num_images`` HxWx3 uint8 images and their COCO-format dict (images, annotations, categories).

    ``image_size`` is S (square) or (height, width). Image i (id ``first_image_id + i``) depends only on (seed, id)
    and holds 1-3 objects of sides 15-60% of the shorter side (at S = 64-128: small and medium COCO objects);
    with ``empty_every=k`` images k-1, 2k-1, ... hold none. ``crowd=True`` adds one crowd region (iscrowd 1, a
    cluster of small shapes of one category, uncompressed RLE as COCO stores crowds) to the first non-empty image.
    ``noise`` scales the background noise (std 40 grey levels at 1).
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if num_images < 0 or num_categories < 1 or min(height, width) < 16:
        raise ValueError(f"bad shapes options: num_images={num_images}, num_categories={num_categories}, "
                         f"image_size={image_size} (need >= 0 images, >= 1 category, sides >= 16)")
    ids, colours = category_ids(num_categories), _colours(num_categories)
    categories = [{"id": ids[k], "name": f"{KINDS[k % len(KINDS)]}_{k}", "supercategory": "shape"}
                  for k in range(num_categories)]
    images, records, annotations = [], [], []
    crowd_left = crowd
    for i in range(num_images):
        image_id = first_image_id + i
        rng = np.random.default_rng([seed, image_id])
        pixels = rng.normal(128.0, 40.0 * noise, (height, width, 3)).clip(0, 255).astype(np.uint8)
        canvas = Image.fromarray(pixels)
        draw = ImageDraw.Draw(canvas)
        taken: list[tuple[float, ...]] = []
        empty = empty_every > 0 and (i + 1) % empty_every == 0
        if crowd_left and not empty:
            crowd_left = False
            region = _place(rng, height, width, 0.3, 0.4, taken)
            if region is not None:
                taken.append(region)
                annotations.append(_crowd(rng, draw, region, ids, colours, height, width, image_id))
        for _ in range(0 if empty else int(rng.integers(1, 4))):
            box = _place(rng, height, width, 0.15, 0.6, taken)
            if box is None:
                continue
            taken.append(box)
            k = int(rng.integers(num_categories))
            points = _outline(KINDS[k % len(KINDS)], *box)
            draw.polygon(points, fill=colours[k])
            annotations.append({
                "image_id": image_id, "category_id": ids[k], "iscrowd": 0,
                "segmentation": [[round(v, 2) for p in points for v in p]],
                "bbox": _bbox(points), "area": round(_polygon_area(points), 2)})
        images.append(np.asarray(canvas))
        records.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": height, "width": width})
    for n, annotation in enumerate(annotations, 1):
        annotation["id"] = n
    return images, {"images": records, "annotations": annotations, "categories": categories}


def _crowd(rng: np.random.Generator, draw: ImageDraw.ImageDraw, region: tuple[float, ...], ids: list[int],
           colours: list[tuple[int, int, int]], height: int, width: int, image_id: int) -> dict[str, Any]:
    """Draw four small shapes of one category inside ``region``; their union is one crowd annotation."""
    k = int(rng.integers(len(ids)))
    x, y, w, h = region
    mask = Image.new("L", (width, height))
    for dx, dy in ((0, 0), (w / 2, 0), (0, h / 2), (w / 2, h / 2)):
        points = _outline(KINDS[k % len(KINDS)], x + dx + 1, y + dy + 1, w / 2 - 2, h / 2 - 2)
        draw.polygon(points, fill=colours[k])
        ImageDraw.Draw(mask).polygon(points, fill=1)
    binary = np.asarray(mask, dtype=np.uint8)
    rows, cols = np.flatnonzero(binary.any(1)), np.flatnonzero(binary.any(0))
    bbox = [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]
    return {"image_id": image_id, "category_id": ids[k], "iscrowd": 1,
            "segmentation": {"counts": _run_lengths(binary), "size": [height, width]},
            "bbox": bbox, "area": float(binary.sum())}
