"""The fast implementations compute what the straightforward ones do: outputs and gradients to 1e-5."""
import copy
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F

from lai_bench.measure import count_flops
from lai_bench.models import build_model
from lai_bench.models import fused as fused_fns
from lai_bench.models import layers
from lai_bench.models.layers import MapMemory, depthwise3x3, weighted_sum


@pytest.fixture(autouse=True)
def one_thread():
    """Small float64 models: on a busy machine a second thread mostly waits for the first at every op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def grads_of(model: torch.nn.Module, x: torch.Tensor) -> tuple:
    out = model(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method,opts", [("mrla_base", {}), ("dla_b", {}), ("dla_b", {"forward_path": False}),
                                         ("dla_b", {"cell": "lstm"})])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_fast_and_per_layer_implementations_agree_in_outputs_and_gradients(method, opts, block):
    depth = 20 if block == "basic" else 29  # 3 blocks per stage: refreshes of refreshed entries happen
    torch.manual_seed(0)
    fast = build_model(method, "cifar", depth, 10, block, **opts).double().train()
    loop = build_model(method, "cifar", depth, 10, block, reference=True, **opts).double().train()
    assert type(loop.stages[0].interaction) is not type(fast.stages[0].interaction)
    loop.load_state_dict(fast.state_dict())  # same parameter names: the oracle is the same model
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    out_fast, g_fast = grads_of(fast, x)
    out_loop, g_loop = grads_of(loop, x)
    assert torch.allclose(out_fast, out_loop, rtol=1e-5, atol=1e-5)
    assert g_fast.keys() == g_loop.keys() and len(g_fast) == len(list(fast.parameters()))
    for name in g_fast:
        assert torch.allclose(g_fast[name], g_loop[name], rtol=1e-5, atol=1e-5), name


def test_reference_build_refuses_methods_without_one():
    with pytest.raises(ValueError, match="no reference .*'se'.*mrla_base, dla_b"):
        build_model("se", "cifar", 20, 10, reference=True)


@pytest.mark.parametrize("channels,size", [(3, 5), (16, 8), (64, 32)])
def test_depthwise_conv_fast_backward_equals_pytorchs(channels, size):
    torch.manual_seed(0)
    conv = depthwise3x3(channels)
    x = torch.randn(2, channels, size, size, requires_grad=True)
    grad = torch.randn(2, channels, size, size)
    out = conv(x)
    gx, gw = torch.autograd.grad(out, (x, conv.weight), grad)
    want = F.conv2d(x, conv.weight, padding=1, groups=channels)
    gx_want, gw_want = torch.autograd.grad(want, (x, conv.weight), grad)
    assert out.grad_fn is not None and "DepthwiseConv3x3" in type(out.grad_fn).__name__  # the fast path ran
    assert torch.equal(out, want)
    assert torch.allclose(gx, gx_want, atol=1e-5) and torch.allclose(gw, gw_want, atol=1e-5)
    with torch.no_grad():  # fvcore and inference see a plain conv
        assert conv(x).grad_fn is None and torch.equal(conv(x), want)


def stage_of_sums(maps, weights, memory=None):
    """Block t's attention output for t = 0..n-1: a MapMemory, or the plain per-term loop when memory is None."""
    outs = []
    for t in range(len(maps)):
        if memory is None:
            outs.append(weighted_sum(weights[t], maps[: t + 1]))
        else:
            memory.append(maps[t])
            outs.append(memory.weighted_sum(weights[t]))
    return outs


