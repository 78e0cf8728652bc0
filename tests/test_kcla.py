"""KCLA: the public models' parameter counts, the per-block equations by hand, and a whole network run as the public
code (bgx666/KCLA, cifar/models/cifar/KCLA.py and imagenet/kcla_resnet.py) runs it, outputs and every gradient."""
import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from test_equations import bn_eval_by_hand, conv1d_by_hand, dwconv_by_hand, randomise_bn

from lai_bench.models import build_model, method_options
from lai_bench.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from lai_bench.models.interaction.base import StageSpec
from lai_bench.models.interaction.kcla import KCLA


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(*args, **kw) -> torch.nn.Module:
    with torch.device("meta"):  # counts only: no memory, no init
        return build_model("kcla", *args, **kw)


def kernel(c: int) -> int:
    t = int((math.log2(c) + 1) / 2)
    return t if t % 2 else t + 1


# The public models (sum of numel, built from the public files): CIFAR ResNet-56/164 bottleneck (public depth 56 is
# 9n+2 with n = 6: block="bottleneck" here, where depth 56 alone means basic blocks), ImageNet R-50/101.
PUBLIC = [(("cifar", 56, 10, "bottleneck"), 627_723), (("cifar", 56, 100, "bottleneck"), 650_853),
          (("cifar", 164, 10, None), 1_804_371), (("cifar", 164, 100, None), 1_827_501),
          (("imagenet", 50, 1000, None), 25_859_078), (("imagenet", 101, 1000, None), 45_082_309)]


