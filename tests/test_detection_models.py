"""Detectors on every method's backbone: torchvision's own R-50 FPN models as the oracle, a training step for every
method x detector, frozen parts that stay frozen, pretrained backbones, FLOPs as mmdetection counts them."""
import re

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from lai_bench.models import build_model, list_models
from lai_bench.records.store import SCHEMA, write_record
from lai_bench.runtime.checkpoint import save_weights
from lai_bench.runtime.measure import count_flops
from lai_bench.tasks.detection.flops import count_detector_flops
from lai_bench.tasks.detection.model import (
    DETECTORS,
    RCNN_SETTINGS,
    RETINANET_SETTINGS,
    backbone_of,
    build_detector,
    label_offset,
    retinanet_anchors,
)
from lai_bench.tasks.detection.pretrained import PretrainedError, load_backbone

ALL_METHODS = list_models()
SMALL = dict(min_size=64, max_size=96)
OUTPUT_KEYS = {"faster_rcnn": {"boxes", "labels", "scores"}, "mask_rcnn": {"boxes", "labels", "scores", "masks"},
               "retinanet": {"boxes", "labels", "scores"}}


def fewer_boxes(model: nn.Module) -> nn.Module:
    """Few proposals, RoI samples and detections: the RoI heads' cost on CPU is per box (1024 RoIs per batch through
    a 12544 x 1024 layer, masks for 100 detections), the test's point is not."""
    if isinstance(model, RetinaNet):
        model.detections_per_img = 5
        return model
    model.rpn._post_nms_top_n = {"training": 32, "testing": 32}
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 16
    model.roi_heads.detections_per_img = 5
    return model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def torchvision_name(key: str) -> str:
    """A torchvision detector's key under lai_bench's body names (conv1/bn1 -> stem.0/1, layerN.i -> stages)."""
    key = re.sub(r"^backbone\.body\.conv1\.", "backbone.body.stem.0.", key)
    key = re.sub(r"^backbone\.body\.bn1\.", "backbone.body.stem.1.", key)
    return re.sub(r"^backbone\.body\.layer(\d)\.(\d+)\.",
                  lambda m: f"backbone.body.stages.{int(m[1]) - 1}.blocks.{m[2]}.", key)


def torchvision_detector(detector: str, **transform) -> nn.Module:
    """torchvision's R-50 FPN detector with FrozenBatchNorm2d, stem and layer1 frozen, and our settings."""
    resnet = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    if detector == "retinanet":
        backbone = _resnet_fpn_extractor(resnet, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(2048, 256))
        return RetinaNet(backbone, 90, anchor_generator=retinanet_anchors(), **transform, **RETINANET_SETTINGS)
    backbone = _resnet_fpn_extractor(resnet, 3)
    pools = dict(box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio=0))
    if detector == "faster_rcnn":
        return FasterRCNN(backbone, 91, **pools, **transform, **RCNN_SETTINGS)
    pools["mask_roi_pool"] = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, sampling_ratio=0)
    return MaskRCNN(backbone, 91, **pools, **transform, **RCNN_SETTINGS)


@pytest.mark.slow
@pytest.mark.parametrize("detector", DETECTORS)
def test_resnet50_detectors_are_torchvisions_own(detector):
    """Method none at depth 50 is torchvision's R-50 FPN detector: same parameters, keys, shapes, frozen parts, and
    with the same weights the same detections."""
    torch.manual_seed(0)
    ours = build_detector(detector, "none", 50, 90, min_size=128, max_size=160)
    theirs = torchvision_detector(detector, min_size=128, max_size=160)
    assert n_params(ours) == n_params(theirs)
    mine = ours.state_dict()
    state = {torchvision_name(k): v for k, v in theirs.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mine.items()} == {k: tuple(v.shape) for k, v in state.items()}
    trainable = {torchvision_name(n) for n, p in theirs.named_parameters() if p.requires_grad}
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == trainable
    with torch.no_grad():  # frozen statistics that are not the identity, so BN placement matters
        for key, value in state.items():
            if key.endswith("running_var") or (key.startswith("backbone.body") and key.endswith("bn1.weight")):
                value.uniform_(0.5, 1.5)
            elif key.endswith("running_mean"):
                value.normal_(0.0, 0.1)
    ours.load_state_dict(state)
    fewer_boxes(ours)
    fewer_boxes(theirs)
    # float64: a random R-50 amplifies float32 rounding (FrozenBN's fused batch_norm against x * scale + bias).
    ours.double().eval()
    theirs.double().eval()
    images = [torch.rand(3, 120, 150, dtype=torch.float64)]
    with torch.no_grad():
        got, expected = ours(images)[0], theirs(images)[0]
    assert len(expected["boxes"]) > 0
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


