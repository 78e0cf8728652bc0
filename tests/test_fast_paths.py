"""The fast implementations compute what the straightforward ones do: outputs and gradients to 1e-5."""
import pytest
import torch
import torch.nn.functional as F

from lai_bench.models import build_model
from lai_bench.models.layers import depthwise3x3


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