def unused_in_public(backbone: str, depth: int) -> int:
    """The public model's parameters no forward pass uses: tau (G per block, a frozen nn.Parameter), the first stage's
    re-projection (a grouped 1x1 conv C/2 -> C, BN, a 1-D conv) and, in a stage of more than 11 blocks (ImageNet), the
    grouped conv of block 11's re-projection (the channels already match)."""
    if backbone == "cifar":
        n = (depth - 2) // 9
        stages, head = [(c, n) for c in (64, 128, 256)], 16
    else:
        stages, head = list(zip((256, 512, 1024, 2048), {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth])), 64
    total = sum(n * (c // head) for c, n in stages)
    c0, g0 = stages[0][0], stages[0][0] // head
    total += c0 * (c0 // 2) // g0 + kernel(c0) + 2 * c0
    total += sum(c * (c // 2) // (c // head) for c, n in stages if backbone == "imagenet" and n > 11)
    return total


@pytest.mark.parametrize("args,public", PUBLIC)
def test_parameter_counts_equal_the_public_models(args, public):
    backbone, depth, classes, block = args
    assert n_params(meta_model(backbone, depth, classes, block, public_parameters=True)) == public
    assert n_params(meta_model(backbone, depth, classes, block)) == public - unused_in_public(backbone, depth)


def test_parameter_count_decomposes_per_block_and_per_stage():
    """Per block: Wq, Wk (k each), DWConv 9C, head_att G^2, BN 2C; per later stage: the grouped 1x1 conv C/2 x C/G,
    BN 2C, a 1-D conv k."""
    ours, plain = meta_model("cifar", 29, 10, "bottleneck"), build_model("none", "cifar", 29, 10, "bottleneck")
    blocks = sum(3 * (2 * kernel(c) + 11 * c + (c // 16) ** 2) for c in (64, 128, 256))
    stages = sum(c * (c // 2) // (c // 16) + 2 * c + kernel(c) for c in (128, 256))
    assert n_params(ours) - n_params(plain) == blocks + stages


def test_the_public_defaults_per_backbone_and_no_token_form():
    cifar, imagenet = method_options("kcla", "cifar"), method_options("kcla", "imagenet")
    assert (cifar["head_dim"], cifar["reproject_at"]) == (16, None)
    assert (imagenet["head_dim"], imagenet["reproject_at"]) == (64, 11)
    with pytest.raises(ValueError, match="does not work on backbone 'vit_cifar_tiny'"):
        build_model("kcla", "vit_cifar_tiny", 4, 10)
    with pytest.raises(ValueError, match="reproject_at must be a block index >= 1"):
        build_model("kcla", "cifar", 20, 10, reproject_at=0)


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def by_head(v: torch.Tensor, d: int) -> torch.Tensor:
    return v.repeat_interleave(d, dim=1)[:, :, None, None]


def grouped_1x1_stride2_by_hand(weight: torch.Tensor, m: torch.Tensor, groups: int) -> torch.Tensor:
    cout, cin_g = weight.shape[:2]
    m = m[:, :, ::2, ::2]
    out = torch.zeros(m.shape[0], cout, *m.shape[2:])
    for o in range(cout):
        g = o // (cout // groups)
        for i in range(cin_g):
            out[:, o] += weight[o, i, 0, 0] * m[:, g * cin_g + i]
    return out


def test_a_stage_by_hand_with_its_carry(float64):
    """Stage 1 (4 channels, 2 heads of 2) from a carry of 2 channels at twice the resolution, in eval: the
    re-projection, then for each block s, u, z, v, the head gate and x + ReLU(BN(a v))."""
    torch.manual_seed(0)
    inter = KCLA(StageSpec(4, 2, index=1, num_stages=2), head_dim=2).eval()
    randomise_bn(inter)
    b, c, g, d = 2, 4, 2, 2
    u0, z0 = torch.randn(b, 2, 8, 8), torch.rand(b, 1) + 0.5  # the previous stage: one head of 2 channels
    pairs = [(torch.randn(b, c, 4, 4), torch.randn(b, c, 4, 4)) for _ in range(2)]
    tau = 1 / torch.exp(torch.linspace(math.log(0.7), math.log(1 / 0.7), g))
    torch.testing.assert_close(inter.layers[0].tau, tau, rtol=1e-12, atol=0)

    def weight(key):  # exp(min(|k_g| / tau_g, 10)) per head
        return torch.exp(torch.clamp(key.view(b, g, d).norm(dim=-1) / tau, max=10))

    rep = inter.reproject
    m = bn_eval_by_hand(rep.bn, grouped_1x1_stride2_by_hand(rep.adjust.weight, u0 / z0[:, :, None, None], g))
    z = weight(conv1d_by_hand(rep.key.conv.weight, m.mean((2, 3))))
    u = m * by_head(z, d)
    expected = []
    for (r, s), layer in zip(pairs, inter.layers):
        x = torch.relu(r + s)
        y = x.mean((2, 3))
        q, k = conv1d_by_hand(layer.query.conv.weight, y), conv1d_by_hand(layer.key.conv.weight, y)
        w = weight(k)
        u, z = u + by_head(w, d) * x, z + w
        v = dwconv_by_hand(layer.value.weight, u / by_head(z + 1e-3, d))
        score = (q * k).view(b, g, d).sum(-1) / k.view(b, g, d).norm(dim=-1)
        a = torch.sigmoid(score @ layer.head_att.weight.T)
        expected.append(x + torch.relu(bn_eval_by_hand(layer.bn, by_head(a, d) * v)))
    state = inter.begin(pairs[0][1], (u0, z0))
    for t, (r, s) in enumerate(pairs):
        x, state = inter.merge(t, r, s, state)
        torch.testing.assert_close(x, expected[t], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(state[0], u, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(state[1], z, atol=1e-12, rtol=1e-12)


def bn(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, m.training, m.momentum, m.eps)


def conv1d(conv: torch.nn.Module, y: torch.Tensor) -> torch.Tensor:
    k = conv.conv.weight.shape[-1]
    return F.conv1d(y.view(y.shape[0], 1, -1), conv.conv.weight, padding=(k - 1) // 2)


def public_kcla_layer(layer, rep, x, info):
    """The public kcla_layer.forward: 5-D [b, heads, head, h, w] views, info = [u_next, key_direction, z]; `rep` holds
    the re-projection weights where the public layer has init_layer=True."""
    b, c, h, w = x.shape
    g = layer.heads
    d = c // g
    norm_d = layer.tau.view(1, g, 1, 1, 1)
    u = key_direction = z = None
    if info is not None:
        u, key_direction, z = info
        if rep is not None:
            _b, _g, _d, _h, _w = u.shape
            u = (u / z).view(_b, -1, _h, _w)
            if _d * _g != c:
                u = F.conv2d(u, rep.adjust.weight, stride=2, groups=g)
            u = bn(rep.bn, u)
            u_k = conv1d(rep.key, u.mean((2, 3), keepdim=True)).view(b, g, d, 1, 1)
            z = torch.exp(torch.clamp(torch.norm(u_k, dim=2, keepdim=True) / norm_d, max=10))
            u = u.view(b, g, d, h, w) * z
            key_direction = None
        u = u.view(b, g, d, h, w)
    q = x.mean((2, 3), keepdim=True)
    Q = conv1d(layer.query, q).view(b, g, d, 1, 1)
    K = conv1d(layer.key, q).view(b, g, d, 1, 1)
    key_direction = K if key_direction is None else key_direction + K  # carried, never read
    k_norm = torch.norm(K, dim=2, keepdim=True)
    s = torch.exp(torch.clamp(k_norm / norm_d, max=10))
    if u is None:
        u_next, z = s * x.view(b, g, d, h, w), s
    else:
        u_next, z = u + s * x.view(b, g, d, h, w), z + s
    out = F.conv2d((u_next / (z + 1e-3)).view(b, c, h, w), layer.value.weight, padding=1, groups=c)
    h_att = torch.einsum("bhcij,bhcij->bhij", Q, K) / k_norm.view(b, g, 1, 1)
    h_att = F.linear(h_att.view(b, g), layer.head_att.weight).view(b, g, 1, 1, 1)
    out = (torch.sigmoid(h_att) * out.view(b, g, d, h, w)).view(b, c, h, w)
    return F.relu(bn(layer.bn, out)), [u_next, key_direction, z]


def public_network(model, x):
    """The public ResNet loop: block, ReLU(r + s), then x + kcla(x, info), info through every stage; the re-projection
    at each stage's first block and at block `reproject_at`."""
    x = model.stem(x)
    info = None
    for stage in model.stages:
        inter = stage.interaction
        for t, block in enumerate(stage.blocks):
            r, s = block(x, x)
            x = torch.relu(r + s)
            rep = inter.reproject if t == 0 else inter.reproject_mid if t == inter.reproject_at else None
            out, info = public_kcla_layer(inter.layers[t], rep, x, info)
            x = x + out
    return model.fc(torch.flatten(model.pool(x), 1))


NETWORKS = {  # a CIFAR bottleneck ResNet-29 (3 blocks a stage); an ImageNet-style net reaching the mid re-projection
    "cifar_bottleneck": lambda: build_model("kcla", "cifar", 29, 5, "bottleneck"),
    "cifar_basic": lambda: build_model("kcla", "cifar", 20, 5),
    "imagenet_mid": lambda: ResNet(Bottleneck, (1, 3, 1), (8, 16, 32), "imagenet", 5,
                                   functools.partial(KCLA, head_dim=8, reproject_at=2), zero_init_residual=True),
    "imagenet_basic": lambda: ResNet(BasicBlock, (2, 2), (16, 32), "imagenet", 5,
                                     functools.partial(KCLA, head_dim=8, reproject_at=1)),
}


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_the_network_equals_the_public_computation_with_every_gradient(float64, net, train):
    torch.manual_seed(0)
    ours = NETWORKS[net]()
    randomise_bn(ours)
    for m in ours.modules():  # zero-init BNs (ImageNet's last BN) would leave gradients untested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
    theirs = copy.deepcopy(ours)
    ours.train(train), theirs.train(train)
    size = 32 if net.startswith("imagenet") else 8
    x = torch.randn(3, 3, size, size)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = ours(xa), public_network(theirs, xb)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    w = torch.randn_like(a)
    (a * w).sum().backward()
    (b * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-12, rtol=1e-10)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, theirs_params[name].grad, atol=1e-11, rtol=1e-9, msg=name)
    theirs_buffers = dict(theirs.named_buffers())
    for name, buf in ours.named_buffers():  # the BN statistics a training step updates (F.batch_norm counts no steps)
        if name.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(buf, theirs_buffers[name], atol=1e-12, rtol=1e-12, msg=name)
