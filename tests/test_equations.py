"""Each method's equations on tiny inputs, against a computation written out here."""
import math

import pytest
import torch
import torch.nn.functional as F

from lai_bench.models import build_model
from lai_bench.models.interaction.base import StageSpec
from lai_bench.models.interaction.dense import DenseAggregation
from lai_bench.models.interaction.dla import DLA, DSU, LightState, SigmoidGRUCell
from lai_bench.models.interaction.eca import ECA
from lai_bench.models.interaction.mrla import MRLABase
from lai_bench.models.interaction.se import SE
from lai_bench.models.layers import BaseAttention, DIALSTMCell, LightAttention, eca_kernel_size

pytestmark = pytest.mark.usefixtures("float64")  # hand computations compared tightly


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def mlp(seq, u):
    """Linear -> ReLU -> Linear, written out."""
    w1, b1, w2, b2 = seq[0].weight, seq[0].bias, seq[2].weight, seq[2].bias
    return torch.clamp(u @ w1.T + b1, min=0) @ w2.T + b2


def sig(z):
    return 1 / (1 + torch.exp(-z))


def conv1d_by_hand(weight, y):
    """ECA-style zero-padded 1-D conv over channels: q_c = sum_i w_i y_{c+i-k//2}."""
    k, (b, c) = weight.numel(), y.shape
    w = weight.flatten()
    out = torch.zeros(b, c)
    for ch in range(c):
        for i in range(k):
            j = ch + i - k // 2
            if 0 <= j < c:
                out[:, ch] += w[i] * y[:, j]
    return out


def dwconv_by_hand(weight, x):
    b, c, h, w = x.shape
    xp = F.pad(x, (1, 1, 1, 1))
    out = torch.zeros_like(x)
    for a in range(3):
        for bb in range(3):
            out += weight[:, 0, a, bb][None, :, None, None] * xp[:, :, a:a + h, bb:bb + w]
    return out


def bn_eval_by_hand(bn, z):
    shape = (1, -1, 1, 1)
    scale = bn.weight.view(shape) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return (z - bn.running_mean.view(shape)) * scale + bn.bias.view(shape)


def randomise_bn(module):
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def test_eca_kernel_size_rule():
    # odd(int((log2 C + 1) / 2)): the kernels behind ECA's parameter count on CIFAR ResNet-164.
    assert [eca_kernel_size(c) for c in (16, 64, 128, 256, 512, 1024, 2048)] == [3, 3, 5, 5, 5, 5, 7]


def test_dsu_cell_by_hand():
    torch.manual_seed(0)
    cell = DSU(8, reduction=4)
    u, h, c = torch.randn(3, 8), torch.rand(3, 8), torch.randn(3, 8)
    gates = mlp(cell.input_proj, u) + mlp(cell.hidden_proj, h)
    i, f, g = gates[:, :8], gates[:, 8:16], gates[:, 16:]
    c_new = sig(f) * c + sig(i) * torch.tanh(g)
    h_new = sig(c_new)  # no output gate
    out, (h_out, c_out) = cell(u, (h, c))
    torch.testing.assert_close(c_out, c_new)
    torch.testing.assert_close(h_out, h_new)
    torch.testing.assert_close(out, h_new)
    # Zero state at the start of a stage.
    out0, _ = cell(u, None)
    i, f, g = (mlp(cell.input_proj, u) + mlp(cell.hidden_proj, torch.zeros(3, 8))).split(8, dim=1)
    torch.testing.assert_close(out0, sig(sig(i) * torch.tanh(g)))


def test_dsu_parameter_count_formula():
    # 2[(C^2/r + C/r) + (3C^2/r + 3C)]: 8,608 / 33,600 / 132,736 for C = 64/128/256, r = 4.
    assert [sum(p.numel() for p in DSU(c, 4).parameters()) for c in (64, 128, 256)] == [8608, 33600, 132736]


def test_dsu_batched_descriptors_equal_one_call_each():
    torch.manual_seed(1)
    cell = DSU(8, reduction=2)
    u, state = torch.randn(2, 5, 8), (torch.rand(2, 8), torch.randn(2, 8))
    batched, _ = cell(u, state)
    for j in range(5):
        torch.testing.assert_close(batched[:, j], cell(u[:, j], state)[0])


