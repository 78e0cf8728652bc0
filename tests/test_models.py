"""The model zoo: exact parameter counts, shapes and gradients, options, bad input."""
import pytest
import torch
import torchvision

from lai_bench.models import build_model, display_name, list_models, method_info, method_options

ALL_METHODS = list_models()  # every registered method: a new one is tested by the tests below as it is added
PAPER_METHODS = ["none", "se", "eca", "dianet", "mrla_light", "mrla_base", "dense", "rla", "dla_l", "dla_b"]

# ../shared/reference/methods.md: the public implementations, CIFAR ResNet-164 bottleneck.
REFERENCE_CIFAR164 = {
    "none": (1_704_154, 1_727_284),
    "se": (1_897_690, 1_920_820),
    "eca": (1_704_388, 1_727_518),
    "dianet": (1_923_002, 1_946_132),
    "mrla_light": (1_801_390, 1_824_520),
    "mrla_base": (1_793_326, 1_816_456),
    "dla_l": (1_980_366, 2_003_496),
    "dla_b": (1_968_270, 1_991_400),
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_method_of_the_papers_is_registered_with_its_table_name_order_and_colour():
    assert set(PAPER_METHODS) <= set(list_models())
    assert sorted(PAPER_METHODS, key=lambda m: method_info(m).order) == PAPER_METHODS  # the papers' table order
    assert [display_name(m) for m in ("none", "dla_l", "dla_b")] == ["ResNet", "DLA-L", "DLA-B"]
    colours = [method_info(m).color for m in list_models()]
    assert all(colours) and len(set(colours)) == len(colours)


@pytest.mark.parametrize("method", sorted(REFERENCE_CIFAR164))
def test_cifar164_parameter_counts_equal_the_public_code(method):
    c10, c100 = REFERENCE_CIFAR164[method]
    assert n_params(build_model(method, "cifar", 164, 10)) == c10
    assert n_params(build_model(method, "cifar", 164, 100)) == c100


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_plain_backbone_matches_torchvision_resnet(depth):
    ours = build_model("none", "imagenet", depth, 1000)
    theirs = getattr(torchvision.models, f"resnet{depth}")()
    assert n_params(ours) == n_params(theirs)


@pytest.mark.parametrize("method,depth,reported_m", [
    ("none", 50, 25.557), ("se", 50, 28.072), ("eca", 50, 25.557), ("mrla_light", 50, 25.738),
    ("rla", 50, 25.871), ("dla_l", 50, 28.582), ("dla_l", 101, 47.783),
])
def test_imagenet_parameter_counts_match_the_reported_millions(method, depth, reported_m):
    assert round(n_params(build_model(method, "imagenet", depth, 1000)) / 1e6, 3) == reported_m


def test_mrla_base_deep_stem_has_the_public_imagenet_count():
    """The public MRLA-base ImageNet model's 3-conv stem: 28,768 params against 9,536 for 7x7; R-50 25,742,580."""
    deep = build_model("mrla_base", "imagenet", 50, 1000, stem="deep")
    standard = build_model("mrla_base", "imagenet", 50, 1000)
    assert n_params(deep.stem) == 28_768 and n_params(standard.stem) == 9_536
    assert n_params(deep) == 25_742_580
    assert n_params(standard) == 25_723_348
    out = deep(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 1000) and deep.stem(torch.randn(1, 3, 64, 64)).shape == (1, 64, 16, 16)


def test_imagenet_counts_decompose_exactly():
    """SE adds C^2/8 per block; DLA-L adds MRLA-light + DSUs (2.8088M at r=16) + one DWConv per stage."""
    base = n_params(build_model("none", "imagenet", 50, 1000))
    blocks = {256: 3, 512: 4, 1024: 6, 2048: 3}
    assert n_params(build_model("se", "imagenet", 50, 1000)) - base == sum(n * c * c // 8 for c, n in blocks.items())
    dsus = sum(c * c // 2 + c // 8 + 6 * c for c in blocks)
    assert dsus == 2_808_800
    mrla = n_params(build_model("mrla_light", "imagenet", 50, 1000))
    assert n_params(build_model("dla_l", "imagenet", 50, 1000)) - mrla == dsus + 9 * sum(blocks)


SHAPE_CASES = [("cifar", 20, "basic", 16), ("cifar", 29, "bottleneck", 16),
               ("imagenet", 18, None, 64), ("imagenet", 26, None, 64)]


@pytest.mark.slow
@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("backbone,depth,block,size", SHAPE_CASES)
def test_output_shape_and_finite_gradients(method, backbone, depth, block, size):
    torch.manual_seed(0)
    model = build_model(method, backbone, depth, 7, block, drop_path=0.1)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), name
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.isfinite(a).all() and torch.equal(a, b)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_no_hard_coded_device_or_dtype(method):
    """States are created from the input, so the model runs on any device (meta here) and dtype."""
    with torch.device("meta"):
        model = build_model(method, "cifar", 20, 10)
        assert model(torch.empty(2, 3, 32, 32)).device.type == "meta"
    model = build_model(method, "cifar", 20, 10).double()
    assert model(torch.randn(2, 3, 16, 16, dtype=torch.float64)).dtype == torch.float64


def test_zero_init_residual_zeroes_every_last_bn():
    from lai_bench.models.backbones.resnet import Block

    model = build_model("dla_l", "cifar", 29, 10, zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert len(blocks) == 9
    assert all(torch.count_nonzero(b.last_bn.weight) == 0 for b in blocks)
    other = build_model("dla_l", "cifar", 29, 10)
    assert all(torch.all(b.last_bn.weight == 1) for b in other.modules() if isinstance(b, Block))


@pytest.mark.parametrize("method", ALL_METHODS)
def test_drop_path_is_an_option_of_every_method(method):
    assert method_options(method, "cifar")["drop_path"] == 0.0
    torch.manual_seed(0)
    model = build_model(method, "cifar", 20, 10, drop_path=0.5)
    x = torch.randn(8, 3, 16, 16)
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.allclose(a, b), "drop-path must be stochastic in train mode"


def test_dla_reduction_defaults_follow_the_public_code():
    assert method_options("dla_l", "cifar")["reduction"] == 4
    assert method_options("dla_l", "imagenet")["reduction"] == 16
    assert method_options("dla_b", "cifar")["attention"] == "base"
    assert method_options("mrla_base", "imagenet")["head_dim"] == 16


@pytest.mark.parametrize("method,depth,block,expected", [
    ("none", 20, None, "basic"), ("none", 164, None, "bottleneck"), ("none", 29, None, "bottleneck"),
    ("none", 56, "bottleneck", "bottleneck"), ("none", 110, None, "basic"),
])
def test_cifar_depth_chooses_the_block(method, depth, block, expected):
    from lai_bench.models.backbones.resnet import BLOCKS

    model = build_model(method, "cifar", depth, 10, block)
    blocks = [m for m in model.modules() if isinstance(m, tuple(BLOCKS.values()))]
    assert {type(b) for b in blocks} == {BLOCKS[expected]}
    per = 6 if expected == "basic" else 9
    assert len(blocks) == 3 * (depth - 2) // per


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="nope"), r"unknown method 'nope' \(did you mean 'none'\?\); allowed: dense, dhc, dianet, dla_b"),
    (dict(method="none", depth=21), r"CIFAR depth 21 fits no block type.*6n\+2.*9n\+2"),
    (dict(method="none", depth=29, block="basic"), r"does not fit basic blocks"),
    (dict(method="none", depth=20, block="wide"), r"unknown block 'wide'"),
    (dict(method="none", num_classes=0), r"num_classes must be a positive integer"),
    (dict(method="none", backbone="imagenet", depth=42), r"ImageNet depth 42 is not a ResNet; allowed: \[10, 14, 18"),
    (dict(method="none", backbone="imagenet", depth=50, block="basic"), r"ResNet-50 uses bottleneck"),
    (dict(method="none", backbone="vit"),
     r"unknown backbone 'vit'; allowed: cifar, deit_base, deit_small, deit_tiny, gpt2_small, gpt_nano, imagenet, "
     r"vit_cifar_small, vit_cifar_tiny"),
    (dict(method="se", reductoin=8), r"unknown option\(s\) \['reductoin'\].*allowed: drop_path, reduction"),
    (dict(method="se", drop_path=1.5), r"drop_path must be in \[0, 1\)"),
    (dict(method="dla_l", cell="rnn"), r"DLA cell must be one of \('dsu', 'lstm', 'gru', 'none'\)"),
    (dict(method="dla_l", attention="full"), r"DLA attention must be one of"),
    (dict(method="dla_l", backward_path=False), r"forward_path=True with backward_path=False"),
    (dict(method="dla_b", cell="none", forward_path=True), r"cell='none' has no context or refresh path"),
    (dict(method="dla_l", refresh_context="batch"), r"DLA refresh_context must be one of \('sample0', 'per_sample'\)"),
    (dict(method="rla", recurrent_input="y"), r"RLA recurrent_input must be one of \('output', 'residual'\)"),
    (dict(method="none", stem="wide"), r"unknown stem 'wide'; allowed: standard, deep"),
    (dict(method="mrla_base", stem="deep"), r"stem='deep' is an ImageNet stem"),
])
def test_bad_input_raises_one_clear_error(kwargs, match):
    kwargs = {"backbone": "cifar", "depth": 20, "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)
