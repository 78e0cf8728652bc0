"""Small tensor operations every method shares."""
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn


def gap(x: Tensor) -> Tensor:
    """Global average pool [B, C, H, W] -> [B, C]."""
    return x.mean((2, 3))


def residual_relu(branch: Tensor, identity: Tensor) -> Tensor:
    """ReLU(branch + identity), the ReLU applied in the sum's own buffer (torchvision's `out += identity;
    relu(out)` without mutating an input)."""
    return (branch + identity).relu_()


def depthwise3x3(channels: int) -> nn.Conv2d:
    """Depthwise 3x3 conv, stride 1, 'same' padding, no bias."""
    return nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)


def per_map_channel(v: Tensor) -> Tensor:
    """A [B, C] tensor viewed to broadcast over maps [B, C, H, W]."""
    return v[..., None, None]


def weighted_sum(weights: Tensor, maps: Sequence[Tensor],
                 per_channel: Callable[[Tensor], Tensor] = per_map_channel) -> Tensor:
    """sum_j weights[:, j, :] * maps[j] for weights [B, t, C] and outputs that `per_channel` views [B, C] onto
    (maps [B, C, H, W] by default).

    Accumulated into one buffer instead of stacking the maps: a stack per block would copy every stored map
    again (the public MRLA-base code's quadratic cost), and autograd would keep the copies. The maps are stored
    once; each term's backward reads its map and its weight.
    """
    out = maps[0] * per_channel(weights[:, 0])
    for j in range(1, len(maps)):
        out = out.addcmul_(maps[j], per_channel(weights[:, j]))
    return out


def scalar_weighted_sum(weights: Tensor, outputs: Sequence[Tensor]) -> Tensor:
    """sum_j weights[j] * outputs[j] for one scalar weight per output ([t]), in any layout: `weighted_sum`'s loop
    with each weight broadcast as it is."""
    return weighted_sum(weights.view(1, -1), outputs, lambda w: w)


def matmul_weighted_sum(weights: Tensor, maps: Sequence[Tensor]) -> Tensor:
    """The same sum as one batched matmul over the stacked maps, as the public MRLA code computes it.

    Copies every map: for references and FLOP counting (fvcore counts a matmul's multiply-adds, not those of
    elementwise products).
    """
    b, t, c = weights.shape
    stacked = torch.stack(list(maps), 2)  # [B, C, t, H, W]
    h, w = stacked.shape[-2:]
    out = torch.bmm(weights.transpose(1, 2).reshape(b * c, 1, t), stacked.reshape(b * c, t, h * w))
    return out.view(b, c, h, w)