def test_dia_lstm_cell_by_hand():
    torch.manual_seed(0)
    cell = DIALSTMCell(8, reduction=4)
    m, h, c = torch.randn(2, 8), torch.rand(2, 8), torch.randn(2, 8)
    i, f, g, o = (mlp(cell.input_proj, m) + mlp(cell.hidden_proj, h)).split(8, dim=1)
    c_new = sig(f) * c + sig(i) * torch.tanh(g)
    h_new = sig(o) * sig(c_new)  # sigmoid, not tanh
    out, (h_out, c_out) = cell(m, (h, c))
    torch.testing.assert_close(c_out, c_new)
    torch.testing.assert_close(out, h_new)
    assert sum(p.numel() for p in cell.parameters()) == 2 * (8 * 2 + 2 + 2 * 32 + 32)


def test_sigmoid_gru_cell_by_hand():
    torch.manual_seed(0)
    cell = SigmoidGRUCell(8, reduction=4)
    u, h = torch.randn(2, 8), torch.rand(2, 8)
    ir, iz, i_n = mlp(cell.input_proj, u).split(8, dim=1)
    hr, hz, h_n = mlp(cell.hidden_proj, h).split(8, dim=1)
    r, z = sig(ir + hr), sig(iz + hz)
    expected = (1 - z) * sig(i_n + r * h_n) + z * h
    torch.testing.assert_close(cell(u, (h,))[0], expected)


def test_se_gate_by_hand():
    torch.manual_seed(0)
    se = SE(StageSpec(32, 2, 0, 3)).eval()
    r, s = torch.randn(2, 32, 4, 4), torch.randn(2, 32, 4, 4)
    w1, w2 = se.gates[1].fc[0].weight, se.gates[1].fc[2].weight
    assert w1.shape == (2, 32) and se.gates[1].fc[0].bias is None
    gate = sig(torch.clamp(r.mean((2, 3)) @ w1.T, min=0) @ w2.T)
    x, _ = se.merge(1, r, s, None)
    torch.testing.assert_close(x, torch.relu(r * gate[:, :, None, None] + s))


def test_eca_gate_by_hand():
    torch.manual_seed(0)
    eca = ECA(StageSpec(64, 1, 0, 3)).eval()
    r, s = torch.randn(2, 64, 4, 4), torch.randn(2, 64, 4, 4)
    gate = sig(conv1d_by_hand(eca.convs[0].conv.weight, r.mean((2, 3))))
    x, _ = eca.merge(0, r, s, None)
    torch.testing.assert_close(x, torch.relu(r * gate[:, :, None, None] + s))


def test_mrla_light_by_hand():
    torch.manual_seed(0)
    attn = LightAttention(8, head_dim=4).eval()  # two heads of width 4, ECA kernel 3
    randomise_bn(attn)
    x, o = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    y = x.mean((2, 3))
    q = conv1d_by_hand(attn.query.conv.weight, y)
    k = conv1d_by_hand(attn.key.conv.weight, y)
    v = dwconv_by_hand(attn.value.weight, x)
    score = torch.stack([sig((q[:, :4] * k[:, :4]).sum(1) / 2.0), sig((q[:, 4:] * k[:, 4:]).sum(1) / 2.0)], 1)
    score_c = score.repeat_interleave(4, dim=1)[:, :, None, None]
    expected = bn_eval_by_hand(attn.bn, v * score_c + attn.lambda_t * o)
    torch.testing.assert_close(attn(x, o), expected)


