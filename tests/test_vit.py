"""The ViT backbones: DeiT-T/S/B with timm's exact parameter counts, timm's DeiT weights by name through
load_pretrained (method `none` then computes timm's logits), and the token-layout methods training on them."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from lai_bench.config import ConfigError, RunConfig
from lai_bench.models import PretrainedError, build_model, list_models, load_pretrained, method_info
from lai_bench.models.backbones.vit import timm_key
from lai_bench.validate import validate

TIMM = {"deit_tiny": ("deit_tiny_patch16_224", 5_717_416), "deit_small": ("deit_small_patch16_224", 22_050_664),
        "deit_base": ("deit_base_patch16_224", 86_567_656)}


@pytest.mark.parametrize("backbone", sorted(TIMM))
def test_deit_parameter_counts_equal_timm_s_at_1000_classes(backbone):
    name, count = TIMM[backbone]
    with torch.device("meta"):
        ours = build_model("none", backbone, 12, 1000)
        theirs = timm.create_model(name, pretrained=False)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) == count
    assert len(ours.stages) == 3 and all(len(stage.blocks) == 4 for stage in ours.stages)


def test_a_timm_deit_state_dict_file_loads_and_none_gives_timm_s_logits(tmp_path):
    torch.manual_seed(0)
    theirs = timm.create_model("deit_tiny_patch16_224", pretrained=False, depth=6, num_classes=10).double()
    path = tmp_path / "deit_tiny.pth"
    torch.save(theirs.state_dict(), path)
    ours = build_model("none", "deit_tiny", 6, 10).double()
    assert load_pretrained(ours, path).startswith(f"{len(theirs.state_dict())} tensors from {path}")
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    for train in (False, True):  # no dropout or drop path at their defaults: train and eval compute the same
        theirs.train(train), ours.train(train)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)


def test_stochastic_depth_is_deit_s_per_branch_linear_schedule_and_the_method_s_branch_is_never_dropped():
    torch.manual_seed(0)
    theirs = timm.create_model("deit_tiny_patch16_224", depth=5, num_classes=10, drop_path_rate=0.1)
    ours = build_model("mrla_light", "deit_tiny", 5, 10, drop_path=0.1)
    def rates(blocks):  # timm's blocks hold an Identity where the rate is 0
        return [(getattr(b.drop_path1, "drop_prob", 0.0), getattr(b.drop_path2, "drop_prob", 0.0)) for b in blocks]

    ours_rates = rates([b for stage in ours.stages for b in stage.blocks])
    assert ours_rates == rates(theirs.blocks)
    assert [r for pair in ours_rates for r in pair] == pytest.approx([r for r in (0.0, 0.025, 0.05, 0.075, 0.1)
                                                                      for _ in "ab"])
    assert all(stage.interaction.drop_path.p == 0.0 for stage in ours.stages)
    constant = build_model("mrla_base", "deit_tiny", 5, 10, drop_path=0.1, drop_schedule="constant")
    assert set(rates([b for stage in constant.stages for b in stage.blocks])) == {(0.1, 0.1)}
    # Method none in training mode draws the same masks as timm's DeiT from the same generator state.
    plain = build_model("none", "deit_tiny", 5, 10, drop_path=0.1).double()
    plain.load_state_dict({timm_key(k): v for k, v in theirs.state_dict().items()})
    theirs.double().train(), plain.train()
    x = torch.randn(4, 3, 224, 224, dtype=torch.float64)
    torch.manual_seed(1)
    want = theirs(x)
    torch.manual_seed(1)
    torch.testing.assert_close(plain(x), want, rtol=1e-10, atol=1e-10)


def test_a_method_takes_the_shared_weights_and_keeps_its_own_init(tmp_path):
    theirs = timm.create_model("deit_tiny_patch16_224", pretrained=False, depth=4)
    path = tmp_path / "deit_tiny.pth"
    torch.save(theirs.state_dict(), path)
    ours = build_model("mrla_light", "deit_tiny", 4, 100)  # a CIFAR-100 fine-tune: the classifier is new
    said = load_pretrained(ours, path)
    assert "own tensors keep their init" in said and "classifier re-initialised for 100 classes" in said
    assert torch.equal(ours.stages[0].blocks[3].attn.qkv.weight, theirs.blocks[3].attn.qkv.weight)
    with pytest.raises(PretrainedError, match=r"missing \['stages.1.blocks.0.attn.proj.bias'.*unexpected none"):
        load_pretrained(build_model("none", "deit_tiny", 8, 1000), path)  # 8 blocks, the file has 4


def test_the_vit_methods_train_a_step_and_the_others_are_rejected_in_one_line():
    on_tokens = [m for m in list_models() if "tokens" in method_info(m).cls.layouts]
    for method in on_tokens:
        torch.manual_seed(0)
        model = build_model(method, "vit_cifar_tiny", 4, 10)
        loss = F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2]))
        loss.backward()
        assert torch.isfinite(loss) and model.patch_embed.proj.weight.grad is not None
    for method in sorted(set(list_models()) - set(on_tokens)):
        with pytest.raises(ConfigError, match=rf"method '{method}' does not work on backbone 'deit_small'"):
            validate(RunConfig(method=method, backbone="deit_small", depth=12))
    with pytest.raises(ConfigError, match="task detection runs on the imagenet backbone"):
        validate(RunConfig(task="detection", backbone="deit_small", depth=12, recipe="coco_1x"))


def test_the_pretrained_field_fine_tunes_a_classifier_from_a_state_dict_file(tmp_path):
    from lai_bench.data import dataset_info
    from lai_bench.tasks import task_for

    torch.manual_seed(1)
    source = build_model("none", "vit_cifar_tiny", 2, 1000)
    torch.save(source.state_dict(), tmp_path / "vit.pth")
    config = validate(RunConfig(method="dla_l", backbone="vit_cifar_tiny", depth=2, dataset="synthetic",
                                synthetic={"num_classes": 10}, recipe="smoke", pretrained=str(tmp_path / "vit.pth")))
    model = task_for(config).build_model(dataset_info("synthetic", synthetic={"num_classes": 10}))
    assert torch.equal(model.pos_embed, source.pos_embed) and model.head.out_features == 10
    assert torch.equal(model.stages[0].blocks[1].mlp.fc2.weight, source.stages[0].blocks[1].mlp.fc2.weight)


def test_deit_flops_count_the_attention_and_match_the_deit_paper():
    from lai_bench.runtime.measure import count_flops

    tiny = build_model("none", "vit_cifar_tiny", 1, 10)  # 65 tokens, 3 heads of 64, one block
    report = count_flops(tiny, (3, 32, 32))
    assert report.by_operator["scaled_dot_product_attention"] == 3 * 65 * 65 * (64 + 64)
    gflops = count_flops(build_model("none", "deit_small", 12, 1000), (3, 224, 224)).total / 1e9
    assert abs(gflops - 4.6) / 4.6 < 0.03  # the DeiT paper's DeiT-S: 4.6 G


def test_the_deit_recipe_is_adamw_with_timm_s_no_decay_rule_and_a_cosine_to_its_floor():
    from lai_bench.models import backbone_info
    from lai_bench.runtime.engine import build_optimizer, learning_rate

    assert backbone_info("deit_small").default_recipe == "deit"
    c = validate(RunConfig(method="none", backbone="deit_tiny", depth=2, recipe="deit", batch_size=512,
                           dataset="synthetic", synthetic={"image_size": 224}))
    assert (c.optimizer, c.weight_decay, c.epochs, c.warmup_epochs, c.min_lr) == ("adamw", 0.05, 300, 5, 1e-5)
    model = build_model("none", "deit_tiny", 2, 10)
    optimizer = build_optimizer(c, model, [p for p in model.parameters() if p.requires_grad])
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["eps"] == 1e-8
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    decay = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    assert {"pos_embed", "cls_token", "norm.weight", "head.bias", "stages.0.blocks.0.attn.qkv.bias"} <= no_decay
    assert {"head.weight", "stages.0.blocks.1.mlp.fc1.weight", "patch_embed.proj.weight"} <= decay
    assert decay | no_decay == set(names.values()) and not decay & no_decay
    steps = 10
    peak = 5e-4 * 512 / 512  # the DeiT rule: 5e-4 x global batch / 512
    # DeiT steps timm's cosine scheduler once per epoch: constant within an epoch, warm-up from 1e-6 over 5 epochs,
    # then the cosine of the epoch over all 300 (timm without warmup_prefix) down to 1e-5.
    def cosine(epoch):
        return 1e-5 + 0.5 * (peak - 1e-5) * (1 + math.cos(math.pi * epoch / 300))

    assert learning_rate(c, 0, 0, steps) == learning_rate(c, 0, steps - 1, steps) == pytest.approx(1e-6)
    assert learning_rate(c, 2, 7, steps) == pytest.approx(1e-6 + 2 * (peak - 1e-6) / 5)
    assert learning_rate(c, 5, 0, steps) == pytest.approx(cosine(5))
    assert learning_rate(c, 299, steps - 1, steps) == pytest.approx(cosine(299))
    assert cosine(299) == pytest.approx(1e-5, rel=2e-3)  # near the floor in its last epoch
    sgd = build_optimizer(validate(RunConfig(recipe="cifar")), model, list(model.parameters()))
    assert isinstance(sgd, torch.optim.SGD)


def test_the_bench_takes_a_vit_backbone_at_its_input_size(tmp_path):
    import csv

    from lai_bench.bench.cli import main

    assert main(["--backbone", "vit_cifar_tiny", "--depth", "1", "--methods", "none,dla_l", "--batch", "2",
                 "--steps", "1", "--warmup", "0", "--rounds", "1", "--num-classes", "10", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(next(tmp_path.glob("bench-*.csv")).open()))
    assert [r["method"] for r in rows] == ["none", "dla_l"] and {r["image_size"] for r in rows} == {"32x32"}
    assert all(float(r["flops"]) > 0 for r in rows)
