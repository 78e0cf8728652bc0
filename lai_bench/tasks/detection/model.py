"""torchvision Faster R-CNN, Mask R-CNN and RetinaNet with an FPN on any lai_bench ImageNet-stem backbone.

The backbone is the classification ResNet without its classifier: `ResNet.forward_stages` gives each stage's output
after the method's work (DSU context, recurrent map, layer memories carried as in classification), and
torchvision's FeaturePyramidNetwork turns them into 256-channel maps: C2-C5 -> P2-P5 plus P6 by max-pool for the
R-CNNs, C3-C5 -> P3-P5 plus P6/P7 from C5 for RetinaNet (mmdetection's `add_extra_convs="on_input"`).

As in mmdetection's 1x configs (`frozen_stages=1`, `norm_eval=True`): the stem and stage 1 (with the method's
parameters of that stage) are frozen, and no BatchNorm of the backbone, the methods' own included, updates its
statistics: each is a torchvision FrozenBatchNorm2d (computed as an eval-mode BatchNorm, see FrozenBN).

mmdetection's values are set wherever torchvision takes them as an argument (see RCNN_SETTINGS,
RETINANET_SETTINGS): image mean/std (mmdet's 123.675/58.395... on 0-255 = torchvision's ImageNet values), resize
to shorter side 800 / longer at most 1333, padding to a multiple of 32, anchors (R-CNN: 32-512 at 0.5/1/2; RetinaNet:
4 * stride * 2^(k/3), k = 0, 1, 2, unrounded sizes), RPN assigner 0.7/0.3, sampler 256 at 0.5, NMS 0.7, 2000
pre-NMS per level in training / 1000 in testing, 1000 proposals after NMS in training (torchvision: 2000) and in
testing, RoI assigner 0.5/0.5, sampler 512 at 0.25 with the ground truth added, box coder weights 10/10/5/5,
RoIAlign sampling_ratio 0 (adaptive; torchvision: 2), test score 0.05, NMS 0.5, 100 detections; RetinaNet
assigner 0.5/0.4, focal loss alpha 0.25 gamma 2, 1000 top candidates per level, 100 detections (torchvision: 300).

Differences from mmdetection that are not one argument away
-----------------------------------------------------------
* The backbone's BatchNorm affine is frozen too, as in torchvision and detectron2; mmdetection's
  `norm_cfg=dict(type="BN", requires_grad=True)` trains the BN weight and bias of stages 2-4.
* RoIAlign runs with `aligned=False` (MultiScaleRoIAlign has no such argument); mmdetection uses `aligned=True`
  (the half-pixel shift of Detectron2).
* The R-CNN box losses are smooth-L1 with beta 1/9 (RPN and RoI head); mmdetection's 1x configs use L1.
* The RPN's low-quality matches (each ground truth's best anchor is positive) have no IoU floor; mmdetection's
  `min_pos_iou=0.3`.
* Class-specific box regression and mask outputs include the background class (K+1 rows; mmdetection: K).
* Mask targets are the ground-truth masks RoIAligned to 28x28 and not binarised; mmdetection thresholds them at 0.5.
* Anchor base boxes are rounded to integers (torchvision's AnchorGenerator); mmdetection keeps them fractional.
* RetinaNet's P7 is computed from ReLU(P6) (torchvision's LastLevelP6P7, as in the RetinaNet paper); mmdetection's
  `relu_before_extra_convs=False` applies no ReLU.
* RetinaNet's losses are normalised per image by that image's foreground anchors, then averaged over images;
  mmdetection divides the batch's sum by the batch's foreground anchors.
* Predicted masks are pasted into the image by torchvision's paste_masks_in_image (interpolate on a one-pixel
  padded mask); mmdetection's `_do_paste_mask` uses grid_sample.
* The model's GeneralizedRCNNTransform resizes bilinearly on the float tensor and floors the new size;
  mmdetection resizes the uint8 image with cv2 and rounds it.
* Weight initialisation of the FPN and the box head is torchvision's (kaiming-uniform; mmdetection: xavier-uniform).
"""
import os
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from ...core.normalization import IMAGENET_MEAN, IMAGENET_STD
from ...models import build_model
from ...models.backbones.resnet import ResNet
from .pretrained import detection_backbone, load_backbone