def test_mrla_base_attention_by_hand_sums_to_one():
    torch.manual_seed(0)
    attn = BaseAttention(8, head_dim=4, relu=True).eval()
    randomise_bn(attn)
    t = 3
    q, keys = torch.randn(2, 8), torch.randn(2, t, 8)
    values = [torch.randn(2, 8, 4, 4) for _ in range(t)]
    w = attn.attention(q, keys)  # [B, t, C]
    torch.testing.assert_close(w.sum(1), torch.ones(2, 8))
    for head in range(2):
        sl = slice(4 * head, 4 * head + 4)
        logits = torch.stack([(q[:, sl] * keys[:, j, sl]).sum(1) / 2.0 for j in range(t)], 1)
        expected = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
        for c in range(sl.start, sl.stop):
            torch.testing.assert_close(w[:, :, c], expected)
    expected_out = sum(w[:, j, :, None, None] * values[j] for j in range(t))
    torch.testing.assert_close(attn(q, keys, values), torch.relu(bn_eval_by_hand(attn.bn, expected_out)))


def test_mrla_base_stage_stores_and_resets_keys():
    torch.manual_seed(0)
    inter = MRLABase(StageSpec(8, 3, 0, 3), head_dim=4).eval()
    state = None
    for t in range(3):
        r, s = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
        _, state = inter.merge(t, r, s, state)
        assert state[0].shape == (2, t + 1, 8) and len(state[1]) == t + 1
    assert inter.begin(torch.randn(2, 8, 4, 4), None) is None  # fresh memory at every stage


def test_dense_aggregation_by_hand():
    torch.manual_seed(0)
    dense = DenseAggregation(StageSpec(8, 3, 0, 3)).eval()
    randomise_bn(dense)
    dense.alphas[1].data = torch.tensor([0.3, -0.2])
    pairs = [(torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)) for _ in range(3)]
    state, outs = None, []
    for t, (r, s) in enumerate(pairs):
        x, state = dense.merge(t, r, s, state)
        outs.append(x)
    torch.testing.assert_close(outs[0], torch.relu(pairs[0][0] + pairs[0][1]))
    w = torch.softmax(torch.tensor([0.3, -0.2]), 0)
    agg = w[0] * outs[0] + w[1] * outs[1]
    torch.testing.assert_close(outs[2], torch.relu(pairs[2][0] + pairs[2][1]) + bn_eval_by_hand(dense.bns[1], agg))


@pytest.mark.parametrize("recurrent_input", ["output", "residual"])
def test_rla_recurrence_by_hand(recurrent_input):
    """Default: ConvOut reads the block output ReLU(r + s), as the public block's aliased `y = out` does."""
    torch.manual_seed(0)
    model = build_model("rla", "cifar", 20, 10, recurrent_input=recurrent_input).eval()
    randomise_bn(model)
    stage = model.stages[1]  # its first block is strided: h is pooled 2x2
    inter = stage.interaction
    x, h = torch.randn(2, 16, 8, 8), torch.randn(2, 32, 8, 8)
    residual, identity = stage.blocks[0](inter.block_input(x, h), x)
    assert stage.blocks[0].conv1.in_channels == 16 + 32
    x_new, h_new = inter.merge(0, residual, identity, h)
    h_pooled = F.avg_pool2d(h, 2)
    y = torch.relu(residual + identity) if recurrent_input == "output" else residual
    expected_h = inter.recurrent_conv(torch.tanh(bn_eval_by_hand(inter.bns[0], h_pooled + inter.conv_out(y))))
    torch.testing.assert_close(h_new, expected_h)
    torch.testing.assert_close(x_new, torch.relu(residual + identity))
    assert model.fc.in_features == 64 + 32


def refresh_context(context, mode):
    """The context the public code's refresh reads: the cell takes entry 0 of what it is given, so the batch's
    [B, C] state becomes sample 0's [C] vector for every sample (`sample0`); `per_sample` passes each its own."""
    if context is None or mode == "per_sample":
        return context
    return tuple(part[0] for part in context)


REFRESH_MODES = ["sample0", "per_sample"]


