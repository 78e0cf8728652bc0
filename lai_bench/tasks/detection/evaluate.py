"""Detector outputs -> COCO result dicts -> pycocotools COCOeval metrics (box and mask AP, percent)."""
import contextlib
import copy
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .data import Categories

__all__ = ["METRIC_KEYS", "IOU_TYPES", "to_coco_results", "coco_metrics"]

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6], in this order
IOU_TYPES = ("bbox", "segm")


def _encode(masks: torch.Tensor) -> list[dict[str, Any]]:
    """[N, 1, H, W] mask probabilities -> compressed RLEs of the > 0.5 masks, counts as str (JSON-ready)."""
    binary = (masks[:, 0] > 0.5).numpy().astype(np.uint8)
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))  # pycocotools wants [H, W, N] Fortran
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def to_coco_results(outputs: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int], categories: Categories,
                    masks: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Box results and (with ``masks``, else []) mask results for COCO ``loadRes``, one per detection.

    ``outputs`` are torchvision's eval outputs for the images ``image_ids``: boxes xyxy in original image pixels,
    scores, labels (category index + offset, mapped back to category ids), masks [N, 1, H, W] probabilities.
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"{len(outputs)} outputs for {len(image_ids)} image ids")
    boxes_out: list[dict[str, Any]] = []
    segms_out: list[dict[str, Any]] = []
    for output, image_id in zip(outputs, image_ids):
        boxes = output["boxes"].detach().float().cpu()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        scores = output["scores"].detach().float().cpu().tolist()
        cat_ids = [categories.to_category(label) for label in output["labels"].tolist()]
        common = [{"image_id": int(image_id), "category_id": c, "score": s} for c, s in zip(cat_ids, scores)]
        boxes_out += [{**c, "bbox": b} for c, b in zip(common, xywh)]
        if masks and common:
            segms_out += [{**c, "segmentation": r} for c, r in zip(common, _encode(output["masks"].detach().cpu()))]
    return boxes_out, segms_out


def _results(coco_gt: COCO, results: list[dict[str, Any]]) -> COCO:
    """``coco_gt.loadRes(results)``, which fails on an empty list: then an empty result set built the same way."""
    if results:
        # loadRes adds keys (area, id, bbox of masks) to the dicts it gets: give it copies.
        return coco_gt.loadRes([dict(r) for r in results])
    empty = COCO()
    empty.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                     "categories": copy.deepcopy(coco_gt.dataset.get("categories", []))}
    empty.createIndex()
    return empty


def coco_metrics(coco_gt: COCO, results: list[dict[str, Any]], iou_type: str,
                 image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCOeval's six summary numbers in percent, keyed ``f"{iou_type}_{key}"`` (bbox_AP, bbox_AP50, ...).

    ``image_ids`` limits the evaluation to the images predicted (default: all of ``coco_gt``'s). No results give 0
    wherever there is ground truth; an area range without ground truth in these images (COCOeval's -1) gives nan.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown iou_type {iou_type!r}; expected one of {', '.join(IOU_TYPES)}")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the summary table
        evaluator = COCOeval(coco_gt, _results(coco_gt, results), iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted({int(i) for i in image_ids})
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats[: len(METRIC_KEYS)]
    return {f"{iou_type}_{key}": (math.nan if value < 0 else float(value) * 100)
            for key, value in zip(METRIC_KEYS, stats)}
