"""Hyper-Connections (SHC, DHC) and mHC: parameter counts by hand, one layer's update by hand, the plain network at
initialisation, the Sinkhorn projection, one training step."""
import math

import pytest
import torch

from lai_bench.models import build_model, display_name, method_info
from lai_bench.models.interaction.base import StageSpec
from lai_bench.models.interaction.hc import HyperConnections, sinkhorn
from lai_bench.models.layers.layout import FEATURE_MAPS, TOKENS


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_three_names_share_one_class_with_their_defaults():
    info = {m: method_info(m) for m in ("hc", "dhc", "mhc")}
    assert len({i.cls for i in info.values()}) == 1
    assert [display_name(m) for m in info] == ["HC", "DHC", "mHC"]
    assert [i.order for i in info.values()] == [12, 13, 14]
    assert info["hc"].defaults == {} and info["dhc"].defaults == {"dynamic": True}
    assert info["mhc"].defaults == {"dynamic": True, "constraint": "sinkhorn"}


def per_layer(c: int, n: int, dynamic: bool) -> int:
    """Static [A_m A_r] n(n+1) + B n; dynamic: W_a c(n+1), W_b c, two scales, the LayerNorm 2c."""
    return n * (n + 1) + n + (c * (n + 1) + c + 2 + 2 * c if dynamic else 0)


@pytest.mark.parametrize("method,dynamic,opts", [
    ("hc", False, {}), ("dhc", True, {}), ("mhc", True, {}), ("mhc", False, {"dynamic": False}),
    ("hc", False, {"rate": 2}), ("dhc", True, {"rate": 3}),
])
def test_parameter_counts_by_hand(method, dynamic, opts):
    n = opts.get("rate", 4)
    # CIFAR ResNet-20: 3 stages of 3 blocks, 16/32/64 channels; blocks 1 and 2 of each stage are HC layers.
    extra = sum(2 * per_layer(c, n, dynamic) for c in (16, 32, 64))
    resnet = n_params(build_model(method, "cifar", 20, 10, **opts))
    assert resnet == n_params(build_model("none", "cifar", 20, 10)) + extra
    # ViT at depth 6 (width 192): every block is an HC layer.
    vit = n_params(build_model(method, "vit_cifar_tiny", 6, 10, **opts))
    assert vit == n_params(build_model("none", "vit_cifar_tiny", 6, 10)) + 6 * per_layer(192, n, dynamic)


def random_hc(spec: StageSpec, **opts) -> HyperConnections:
    inter = HyperConnections(spec, **opts)
    with torch.no_grad():
        for p in inter.parameters():
            p.normal_()
    return inter


