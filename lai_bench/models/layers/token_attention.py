"""MRLA-light and MRLA-base on the token layout as the public MRLA DeiT code computes them (joyfang1106/MRLA,
`deit/deit_mrla_light.py` and `deit/deit_mrla_base.py`), and the choice of form by layout.

Both act after the whole pre-norm block on its output x_t [B, 1 + N, C] and return what is added to x_t:

- light: LN_x(x_t); q, k are ECA-style 1-D convs over the mean of its patch tokens, v = GELU(DWConv3x3) of its
  patch grid; sigmoid(q.k / sqrt(d)) per head of d channels scales v; the patch tokens of the result are that
  + lambda * LN_o(o_{t-1}) (o_{t-1}: the block's input; lambda [C], randn init); its class token is LN_x(x_t)'s.
- base: LN_x(x_t) only; q, k, v as light without the GELU; softmax of q over the stage's keys weights the stored
  values; no norm and no ReLU after the sum; the class token is LN_x(x_t)'s.

The keys are stored as computed (the public memory is not normalised); the value outputs are token tensors whose
class token is zero (the grid conv leaves it out), so the layout's descriptor and weighted sum read them as they
read any token tensor. Every parameter keeps PyTorch's default init, lambda its randn, as in the public models
(their ViT init touches only the Linear and LayerNorm layers).
"""
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import (
    BaseAttention,
    ChannelConv1d,
    LightAttention,
    num_heads,
    sigmoid_head_scores,
    softmax_head_weights,
)
from .layout import TOKENS, Layout


class TokenLightAttention(nn.Module):
    """The public `mrlal_module` for one block: LN_x(x_t) attended, + lambda * LN_o(o_{t-1}), LN_x's class token."""

    def __init__(self, channels: int, head_dim: int = 16, layout: Layout = TOKENS) -> None:
        super().__init__()
        self.layout = layout
        self.heads = num_heads(channels, head_dim)
        self.norm_x = layout.norm(channels)
        self.norm_o = layout.norm(channels)
        self.query = ChannelConv1d(channels)
        self.key = ChannelConv1d(channels)
        self.value = layout.value_mixer(channels)
        self.lambda_t = nn.Parameter(torch.randn(channels))

    def forward(self, x: Tensor, previous: Tensor, y: Tensor | None = None) -> Tensor:
        """`y` (the descriptor of x, which the maps form reads) is not read: q and k see LN_x(x)."""
        xn = self.norm_x(x)
        yn = self.layout.descriptor(xn)
        s = sigmoid_head_scores(self.query(yn), self.key(yn), self.heads)
        v = F.gelu(self.value(xn)[:, 1:])
        # A LayerNorm acts token by token: LN_o of the patch tokens alone is LN_o(o)'s patch tokens.
        patches = torch.addcmul(self.lambda_t * self.norm_o(previous[:, 1:]), v, s[:, None, :])
        return torch.cat([xn[:, :1], patches], dim=1)


class TokenBaseAttention(nn.Module):
    """The public `mrlab_module` for one block: softmax attention of LN_x(x_t)'s query over the stage's keys/values,
    LN_x's class token. `value_scales` [B, t, C] are DLA-B's refreshes of the stored values, as on maps."""

    def __init__(self, channels: int, head_dim: int = 16, layout: Layout = TOKENS, relu: bool = False) -> None:
        super().__init__()
        if relu:
            raise ValueError("out_relu=True is a ResNet option: the MRLA DeiT base module has no norm or ReLU after "
                             "its attention (leave out_relu unset on a token backbone)")
        self.layout = layout
        self.heads = num_heads(channels, head_dim)
        self.norm_x = layout.norm(channels)
        self.query = ChannelConv1d(channels)
        self.key = ChannelConv1d(channels)
        self.value = layout.value_mixer(channels)

    def attention(self, q: Tensor, keys: Tensor) -> Tensor:
        """Softmax over the t stored layers, per head, expanded to channels: [B, t, C]."""
        return softmax_head_weights(q, keys, self.heads)

    def project(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Block output x -> query [B, C], key [B, 1, C], value tokens of LN_x(x); `y` (x's descriptor) is not read."""
        xn = self.norm_x(x)
        yn = self.layout.descriptor(xn)
        return self.query(yn), self.key(yn).unsqueeze(1), self.value(xn)

    def forward(self, q: Tensor, keys: Tensor, values: Sequence[Tensor], value_scales: Tensor | None = None,
                x: Tensor | None = None) -> Tensor:
        """The attended patch tokens after LN_x(x)'s class token; `x` is the block output the query came from."""
        if x is None:
            raise ValueError("the token form of MRLA-base needs the block output x (its class token)")
        w = self.attention(q, keys)
        if value_scales is not None:
            w = w * value_scales
        layout = self.layout
        out = (layout.matmul_weighted_sum if torch.jit.is_tracing() else layout.weighted_sum)(w, values)
        return torch.cat([self.norm_x(x[:, :1]), out[:, 1:]], dim=1)


PUBLIC_FORMS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {TOKENS.name: (TokenLightAttention,
                                                                                  TokenBaseAttention)}
"""Layouts whose public MRLA code has modules of its own: (light, base). Elsewhere the generic modules serve."""


def light_attention(channels: int, head_dim: int, layout: Layout) -> nn.Module:
    """MRLA-light for one block on `layout`: the public DeiT module on tokens, the ResNet module otherwise."""
    cls = PUBLIC_FORMS.get(layout.name, (LightAttention, BaseAttention))[0]
    return cls(channels, head_dim, layout)


def base_attention(channels: int, head_dim: int, layout: Layout, relu: bool) -> nn.Module:
    """MRLA-base for one block on `layout`: the public DeiT module on tokens, the ResNet module otherwise."""
    cls = PUBLIC_FORMS.get(layout.name, (LightAttention, BaseAttention))[1]
    return cls(channels, head_dim, layout, relu=relu)
