"""The layout contract: what a backbone hands each stage's method so the method never hard-codes a tensor format.

A method asks its stage's layout for the descriptor of a block output ([B, C]), a per-channel view of a [B, C]
gate or a [C] parameter, the normalisation layer, the spatial value mixer (a depthwise 3x3 conv), the activation
after the residual add, and the weighted sum of stored block outputs. Three layouts exist:

- `FEATURE_MAPS` [B, C, H, W] (ResNets): GAP, BatchNorm2d, depthwise 3x3 on the map, ReLU after the add.
- `TOKENS` [B, 1 + N, C] (ViTs, a class token first): the mean over the N patch tokens, LayerNorm (eps 1e-6), the
  depthwise 3x3 conv on the sqrt(N) x sqrt(N) patch grid (the class token leaves the mixer as zeros), no
  activation after the add (pre-norm blocks).
- `CAUSAL` [B, T, C] (GPT decoders): position t may see positions <= t only, so nothing pools over the sequence. The
  descriptor is per position (the block output itself, [B, T, C]: a mean over T would leak the future into every
  gate), a gate broadcasts per position ([B, T, C]) or per sequence ([B, C]), LayerNorm (eps 1e-5, GPT-2's), no
  activation after the add (pre-norm blocks). The value mixer is the nearest causal form of the 3x3 depthwise conv
  the other layouts use: a depthwise conv over time of kernel 3, padded on the left only (position t mixes t - 2,
  t - 1, t), no bias. Identity would also be causal but would drop the local mixing the methods' value paths have.

`drops_block` says where stochastic depth acts for a method that adds a branch after the block (MRLA, DLA): on
that branch (maps: the MRLA and DLA ResNet code) or on the block's own increment, the added branch undropped
(tokens: the public MRLA DeiT blocks drop their own branches and add the layer attention as it is).
"""
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .ops import depthwise3x3, gap, matmul_weighted_sum, per_map_channel, residual_relu, weighted_sum


class Layout:
    """The operations that depend on the tensor layout; one instance per layout, shared by every stage."""

    name = ""
    drops_block = False

    def descriptor(self, x: Tensor) -> Tensor:
        """[B, C]: what gates and attention scores read of a block output ([B, T, C], per position, on `CAUSAL`)."""
        raise NotImplementedError

    def per_channel(self, v: Tensor) -> Tensor:
        """A view of v ([B, C]; on `CAUSAL` also [B, T, C]) that broadcasts over a block output channel by channel."""
        raise NotImplementedError

    def channel_shape(self, channels: int) -> tuple[int, ...]:
        """The shape of a per-channel parameter that broadcasts over a block output as stored."""
        raise NotImplementedError

    def norm(self, channels: int) -> nn.Module:
        raise NotImplementedError

    def value_mixer(self, channels: int) -> nn.Module:
        """The spatial value path of layer attention: a depthwise 3x3 conv, no bias."""
        raise NotImplementedError

    def residual_add(self, branch: Tensor, identity: Tensor) -> Tensor:
        """The block output from its branch and identity: the add and the activation after it."""
        raise NotImplementedError

    def weighted_sum(self, weights: Tensor, outputs: Sequence[Tensor]) -> Tensor:
        """sum_j weights[:, j, :] * outputs[j] for weights [B, t, C], accumulated in one buffer (never stacked: a
        stack per block would copy every stored output again, and autograd would keep the copies)."""
        return weighted_sum(weights, outputs, self.per_channel)

    def matmul_weighted_sum(self, weights: Tensor, outputs: Sequence[Tensor]) -> Tensor:
        """The same sum as one batched matmul over the stacked outputs, as the public MRLA code computes it: for
        references and FLOP counting (fvcore counts a matmul's multiply-adds, not those of elementwise products)."""
        raise NotImplementedError

    def pointwise(self, x: Tensor, weight: Tensor) -> Tensor:
        """A channel-mixing linear map weight [C_out, C_in] at every position, no bias: a 1x1 conv on maps, a linear
        on tokens."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FeatureMaps(Layout):
    """[B, C, H, W]."""

    name = "maps"

    def descriptor(self, x: Tensor) -> Tensor:
        return gap(x)

    def per_channel(self, v: Tensor) -> Tensor:
        return per_map_channel(v)

    def channel_shape(self, channels: int) -> tuple[int, ...]:
        return (channels, 1, 1)

    def norm(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels)

    def value_mixer(self, channels: int) -> nn.Module:
        return depthwise3x3(channels)

    def residual_add(self, branch: Tensor, identity: Tensor) -> Tensor:
        return residual_relu(branch, identity)

    def matmul_weighted_sum(self, weights: Tensor, outputs: Sequence[Tensor]) -> Tensor:
        return matmul_weighted_sum(weights, outputs)

    def pointwise(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.conv2d(x, weight[:, :, None, None])


class TokenGridConv(nn.Module):
    """Depthwise 3x3 conv over the patch tokens laid out as their sqrt(N) x sqrt(N) grid; the class token (first)
    leaves it as zeros."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = depthwise3x3(channels)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        side = math.isqrt(n - 1)
        grid = x[:, 1:].transpose(1, 2).reshape(b, c, side, side)
        patches = self.conv(grid).flatten(2).transpose(1, 2)
        return torch.cat([patches.new_zeros(b, 1, c), patches], dim=1)


