"""DWA (DenseFormer's depth-weighted average) computes what the official DWAModules computes (epfml/DenseFormer at
c99a623, denseformer/denseformer.py), starts as the plain network, and has the official number of weights."""
import pytest
import torch
from timm.models.vision_transformer import Block

from lai_bench.models import build_model
from lai_bench.models.interaction.base import StageSpec
from lai_bench.models.interaction.dwa import DWA
from lai_bench.models.layers.layout import FEATURE_MAPS, TOKENS


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def official_dwa(x0, blocks, alphas, dilation, period):
    """What DWAModules computes, written from its code: init_accumulators stores x0 at slot 0 of dilation group 0;
    after block i, forward stores x at slot (i+1)//dilation of group (i+1) % dilation, and when (i+1) % period == 0
    returns tensordot(alpha_i, the group's slots 0..(i+1)//dilation, dims=1); otherwise x passes as it is."""
    groups = [[] for _ in range(dilation)]
    groups[0].append(x0)
    x = x0
    for i, block in enumerate(blocks):
        x = block(x)
        g = (i + 1) % dilation
        groups[g].append(x)
        if (i + 1) % period == 0:
            x = torch.tensordot(alphas[i], torch.stack(groups[g]), dims=1)
    return x


def official_counts(n_blocks, dilation=1, period=1):
    """DWAModules' Linear((i + 1 + dilation) // dilation, 1) for each block i with (i + 1) % period == 0."""
    return sum((i + 1 + dilation) // dilation for i in range(n_blocks) if (i + 1) % period == 0)


def randomise_alphas(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".alphas." in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("dilation,period", [(1, 1), (2, 1), (2, 3)])
def test_dwa_on_a_vit_is_the_official_dwa_over_all_its_blocks(dilation, period):
    torch.manual_seed(0)
    model = build_model("dwa", "vit_cifar_tiny", 6, 5, dilation=dilation, period=period).double()
    randomise_alphas(model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    blocks = [b for stage in model.stages for b in stage.blocks]
    alphas = [None] * len(blocks)
    for s, stage in enumerate(model.stages):
        for key, alpha in stage.interaction.alphas.items():
            alphas[4 * s + int(key)] = alpha

    def oracle():
        tokens = model.patch_embed(x)
        tokens = torch.cat([model.cls_token.expand(2, -1, -1), tokens], 1) + model.pos_embed  # X_0: the embedding
        out = official_dwa(tokens, [lambda z, b=b: Block.forward(b, z) for b in blocks], alphas, dilation, period)
        return model.head(model.norm(out)[:, 0])

    params = list(model.parameters())
    ours, ref = model(x), oracle()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    for a, b in zip(torch.autograd.grad(ours.square().sum(), params),
                    torch.autograd.grad(ref.square().sum(), params)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_on_a_resnet_each_stage_averages_from_its_first_blocks_identity():
    """X_0 of a stage is its first block's identity: the stage input, or its projection where the shape changes."""
    torch.manual_seed(0)
    model = build_model("dwa", "cifar", 20, 5).double().eval()
    randomise_alphas(model)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)

    def block_out(b, z):
        return (b.residual(z) + (z if b.downsample is None else b.downsample(z))).relu()

    def oracle():
        h = model.stem(x)
        for stage in model.stages:
            alphas = [stage.interaction.alphas[str(t)] for t in range(len(stage.blocks))]
            first = stage.blocks[0]
            x0 = h if first.downsample is None else first.downsample(h)
            # block 0 reads the stage input itself (its shortcut projects it), not X_0
            first_out = block_out(first, h)
            blocks = [lambda _x0: first_out] + [lambda z, b=b: block_out(b, z) for b in stage.blocks[1:]]
            h = official_dwa(x0, blocks, alphas, 1, 1)
        return model.fc(h.mean((2, 3)))

    with torch.no_grad():
        torch.testing.assert_close(model(x), oracle(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backbone,depth,size", [("cifar", 20, 16), ("cifar", 29, 16), ("imagenet", 10, 64),
                                                 ("vit_cifar_tiny", 6, 32)])
def test_at_init_dwa_is_the_plain_network_exactly(backbone, depth, size):
    torch.manual_seed(0)
    plain = build_model("none", backbone, depth, 5).eval()
    dwa = build_model("dwa", backbone, depth, 5, dilation=2, period=1).eval()
    dwa.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(dwa(x), plain(x))


def test_a_stage_by_hand():
    """Scalars through one 3-block stage on maps (ReLU after each add), alphas set by hand."""
    dwa = DWA(StageSpec(1, 3, layout=FEATURE_MAPS)).double()
    with torch.no_grad():
        dwa.alphas["0"].copy_(torch.tensor([0.5, 2.0]))
        dwa.alphas["1"].copy_(torch.tensor([1.0, -1.0, 3.0]))
        dwa.alphas["2"].copy_(torch.tensor([0.0, 0.0, 1.0, 1.0]))
    v = lambda a: torch.tensor(float(a), dtype=torch.float64).view(1, 1, 1, 1)  # noqa: E731
    x, state = dwa.merge(0, v(2), v(1), None)  # X_0 = 1, X_1 = relu(2 + 1) = 3
    assert x.item() == 0.5 * 1 + 2.0 * 3  # 6.5
    x, state = dwa.merge(1, v(-1), x, state)  # X_2 = relu(-1 + 6.5) = 5.5
    assert x.item() == 1 * 1 - 1 * 3 + 3 * 5.5  # 14.5
    x, state = dwa.merge(2, v(-20), x, state)  # X_3 = relu(-20 + 14.5) = 0
    assert x.item() == 5.5 + 0.0
    assert [s.item() for s in state] == [1, 3, 5.5, 0]


def test_weight_counts_are_the_official_ones():
    # DWAModules(12): 2 + 3 + ... + 13 = 90, the L^2/2 + 3L/2 scalars of the paper; a 12-block DeiT spans them all
    assert official_counts(12) == 90 == sum(range(2, 14))
    plain = n_params(build_model("none", "deit_tiny", 12, 10))
    assert n_params(build_model("dwa", "deit_tiny", 12, 10)) - plain == 90
    vit = n_params(build_model("none", "vit_cifar_tiny", 6, 10))
    assert n_params(build_model("dwa", "vit_cifar_tiny", 6, 10)) - vit == official_counts(6) == 27
    # DWA 2x2 over 6 blocks: after blocks 2, 4, 6 the groups hold 2, 3, 4 outputs
    assert n_params(build_model("dwa", "vit_cifar_tiny", 6, 10, dilation=2, period=2)) - vit == 2 + 3 + 4
    # span=stage on tokens: stages of 4 and 2 blocks, each from its own X_0
    assert n_params(build_model("dwa", "vit_cifar_tiny", 6, 10, span="stage")) - vit == 14 + 5
    # ResNets, per stage of n blocks: n (n + 3) / 2; CIFAR-20 (3, 3, 3), ResNet-18 (2, 2, 2, 2)
    assert n_params(build_model("dwa", "cifar", 20, 10)) - n_params(build_model("none", "cifar", 20, 10)) == 3 * 9
    assert n_params(build_model("dwa", "imagenet", 18, 10)) - n_params(build_model("none", "imagenet", 18, 10)) == 20
    assert n_params(build_model("dwa", "cifar", 164, 100)) - n_params(build_model("none", "cifar", 164, 100)) == \
        3 * official_counts(18) == 3 * 189


def test_bad_options_are_one_clear_error():
    with pytest.raises(ValueError, match=r"^DWA span='network' needs the tokens layout"):
        build_model("dwa", "cifar", 20, 10, span="network")
    with pytest.raises(ValueError, match=r"^DWA dilation must be an integer >= 1, got 0"):
        build_model("dwa", "vit_cifar_tiny", 2, 10, dilation=0)
    with pytest.raises(ValueError, match=r"^DWA span must be one of"):
        DWA(StageSpec(4, 2, layout=TOKENS), span="all")
