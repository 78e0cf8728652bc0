"""LAuReL (paper only, arXiv 2411.07501): each variant's equation by hand on tiny inputs, whole networks against a
loop written from the equations, parameter counts by hand, and what each variant starts as."""
import pandas as pd
import pytest
import torch

from lai_bench.config import RunConfig
from lai_bench.models import build_model, display_name
from lai_bench.models.interaction.base import StageSpec
from lai_bench.models.interaction.laurel import LAuReL, LowRank, column_orthogonal_
from lai_bench.models.layers.layout import FEATURE_MAPS, TOKENS
from lai_bench.models.registry import canonical_method
from lai_bench.summary.aggregate import variant_labels

D = torch.float64


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def added(method, backbone, depth, **opts) -> int:
    plain = build_model("none", backbone, depth, 10)
    return n_params(build_model(method, backbone, depth, 10, **opts)) - n_params(plain)


def tokens(*values):
    return torch.tensor(values, dtype=D).view(1, 1, -1)  # [B = 1, one token, C]


def test_rw_weighs_branch_and_residual_by_the_normalised_pair():
    rw = LAuReL(StageSpec(2, 1, layout=FEATURE_MAPS)).double()
    with torch.no_grad():
        rw.logits[0].copy_(torch.tensor([3.0, 1.0], dtype=D).log())  # softmax -> (3/4, 1/4)
    f, x = torch.tensor([4.0, -8.0], dtype=D).view(1, 2, 1, 1), torch.tensor([8.0, 4.0], dtype=D).view(1, 2, 1, 1)
    out, _ = rw.merge(0, f, x, None)
    assert out.flatten().tolist() == pytest.approx([0.75 * 4 + 0.25 * 8, 0.0], abs=1e-15)  # ReLU(-6 + 1) = 0
    sig = LAuReL(StageSpec(2, 1, layout=TOKENS), norm="sigmoid").double()
    with torch.no_grad():
        # log 0 = -inf: alpha = 0; beta = sigmoid(log 3) = 3/4
        sig.logits[0].copy_(torch.tensor([0.0, 3.0], dtype=D).log())
    out, _ = sig.merge(0, tokens(4.0, 1.0), tokens(8.0, -4.0), None)
    assert out.flatten().tolist() == pytest.approx([6.0, -3.0], abs=1e-15)


def test_rw_starts_at_half_branch_half_residual():
    """The paper gives no init: logits 0, so alpha = beta = 1/2 under softmax and sigmoid; a block is (f + x) / 2."""
    for norm in ("softmax", "sigmoid"):
        rw = LAuReL(StageSpec(3, 4, layout=TOKENS), norm=norm)
        assert all(w.item() == 0.5 for t in range(4) for w in rw.residual_weights(t))
    torch.manual_seed(0)
    model = build_model("laurel", "cifar", 20, 5).double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=D)
    with torch.no_grad():
        h = model.stem(x)
        for stage in model.stages:
            for b in stage.blocks:
                s = h if b.downsample is None else b.downsample(h)  # a projection shortcut is x_i
                h = (0.5 * b.residual(h) + 0.5 * s).relu()
        torch.testing.assert_close(model(x), model.fc(h.mean((2, 3))), rtol=0, atol=1e-12)


def test_lr_adds_b_a_x_to_the_residual():
    lr = LAuReL(StageSpec(2, 1, layout=TOKENS), variant="lr", rank=1).double()
    with torch.no_grad():
        lr.maps[0].down.copy_(torch.tensor([[1.0, 2.0]]))  # A x = x_1 + 2 x_2
        lr.maps[0].up.copy_(torch.tensor([[3.0], [-1.0]]))  # B
    out, _ = lr.merge(0, tokens(0.5, 0.5), tokens(1.0, 1.0), None)  # A x = 3, B A x = (9, -3)
    assert out.flatten().tolist() == [0.5 + 1 + 9, 0.5 + 1 - 3]
    maps = LAuReL(StageSpec(2, 1, layout=FEATURE_MAPS), variant="lr", rank=1).double()
    maps.load_state_dict(lr.state_dict())
    out, _ = maps.merge(0, tokens(0.5, 0.5).view(1, 2, 1, 1), tokens(1.0, 1.0).view(1, 2, 1, 1), None)
    assert out.flatten().tolist() == [10.5, 0.0]  # the 1x1 convs, then the ReLU after the add