@pytest.mark.parametrize("mode", REFRESH_MODES)
def test_dla_l_block_by_hand(mode):
    torch.manual_seed(0)
    dla = DLA(StageSpec(8, 2, 0, 3), attention="light", reduction=2, head_dim=4, refresh_context=mode).eval()
    randomise_bn(dla)
    context = (torch.rand(2, 8), torch.randn(2, 8))
    r, s = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    x = torch.relu(r + s)
    _, new_context = dla.cell(x.mean((2, 3)), context)  # forward path: context from GAP(x_t), each sample its own
    # backward path: refresh the identity under the new context (sample 0's for sample0), state discarded
    h, c = refresh_context(new_context, mode)
    i, f, g = (mlp(dla.cell.input_proj, s.mean((2, 3))) + mlp(dla.cell.hidden_proj, h)).split(8, dim=-1)
    d = sig(sig(f) * c + sig(i) * torch.tanh(g))
    o = s * d[:, :, None, None] + dwconv_by_hand(dla.refresh_conv.weight, s)
    expected = x + dla.attn[1](x, o)
    out, state = dla.merge(1, r, s, LightState(context, None))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(state.context[0], new_context[0])
    torch.testing.assert_close(state.hidden_gates, mlp(dla.cell.hidden_proj, new_context[0]))


@pytest.mark.parametrize("mode", REFRESH_MODES)
@pytest.mark.parametrize("opts", [{}, {"forward_path": False}, {"cell": "lstm"}, {"cell": "gru"}])
def test_dla_l_stage_carrying_w_hh_equals_two_cell_calls_per_block(opts, mode):
    """The merge computes W_hh(h_t) once for block t's refresh and block t+1's context update."""
    torch.manual_seed(0)
    dla = DLA(StageSpec(8, 3, 0, 3), attention="light", reduction=2, head_dim=4, refresh_context=mode,
              **opts).eval()
    randomise_bn(dla)
    pairs = [(torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)) for _ in range(3)]
    context, expected = None, []
    for t, (r, s) in enumerate(pairs):
        x = torch.relu(r + s)
        if dla.forward_path:
            _, context = dla.cell(x.mean((2, 3)), context)
        d, _ = dla.cell(s.mean((2, 3)), refresh_context(context, mode))
        o = s * d[:, :, None, None] + dwconv_by_hand(dla.refresh_conv.weight, s)
        expected.append(x + dla.attn[t](x, o))
    for got, want in zip(run_stage(dla, pairs), expected):
        torch.testing.assert_close(got, want)


def run_stage(inter, pairs):
    state, outs = None, []
    for t, (r, s) in enumerate(pairs):
        x, state = inter.merge(t, r, s, state)
        outs.append(x)
    return outs


def dla_b_stage_oracle(dla, pairs, mode="per_sample"):
    """DLA-B as the public code computes it: refresh each stored key and value map one DSU call at a time,
    under sample 0's context for the whole batch (`sample0`) or each sample's own (`per_sample`)."""
    context, keys, values, outs = None, [], [], []
    for t, (r, s) in enumerate(pairs):
        attn = dla.attn[t]
        x = torch.relu(r + s)
        y = x.mean((2, 3))
        _, context = dla.cell(y, context)
        ctx = refresh_context(context, mode)
        for j in range(len(keys)):  # every earlier layer, re-gated under the current context and written back
            keys[j] = keys[j] * dla.cell(keys[j], ctx)[0]
            values[j] = values[j] * dla.cell(values[j].mean((2, 3)), ctx)[0][:, :, None, None]
        keys.append(attn.key(y))
        values.append(attn.value(x))
        q = attn.query(y)
        out = torch.zeros_like(x)
        heads, d = attn.heads, x.shape[1] // attn.heads
        for g in range(heads):
            sl = slice(g * d, (g + 1) * d)
            logits = torch.stack([(q[:, sl] * k[:, sl]).sum(1) / math.sqrt(d) for k in keys], 1)
            a = torch.softmax(logits, 1)
            out[:, sl] = sum(a[:, j, None, None, None] * values[j][:, sl] for j in range(len(keys)))
        outs.append(x + torch.relu(attn.bn(out)))
    return outs


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("mode", REFRESH_MODES)
def test_dla_b_batched_refresh_equals_the_per_layer_loop(mode, train):
    torch.manual_seed(0)
    dla = DLA(StageSpec(8, 5, 0, 3), attention="base", reduction=2, head_dim=4, refresh_context=mode)
    randomise_bn(dla)
    dla.train(train)
    pairs = [tuple(torch.randn(3, 8, 4, 4, requires_grad=True) for _ in range(2)) for _ in range(5)]
    ours, oracle = run_stage(dla, pairs), dla_b_stage_oracle(dla, pairs, mode)
    assert_same_outputs_and_gradients(ours, oracle, list(dla.parameters()) + [t for pair in pairs for t in pair])