def test_mmdetection_settings_are_set():
    """The values of mmdetection's 1x configs where torchvision takes them (faster_rcnn/retinanet_r50_fpn.py)."""
    rcnn = build_detector("mask_rcnn", "none", 10, 3)
    assert rcnn.transform.min_size == (800,) and rcnn.transform.max_size == 1333
    assert rcnn.transform.size_divisible == 32
    assert rcnn.transform.image_mean == pytest.approx([123.675 / 255, 116.28 / 255, 103.53 / 255])
    assert rcnn.transform.image_std == pytest.approx([58.395 / 255, 57.12 / 255, 57.375 / 255], abs=1e-4)
    rpn, heads = rcnn.rpn, rcnn.roi_heads
    assert rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
    assert rpn._post_nms_top_n == {"training": 1000, "testing": 1000}
    assert rpn.nms_thresh == 0.7 and rpn.fg_bg_sampler.batch_size_per_image == 256
    assert rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    assert heads.fg_bg_sampler.batch_size_per_image == 512 and heads.fg_bg_sampler.positive_fraction == 0.25
    assert heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (0.05, 0.5, 100)
    assert heads.box_roi_pool.sampling_ratio == 0 and heads.mask_roi_pool.sampling_ratio == 0
    assert heads.mask_roi_pool.output_size == (14, 14)
    retina = build_detector("retinanet", "none", 10, 3)
    assert (retina.score_thresh, retina.nms_thresh, retina.detections_per_img, retina.topk_candidates) == \
        (0.05, 0.5, 100, 1000)
    assert retina.anchor_generator.sizes[0] == pytest.approx((32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)))
    assert list(retina.backbone.fpn.extra_blocks.p6.weight.shape) == [256, 512, 3, 3]  # P6 from C5, not P5
    assert [label_offset(d) for d in DETECTORS] == [1, 1, 0]