def test_pa_weighs_the_k_latest_block_inputs_newest_first():
    pa = LAuReL(StageSpec(1, 4, layout=TOKENS), variant="pa", k=2, pa_map="identity").double()
    assert [len(g) for g in pa.gammas] == [1, 2, 2, 2]  # min(k, i + 1)
    assert all((g == 0).all() for g in pa.gammas)  # identity map: the term starts at 0
    with torch.no_grad():
        for g, values in zip(pa.gammas, ([2.0], [10.0, 1.0], [0.5, -1.0], [1.0, 1.0])):
            g.copy_(torch.tensor(values))
    x, state = pa.merge(0, tokens(1.0), tokens(3.0), None)  # x_0 = 3: 1 + 3 + 2 * 3
    assert x.item() == 10.0
    x, state = pa.merge(1, tokens(0.0), x, state)  # x_1 = 10: 0 + 10 + 10 * 10 + 1 * 3
    assert x.item() == 113.0
    x, state = pa.merge(2, tokens(-3.0), x, state)  # x_2 = 113: -3 + 113 + 0.5 * 113 - 10
    assert x.item() == 156.5
    assert [s.item() for s in state] == [113.0]  # k - 1 inputs kept for the next block
    low = LAuReL(StageSpec(2, 2, layout=TOKENS), variant="pa", k=2, rank=1).double()
    assert all((g == 1).all() for g in low.gammas)  # low-rank map: B = 0 zeroes the term
    with torch.no_grad():
        low.maps[1].down.copy_(torch.tensor([[1.0, 1.0]]))
        low.maps[1].up.copy_(torch.tensor([[1.0], [2.0]]))
        low.gammas[1].copy_(torch.tensor([2.0, -1.0]))
    _, state = low.merge(0, tokens(0.0, 0.0), tokens(1.0, 2.0), None)  # B = 0 in block 0: x_1 = x_0 = (1, 2)
    x, _ = low.merge(1, tokens(0.0, 0.0), tokens(3.0, 1.0), state)
    # h(2 (3, 1) - (1, 2)) = B A (5, 0) = (5, 10)
    assert x.flatten().tolist() == [3.0 + 5, 1.0 + 10]


@pytest.mark.parametrize("variant", ["lr", "pa"])
def test_a_resnet_with_lr_or_pa_is_its_equation_block_by_block(variant):
    torch.manual_seed(0)
    model = build_model(f"laurel_{variant}", "cifar", 20, 5, rank=4).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".interaction." in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=D) * 0.3)
    x = torch.randn(2, 3, 16, 16, dtype=D)
    with torch.no_grad():
        h = model.stem(x)
        for stage in model.stages:
            inter, inputs = stage.interaction, []
            for t, b in enumerate(stage.blocks):
                s = h if b.downsample is None else b.downsample(h)  # x_i: the projected input at the shortcut
                inputs.append(s)
                if variant == "lr":
                    g_term = s + inter.maps[t](s)
                else:  # x_i + B A sum_j gamma_j x_{i-j}, j < min(3, i + 1)
                    mix = sum(gam * inputs[-1 - j] for j, gam in enumerate(inter.gammas[t]))
                    g_term = s + inter.maps[t](mix)
                h = (b.residual(h) + g_term).relu()
        torch.testing.assert_close(model(x), model.fc(h.mean((2, 3))), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["laurel_lr", "laurel_pa"])
@pytest.mark.parametrize("backbone,depth,size", [("cifar", 20, 16), ("cifar", 29, 16), ("imagenet", 10, 64),
                                                 ("vit_cifar_tiny", 6, 32)])
def test_lr_and_pa_start_as_the_plain_network_exactly_and_train_their_b(method, backbone, depth, size):
    torch.manual_seed(0)
    plain = build_model("none", backbone, depth, 5).eval()
    model = build_model(method, backbone, depth, 5).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    with torch.no_grad():
        assert torch.equal(out, plain(x))
    out.square().sum().backward()
    ups = [p.grad for n, p in model.named_parameters() if n.endswith(".up")]
    assert ups and all(g is not None for g in ups) and any(g.abs().sum() > 0 for g in ups)