def assert_same_outputs_and_gradients(ours, oracle, inputs):
    """Every block output to 1e-10 and the gradients of one fixed weighting of them w.r.t. every input."""
    for a, b in zip(ours, oracle):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)

    def loss(outs):
        weights = [torch.randn_like(o, generator=torch.Generator().manual_seed(i)) for i, o in enumerate(outs)]
        return sum((o * w).sum() for o, w in zip(outs, weights))

    g_ours = torch.autograd.grad(loss(ours), inputs, allow_unused=True)
    g_oracle = torch.autograd.grad(loss(oracle), inputs, allow_unused=True)
    for a, b in zip(g_ours, g_oracle):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def shared_weights(src, dst):
    """Copy every parameter/buffer the two models share by name, so only the ablated part differs."""
    dst_state = dst.state_dict()
    shared = {k: v for k, v in src.state_dict().items() if k in dst_state and dst_state[k].shape == v.shape}
    dst.load_state_dict(shared, strict=False)
    return dst


def n_params(model):
    return sum(p.numel() for p in model.parameters())


CIFAR_C = (64, 128, 256)  # ResNet-164 stage widths


@pytest.mark.parametrize("method", ["dla_l", "dla_b"])
def test_forward_path_off_removes_the_recurrent_input(method):
    full = build_model(method, "cifar", 164, 100).eval()
    ablated = shared_weights(full, build_model(method, "cifar", 164, 100, forward_path=False).eval())
    # W_hh = Linear(C, C/4) + Linear(C/4, 3C), both with bias, one per stage.
    delta = sum(c * c // 4 + c // 4 + 3 * c * c // 4 + 3 * c for c in CIFAR_C)
    assert n_params(full) - n_params(ablated) == delta == 87_472
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(full(x), ablated(x))


def test_backward_path_off_reduces_dla_to_mrla():
    for method, baseline in (("dla_l", "mrla_light"), ("dla_b", "mrla_base")):
        off = build_model(method, "cifar", 164, 100, forward_path=False, backward_path=False)
        none = build_model(method, "cifar", 164, 100, cell="none")
        assert n_params(off) == n_params(none) == n_params(build_model(baseline, "cifar", 164, 100))
    torch.manual_seed(0)
    full = build_model("dla_b", "cifar", 29, 10).eval()
    mrla = shared_weights(full, build_model("mrla_base", "cifar", 29, 10).eval())
    no_dsu = shared_weights(full, build_model("dla_b", "cifar", 29, 10, cell="none").eval())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(no_dsu(x), mrla(x))  # same equations once the DSU is gone
        assert not torch.allclose(full(x), no_dsu(x))


@pytest.mark.parametrize("cell,extra", [("lstm", lambda c, r: 2 * (c * c // r + c)), ("gru", lambda c, r: 0)])
def test_context_cell_choice(cell, extra):
    dsu = build_model("dla_l", "cifar", 164, 100)
    other = build_model("dla_l", "cifar", 164, 100, cell=cell)
    assert n_params(other) - n_params(dsu) == sum(extra(c, 4) for c in CIFAR_C)
    shared_weights(dsu, other)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(dsu.eval()(x), other.eval()(x))


def test_reduction_ratio_sets_the_dsu_width():
    r4, r16 = build_model("dla_b", "cifar", 164, 100), build_model("dla_b", "cifar", 164, 100, reduction=16)
    dsu = lambda c, r: 2 * ((c * c // r + c // r) + (3 * c * c // r + 3 * c))  # noqa: E731
    assert n_params(r4) - n_params(r16) == sum(dsu(c, 4) - dsu(c, 16) for c in CIFAR_C)


def test_attention_kind_switches_light_and_base():
    dla_l_with_base = build_model("dla_l", "cifar", 164, 100, attention="base")
    assert n_params(dla_l_with_base) == n_params(build_model("dla_b", "cifar", 164, 100))