def training_batch(masks: bool) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two tiny images: one with two objects, one with none."""
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 96, generator=gen), torch.rand(3, 72, 80, generator=gen)]
    boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 90.0, 60.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    if masks:
        full = torch.zeros(2, 64, 96, dtype=torch.uint8)
        full[0, 6:50, 4:40] = 1
        full[1, 10:60, 30:90] = 1
        targets[0]["masks"] = full
        targets[1]["masks"] = torch.zeros(0, 72, 80, dtype=torch.uint8)
    return images, targets


@pytest.mark.slow
@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_trains_and_detects_with_every_detector(method, detector):
    """At depth 18: two blocks a stage, so what a method carries from block to block (DLA-B's DSU context, the
    layer memories, dense aggregation) is used and trained."""
    torch.manual_seed(0)
    model = fewer_boxes(build_detector(detector, method, 18, 3, **SMALL))
    images, targets = training_batch(masks=detector == "mask_rcnn")
    model.train()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("backbone.body.stages.1.") for n, _ in trainable)
    no_grad = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"no finite gradient: {no_grad[:5]}"
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2 and all(set(o) == OUTPUT_KEYS[detector] for o in outputs)


def test_frozen_parts_stay_frozen_after_an_sgd_step():
    """Stem, stage 1 (with the method's own parameters) and every BatchNorm statistic and affine: unchanged after an
    SGD step with momentum and weight decay; stages 2-4 move."""
    torch.manual_seed(0)
    model = fewer_boxes(build_detector("faster_rcnn", "rla", 10, 3, **SMALL))  # RLA: BNs of its own, in every stage
    body = backbone_of(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    frozen_bns = [m for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen_bns) > 4 * 4  # the blocks' BNs and RLA's
    before = {k: v.clone() for k, v in body.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    for _ in range(2):
        images, targets = training_batch(masks=False)
        optimizer.zero_grad()
        sum(model(images, targets).values()).backward()
        optimizer.step()
    after = body.state_dict()
    buffers = {name for name, _ in body.named_buffers()}
    frozen = [k for k in before if k.startswith(("stem.", "stages.0.")) or k in buffers]
    assert any(k.startswith("stages.0.interaction.") for k in frozen)
    changed = [k for k in frozen if not torch.equal(before[k], after[k])]
    assert not changed, changed
    convs = [k for k in before if k.startswith(("stages.1.", "stages.2.", "stages.3.")) and "conv" in k]
    assert convs and all(not torch.equal(before[k], after[k]) for k in convs)
    assert not any(p.requires_grad for p in [*body.stem.parameters(), *body.stages[0].parameters()])


def test_frozen_stages_follow_mmdetection():
    none = backbone_of(build_detector("retinanet", "se", 10, 3, frozen_stages=-1))
    assert all(p.requires_grad for p in none.parameters())
    stem_only = backbone_of(build_detector("retinanet", "se", 10, 3, frozen_stages=0))
    assert not any(p.requires_grad for p in stem_only.stem.parameters())
    assert all(p.requires_grad for p in stem_only.stages.parameters())
    with pytest.raises(ValueError, match="frozen_stages must be an integer from -1 to 4"):
        build_detector("retinanet", "se", 10, 3, frozen_stages=5)
    with pytest.raises(ValueError, match="unknown detector 'yolo'; allowed: faster_rcnn, mask_rcnn, retinanet"):
        build_detector("yolo", "none", 10, 3)


@pytest.mark.parametrize("backbone,depth", [("imagenet", 10), ("cifar", 20)])
def test_forward_stages_is_the_classification_forward(backbone, depth):
    """The stage outputs end in what the classifier pools, and the logits are those of the plain loop: stem, stages
    with their carry, the last stage's head."""
    for method in ALL_METHODS:
        torch.manual_seed(0)
        model = build_model(method, backbone, depth, 10).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            stages = model.forward_stages(x)
            h, carry = model.stem(x), None
            for stage in model.stages:
                h, carry = stage(h, carry)
            features = model.stages[-1].interaction.head(h, carry)
            logits = model.fc(torch.flatten(model.pool(features), 1))
            torch.testing.assert_close(stages[-1], features, rtol=0, atol=0)
            torch.testing.assert_close(model.forward_features(x), features, rtol=0, atol=0)
            torch.testing.assert_close(model(x), logits, rtol=0, atol=0)
        assert [s.shape[1] for s in stages] == model.stage_channels, method
        assert model.stage_channels[-1] == model.fc.in_features


def classification_config(method: str, depth: int) -> dict:
    return {"task": "classification", "method": method, "backbone": "imagenet", "depth": depth, "model_opts": {}}


def test_a_lai_bench_run_loads_from_its_weights_file_and_from_its_record(tmp_path):
    torch.manual_seed(0)
    trained = build_model("dla_l", "imagenet", 10, 1000)
    with torch.no_grad():  # statistics as a trained model has them
        for module in trained.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    weights = save_weights(tmp_path / "checkpoints" / "run1.final.pt", "run1", classification_config("dla_l", 10), 100,
                           trained)
    record = tmp_path / "run1.json"
    write_record(record, {"schema": SCHEMA, "run_id": "run1", "status": "completed",
                          "config": classification_config("dla_l", 10), "weights": "checkpoints/run1.final.pt"})
    expected = {k: v for k, v in trained.state_dict().items() if not k.startswith("fc.")}
    for path, says in ((weights, f"lai_bench run run1 weights {weights}"), (record, "lai_bench run run1 weights")):
        body = build_model("dla_l", "imagenet", 10, 1000)
        assert load_backbone(body, path, "dla_l", 10).startswith(says)
        loaded = body.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    # Through the detector: loaded before the BNs are frozen, so the frozen ones carry the trained statistics.
    detector_body = backbone_of(build_detector("faster_rcnn", "dla_l", 10, 3, pretrained=record))
    frozen = detector_body.state_dict()
    assert not any(k.startswith("fc.") for k in frozen)
    assert all(torch.equal(frozen[k], v) for k, v in expected.items() if not k.endswith("num_batches_tracked"))
    # Into a built detector's body (BNs already frozen, classifier gone): the same names, the same tensors.
    built = backbone_of(build_detector("retinanet", "dla_l", 10, 3))
    assert load_backbone(built, weights, "dla_l", 10) == f"lai_bench run run1 weights {weights}"
    assert all(torch.equal(built.state_dict()[k], v) for k, v in frozen.items())


def test_a_training_checkpoint_loads_too(tmp_path):
    trained = build_model("se", "imagenet", 10, 1000)
    path = tmp_path / "run2.pt"
    torch.save({"version": 1, "run_id": "run2", "model": trained.state_dict(), "optimizer": {}, "epoch": 3}, path)
    body = build_model("se", "imagenet", 10, 1000)
    assert load_backbone(body, path, "se", 10) == f"lai_bench run run2 checkpoint {path} (after epoch 3)"
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in body.state_dict().items() if not k.startswith("fc."))


