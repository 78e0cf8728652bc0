"""COCO object detection: a torchvision detector (Faster R-CNN, Mask R-CNN, RetinaNet; FPN) on a lai_bench backbone,
trained with the detector's own losses and evaluated with pycocotools' COCOeval (box AP, and mask AP for Mask R-CNN).
"""
import dataclasses
import math
import time
from typing import Any

import torch
from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict

from ...config import ConfigError, RunConfig
from ...config.run_config import Count
from ...config.schema import one_of
from ...core.devices import amp_dtype, autocast
from ...data import DatasetInfo
from ...models import backbone_info, list_backbones
from ...runtime.distributed import World
from ..base import DataSet, Task
from ..registry import register_task
from .bench import bench_detector, check_bench
from .model import DETECTOR_NAMES, DETECTORS
from .report import FIGURE_FILES, TABLE_FILES, detection_report

SMOKE_SIZE = 128  # the image side of a detection grid's smoke runs
# The losses torchvision's detectors return in training mode, per detector.
LOSSES = {
    "faster_rcnn": ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"),
    "mask_rcnn": ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"),
    "retinanet": ("classification", "bbox_regression"),
}
# mmdetection's RetinaNet 1x clips the gradients' global norm at 35; its R-CNN configs do not clip.
GRAD_CLIP = {"retinanet": 35.0}
# The record reports images/s of inference at this many images per step (mmdetection's test batch is 1 per GPU;
# 2 is the benchmark batch).
INFER_BATCH = 2


# What a detection run's images are resized to (shorter side, longer side at most): mmdetection's 1333x800.
DETECTION_SIZE = {"min_size": 800, "max_size": 1333}
# Where a recipe's value depends on the detector: mmdetection's RetinaNet 1x runs at lr 0.01 (batch 16).
RECIPE_VARIANTS: dict[tuple[str, str], dict[str, Any]] = {("coco_1x", "retinanet"): {"lr": 0.01}}


@with_config(ConfigDict(extra="forbid"))
class DetectionOptions(TypedDict, total=False):
    """A detection run's `task_opts`."""

    detector: one_of(DETECTORS)  # torchvision's, with FPN
    min_size: Count  # images resized so their shorter side is this (the detector's transform)
    max_size: Count  # ... and their longer side at most this


def _coco_files(config: RunConfig) -> None:
    from .data import check_coco

    check_coco(config.data_root)