def stage_inputs(n=4, b=2, c=6, size=5):
    gen = torch.Generator().manual_seed(0)
    maps = [torch.randn(b, c, size, size, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(n)]
    weights = [torch.rand(b, t + 1, c, generator=gen, dtype=torch.float64, requires_grad=True) for t in range(n)]
    grads = [torch.randn(b, c, size, size, generator=gen, dtype=torch.float64) for _ in range(n)]
    return maps, weights, grads


def test_map_memory_sums_and_gradients_equal_the_plain_loop():
    maps, weights, grads = stage_inputs()
    want = stage_of_sums(maps, weights)
    got = stage_of_sums(maps, weights, MapMemory())
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # Every map feeds every later block: its gradient gathers from all of them.
    g_want = torch.autograd.grad(want, maps + weights, grads)
    g_got = torch.autograd.grad(got, maps + weights, grads)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_map_memory_gives_the_same_gradients_on_a_second_backward_and_a_partial_one():
    maps, weights, grads = stage_inputs()
    outs = stage_of_sums(maps, weights, MapMemory())
    first = torch.autograd.grad(outs, maps, grads, retain_graph=True)
    second = torch.autograd.grad(outs, maps, grads, retain_graph=True)  # buffers were handed over, not reused
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    partial = torch.autograd.grad(outs[1], maps[:2], grads[1])  # only block 1's output: maps 0 and 1
    want = torch.autograd.grad(weighted_sum(weights[1], maps[:2]), maps[:2], grads[1])
    for a, b in zip(partial, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backward", [True, False])
def test_map_memory_frees_the_maps_with_the_graph(backward):
    # The autograd nodes refer to the stored maps; nothing may refer back into the graph: a cycle
    # through C++ nodes is never collected (each training step would leak a stage of maps).
    maps, weights, grads = stage_inputs()
    memory, outs, alive = MapMemory(), [], []
    for t, m in enumerate(maps):
        v = m * 1.0 if t == 0 else m + outs[-1]  # as in a stage: block t's values depend on block t-1's output
        alive.append(weakref.ref(v))
        memory.append(v)
        outs.append(memory.weighted_sum(weights[t]))
    if backward:
        torch.autograd.backward(outs, grads)
    del memory, outs, v
    gc.collect()
    assert all(ref() is None for ref in alive)


@pytest.mark.parametrize("method", ["mrla_base", "dla_b"])
def test_flops_count_the_attention_sum_as_the_public_code_does(method):
    # fvcore counts matmuls, not elementwise products: both implementations trace the sum as a matmul.
    fast = count_flops(build_model(method, "cifar", 20, 10), (3, 16, 16))
    loop = count_flops(build_model(method, "cifar", 20, 10, reference=True), (3, 16, 16))
    assert fast.by_operator.get("bmm", 0) == loop.by_operator.get("bmm", 0) > 0
    # Basic CIFAR ResNet-20: 3 blocks per stage, C * H * W = 16*16*16, 32*8*8, 64*4*4 = 4096, 2048, 1024.
    assert fast.by_operator["bmm"] == (1 + 2 + 3) * (4096 + 2048 + 1024)


@pytest.mark.parametrize("slice_bytes", [2**30, 2 * 3 * 5 * 5 * 8])  # one slice; slices of 2 samples (2, 2, 1)
def test_depthwise_mix_equals_the_plain_sum_and_passes_gradcheck(monkeypatch, slice_bytes):
    monkeypatch.setattr(fused_fns, "MIX_SLICE_BYTES", slice_bytes)
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)

    x, o, m = rand(5, 3, 5, 5), rand(5, 3, 5, 5), rand(5, 3, 5, 5)
    k1, k2, a_sample, a_channel = rand(5, 3, 3, 3), rand(5, 3, 3, 3), rand(5, 3, 1, 1), rand(3, 1, 1)
    inputs = (x, k1, o, k2, a_sample, m, a_channel, o)

    def fused(x, k1, o, k2, a_sample, m, a_channel, o2):
        return fused_fns.depthwise_mix([(x, k1), (o, k2)], [(a_sample, m), (a_channel, o2)])

    def plain(x, k1, o, k2, a_sample, m, a_channel, o2):  # each term spelled out, as in the papers
        conv = lambda t, k: F.conv2d(t.reshape(1, 15, 5, 5), k.reshape(15, 1, 3, 3), padding=1, groups=15)
        return conv(x, k1).view(5, 3, 5, 5) + conv(o, k2).view(5, 3, 5, 5) + a_sample * m + a_channel * o2

    got, want = fused(*inputs), plain(*inputs)
    assert "DepthwiseMix" in type(got.grad_fn).__name__
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    grad = torch.randn(5, 3, 5, 5, generator=gen, dtype=torch.float64)
    for g_got, g_want in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(want, inputs, grad)):
        torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(fused, inputs)


@pytest.mark.parametrize("method,opts", [("mrla_light", {}), ("dla_l", {}), ("dla_l", {"cell": "lstm"}),
                                         ("dla_l", {"forward_path": False}), ("dla_l", {"cell": "none"}),
                                         ("dla_l", {"drop_path": 0.3}), ("mrla_light", {"drop_path": 0.3})])
