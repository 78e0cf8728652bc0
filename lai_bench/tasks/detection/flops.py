"""A detector's FLOPs as mmdetection's get_flops counts them: batch 1, a 1280x800 tensor straight into the network
(no resize, normalisation or padding), backbone + FPN, the RPN head or RetinaNet head on every level, and for the
R-CNNs the box head on 1000 fixed proposals (mmdetection's `forward_dummy`), Mask R-CNN's mask head on the first 100
of them. Anchors, box decoding and NMS are not counted; RoIAlign is an op fvcore cannot count (listed as such)."""
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN, RetinaNet

from ...runtime.measure import FlopReport, count_flops

PROPOSALS = 1000  # mmdetection's forward_dummy: 1000 proposals, the first 100 through the mask head
MASK_PROPOSALS = 100


def fixed_proposals(height: int, width: int, count: int = PROPOSALS) -> Tensor:
    """`count` valid boxes of many sizes over a `height` x `width` image (xyxy), the same on every call."""
    gen = torch.Generator().manual_seed(0)
    centre = torch.rand(count, 2, generator=gen) * torch.tensor([width, height])
    size = 16 * 2 ** (torch.rand(count, 2, generator=gen) * 5)  # 16-512 px: every FPN level gets some
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    limit = torch.tensor([width, height, width, height]) - 1
    return boxes.clamp(min=torch.zeros(4), max=limit)


class DetectorFlops(nn.Module):
    """The network part of a torchvision detector on one image tensor, as fvcore can trace it (tensors out)."""

    def __init__(self, model: nn.Module, height: int, width: int) -> None:
        super().__init__()
        self.model = model
        self.image_size = (height, width)
        device = next(model.parameters()).device
        self.register_buffer("proposals", fixed_proposals(height, width).to(device), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        model = self.model
        features = model.backbone(images)
        levels = list(features.values())
        if isinstance(model, RetinaNet):
            return model.head.classification_head(levels), model.head.regression_head(levels)
        objectness, deltas = model.rpn.head(levels)
        heads = model.roi_heads
        shapes = [self.image_size]
        boxes = self.proposals.to(levels[0].dtype)
        box_features = heads.box_head(heads.box_roi_pool(features, [boxes], shapes))
        outputs: Sequence[Tensor] = (*objectness, *deltas, *heads.box_predictor(box_features))
        if isinstance(model, MaskRCNN):
            masks = heads.mask_head(heads.mask_roi_pool(features, [boxes[:MASK_PROPOSALS]], shapes))
            outputs = (*outputs, heads.mask_predictor(masks))
        return tuple(outputs)


def count_detector_flops(model: nn.Module, height: int = 800, width: int = 1280) -> FlopReport:
    """fvcore FLOPs of `model` (a build_detector model) at batch 1 on a `height` x `width` image, eval mode."""
    return count_flops(DetectorFlops(model, height, width), (3, height, width))