def test_a_torchvision_resnet18_loads_into_method_none(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18()
    with torch.no_grad():
        for module in resnet.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    body = build_model("none", "imagenet", 18, 1000)
    assert load_backbone(body, path, "none", 18) == f"torchvision ResNet-18 state_dict {path}"
    resnet.eval()
    body.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stages = body.forward_stages(x)
        h = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
        for i, layer in enumerate((resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)):
            h = layer(h)
            torch.testing.assert_close(stages[i], h)


def test_a_backbone_of_another_architecture_is_one_error_naming_the_keys(tmp_path):
    resnet18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), resnet18)
    with pytest.raises(PretrainedError) as err:
        build_detector("faster_rcnn", "none", 50, 3, pretrained=resnet18)
    message = str(err.value)
    assert str(resnet18) in message and "an ImageNet-stem none ResNet-50 backbone" in message
    assert "missing key(s): stages.0.blocks.0.bn3.bias" in message and "mis-shaped key(s)" in message
    assert "\n" not in message

    dla = tmp_path / "dla_l.pt"
    torch.save(build_model("dla_l", "imagenet", 10, 1000).state_dict(), dla)
    with pytest.raises(PretrainedError, match=r"unexpected key\(s\): stages\.0\.interaction\."):
        load_backbone(build_model("none", "imagenet", 10, 1000), dla, "none", 10)

    weights = save_weights(tmp_path / "dla.final.pt", "run3", classification_config("dla_l", 10), 1,
                           build_model("dla_l", "imagenet", 10, 1000))
    with pytest.raises(PretrainedError, match="from a classification run of dla_l on the imagenet backbone, depth 10; "
                                              "expected an ImageNet classification run of none, depth 10"):
        load_backbone(build_model("none", "imagenet", 10, 1000), weights, "none", 10)
    with pytest.raises(PretrainedError, match="no such file"):
        load_backbone(build_model("none", "imagenet", 10, 1000), tmp_path / "nothing.pt", "none", 10)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(PretrainedError, match="is not a readable torch file"):
        load_backbone(build_model("none", "imagenet", 10, 1000), garbage, "none", 10)


@pytest.mark.parametrize("detector", DETECTORS)
def test_detector_flops_count_every_head(detector):
    model = build_detector(detector, "dla_l", 10, 3)
    report = count_detector_flops(model, 128, 192)
    assert report.total > 0 and report.by_operator["conv"] > 0
    if detector != "retinanet":  # the box head on 1000 proposals, RoIAlign listed as uncounted
        assert report.by_operator["linear"] >= 1000 * (256 * 7 * 7 * 1024 + 1024 * 1024)
        assert report.unsupported["torchvision::roi_align"] > 0


@pytest.mark.slow
def test_resnet50_faster_rcnn_flops_are_the_body_plus_fpn_and_heads():
    """At mmdetection's 1280x800 the count is the ResNet-50 body's (as lai_bench counts the classifier) plus the FPN,
    the RPN head on P2-P6 and the box head on 1000 proposals, conv by conv."""
    height, width = 800, 1280
    body = count_flops(build_model("none", "imagenet", 50, 1000), (3, height, width))
    report = count_detector_flops(build_detector("faster_rcnn", "none", 50, 90), height, width)
    sizes = [(height // s, width // s) for s in (4, 8, 16, 32)] + [(13, 20)]  # P6: 1x1 max-pool, stride 2, of P5
    fpn = sum(c * 256 * h * w + 256 * 256 * 9 * h * w for c, (h, w) in zip((256, 512, 1024, 2048), sizes))
    rpn = sum((256 * 256 * 9 + 256 * 3 + 256 * 12) * h * w for h, w in sizes)
    assert report.by_operator["conv"] == body.by_operator["conv"] + fpn + rpn
    assert report.by_operator["batch_norm"] == body.by_operator["batch_norm"]
    assert report.by_operator["linear"] == 1000 * (256 * 7 * 7 * 1024 + 1024 * 1024 + 1024 * 91 + 1024 * 91 * 4)
    assert report.total > body.total


def test_a_results_folder_gives_the_completed_imagenet_run_of_the_same_method_and_depth(tmp_path):
    grid = tmp_path / "results" / "imagenet"
    models = {}
    for name, method, seed, status in (("a", "dla_l", 1, "completed"), ("b", "dla_l", 0, "completed"),
                                       ("c", "se", 0, "completed"), ("d", "dla_l", 0, "failed")):
        torch.manual_seed(seed + 10 * len(models))
        models[name] = build_model(method, "imagenet", 10, 1000)
        config = {**classification_config(method, 10), "seed": seed}
        save_weights(grid / "checkpoints" / f"{name}.final.pt", name, config, 1, models[name])
        write_record(grid / f"{name}.json", {"schema": SCHEMA, "run_id": name, "name": f"{method}-s{seed}",
                                             "status": status, "config": config,
                                             "weights": f"checkpoints/{name}.final.pt"})
    (grid / "jobs.json").write_text("{}")
    body = build_model("dla_l", "imagenet", 10, 1000)
    assert "lai_bench run b weights" in load_backbone(body, tmp_path / "results", "dla_l", 10)  # seed 0, completed
    assert torch.equal(body.stem[0].weight, models["b"].stem[0].weight)
    with pytest.raises(PretrainedError, match=r"no completed ImageNet run of dla_l-cell=gru depth 10 .*found: "):
        load_backbone(build_model("dla_l", "imagenet", 10, 1000, cell="gru"), grid, "dla_l", 10, {"cell": "gru"})
