"""python -m lai_bench.bench --task detection on a tiny detector: CSV rows as the classification bench writes them,
synthetic targets the detectors take, clear errors for options that do not fit detection."""

import csv
import json
import math

import pytest
import torch

from lai_bench.bench.cli import main
from lai_bench.bench.output import COLUMNS
from lai_bench.runtime.measure import count_params
from lai_bench.tasks.detection.bench import detection_batch
from lai_bench.tasks.detection.model import backbone_of, build_detector, label_offset


@pytest.mark.slow
def test_a_tiny_detection_benchmark_writes_rows_with_finite_times(tmp_path, capsys):
    code = main(["--task", "detection", "--methods", "none,dla_l", "--depth", "10", "--size", "64,96", "--batch", "2",
                 "--steps", "1", "--warmup", "0", "--rounds", "1", "--out", str(tmp_path), "--threads", "1"])
    assert code == 0
    [path] = tmp_path.glob("bench-faster_rcnn-d10-b2-cpu-*.csv")
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == COLUMNS and [r["method"] for r in rows] == ["none", "dla_l"]
    for r in rows:
        assert (r["task"], json.loads(r["task_opts"])["detector"], r["backbone"], r["depth"], r["batch"],
                r["image_size"], r["model"]) == ("detection", "faster_rcnn", "imagenet", "10", "2", "64x96",
                                                 "Faster R-CNN (FPN) on ResNet-10, 64x96 images")
        model = build_detector("faster_rcnn", r["method"], 10, 80, min_size=64, max_size=96)
        assert int(r["params"]) == count_params(model)
        assert int(r["backbone_params"]) == count_params(backbone_of(model)) < int(r["params"])
        for key in ("flops", "train_step_s", "infer_step_s", "train_samples_per_s", "infer_samples_per_s"):
            assert math.isfinite(float(r[key])) and float(r[key]) > 0, key
        assert float(r["train_samples_per_s"]) == pytest.approx(2 / float(r["train_step_s"]))
        ratio = float(r["train_step_s"]) / float(rows[0]["train_step_s"])
        assert float(r["train_ratio_vs_resnet"]) == pytest.approx(ratio)
        assert int(r["peak_memory_bytes"]) >= 0 and r["peak_memory_kind"] == "cpu_rss_growth"
    assert path.with_suffix(".png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "DLA-L" in printed and "x ResNet" in printed and f"wrote {path}" in printed


@pytest.mark.parametrize("detector", ["faster_rcnn", "mask_rcnn", "retinanet"])
def test_synthetic_targets_are_boxes_inside_the_image_with_offset_labels(detector):
    images, targets = detection_batch((64, 96), 2, 5, detector, torch.device("cpu"))
    again = detection_batch((64, 96), 2, 5, detector, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(images, again[0]))  # the same batch for every method
    assert [tuple(image.shape) for image in images] == [(3, 64, 96)] * 2
    offset = label_offset(detector)
    for target in targets:
        boxes, labels = target["boxes"], target["labels"]
        assert boxes.shape == (3, 4) and labels.dtype == torch.int64
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 64).all()
        assert (boxes[:, 2:] - boxes[:, :2] >= 0.1 * torch.tensor([96, 64])).all()
        assert labels.min() >= offset and labels.max() <= 4 + offset
        assert ("masks" in target) == (detector == "mask_rcnn")
        if detector == "mask_rcnn":
            masks = target["masks"]
            assert masks.shape == (3, 64, 96) and masks.dtype == torch.uint8
            for mask, (x0, y0, x1, y1) in zip(masks, boxes.round().int().tolist()):
                assert mask.sum() == (x1 - x0) * (y1 - y0) == mask[y0:y1, x0:x1].sum()


@pytest.mark.parametrize("args,message", [
    (["--task", "detection", "--backbone", "cifar"],
     "--task detection runs on a backbone with 4-level features (an FPN over its stages), got --backbone cifar; "
     "allowed: imagenet"),
    (["--task", "detection", "--compile"], "--compile is not supported with --task detection"),
    (["--task", "detection", "--methods", "dla_b_loop"], "the per-layer (loop) rows are for classification"),
    (["--task", "detection", "--loops"], "the per-layer (loop) rows are for classification"),
    (["--task", "detection", "--size", "64"], "--size takes the image height and width as H,W"),
    (["--task", "detection", "--size", "16,96"], "--size must be at least 32,32"),
    (["--task", "detection", "--depth", "20"], "ImageNet depth 20 is not a ResNet"),
    (["--size", "64,96"], "--size: task classification's bench step takes no image size (allowed: no --size)"),
    (["--task-opt", "detector=mask_rcnn"], "--task-opt: unknown option 'detector' for task classification"),
    (["--task", "detection", "--task-opt", "detector=yolo"], "--task-opt.detector must be one of faster_rcnn, "),
    (["--task", "detektion"], "--task: unknown task 'detektion' (did you mean 'detection'?)"),
])
def test_options_that_do_not_fit_the_task_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_help_shows_the_detection_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: classification)", "(default: the task's: detection: detector faster_rcnn, min_size "
                    "800, max_size 1333)", "(default: detection 800,1333)", "(default: the task's (detection 50), else "
                    "the backbone's: cifar 164, deit_base 12,", "(default: classification 128, detection 2)"):
        assert default in text, default


def test_the_detection_bench_chart_names_the_detector_and_reads():
    from test_figures import assert_readable, bench_rows

    from lai_bench.bench.output import speed_figure

    rows = [{**r, "task": "detection", "task_opts": '{"detector": "mask_rcnn"}', "backbone": "imagenet",
             "model": "Mask R-CNN (FPN) on ResNet-50, 800x1333 images", "image_size": "800x1333"}
            for r in bench_rows((50,)) if r["impl"] == "fast"]
    fig = speed_figure(rows)
    assert_readable(fig)
    assert fig._suptitle.get_text().startswith("Mask R-CNN (FPN) on ResNet-50, 800x1333 images, batch 8")