@register_task("detection")
class DetectionTask(Task):
    """A torchvision detector with FPN on the run's method and depth; COCO (or synthetic shapes) data."""

    headline_metric, headline_label = "bbox_AP", "box AP"
    options = DetectionOptions
    value_names = DETECTOR_NAMES
    option_defaults = {"detector": DETECTORS[0], **DETECTION_SIZE}
    datasets = (
        DataSet("synthetic", "coloured shapes on noise with boxes and masks, built from the seed (options: "
                "synthetic.image_size, train_size, eval_size); no files", synthetic=True, title="Synthetic"),
        DataSet("coco", "COCO 2017: DATA_ROOT/train2017, val2017 and annotations/instances_{train,val}2017.json",
                _coco_files, title="COCO"),
    )
    report = classmethod(detection_report)
    report_files = {"tables": TABLE_FILES, "figures": FIGURE_FILES}
    bench_row = classmethod(bench_detector)
    bench_check = classmethod(check_bench)
    bench_defaults = {"depth": "50", "batch": 2, "num_classes": 80, "size": "800,1333"}  # ResNet-50, 2 images/GPU

    @classmethod
    def resolve(cls, config: RunConfig) -> RunConfig:
        """The options' defaults, and the recipe's values for this detector (RetinaNet's lr) where unset."""
        c = super().resolve(config)
        variant = RECIPE_VARIANTS.get((c.recipe, c.task_opts.get("detector")), {})
        return dataclasses.replace(c, **{k: v for k, v in variant.items() if getattr(c, k) is None})

    @classmethod
    def shrink(cls, quick: RunConfig, original: RunConfig, processes: int, steps: int) -> int:
        # Shapes on noise at a small size: a detector at COCO's 800x1333 takes seconds a step even on a GPU.
        batch = 2 * processes
        quick.dataset, quick.download = cls.datasets[0].name, False
        quick.synthetic = {"image_size": SMOKE_SIZE, "train_size": batch * steps, "eval_size": batch}
        quick.task_opts = {**quick.task_opts, "min_size": SMOKE_SIZE, "max_size": SMOKE_SIZE * 3 // 2}
        quick.warmup_iters, quick.pretrained = 0, None  # the ImageNet weights may not exist yet
        return batch

    @classmethod
    def check_config(cls, config: RunConfig) -> None:
        c = config
        if not backbone_info(c.backbone).detection:
            allowed = [name for name in list_backbones() if backbone_info(name).detection]
            raise ConfigError(f"task detection runs on the {' or '.join(allowed)} backbone (FPN over its 4 stages), "
                              f"got backbone {c.backbone!r}; allowed: {', '.join(allowed)}")
        if c.compile:
            raise ConfigError("compile is not supported for task detection (torchvision's detectors change shape "
                              "every image); allowed: compile false")
        if c.label_smoothing:
            raise ConfigError(f"label_smoothing {c.label_smoothing} applies to classification; allowed with task "
                              "detection: 0")
        size = c.task_opts
        if size["min_size"] > size["max_size"]:
            raise ConfigError(f"task_opts.min_size {size['min_size']} is larger than task_opts.max_size "
                              f"{size['max_size']}; allowed: min_size <= max_size")

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.detector = config.task_opts["detector"]
        self.min_size, self.max_size = config.task_opts["min_size"], config.task_opts["max_size"]
        self.sum_keys = ("loss", "n", *LOSSES[self.detector])
        self.grad_clip_norm = GRAD_CLIP.get(self.detector)
        self.masks = self.detector == "mask_rcnn"
        self.eval_set: Any = None  # the eval split's COCO ground truth and category map, set by build_data
        self.backbone_init = "random"  # or what `pretrained` loaded, set by build_model

    def build_data(self, world: World, batch_size: int, eval_batch_size: int) -> tuple[Any, Any, DatasetInfo]:
        from .data import build_detection_loaders
        from .model import label_offset

        c = self.config
        train, evaluation, info, self.eval_set = build_detection_loaders(
            c.dataset, batch_size, eval_batch_size, data_root=c.data_root, masks=self.masks,
            label_offset=label_offset(self.detector), synthetic=c.synthetic or None, workers=c.workers, seed=c.seed,
            device=str(world.device), distributed=world.size > 1, num_replicas=world.size, rank=world.rank)
        return train, evaluation, info

    def build_model(self, info: DatasetInfo) -> torch.nn.Module:
        from .model import backbone_of, build_detector
        from .pretrained import load_backbone

        c = self.config
        model = build_detector(self.detector, c.method, c.depth, info.num_classes, min_size=self.min_size,
                               max_size=self.max_size, drop_path=c.drop_path, **c.model_opts)
        if c.pretrained is not None:
            # Frozen BatchNorm keeps the same statistics and affine names, so the weights load after freezing too.
            self.backbone_init = load_backbone(backbone_of(model), c.pretrained, c.method, c.depth, c.model_opts)
        return model

    def to_device(self, batch: Any, device: torch.device) -> Any:
        images, targets = batch
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
                   for t in targets]
        return images, targets

    def step(self, net: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets = batch
        losses = net(images, targets)
        loss = sum(losses[k] for k in LOSSES[self.detector])
        n = len(images)
        sums = {k: float(losses[k].detach()) * n for k in LOSSES[self.detector]}
        return loss, {"loss": float(loss.detach()) * n, "n": n, **sums}

    def train_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = sums["n"]
        return {"train_loss": sums["loss"] / n, **{f"train_{k}": sums[k] / n for k in LOSSES[self.detector]}}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, loader: Any, world: World) -> dict[str, float]:
        """COCO metrics over the eval split: every process predicts its shard, rank 0 runs COCOeval on all of them.

        With `max_eval_batches` only the images predicted are evaluated (COCOeval's imgIds), so a capped smoke
        evaluation scores what it saw.
        """
        from .evaluate import coco_metrics, to_coco_results

        c, device = self.config, world.device
        model.eval()
        boxes, segms, image_ids = [], [], []
        for i, (images, targets) in enumerate(loader):
            if c.max_eval_batches is not None and i >= c.max_eval_batches:
                break
            images = [image.to(device, non_blocking=True) for image in images]
            with autocast(device, amp_dtype(c.amp, device)):
                outputs = model(images)
            outputs = [{k: v.float().cpu() for k, v in out.items()} for out in outputs]
            ids = [int(t["image_id"]) for t in targets]
            box, segm = to_coco_results(outputs, ids, self.eval_set.categories, self.masks)
            boxes += box
            segms += segm
            image_ids += ids
        gathered = world.gather((boxes, segms, image_ids))
        metrics: dict[str, float] | None = None
        if world.is_main:
            boxes = [r for part in gathered for r in part[0]]
            segms = [r for part in gathered for r in part[1]]
            image_ids = sorted({i for part in gathered for i in part[2]})
            metrics = coco_metrics(self.eval_set.coco, boxes, "bbox", image_ids)
            if self.masks:
                metrics.update(coco_metrics(self.eval_set.coco, segms, "segm", image_ids))
            metrics = {f"eval_{k}": v for k, v in metrics.items()}
            metrics["eval_images"] = len(image_ids)
        return world.broadcast(metrics)

    def record_metrics(self, history: list[dict[str, float]]) -> dict[str, Any]:
        if not history:
            return {}
        keys = [k[len("eval_"):] for k in history[-1] if k.startswith(("eval_bbox_", "eval_segm_"))]
        ap = [_number(h.get("eval_bbox_AP")) for h in history]
        best = max(range(len(ap)), key=ap.__getitem__)
        out: dict[str, Any] = {}
        for key in keys:
            values = [v for h in history if (v := _number(h.get(f"eval_{key}"))) != -math.inf]
            out[f"{key}_final"] = history[-1][f"eval_{key}"]
            out[f"{key}_best"] = max(values, default=math.nan)
        return {**out, "best_epoch": history[best]["epoch"], "train_loss_final": history[-1]["train_loss"]}

    def epoch_summary(self, entry: dict[str, float]) -> str:
        mask = f" mask AP {entry['eval_segm_AP']:.2f}" if "eval_segm_AP" in entry else ""
        return f"train_loss {entry['train_loss']:.4f} box AP {entry['eval_bbox_AP']:.2f}{mask}"

    def headline(self, metrics: dict[str, Any]) -> str:
        final, best = metrics.get("bbox_AP_final", math.nan), metrics.get("bbox_AP_best", math.nan)
        mask = f", mask AP final {metrics['segm_AP_final']:.2f}" if "segm_AP_final" in metrics else ""
        return f"box AP final {final:.2f} best {best:.2f}{mask}"

    def measure(self, model: torch.nn.Module, info: DatasetInfo, world: World) -> dict[str, Any]:
        """Params (detector, backbone); with `measure` FLOPs at mmdetection's 1280x800 (fvcore, batch 1) and
        inference images/s, timed at the run's image size (min_size x max_size, e.g. 800x1333), INFER_BATCH images a
        step."""
        from ...runtime.measure import count_params
        from .flops import count_detector_flops
        from .model import backbone_of

        c, device = self.config, world.device
        out: dict[str, Any] = {"params": count_params(model), "backbone_params": count_params(backbone_of(model)),
                               "backbone_init": self.backbone_init}
        if c.measure:  # tracing a detector at 1280x800 takes fvcore 20-30 s on a CPU: part of the measurement
            flops = count_detector_flops(model, 800, 1280)
            out.update(flops=flops.total, flops_input=[800, 1280], flops_unsupported=flops.unsupported,
                       throughput=time_inference(model, device, c, INFER_BATCH, c.measure_steps,
                                                  (self.min_size, self.max_size)))
        return out


@torch.no_grad()
def time_inference(model: torch.nn.Module, device: torch.device, c: RunConfig, batch: int, steps: int,
                   size: tuple[int, int]) -> dict[str, Any]:
    """Median seconds of one eval forward over `batch` random images of min_size x max_size (after one warm-up)."""
    model.eval()
    images = [torch.rand(3, *size, device=device) for _ in range(batch)]
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with autocast(device, amp_dtype(c.amp, device)):
            model(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    step = sorted(times)[len(times) // 2]
    return {"infer_images_per_s": batch / step, "infer_step_time_s": step, "batch_size": batch,
            "image_size": list(size)}


def _number(value: Any) -> float:
    """A metric for ranking epochs: NaN (COCOeval's 'no ground truth here') ranks lowest."""
    return -math.inf if value is None or value != value else float(value)
