"""The public code's behaviour where it departs from the papers, reproduced by default and switchable.

DLA's refresh reads sample 0's context for the whole batch (`refresh_context`), RLA-Net's recurrent update
reads the block output (`recurrent_input`); see docs/faithfulness.md. The oracles below are written from what
the public code computes, in float64, on small shapes.
"""
import math

import pytest
import torch
from test_equations import (
    assert_same_outputs_and_gradients,
    conv1d_by_hand,
    dwconv_by_hand,
    mlp,
    randomise_bn,
    refresh_context,
    run_stage,
    sig,
)

from lai_bench.models import build_model
from lai_bench.models.interaction.base import StageSpec
from lai_bench.models.interaction.dla import DLA

MODES = ["sample0", "per_sample"]
# (backbone, depth, image size): basic and bottleneck CIFAR blocks, the ImageNet stem; two or more blocks per
# stage, as DLA-B refreshes nothing in a stage of one block.
MODELS = [("cifar", 20, 8), ("cifar", 29, 8), ("imagenet", 18, 32)]


@pytest.fixture(autouse=True)
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def dsu_by_hand(cell, u, h, c):
    """The DSU step: h and c may be [B, C] (each sample's own) or [C] (one context for the batch)."""
    i, f, g = (mlp(cell.input_proj, u) + mlp(cell.hidden_proj, h)).chunk(3, dim=-1)
    c = sig(f) * c + sig(i) * torch.tanh(g)
    return sig(c), c


def light_attention_by_hand(attn, x, o, train):
    """BN(sigmoid(q.k / sqrt(d)) * DWConv(x) + lambda * o), BN with batch statistics when training."""
    b, ch = x.shape[:2]
    y = x.mean((2, 3))
    q, k = conv1d_by_hand(attn.query.conv.weight, y), conv1d_by_hand(attn.key.conv.weight, y)
    d = ch // attn.heads
    score = sig((q * k).view(b, attn.heads, d).sum(-1) / math.sqrt(d)).repeat_interleave(d, dim=1)
    z = dwconv_by_hand(attn.value.weight, x) * score[:, :, None, None] + attn.lambda_t * o
    bn = attn.bn
    if train:
        mean, var = z.mean((0, 2, 3), keepdim=True), z.var((0, 2, 3), unbiased=False, keepdim=True)
    else:
        mean, var = bn.running_mean.view(1, -1, 1, 1), bn.running_var.view(1, -1, 1, 1)
    return (z - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)


def dla_l_stage_public(dla, pairs, mode, train):
    """A DLA-L stage as the public code computes it: the context path per sample; the refresh under the context
    the cell reads (sample 0's for every sample with `sample0`); o' = o * d + DWConv(o); light attention."""
    outs, h, c = [], None, None
    for t, (r, s) in enumerate(pairs):
        x = torch.relu(r + s)
        if h is None:
            h = c = torch.zeros(x.shape[:2])
        h, c = dsu_by_hand(dla.cell, x.mean((2, 3)), h, c)
        h_in, c_in = refresh_context((h, c), mode)
        d, _ = dsu_by_hand(dla.cell, s.mean((2, 3)), h_in, c_in)
        o = s * d[:, :, None, None] + dwconv_by_hand(dla.refresh_conv.weight, s)
        outs.append(x + light_attention_by_hand(dla.attn[t], x, o, train))
    return outs


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_dla_l_stage_equals_the_public_computation_with_gradients(mode, train):
    torch.manual_seed(0)
    dla = DLA(StageSpec(8, 3, 0, 3), attention="light", reduction=2, head_dim=4, refresh_context=mode)
    randomise_bn(dla)
    dla.train(train)
    pairs = [(torch.randn(3, 8, 4, 4, requires_grad=True), torch.randn(3, 8, 4, 4, requires_grad=True))
             for _ in range(3)]
    ours, oracle = run_stage(dla, pairs), dla_l_stage_public(dla, pairs, mode, train)
    assert_same_outputs_and_gradients(ours, oracle, list(dla.parameters()) + [t for pair in pairs for t in pair])