FPN_CHANNELS = 256
RCNN_LEVELS = ("0", "1", "2", "3")  # the FPN maps P2-P5 the RoI poolers read ("pool", P6, is for the RPN only)

# mmdetection's faster_rcnn_r50_fpn.py / mask_rcnn_r50_fpn.py values, as torchvision's argument names.
RCNN_SETTINGS = dict(
    rpn_pre_nms_top_n_train=2000, rpn_pre_nms_top_n_test=1000,  # rpn_proposal / test_cfg.rpn nms_pre (per level)
    rpn_post_nms_top_n_train=1000, rpn_post_nms_top_n_test=1000,  # max_per_img (torchvision: 2000 in training)
    rpn_nms_thresh=0.7, rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3,
    rpn_batch_size_per_image=256, rpn_positive_fraction=0.5, rpn_score_thresh=0.0,
    box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=100,
    box_fg_iou_thresh=0.5, box_bg_iou_thresh=0.5, box_batch_size_per_image=512, box_positive_fraction=0.25,
    bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),  # 1 / target_stds (0.1, 0.1, 0.2, 0.2)
)
# mmdetection's retinanet_r50_fpn.py values.
RETINANET_SETTINGS = dict(
    score_thresh=0.05, nms_thresh=0.5, detections_per_img=100, fg_iou_thresh=0.5, bg_iou_thresh=0.4,
    topk_candidates=1000,
)

# The torchvision detectors this task builds (a run's task_opts.detector), the first its default.
DETECTORS = ("faster_rcnn", "mask_rcnn", "retinanet")
DETECTOR_NAMES = {"faster_rcnn": "Faster R-CNN", "mask_rcnn": "Mask R-CNN", "retinanet": "RetinaNet"}


def label_offset(detector: str) -> int:
    """What the model adds to a category index: 1 for the R-CNNs (label 0 is background), 0 for RetinaNet."""
    check_detector(detector)
    return 0 if detector == "retinanet" else 1


def check_detector(detector: str) -> None:
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; allowed: {', '.join(DETECTORS)}")


class DetectionBackbone(nn.Module):
    """The ResNet body's stage outputs (`levels`: 0 = C2) through an FPN: an OrderedDict of 256-channel maps."""

    def __init__(self, body: ResNet, levels: Sequence[int], extra_blocks: ExtraFPNBlock) -> None:
        super().__init__()
        self.body = body
        self.levels = tuple(levels)
        channels = body.stage_channels
        self.fpn = FeaturePyramidNetwork([channels[i] for i in self.levels], FPN_CHANNELS, extra_blocks=extra_blocks)
        self.out_channels = FPN_CHANNELS

    def forward(self, images: Tensor) -> "OrderedDict[str, Tensor]":
        stages = self.body.forward_stages(images)
        return self.fpn(OrderedDict((str(k), stages[i]) for k, i in enumerate(self.levels)))


class FrozenBN(FrozenBatchNorm2d):
    """torchvision's FrozenBatchNorm2d (same buffers, nothing trains) run as one eval-mode batch_norm: fvcore counts
    it as it counts the classification model's BN, and under autocast it keeps the activations' dtype (torchvision's
    x * scale + bias promotes them to float32)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def frozen_batchnorm(bn: nn.BatchNorm2d) -> FrozenBN:
    """A FrozenBN with `bn`'s running statistics, affine and eps."""
    frozen = FrozenBN(bn.num_features, eps=bn.eps).to(bn.running_mean.device)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
    return frozen


