"""MRLA-light and MRLA-base on the ViT backbones compute what the public MRLA DeiT code computes
(joyfang1106/MRLA deit/deit_mrla_light.py, deit/deit_mrla_base.py): a whole network written out here as that code
runs it, outputs and every gradient in float64; the public models' parameter counts; DLA without its DSU is MRLA."""
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from lai_bench.models import build_model, method_options
from lai_bench.models.interaction.base import StageSpec
from lai_bench.models.interaction.mrla import MRLALight
from lai_bench.models.layers.layout import TOKENS

PUBLIC_PARAMS = {  # the public builders deit_mrla{l,b}_{tiny,small,base}_patch16_224 at 1000 classes
    ("mrla_light", "deit_tiny"): 5_749_792, ("mrla_light", "deit_small"): 22_115_296,
    ("mrla_light", "deit_base"): 86_696_800, ("mrla_base", "deit_tiny"): 5_742_880,
    ("mrla_base", "deit_small"): 22_101_472, ("mrla_base", "deit_base"): 86_669_152,
}


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize(("method", "backbone"), sorted(PUBLIC_PARAMS))
def test_mrla_on_deit_has_the_public_models_parameter_count(method, backbone):
    with torch.device("meta"):
        model = build_model(method, backbone, 12, 1000)
    assert sum(p.numel() for p in model.parameters()) == PUBLIC_PARAMS[method, backbone]


# The public modules, written out: LayerNorm, ECA conv, the patch grid, GELU as their formulas.