class Tokens(Layout):
    """[B, 1 + N, C]: a class token, then the N patch tokens of a square grid."""

    name = "tokens"
    drops_block = True

    def descriptor(self, x: Tensor) -> Tensor:
        return x[:, 1:].mean(1)

    def per_channel(self, v: Tensor) -> Tensor:
        return v[:, None, :]

    def channel_shape(self, channels: int) -> tuple[int, ...]:
        return (channels,)

    def norm(self, channels: int) -> nn.Module:
        return nn.LayerNorm(channels, eps=1e-6)

    def value_mixer(self, channels: int) -> nn.Module:
        return TokenGridConv(channels)

    def residual_add(self, branch: Tensor, identity: Tensor) -> Tensor:
        return branch + identity

    def matmul_weighted_sum(self, weights: Tensor, outputs: Sequence[Tensor]) -> Tensor:
        b, t, c = weights.shape
        stacked = torch.stack(list(outputs), 1).permute(0, 3, 1, 2)  # [B, C, t, 1 + N]
        n = stacked.shape[-1]
        out = torch.bmm(weights.transpose(1, 2).reshape(b * c, 1, t), stacked.reshape(b * c, t, n))
        return out.view(b, c, n).transpose(1, 2)

    def pointwise(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight)


class CausalConv(nn.Module):
    """Depthwise conv over time, kernel 3, left padding only: position t reads t - 2..t, never a later one."""

    kernel = 3

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, self.kernel, groups=channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x.transpose(1, 2), (self.kernel - 1, 0))).transpose(1, 2)


class Causal(Layout):
    """[B, T, C]: a sequence where position t may depend on positions <= t only (module docstring)."""

    name = "causal"
    drops_block = True

    def descriptor(self, x: Tensor) -> Tensor:
        return x  # per position: any pooling over T would let position t read later ones

    def per_channel(self, v: Tensor) -> Tensor:
        return v if v.dim() == 3 else v[:, None, :]

    def channel_shape(self, channels: int) -> tuple[int, ...]:
        return (channels,)

    def norm(self, channels: int) -> nn.Module:
        return nn.LayerNorm(channels)

    def value_mixer(self, channels: int) -> nn.Module:
        return CausalConv(channels)

    def residual_add(self, branch: Tensor, identity: Tensor) -> Tensor:
        return branch + identity

    def matmul_weighted_sum(self, weights: Tensor, outputs: Sequence[Tensor]) -> Tensor:
        return TOKENS.matmul_weighted_sum(weights, outputs)  # the same [B, t, C] x [B, N, C] sum, no class token

    def pointwise(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight)


FEATURE_MAPS = FeatureMaps()
TOKENS = Tokens()
CAUSAL = Causal()
LAYOUTS = {layout.name: layout for layout in (FEATURE_MAPS, TOKENS, CAUSAL)}