def freeze_batchnorm(module: nn.Module) -> None:
    """Replace every nn.BatchNorm2d inside `module` by its FrozenBatchNorm2d, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            if child.running_mean is None:  # BN without running statistics normalises by the batch's: not frozen
                raise ValueError(f"{name}: a BatchNorm without running statistics cannot be frozen")
            setattr(module, name, frozen_batchnorm(child))
        else:
            freeze_batchnorm(child)


def freeze_stages(body: ResNet, frozen_stages: int) -> None:
    """mmdetection's `frozen_stages`: -1 trains everything, 0 freezes the stem, k the stem and stages 1..k."""
    if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) \
            or not -1 <= frozen_stages <= len(body.stages):
        raise ValueError(f"frozen_stages must be an integer from -1 to {len(body.stages)}, got {frozen_stages!r}")
    if frozen_stages < 0:
        return
    for part in [body.stem, *body.stages[:frozen_stages]]:
        part.requires_grad_(False)


def build_body(method: str, depth: int, *, frozen_stages: int = 1, pretrained: str | os.PathLike | None = None,
               **model_opts) -> ResNet:
    """The lai_bench ImageNet-stem ResNet of `method` without its classifier, loaded, BN frozen, stages frozen."""
    body = build_model(method, detection_backbone(), depth, 1000, **model_opts)
    if pretrained is not None:
        load_backbone(body, pretrained, method, depth)
    body.fc = nn.Identity()  # the classifier is not part of a detector (its pooled features are never computed)
    freeze_batchnorm(body)
    freeze_stages(body, frozen_stages)
    return body


def retinanet_anchors() -> AnchorGenerator:
    """mmdetection's RetinaNet anchors: octave_base_scale 4, 3 scales per octave, ratios 0.5/1/2, strides 8-128."""
    sizes = tuple(tuple(4 * stride * 2 ** (k / 3) for k in range(3)) for stride in (8, 16, 32, 64, 128))
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


def build_detector(detector: str, method: str, depth: int, num_classes: int, *, min_size: int = 800,
                   max_size: int = 1333, frozen_stages: int = 1, pretrained: str | os.PathLike | None = None,
                   **model_opts) -> nn.Module:
    """torchvision's `detector` with an FPN on the lai_bench ResNet-`depth` of `method`, for `num_classes`
    object categories (the R-CNNs add a background class: labels are category index + `label_offset`)."""
    check_detector(detector)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer (object categories), got {num_classes!r}")
    body = build_body(method, depth, frozen_stages=frozen_stages, pretrained=pretrained, **model_opts)
    transform = dict(min_size=min_size, max_size=max_size, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
                     size_divisible=32)
    if detector == "retinanet":
        c5 = body.stage_channels[-1]
        backbone = DetectionBackbone(body, (1, 2, 3), LastLevelP6P7(c5, FPN_CHANNELS))
        return RetinaNet(backbone, num_classes, anchor_generator=retinanet_anchors(), **transform,
                         **RETINANET_SETTINGS)
    backbone = DetectionBackbone(body, (0, 1, 2, 3), LastLevelMaxPool())
    # sampling_ratio 0: as many samples per bin as the RoI needs, mmdetection's RoIAlign setting.
    box_pool = MultiScaleRoIAlign(list(RCNN_LEVELS), 7, sampling_ratio=0)
    if detector == "faster_rcnn":
        return FasterRCNN(backbone, num_classes + 1, box_roi_pool=box_pool, **transform, **RCNN_SETTINGS)
    mask_pool = MultiScaleRoIAlign(list(RCNN_LEVELS), 14, sampling_ratio=0)
    return MaskRCNN(backbone, num_classes + 1, box_roi_pool=box_pool, mask_roi_pool=mask_pool, **transform,
                    **RCNN_SETTINGS)


def backbone_of(model: nn.Module) -> ResNet:
    """The lai_bench ResNet body inside a detector (through a DDP or compile wrapper too)."""
    while not hasattr(model, "backbone"):  # torch.compile's _orig_mod, DDP's module, in either order
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None:
            raise ValueError(f"{type(model).__name__} is not a detector (no backbone)")
        model = inner
    return model.backbone.body