def layer_norm(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-6) * ln.weight + ln.bias


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def eca(conv, y):
    """A 1-channel conv1d over the descriptor [B, C], zero padding k // 2, as a sum over the kernel's taps."""
    k = conv.conv.weight.numel()
    padded = F.pad(y, (k // 2, k // 2))
    return sum(conv.conv.weight.view(-1)[i] * padded[:, i:i + y.shape[1]] for i in range(k))


def grid(tokens):
    """Patch tokens [B, N, C] -> [B, C, sqrt N, sqrt N], the public reshape-and-permute."""
    b, n, c = tokens.shape
    side = int(math.sqrt(n))
    return tokens.reshape(b, side, side, c).permute(0, 3, 1, 2)


def query_key_value(attn, xn):
    cls, g = xn[:, :1], grid(xn[:, 1:])
    y = g.mean((2, 3))
    return cls, g, eca(attn.query, y), eca(attn.key, y), F.conv2d(g, attn.value.conv.weight, padding=1,
                                                                    groups=g.shape[1])


def public_light(attn, x, o):
    """mrlal_module(x_t, o_{t-1}): heads of 16, sigmoid score per head on GELU(DWConv), + lambda * LN_o(o)."""
    b, n, c = x.shape
    xn, on = layer_norm(x, attn.norm_x), layer_norm(o, attn.norm_o)
    cls, g, q, k, v = query_key_value(attn, xn)
    heads = c // 16
    score = torch.sigmoid((q.view(b, heads, 16) * k.view(b, heads, 16)).sum(-1) / math.sqrt(16))
    out = (gelu(v).view(b, heads, 16, *g.shape[2:]) * score[:, :, None, None, None]).view(b, c, *g.shape[2:])
    tokens = out.flatten(2).permute(0, 2, 1) + attn.lambda_t * on[:, 1:]
    return torch.cat([cls, tokens], 1)


def public_base(attn, x, keys, values):
    """mrlab_module(x_t, K, V): softmax over the stage's keys of q.k / 4 per head weights the stacked values."""
    b, n, c = x.shape
    xn = layer_norm(x, attn.norm_x)
    cls, g, q, k, v = query_key_value(attn, xn)
    keys, values = keys + [k], values + [v]
    heads, t = c // 16, len(keys)
    kk = torch.stack(keys, 1).view(b, t, heads, 16)
    vv = torch.stack(values, 1).view(b, t, heads, 16, -1)  # [B, t, G, d, H * W]
    w = torch.einsum("bgd,btgd->bgt", q.view(b, heads, 16), kk) / math.sqrt(16)
    out = torch.einsum("bgt,btgdp->bgdp", w.softmax(-1), vv).reshape(b, c, *g.shape[2:])
    return torch.cat([cls, out.flatten(2).permute(0, 2, 1)], 1), keys, values


def public_network(model, images, method):
    """The public ViT_mrlal / ViT_mrlab forward: each whole block, then x + MRLA(x, o); the memory restarts at every
    4th block; final LN, head on the class token."""
    x = model.patch_embed(images)
    x = torch.cat([model.cls_token.expand(x.shape[0], -1, -1), x], 1) + model.pos_embed
    keys, values = [], []
    for stage in model.stages:
        for j, block in enumerate(stage.blocks):
            attn = stage.interaction.attn[j]
            o = x
            x = Block.forward(block, x)  # timm's pre-norm block: x + attn(LN(x)), then + mlp(LN(.))
            if method == "mrla_light":
                x = x + public_light(attn, x, o)
            else:
                if j == 0:
                    keys, values = [], []
                out, keys, values = public_base(attn, x, keys, values)
                x = x + out
    return model.head(layer_norm(x, model.norm)[:, 0])


def randomised(method, backbone, depth):
    torch.manual_seed(0)
    model = build_model(method, backbone, depth, 10)
    with torch.no_grad():  # every LayerNorm affine, the head and the tokens away from their init
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


LAST = "stages.1.interaction.attn.1."
NO_GRADIENT = {  # at depth 6, in exact arithmetic as in the public code: the head reads the class token only
    # the last block's attention reaches only the patch tokens (its class token is LN_x(x_t)'s, norm_x's alone)
    "mrla_light": {LAST + n for n in ("lambda_t", "norm_o.weight", "norm_o.bias", "query.conv.weight",
                                      "key.conv.weight", "value.conv.weight")},
    # as light, and a stage's first query meets one key (softmax 1); block 4's key is read by the last block only
    "mrla_base": {LAST + n for n in ("query.conv.weight", "key.conv.weight", "value.conv.weight")}
    | {f"stages.{s}.interaction.attn.0.query.conv.weight" for s in (0, 1)}
    | {"stages.1.interaction.attn.0.key.conv.weight"},
}


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("method", ["mrla_light", "mrla_base"])
def test_mrla_on_a_vit_computes_the_public_deit_code_outputs_and_every_gradient(method):
    model = randomised(method, "vit_cifar_tiny", 6)  # stages of 4 + 2 blocks: MRLA-base's memory restarts once
    params = list(model.parameters())
    images, w = torch.randn(2, 3, 32, 32), torch.randn(2, 10)
    for train in (True, False):  # no dropout or drop path at the defaults: both modes compute the same
        model.train(train)
        ours, ref = model(images), public_network(model, images, method)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
        g_ours = torch.autograd.grad((ours * w).sum(), params)
        g_ref = torch.autograd.grad((ref * w).sum(), params)
        zero = {name for (name, _), g in zip(model.named_parameters(), g_ref, strict=True) if not g.abs().max() > 0}
        assert zero == NO_GRADIENT[method]  # every other tensor takes part
        for (name, _), a, b in zip(model.named_parameters(), g_ours, g_ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.usefixtures("float64")
def test_the_oracle_tells_the_public_class_token_path_and_the_gelu_apart():
    model = randomised("mrla_light", "vit_cifar_tiny", 2).eval()
    images = torch.randn(2, 3, 32, 32)
    attn = model.stages[0].interaction.attn[0]
    x, o = torch.randn(2, 65, 192), torch.randn(2, 65, 192)
    out = attn(x, o)
    torch.testing.assert_close(out[:, 0], layer_norm(x, attn.norm_x)[:, 0])  # LN(x_t)'s class token is added
    torch.testing.assert_close(out, public_light(attn, x, o))
    torch.testing.assert_close(model(images), public_network(model, images, "mrla_light"))
    with torch.no_grad():
        attn.lambda_t.zero_()
    assert (attn(x, o)[:, 1:] >= -0.17).all()  # lambda 0: sigmoid(.) * GELU(.) is never below GELU's minimum
    assert (attn(x, o)[:, 1:] < -0.01).any()


def test_on_tokens_mrla_defaults_to_the_deit_heads_and_rejects_the_resnet_relu():
    for method in ("mrla_light", "mrla_base", "dla_l", "dla_b"):
        assert method_options(method, "deit_small")["head_dim"] == 16
        assert method_options(method, "cifar")["head_dim"] == 32
    assert method_options("mrla_base", "deit_tiny")["out_relu"] is False
    assert method_options("mrla_base", "imagenet")["out_relu"] is True
    assert method_options("dla_b", "vit_cifar_tiny")["reduction"] == 16
    with pytest.raises(ValueError, match="out_relu=True is a ResNet option") as err:
        build_model("mrla_base", "vit_cifar_tiny", 2, 10, out_relu=True)
    assert "\n" not in str(err.value)


def test_stochastic_depth_on_tokens_drops_the_block_increment_and_never_the_layer_attention():
    torch.manual_seed(0)
    inter = MRLALight(StageSpec(32, 1, layout=TOKENS), head_dim=16, drop_path=0.5).train()
    residual, identity = torch.randn(64, 17, 32), torch.randn(64, 17, 32)
    out, _ = inter.merge(0, residual, identity, None)
    kept_x = identity + residual / 0.5
    kept = kept_x + inter.attn[0](kept_x, identity)
    dropped = identity + inter.attn[0](identity, identity)
    is_kept = torch.isclose(out, kept).flatten(1).all(1)
    is_dropped = torch.isclose(out, dropped).flatten(1).all(1)
    assert (is_kept ^ is_dropped).all() and is_kept.any() and is_dropped.any()


@pytest.mark.parametrize(("dla", "mrla"), [("dla_l", "mrla_light"), ("dla_b", "mrla_base")])
def test_dla_without_its_dsu_is_mrla_on_deit_exactly(dla, mrla):
    torch.manual_seed(0)
    ours = build_model(dla, "deit_tiny", 5, 10, cell="none")
    theirs = build_model(mrla, "deit_tiny", 5, 10)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    images = torch.randn(2, 3, 224, 224)
    a, b = ours(images), theirs(images)
    assert torch.equal(a, b)
    a.square().sum().backward(), b.square().sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name