def test_the_fused_light_attention_trains_exactly_like_the_plain_expression(monkeypatch, method, opts):
    # Fused: per-sample kernels summed in batch slices, BN + residual add (+ drop-path) as one tensor.
    monkeypatch.setattr(fused_fns, "MIX_SLICE_BYTES", 16 * 16 * 16 * 8 * 2)  # batch 5 in slices of 2, 2 and 1
    torch.manual_seed(0)
    model = build_model(method, "cifar", 20, 10, **opts).double()
    x = torch.randn(5, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 10, (5,))
    results = {}
    for fused in (False, True):
        monkeypatch.setattr(layers.LightAttention, "fused", fused)
        m, xi = copy.deepcopy(model), x.clone().requires_grad_()
        torch.manual_seed(1)  # the same drop-path draws
        out = m(xi)
        F.cross_entropy(out, y).backward()
        grads = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
        results[fused] = (out.detach(), xi.grad, grads, m.state_dict())
    plain, fused = results[False], results[True]
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fused[1], plain[1], rtol=1e-10, atol=1e-10)
    assert fused[2].keys() == plain[2].keys() and any("lambda_t" in n for n in plain[2])
    for name in plain[2]:
        torch.testing.assert_close(fused[2][name], plain[2][name], rtol=1e-9, atol=1e-10, msg=name)
    for name, value in plain[3].items():  # BN running statistics and batch counts updated alike
        torch.testing.assert_close(fused[3][name], value, rtol=1e-10, atol=1e-12, msg=name)
    if opts.get("drop_path"):  # other draws give other outputs: both paths applied the same masks
        torch.manual_seed(2)
        assert not torch.allclose(copy.deepcopy(model)(x), plain[0])


@pytest.mark.parametrize("slice_bytes", [2**30, 2 * 3 * 5 * 5 * 8])  # one slice; slices of 2 samples (2, 2, 1)
@pytest.mark.parametrize("drop", [False, True])
def test_light_block_is_x_plus_the_batch_norm_of_the_mix_and_passes_gradcheck(monkeypatch, slice_bytes, drop):
    monkeypatch.setattr(fused_fns, "MIX_SLICE_BYTES", slice_bytes)
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)

    x, o, k1, k2, lam = rand(5, 3, 5, 5), rand(5, 3, 5, 5), rand(5, 3, 3, 3), rand(5, 3, 3, 3), rand(3, 1, 1)
    bn = torch.nn.BatchNorm2d(3, momentum=0.3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.randn(3, generator=gen)), bn.bias.copy_(torch.randn(3, generator=gen))
    plain_bn = copy.deepcopy(bn)
    scale = torch.tensor([0.0, 2.0, 2.0, 0.0, 2.0], dtype=torch.float64).view(5, 1, 1, 1) if drop else None
    inputs = (x, k1, o, k2, lam)

    def fused(x, k1, o, k2, lam):
        return fused_fns.light_block([(x, k1), (o, k2)], [(lam, o)], bn, scale)

    def plain(x, k1, o, k2, lam):  # x + scale * BN(DWConv_k1(x) + DWConv_k2(o) + lam * o), spelled out
        conv = lambda t, k: F.conv2d(t.reshape(1, 15, 5, 5), k.reshape(15, 1, 3, 3), padding=1, groups=15)
        z = conv(x, k1).view(5, 3, 5, 5) + conv(o, k2).view(5, 3, 5, 5) + lam * o
        out = plain_bn(z)
        return x + (out if scale is None else out * scale)

    got, want = fused(*inputs), plain(*inputs)
    assert "LightBlock" in type(got.grad_fn).__name__
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(plain_bn, name), rtol=1e-12, atol=1e-12)
    grad = torch.randn(5, 3, 5, 5, generator=gen, dtype=torch.float64)
    params = (bn.weight, bn.bias)
    got_grads = torch.autograd.grad(got, inputs + params, grad)
    want_grads = torch.autograd.grad(want, inputs + (plain_bn.weight, plain_bn.bias), grad)
    for g_got, g_want in zip(got_grads, want_grads):
        torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(fused, inputs)


def test_gap_gradient_is_the_mean_gradient_as_a_broadcast_view():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 3, dtype=torch.float64)
    (got,) = torch.autograd.grad(layers.gap(x), x, grad)
    (want,) = torch.autograd.grad(x.mean((2, 3)), x, grad)
    assert torch.equal(got, want) and got.stride()[2:] == (0, 0)  # no [B, C, H, W] tensor was written
    assert torch.autograd.gradgradcheck(layers.gap, (x,))


