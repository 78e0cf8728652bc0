"""COCO data, shapes and COCOeval plumbing of lai_bench.tasks.detection on a tiny COCO 2017 layout (CPU, seconds)."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from coco_files import write_coco
from pycocotools import mask as mask_utils

from lai_bench.data import DatasetError, DatasetNotFoundError
from lai_bench.tasks.detection.data import Categories, build_detection_datasets, build_detection_loaders
from lai_bench.tasks.detection.evaluate import METRIC_KEYS, coco_metrics, to_coco_results
from lai_bench.tasks.detection.shapes import make_shapes

OFFSET = 1  # the R-CNNs' label offset (0 = background)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco"), train_images=6, val_images=4)


def loaders(root, **kwargs):
    opts = dict(data_root=root, masks=True, label_offset=OFFSET, workers=0, seed=0)
    return build_detection_loaders("coco", 2, 2, **{**opts, **kwargs})


def as_outputs(targets):
    """Ground-truth targets as detector outputs: every object found with score 1, masks as [N, 1, H, W] floats."""
    return [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"])),
             "masks": t["masks"][:, None].float()} for t in targets]


def ground_truth_results(eval_loader, categories):
    outputs, ids = [], []
    for _, targets in eval_loader:
        outputs += as_outputs(targets)
        ids += [t["image_id"] for t in targets]
    return to_coco_results(outputs, ids, categories, masks=True)


def same_batch(a, b):
    (images_a, targets_a), (images_b, targets_b) = a, b
    return (len(images_a) == len(images_b) and all(torch.equal(x, y) for x, y in zip(images_a, images_b))
            and all(ta.keys() == tb.keys() and all(torch.equal(torch.as_tensor(ta[k]), torch.as_tensor(tb[k]))
                                                   for k in ta) for ta, tb in zip(targets_a, targets_b)))


def test_ground_truth_as_predictions_scores_100_and_nothing_scores_0(coco):
    _, eval_loader, _, eval_set = loaders(coco.root)
    boxes, segms = ground_truth_results(eval_loader, eval_set.categories)
    assert {r["category_id"] for r in boxes} <= set(coco.category_ids)  # labels went back to the file's ids
    json.dumps(segms)  # RLE counts are str, ready for a results file
    for iou_type, results in (("bbox", boxes), ("segm", segms)):
        metrics = coco_metrics(eval_set.coco, results, iou_type)
        assert list(metrics) == [f"{iou_type}_{k}" for k in METRIC_KEYS]
        assert metrics[f"{iou_type}_AP"] == pytest.approx(100.0)
        assert metrics[f"{iou_type}_AP50"] == pytest.approx(100.0)
        empty = coco_metrics(eval_set.coco, [], iou_type)
        assert empty[f"{iou_type}_AP"] == 0.0 and empty[f"{iou_type}_AP50"] == 0.0
        # An area range without ground truth is COCOeval's -1: nan, with or without predictions.
        assert math.isnan(metrics[f"{iou_type}_APl"]) and math.isnan(empty[f"{iou_type}_APl"])
    # A capped evaluation scores the images it predicted, not the whole split.
    first = eval_set.image_ids[0]
    seen = [r for r in boxes if r["image_id"] == first]
    assert coco_metrics(eval_set.coco, seen, "bbox", [first])["bbox_AP"] == pytest.approx(100.0)
    assert coco_metrics(eval_set.coco, seen, "bbox")["bbox_AP"] < 100.0


def test_labels_map_back_to_category_ids_and_a_wrong_mapping_scores_0(coco):
    _, eval_loader, _, eval_set = loaders(coco.root, masks=False)
    categories = eval_set.categories
    assert categories.ids == coco.category_ids == [2, 5, 9]
    assert [categories.to_label(i) for i in categories.ids] == [1, 2, 3]
    assert [categories.to_category(label) for label in (1, 2, 3)] == [2, 5, 9]
    with pytest.raises(ValueError, match="label 4 is outside 1..3"):
        categories.to_category(4)
    with pytest.raises(ValueError, match=r"unknown category id 3; the categories are \[2, 5, 9\]"):
        categories.to_label(3)
    boxes = []
    for _, targets in eval_loader:
        # The bug the mapping prevents: a label taken for a category id.
        boxes += [{"image_id": t["image_id"], "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                   "score": 1.0} for t in targets for label, (x1, y1, x2, y2) in zip(t["labels"], t["boxes"].tolist())]
    assert coco_metrics(eval_set.coco, boxes, "bbox")["bbox_AP"] == 0.0


def test_loaded_targets_follow_the_annotation_files(coco):
    train_loader, eval_loader, info, eval_set = loaders(coco.root)
    assert (info.name, info.num_classes, info.image_size) == ("coco", 3, 0)
    assert (info.train_size, info.eval_size) == (coco.train_images - 1, coco.val_images)
    train_json = json.loads(coco.train_json.read_text())
    objects = {}  # image id -> its non-crowd annotations, as (category id, xyxy box)
    for a in train_json["annotations"]:
        if not a["iscrowd"]:
            x, y, w, h = a["bbox"]
            objects.setdefault(a["image_id"], []).append((a["category_id"], [x, y, x + w, y + h]))
    train_ids = set()
    for image, target in train_loader.dataset.dataset:  # every sample: the loader drops a partial batch
        train_ids.add(target["image_id"])
        height, width = image.shape[-2:]
        assert image.dtype == torch.float32 and image.shape[0] == 3 and 0 <= image.min() <= image.max() <= 1
        assert (height, width) == (96, 112)  # no resize: the detector's transform does it
        assert target["labels"].dtype == torch.int64
        assert sorted(target["labels"].tolist()) == sorted(
            OFFSET + coco.category_ids.index(c) for c, _ in objects[target["image_id"]])
        assert target["masks"].shape == (len(target["labels"]), height, width)
        assert target["masks"].dtype == torch.uint8
        boxes = target["boxes"]
        assert ((boxes[:, :2] >= 0) & (boxes[:, 2:] <= torch.tensor([width, height]))).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        expected = torch.tensor([box for _, box in objects[target["image_id"]]])
        mirrored = expected[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([width, 0, width, 0])
        assert torch.allclose(boxes, expected) or torch.allclose(boxes, mirrored)  # flipped or not
        if target["image_id"] == 1:  # the image with the crowd region: its other objects only
            assert len(boxes) == sum(a["image_id"] == 1 for a in train_json["annotations"]) - 1
    assert coco.empty_ids["train"] not in train_ids
    assert train_ids == set(objects)
    eval_targets = {t["image_id"]: t for _, targets in eval_loader for t in targets}
    assert sorted(eval_targets) == eval_set.image_ids == list(range(7, 7 + coco.val_images))
    empty = eval_targets[coco.empty_ids["val"]]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,) and empty["masks"].shape == (0, 96, 112)


def test_a_flipped_sample_has_its_boxes_and_masks_mirrored(coco):
    train_loader, _, _, _ = loaders(coco.root)
    samples = train_loader.dataset  # SeededSamples: item (index, seed)
    (image, target), width = samples[(0, 0)], 112
    outcomes = [samples[(0, seed)] for seed in range(1, 12)]
    flipped = [o for o in outcomes if not torch.equal(o[0], image)]
    assert 0 < len(flipped) < len(outcomes)  # a coin per sample, seeded
    other = flipped[0]  # the mirror image of the first, whichever of the two was flipped
    mirrored = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([width, 0, width, 0])
    assert torch.equal(other[0], image.flip(-1))
    assert torch.allclose(other[1]["boxes"], mirrored)
    assert torch.equal(other[1]["masks"], target["masks"].flip(-1))
    assert torch.equal(other[1]["labels"], target["labels"])


def test_same_seed_and_epoch_give_the_same_batches_whatever_the_workers(coco):
    def epoch(loader, e):
        loader.sampler.set_epoch(e)
        return list(loader)

    a, b = loaders(coco.root, seed=4)[0], loaders(coco.root, seed=4, workers=2)[0]
    first = epoch(a, 1)
    assert all(same_batch(x, y) for x, y in zip(first, epoch(b, 1)))
    assert len(first) == (coco.train_images - 1) // 2  # last partial batch dropped
    assert all(same_batch(x, y) for x, y in zip(first, epoch(a, 1)))  # replayed, as a resumed run does
    orders = {tuple(t["image_id"] for _, targets in epoch(a, e) for t in targets) for e in range(4)}
    assert len(orders) > 1  # reshuffled across epochs


def test_ranks_split_the_one_process_batches(coco):
    single = list(loaders(coco.root, masks=False)[0])
    # Per-rank batch 1 under 2 ranks: together, the one-process batch of 2, flips included.
    halves = [list(build_detection_loaders("coco", 1, 1, data_root=coco.root, masks=False, label_offset=OFFSET,
                                           workers=0, distributed=True, num_replicas=2, rank=r)[0])
              for r in range(2)]
    assert len(halves[0]) == len(halves[1]) == len(single)
    for k, (images, targets) in enumerate(single):
        for r in range(2):
            assert torch.equal(halves[r][k][0][0], images[r])
            assert torch.equal(halves[r][k][1][0]["boxes"], targets[r]["boxes"])
    _, eval_loader, _, _ = build_detection_loaders("coco", 1, 1, data_root=coco.root, masks=False, workers=0,
                                                   distributed=True, num_replicas=3, rank=1)
    assert [t["image_id"] for _, targets in eval_loader for t in targets] == [8]  # every third, no padding


def test_missing_files_are_named_with_where_coco_comes_from(tmp_path):
    files = write_coco(tmp_path, train_images=2, val_images=2)
    files.val_json.unlink()
    shutil.rmtree(files.train_dir)
    with pytest.raises(DatasetNotFoundError) as err:
        loaders(tmp_path)
    message = str(err.value)
    assert str(files.val_json) in message and str(files.train_dir) in message
    assert str(files.train_json) not in message and str(files.val_dir) + "," not in message
    assert "https://cocodataset.org/#download" in message and "annotations_trainval2017.zip" in message


def test_a_corrupt_annotation_file_is_named(tmp_path):
    files = write_coco(tmp_path, train_images=2, val_images=2)
    files.train_json.write_text(files.train_json.read_text()[:100])
    with pytest.raises(DatasetError, match=f"{files.train_json} is not valid JSON"):
        loaders(tmp_path)


def test_an_unknown_category_names_the_annotation(tmp_path):
    files = write_coco(tmp_path, train_images=3, val_images=2)
    data = json.loads(files.val_json.read_text())
    bad = data["annotations"][-1]
    bad["category_id"] = 7
    files.val_json.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as err:
        loaders(tmp_path)
    message = str(err.value)
    assert str(files.val_json) in message and f"annotation {bad['id']}" in message
    assert "category_id 7" in message and "[2, 5, 9]" in message


def test_synthetic_shapes_train_and_evaluate_with_the_same_code():
    options = dict(num_classes=4, image_size=64, train_size=6, eval_size=5, seed=2)
    train_loader, eval_loader, info, eval_set = build_detection_loaders(
        "synthetic", 3, 2, masks=True, label_offset=0, synthetic=options, workers=0)
    assert (info.name, info.num_classes, info.image_size, info.train_size, info.eval_size) == ("synthetic", 4, 64, 6, 5)
    assert eval_set.categories.ids == [2, 5, 9, 14]
    images, targets = next(iter(train_loader))
    assert len(images) == 3 and images[0].shape == (3, 64, 64)
    assert all(0 <= t["labels"].min() and t["labels"].max() < 4 for t in targets)
    boxes, segms = ground_truth_results(eval_loader, eval_set.categories)
    assert coco_metrics(eval_set.coco, boxes, "bbox")["bbox_AP"] == pytest.approx(100.0)
    assert coco_metrics(eval_set.coco, segms, "segm")["segm_AP"] == pytest.approx(100.0)
    with pytest.raises(TypeError, match="unknown synthetic options"):
        build_detection_datasets("synthetic", synthetic={"classes": 3})


def test_shapes_are_deterministic_and_crowds_are_coco_rle():
    images, data = make_shapes(5, (48, 64), num_categories=3, seed=1, empty_every=5, crowd=True)
    again, data_again = make_shapes(5, (48, 64), num_categories=3, seed=1, empty_every=5, crowd=True)
    assert data == data_again and all(np.array_equal(a, b) for a, b in zip(images, again))
    assert images[0].shape == (48, 64, 3) and images[0].dtype == np.uint8
    assert [c["id"] for c in data["categories"]] == [2, 5, 9]
    assert not any(a["image_id"] == 5 for a in data["annotations"])  # the empty one
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["image_id"] == 1
    rle = mask_utils.frPyObjects(crowd[0]["segmentation"], 48, 64)
    assert mask_utils.area(rle) == crowd[0]["area"]
    assert list(mask_utils.toBbox(rle)) == crowd[0]["bbox"]
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 48 and w >= 1 and h >= 1
    with pytest.raises(ValueError, match="bad shapes options"):
        make_shapes(1, 8)


def test_categories_offset_zero():
    categories = Categories([{"id": 9, "name": "c"}, {"id": 2, "name": "a"}], offset=0)
    assert (categories.ids, categories.names, len(categories)) == ([2, 9], ["a", "c"], 2)
    assert categories.to_label(9) == 1 and categories.to_category(0) == 2