def layer_norm(v, norm):
    mu, var = v.mean(), v.var(unbiased=False)
    return (v - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def sinkhorn_by_hand(logits, iters):
    """exp, then per iteration: each source row to sum 1, then each target column to sum 1."""
    m = torch.exp(logits).clone()
    n = m.shape[0]
    for _ in range(iters):
        for i in range(n):
            m[i] = m[i] / m[i].sum()
        for j in range(n):
            m[:, j] = m[:, j] / m[:, j].sum()
    return m


def weights_by_hand(layer, hs, constrained, iters):
    """A_m [n], A_r [n, n] (source, target), B [n] for the streams hs [n, C] at one position."""
    alpha, beta = layer.static_alpha.clone(), layer.static_beta.clone()
    if layer.dynamic:
        for i in range(hs.shape[0]):
            hbar = layer_norm(hs[i], layer.norm)
            alpha[i] = alpha[i] + layer.dynamic_alpha_scale * torch.tanh(hbar @ layer.dynamic_alpha_fn)
            beta[i] = beta[i] + layer.dynamic_beta_scale * torch.tanh(hbar @ layer.dynamic_beta_fn[:, 0])
    a_m, a_r = alpha[:, 0], alpha[:, 1:]
    if constrained:
        a_m, a_r, beta = torch.sigmoid(a_m), sinkhorn_by_hand(a_r, iters), 2 * torch.sigmoid(beta)
    return a_m, a_r, beta


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("opts", [{}, {"dynamic": True}, {"constraint": "sinkhorn"},
                                  {"dynamic": True, "constraint": "sinkhorn", "sinkhorn_iters": 3}])
def test_one_token_layer_by_hand(opts):
    """h = A_m^T H; H'_j = B_j T(h) + sum_i A_r[i, j] H_i, position by position (a stage of one block, not last:
    its carry is the streams)."""
    n, c = 3, 5
    inter = random_hc(StageSpec(c, 1, 0, 2, TOKENS), rate=n, **opts)
    streams = torch.randn(n, 2, 4, c)  # [n, B, 1 + N, C]
    state = inter.begin(streams[0], streams)
    h = inter.block_input(streams[0], state)
    y = torch.randn(2, 4, c)  # the block function T(h)
    _, new = inter.merge(0, y, h, state)  # identity h: the block was given x = h
    layer = inter.layers[0]
    for b in range(2):
        for p in range(4):
            a_m, a_r, beta = weights_by_hand(layer, streams[:, b, p], inter.constrained, inter.iters)
            want_h = sum(a_m[i] * streams[i, b, p] for i in range(n))
            torch.testing.assert_close(h[b, p], want_h)
            for j in range(n):
                want = beta[j] * y[b, p] + sum(a_r[i, j] * streams[i, b, p] for i in range(n))
                torch.testing.assert_close(new[j, b, p], want)


@pytest.mark.usefixtures("float64")
def test_a_token_block_given_another_x_still_adds_its_function_of_h():
    """A token block returns Block(h) - x for the x it was given (the previous stage's output): T(h) is recovered."""
    n, c = 2, 3
    inter = random_hc(StageSpec(c, 1, 0, 2, TOKENS), rate=n)
    streams, x = torch.randn(n, 1, 2, c), torch.randn(1, 2, c)
    state = inter.begin(x, streams)
    y = torch.randn(1, 2, c)
    block_h = state.h + y  # Block(h) of a pre-norm block is h + T(h)
    _, new = inter.merge(0, block_h - x, x, state)
    torch.testing.assert_close(new, state.streams + state.beta * y)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("opts", [{}, {"dynamic": True, "constraint": "sinkhorn"}])
def test_one_map_layer_by_hand_with_the_relu_on_each_stream(opts):
    """Maps: block 0 is plain, its output copied into the streams; block 1 is the HC layer, ReLU after its add,
    per pixel; the last stage ends in the streams' sum."""
    n, c = 3, 4
    inter = random_hc(StageSpec(c, 2, 0, 1, FEATURE_MAPS), rate=n, **opts)
    r0, s0 = torch.randn(2, c, 3, 3), torch.randn(2, c, 3, 3)
    x1, state = inter.merge(0, r0, s0, inter.begin(s0, None))
    plain = torch.relu(r0 + s0)
    streams = plain.expand(n, *plain.shape)
    y = torch.randn(2, c, 3, 3)
    out, new = inter.merge(1, y, x1, state)
    layer = inter.layers[0]
    for b in range(2):
        for u in range(3):
            for v in range(3):
                a_m, a_r, beta = weights_by_hand(layer, streams[:, b, :, u, v], inter.constrained, inter.iters)
                torch.testing.assert_close(x1[b, :, u, v], sum(a_m[i] * plain[b, :, u, v] for i in range(n)))
                for j in range(n):
                    want = beta[j] * y[b, :, u, v] + sum(a_r[i, j] * plain[b, :, u, v] for i in range(n))
                    torch.testing.assert_close(new[j, b, :, u, v], torch.relu(want))
    torch.testing.assert_close(out, new.sum(0))


def test_sinkhorn_gives_a_doubly_stochastic_matrix():
    """The last step makes each target's weights sum to 1 exactly; the other sums converge with the iterations (at
    logits of std 1, 20 iterations leave them within 1e-4 of 1; 100 within rounding)."""
    logits = torch.randn(1000, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ones = torch.ones(1000, 4, dtype=torch.float64)
    m = sinkhorn(logits, 20)
    assert (m > 0).all()
    torch.testing.assert_close(m.sum(-2), ones, atol=1e-12, rtol=0)
    torch.testing.assert_close(m.sum(-1), ones, atol=1e-4, rtol=0)
    torch.testing.assert_close(sinkhorn(logits, 100).sum(-1), ones, atol=1e-12, rtol=0)
    torch.testing.assert_close(m[0], sinkhorn_by_hand(logits[0], 20))


@pytest.mark.parametrize("backbone,depth,size", [("cifar", 20, 16), ("cifar", 29, 16), ("vit_cifar_tiny", 6, 32)])
@pytest.mark.parametrize("method", ["hc", "dhc", "mhc"])
def test_at_init_the_streams_sum_to_n_times_the_plain_network(method, backbone, depth, size):
    """SHC and DHC at the paper's init (and mHC at ours) compute the plain network: every stream is the plain
    network's activation, so the final sum is n times the plain features (before the ViT's final LayerNorm)."""
    torch.manual_seed(0)
    plain = build_model("none", backbone, depth, 10).double()
    model = build_model(method, backbone, depth, 10).double()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".interaction." in k for k in missing)
    if backbone.startswith("vit"):
        plain.norm = model.norm = torch.nn.Identity()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    # mHC's pre logits log(1/(n-1)) are float32 numbers: their sigmoids sum to 1 within float32 rounding.
    tol = 1e-5 if method == "mhc" else 1e-10
    for mode in ("train", "eval"):
        plain.train(mode == "train")
        model.train(mode == "train")
        want = 4 * plain.forward_features(x)
        torch.testing.assert_close(model.forward_features(x), want, rtol=tol, atol=tol * want.abs().max().item())


@pytest.mark.parametrize("backbone,depth,size", [("cifar", 20, 16), ("vit_cifar_tiny", 2, 32)])
@pytest.mark.parametrize("method", ["dhc", "mhc"])
def test_it_trains_a_step_without_nan(method, backbone, depth, size):
    torch.manual_seed(0)
    model = build_model(method, backbone, depth, 10, drop_path=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, size, size), torch.randint(0, 10, (4,))
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.isfinite(loss.item())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    layer = model.stages[0].interaction.layers[0]
    assert layer.dynamic_alpha_fn.grad.abs().sum() > 0  # the dynamic part learns from the first step


@pytest.mark.parametrize("opts,message", [
    ({"constraint": "softmax"}, "HC constraint must be one of"),
    ({"constraint": "sinkhorn", "rate": 1}, "needs rate >= 2"),
])
def test_bad_options_name_the_problem(opts, message):
    with pytest.raises(ValueError, match=message):
        build_model("hc", "cifar", 20, 10, **opts)