def test_column_orthogonal_init_is_the_papers_footnote():
    down = column_orthogonal_(torch.empty(4, 10, dtype=D))  # A [D = 10, r = 4], stored transposed
    for j in range(4):
        for i in range(10):
            assert down[j, i].item() == (1 / 40 ** 0.5 if i % 4 == j else 0.0)
    gram = down @ down.T
    assert torch.equal(gram, torch.diag(gram.diagonal()))  # orthogonal columns of A
    assert LowRank(8, 2, TOKENS, "xavier").up.abs().sum() == 0


def test_parameter_counts_by_hand():
    # CIFAR-20: 3 stages of 3 blocks, widths 16 / 32 / 64; ResNet-18: 8 blocks, widths 64 / 128 / 256 / 512
    assert added("laurel", "cifar", 20) == 2 * 9
    assert added("laurel_lr", "cifar", 20) == 2 * 16 * 3 * (16 + 32 + 64) == 10752
    assert added("laurel_lr", "cifar", 20, rank=4) == 2 * 4 * 3 * (16 + 32 + 64)
    assert added("laurel_pa", "cifar", 20) == 10752 + 3 * (1 + 2 + 3)  # gammas: min(3, i + 1) per stage
    assert added("laurel_pa", "cifar", 20, pa_map="identity", k=2) == 3 * (1 + 2 + 2)
    assert added("laurel", "imagenet", 18) == 2 * 8
    assert added("laurel_lr", "imagenet", 18) == 2 * 16 * 2 * (64 + 128 + 256 + 512) == 61440
    assert added("laurel", "imagenet", 50) == 2 * 16  # the paper's ResNet-50 run: 2 scalars a block
    # bottleneck CIFAR-29: 3 blocks a stage, outputs 64 / 128 / 256
    assert added("laurel_lr", "cifar", 29) == 2 * 16 * 3 * (64 + 128 + 256)
    # vit_cifar_tiny, 6 blocks of width 192; PA's history spans the two stages: 1 + 2 + 3 + 3 + 3 + 3 gammas
    assert added("laurel", "vit_cifar_tiny", 6) == 12
    assert added("laurel_lr", "vit_cifar_tiny", 6) == 6 * 2 * 16 * 192 == 36864
    assert added("laurel_pa", "vit_cifar_tiny", 6) == 36864 + 15
    assert added("laurel_pa", "vit_cifar_tiny", 6, span="stage") == 36864 + (1 + 2 + 3 + 3) + (1 + 2)


def test_a_variant_is_named_as_its_registered_method():
    assert canonical_method("laurel", {"variant": "lr"}) == ("laurel_lr", {})
    assert canonical_method("laurel_lr", {"variant": "pa", "rank": 4}) == ("laurel_pa", {"rank": 4})
    assert canonical_method("laurel_pa", {"variant": "rw"}) == ("laurel", {})
    assert [display_name(m) for m in ("laurel", "laurel_lr", "laurel_pa")] == ["LAuReL-RW", "LAuReL-LR", "LAuReL-PA"]
    assert RunConfig(method="laurel", model_opts={"variant": "lr"}).name() == "laurel_lr-synthetic-d20-s0"
    assert RunConfig(method="laurel", model_opts={"variant": "lr"}).run_id != RunConfig(method="laurel").run_id
    agg = pd.DataFrame({"method": ["laurel", "laurel", "laurel_lr"], "backbone": "cifar", "depth": 20,
                        "opt.variant": ["rw", "lr", "lr"], "opt.rank": [16, 16, 4]})
    labels = variant_labels(agg, ["method", "backbone", "depth", "opt.variant", "opt.rank"])
    assert list(labels) == ["LAuReL-RW", "LAuReL-LR [rank=16]", "LAuReL-LR [rank=4]"]


def test_bad_options_are_one_clear_error():
    with pytest.raises(ValueError, match=r"^LAuReL variant must be one of \('rw', 'lr', 'pa'\), got 'wr'"):
        build_model("laurel", "cifar", 20, 10, variant="wr")
    with pytest.raises(ValueError, match=r"^LAuReL span='network' needs the tokens layout"):
        build_model("laurel_pa", "imagenet", 18, 10, span="network")
    with pytest.raises(ValueError, match=r"^LAuReL rank must be an integer >= 1, got 0"):
        build_model("laurel_lr", "vit_cifar_tiny", 2, 10, rank=0)