@pytest.mark.parametrize("channels", [16, 256])  # kernel 3 and 5
def test_channel_conv_as_windows_times_kernel_equals_conv1d_with_gradients(channels):
    conv = layers.ChannelConv1d(channels).double()
    y = torch.randn(4, channels, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(4, channels, dtype=torch.float64)
    got = conv(y)
    want = F.conv1d(y.unsqueeze(1), conv.conv.weight, padding=conv.conv.kernel_size[0] // 2).squeeze(1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g_got, g_want in zip(torch.autograd.grad(got, (y, conv.conv.weight), grad),
                             torch.autograd.grad(want, (y, conv.conv.weight), grad)):
        torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)
    assert count_flops(conv, (channels,)).total == channels * conv.conv.kernel_size[0]  # fvcore: the conv


def test_residual_relu_is_relu_of_the_sum_and_leaves_its_inputs_alone():
    branch = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    identity = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    before = (branch.detach().clone(), identity.detach().clone())
    got, want = layers.residual_relu(branch, identity), F.relu(branch + identity)
    assert torch.equal(got, want) and (got < 0).sum() == 0 and (want == 0).any()
    assert torch.equal(branch, before[0]) and torch.equal(identity, before[1])
    grad = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    for g_got, g_want in zip(torch.autograd.grad(got, (branch, identity), grad),
                             torch.autograd.grad(want, (branch, identity), grad)):
        assert torch.equal(g_got, g_want)


@pytest.mark.parametrize("slice_bytes", [2**30, 4 * 8 * 6 * 6 * 4])  # one slice; slices of 4 samples
def test_light_block_batch_statistics_are_accurate_in_float32_far_from_zero(monkeypatch, slice_bytes):
    """Per-slice two-pass moments: a mix with mean 1e3 and spread 1 keeps its variance in float32."""
    monkeypatch.setattr(fused_fns, "MIX_SLICE_BYTES", slice_bytes)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 8, 6, 6, generator=gen)
    o = 1e3 + torch.randn(10, 8, 6, 6, generator=gen)
    k = 0.1 * torch.randn(10, 8, 3, 3, generator=gen)
    lam = torch.ones(8, 1, 1)
    bn = torch.nn.BatchNorm2d(8, momentum=1.0)
    out = fused_fns.light_block([(x.requires_grad_(), k)], [(lam, o)], bn)
    z = (F.conv2d(x.double().reshape(1, 80, 6, 6), k.double().reshape(80, 1, 3, 3), padding=1, groups=80)
         .view(10, 8, 6, 6) + o.double())
    var = z.var((0, 2, 3), unbiased=False)
    torch.testing.assert_close(bn.running_mean.double(), z.mean((0, 2, 3)), rtol=1e-6, atol=0)
    torch.testing.assert_close(bn.running_var.double(), z.var((0, 2, 3)), rtol=1e-4, atol=0)
    want = x.double() + (z - z.mean((0, 2, 3), keepdim=True)) / (var.view(1, 8, 1, 1) + bn.eps).sqrt()
    torch.testing.assert_close(out.double(), want, rtol=0, atol=1e-3)


@pytest.mark.parametrize("channels,head_dim", [(8, 4), (8, 8), (128, 32)])  # 2 and 1 heads, kernel 3; 4 heads, kernel 5
def test_scored_kernels_equal_the_plain_scores_times_the_value_weight_and_pass_gradcheck(channels, head_dim):
    torch.manual_seed(0)
    attn = layers.LightAttention(channels, head_dim).double()
    y = torch.randn(3, channels, dtype=torch.float64, requires_grad=True)
    inputs = (y, attn.query.conv.weight, attn.key.conv.weight, attn.value.weight)

    def plain(y, wq, wk, w):
        return w.view(1, channels, 3, 3) * attn.scores(y).view(3, channels, 1, 1)

    def fused(y, wq, wk, w):
        return fused_fns.scored_kernels(y, wq.view(-1), wk.view(-1), w, attn.heads)

    got, want = fused(*inputs), plain(*inputs)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    grad = torch.randn(got.shape, dtype=torch.float64)
    for g_got, g_want in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(want, inputs, grad)):
        torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(fused, inputs)


@pytest.mark.parametrize("method", ["mrla_light", "dla_l"])
def test_the_fused_light_attention_gives_the_same_training_step_in_channels_last(method):
    torch.manual_seed(0)
    model = build_model(method, "cifar", 20, 10).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        m = copy.deepcopy(model).to(memory_format=memory_format)
        out = m(x.contiguous(memory_format=memory_format))
        (out * torch.arange(10.0, dtype=torch.float64)).sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in m.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-10, atol=1e-10)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-9, atol=1e-10, msg=name)