def eval_model(method, backbone, depth, **opts):
    torch.manual_seed(0)
    model = build_model(method, backbone, depth, 10, **opts)
    randomise_bn(model)
    return model.eval()


def rows_differ(a, b):
    """Per row: True where the rows differ by more than float64 noise."""
    return ((a - b).abs().amax(1) / b.abs().amax(1)) > 1e-9


@pytest.mark.parametrize("method", ["dla_l", "dla_b"])
@pytest.mark.parametrize("backbone,depth,size", MODELS)
def test_per_sample_refresh_gives_each_sample_the_output_it_has_alone(method, backbone, depth, size):
    model = eval_model(method, backbone, depth, refresh_context="per_sample")
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        batch = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, alone, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("method", ["dla_l", "dla_b"])
@pytest.mark.parametrize("backbone,depth,size", MODELS)
def test_sample0_refresh_couples_every_sample_to_the_first_of_its_batch(method, backbone, depth, size):
    model = eval_model(method, backbone, depth)  # the default: sample0, as the public code
    assert all(m.refresh_context == "sample0" for m in model.modules() if isinstance(m, DLA))
    x = torch.randn(4, 3, size, size)
    other_first = torch.cat([torch.randn(1, 3, size, size), x[1:]])
    with torch.no_grad():
        batch = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(4)])
        swapped = model(other_first)
    torch.testing.assert_close(batch[:1], alone[:1], atol=1e-12, rtol=1e-10)  # sample 0 is its own context
    assert rows_differ(batch[1:], alone[1:]).all()  # every other sample read sample 0's context
    assert rows_differ(swapped[1:], batch[1:]).all()  # a new first sample changes every other output


@pytest.mark.parametrize("method", ["dla_l", "dla_b"])
def test_both_refresh_contexts_agree_on_a_batch_of_one(method):
    sample0 = eval_model(method, "cifar", 20)
    per_sample = eval_model(method, "cifar", 20, refresh_context="per_sample")
    per_sample.load_state_dict(sample0.state_dict())
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(sample0(x), per_sample(x), atol=1e-12, rtol=1e-10)


def test_sample0_couples_samples_in_training_through_the_refresh_not_only_bn():
    """In training BN couples a batch anyway; with BN statistics fixed (eval BN) and autograd on, the DLA refresh
    still makes sample 1's loss depend on sample 0's input for sample0 and not for per_sample."""
    grads = {}
    for mode in MODES:
        model = eval_model("dla_l", "cifar", 20, refresh_context=mode)
        x = torch.randn(3, 3, 8, 8, requires_grad=True)
        model(x)[1].sum().backward()
        grads[mode] = x.grad[0].abs().max().item()
    assert grads["per_sample"] == 0.0
    assert grads["sample0"] > 1e-6


@pytest.mark.parametrize("recurrent_input", ["output", "residual"])
def test_rla_stage_equals_the_public_computation(recurrent_input):
    """RLA's public block: `y = out` aliases the residual branch, then `out += identity; relu_(out)` rewrites it,
    so the update reads ReLU(r + s) (the default); `y = out.clone()` gives the residual reading."""
    torch.manual_seed(0)
    model = build_model("rla", "cifar", 20, 10, recurrent_input=recurrent_input)
    randomise_bn(model)
    model.eval()
    stage = model.stages[0]
    inter = stage.interaction
    x, h = torch.randn(2, 16, 8, 8), torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        ours, ours_h = stage(x, h)
        for t, block in enumerate(stage.blocks):
            out = block.residual(torch.cat([x, h], 1))
            y = out if recurrent_input == "output" else out.clone()
            out += x
            out.relu_()
            x = out
            h = inter.recurrent_conv(torch.tanh(inter.bns[t](h + inter.conv_out(y))))
    torch.testing.assert_close(ours, x)
    torch.testing.assert_close(ours_h, h)
