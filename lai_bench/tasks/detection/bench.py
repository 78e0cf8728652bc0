"""The detection task's bench step: a detector's train step and inference on synthetic COCO-like batches, and what
it costs (python -m lai_bench.bench --task detection)."""
import argparse
import copy
import statistics
from collections.abc import Callable
from typing import Any

import torch

from ...core.devices import autocast
from ...runtime.measure import _time_steps, count_params, track_peak_memory

BOXES_PER_IMAGE = 3  # synthetic targets of a detection step
# The detection train step's lr: small, so a few steps on random targets keep the losses (and the work) finite.
DETECTION_LR = 1e-4


def detection_batch(size: tuple[int, int], batch: int, num_classes: int, detector: str,
                    device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Deterministic random images in [0, 1] and targets as the COCO loaders give them: a few boxes (xyxy) per image,
    labels category index + the detector's label offset, filled-box masks for Mask R-CNN."""
    from .model import label_offset

    gen = torch.Generator().manual_seed(0)
    height, width = size
    scale = torch.tensor([width, height], dtype=torch.float32)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, height, width, generator=gen).to(device))
        extent = (0.1 + 0.4 * torch.rand(BOXES_PER_IMAGE, 2, generator=gen)) * scale
        corner = torch.rand(BOXES_PER_IMAGE, 2, generator=gen) * (scale - extent)
        boxes = torch.cat([corner, corner + extent], dim=1)
        labels = torch.randint(0, num_classes, (BOXES_PER_IMAGE,), generator=gen) + label_offset(detector)
        target = {"boxes": boxes.to(device), "labels": labels.to(device)}
        if detector == "mask_rcnn":
            masks = torch.zeros(BOXES_PER_IMAGE, height, width, dtype=torch.uint8)
            for mask, (x0, y0, x1, y1) in zip(masks, boxes.round().int().tolist()):
                mask[y0:y1, x0:x1] = 1
            target["masks"] = masks.to(device)
        targets.append(target)
    return images, targets


def detection_step(model: torch.nn.Module, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]],
                   device: torch.device, variant: tuple, train: bool) -> Callable[[], None]:
    """One train step (losses summed, backward, SGD on the trainable parameters) or inference pass, as a closure
    over a private copy of the detector: training changes weights, and the caller's model stays as built."""
    _, amp_dtype, channels_last, _ = variant
    net = copy.deepcopy(model).to(device).train(train)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if not train:

        def infer_step() -> None:
            with torch.inference_mode(), autocast(device, amp_dtype):
                net(images)

        return infer_step
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=DETECTION_LR, momentum=0.9)

    def train_step() -> None:
        with autocast(device, amp_dtype):
            loss = sum(net(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return train_step


def bench_detector(cls: Any, method: str, args: argparse.Namespace, depth: int, device: torch.device,
                   variant: tuple, steps: int, warmup: int, reference: bool = False) -> dict[str, Any]:
    """The detection task's bench step (`Task.bench_row`): the run's detector on the method's ResNet at `depth`,
    fed --size images (the detector's transform keeps that size)."""
    from ...summary.display import detector_name
    from .model import build_detector

    detector = args.task_opts["detector"]
    height, width = args.size
    model = build_detector(detector, method, depth, args.num_classes, min_size=min(height, width),
                           max_size=max(height, width))
    m = measure_detector(model, args, device, variant, steps, warmup, detector)
    return {**m, "model": f"{detector_name(detector)} (FPN) on ResNet-{depth}, {height}x{width} images",
            "input": f"{height}x{width}"}


def check_bench(cls: Any, args: argparse.Namespace) -> None:
    """What the detection bench cannot measure: a backbone without 4-level features, the per-layer (loop) rows,
    torch.compile; --size parsed."""
    from ...models import backbone_info, list_backbones

    able = [name for name in list_backbones() if backbone_info(name).detection]
    if args.backbone is None:
        args.backbone = able[0]
    if not backbone_info(args.backbone).detection:
        raise ValueError(f"--task detection runs on a backbone with 4-level features (an FPN over its stages), "
                             f"got --backbone {args.backbone}; allowed: {', '.join(able)}")
    if args.per_layer:
        raise ValueError("--task detection measures each method's fast implementation; the per-layer (loop) rows "
                         "are for classification")
    if args.compile:
        raise ValueError("--compile is not supported with --task detection (torchvision's detectors change shape "
                         "with every image)")


def measure_detector(model: torch.nn.Module, args: argparse.Namespace, device: torch.device, variant: tuple,
                     steps: int, warmup: int, detector: str) -> dict[str, Any]:
    """What measure_model gives for a classifier, for a detector: params (whole and backbone), FLOPs (fvcore at the
    --size image), train-step and inference times (medians), train-step memory."""
    from .flops import count_detector_flops
    from .model import backbone_of

    images, targets = detection_batch(args.size, args.batch, args.num_classes, detector, device)
    flops = count_detector_flops(model, *args.size)
    train_step = detection_step(model, images, targets, device, variant, train=True)
    with track_peak_memory(device) as memory:  # two steps: gradients and momentum exist during the second
        train_step()
        train_step()
    train = statistics.median(_time_steps(train_step, steps, warmup, device))
    del train_step  # its copy of the model and optimizer state go before the inference copy comes
    infer_step = detection_step(model, images, targets, device, variant, train=False)
    infer = statistics.median(_time_steps(infer_step, steps, warmup, device))
    return {"params": count_params(model), "backbone_params": count_params(backbone_of(model)), "flops": flops.total,
            "train_step_time_s": train, "train_samples_per_s": args.batch / train, "infer_step_time_s": infer,
            "infer_samples_per_s": args.batch / infer, "peak_memory_bytes": memory.peak_bytes,
            "peak_memory_kind": memory.kind, "compile_s": None}


