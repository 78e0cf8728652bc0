"""The shared layers: the stage memory of MRLA-base / DLA-B against the per-layer implementations, the weighted sum,
the channel conv and the residual merge, outputs and gradients."""
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F

from lai_bench.models import build_model, layers
from lai_bench.models.layers import weighted_sum
from lai_bench.runtime.measure import count_flops


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
                                         ("dla_b", {"cell": "lstm"}), ("dla_b", {"refresh_context": "per_sample"})])
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


def stage_inputs(n=4, b=2, c=6, size=5):
    gen = torch.Generator().manual_seed(0)
    maps = [torch.randn(b, c, size, size, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(n)]
    weights = [torch.rand(b, t + 1, c, generator=gen, dtype=torch.float64, requires_grad=True) for t in range(n)]
    grads = [torch.randn(b, c, size, size, generator=gen, dtype=torch.float64) for _ in range(n)]
    return maps, weights, grads


def test_weighted_sum_equals_the_stacked_sum_with_gradients():
    maps, weights, grads = stage_inputs()
    got = [weighted_sum(weights[t], maps[: t + 1]) for t in range(len(maps))]
    want = [(weights[t][:, :, :, None, None] * torch.stack(maps[: t + 1], 1)).sum(1) for t in range(len(maps))]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # Every map feeds every later block: its gradient gathers from all of them.
    for a, b in zip(torch.autograd.grad(got, maps + weights, grads), torch.autograd.grad(want, maps + weights, grads)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_maps_are_stored_once_and_freed_with_the_graph():
    """The sum keeps references to the maps, never copies of them, and nothing outlives the step."""
    maps, weights, grads = stage_inputs()
    outs, stored, alive = [], [], []
    for t, m in enumerate(maps):
        v = m * 1.0 if t == 0 else m + outs[-1]  # as in a stage: block t's values depend on block t-1's output
        alive.append(weakref.ref(v))
        stored = stored + [v]
        outs.append(weighted_sum(weights[t], stored))
    node = outs[-1].grad_fn
    saved = [getattr(node, a) for a in dir(node) if a.startswith("_saved_")]
    # The map itself is saved for the backward (same storage), not a stacked copy.
    assert stored[-1].data_ptr() in {t.data_ptr() for t in saved if isinstance(t, torch.Tensor)}
    torch.autograd.backward(outs, grads)
    del outs, stored, v, node, saved
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
    assert count_flops(conv, (channels,)).total == channels * conv.conv.kernel_size[0]  # the conv's multiply-adds


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
