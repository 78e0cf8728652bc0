"""Layer attention of MRLA (light and base), shared by MRLA and DLA, and the ECA channel conv they use."""
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layout import FEATURE_MAPS, Layout


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel: the odd number nearest above int((log2 C + b) / gamma)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


def num_heads(channels: int, head_dim: int) -> int:
    """Heads of width `head_dim`; a stage narrower than one head uses a single head."""
    if channels <= head_dim:
        return 1
    if channels % head_dim:
        raise ValueError(f"channels ({channels}) must be a multiple of head_dim ({head_dim})")
    return channels // head_dim


def sigmoid_head_scores(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """MRLA-light's score: sigmoid(q.k / sqrt(d)) per head of d = C / heads channels, expanded to channels [B, C]."""
    b, c = q.shape
    q, k = q.view(b, heads, -1), k.view(b, heads, -1)
    s = torch.sigmoid((q * k).sum(-1) / math.sqrt(q.shape[-1]))
    return s.repeat_interleave(c // heads, dim=1)


def softmax_head_weights(q: Tensor, keys: Tensor, heads: int) -> Tensor:
    """MRLA-base's weights: softmax over the t stored keys [B, t, C] of q.k_j / sqrt(d) per head, expanded to
    channels: [B, t, C]."""
    b, t, c = keys.shape
    qh = q.view(b, 1, heads, -1)
    kh = keys.view(b, t, heads, -1)
    logits = (qh * kh).sum(-1) / math.sqrt(qh.shape[-1])  # [B, t, G]
    return logits.softmax(dim=1).repeat_interleave(c // heads, dim=2)


class ChannelConv1d(nn.Module):
    """ECA-style 1-D conv over the channel descriptor [B, C] -> [B, C] (no bias, zero padding k // 2).

    Computed as the zero-padded windows [B * C, k] times the kernel: the same cross-correlation as a 1-channel
    conv1d, 2-5x faster on CPU, and a matmul that fvcore counts (B * C * k multiply-adds, as the conv).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, y: Tensor) -> Tensor:
        k = self.conv.kernel_size[0]
        # The windows are copied into a [B * C, k] matrix: a matmul of the 3-D unfold view runs as a batched
        # matmul over B, ~10x slower on CPU.
        windows = F.pad(y, (k // 2, k // 2)).unfold(1, k, 1).reshape(-1, k)
        return (windows @ self.conv.weight.view(k, 1)).view(y.shape)


class LightAttention(nn.Module):
    """MRLA-light for one block: BN(sigmoid(q.k / sqrt(d)) * DWConv(x) + lambda * o_prev).

    q and k come from ECA-style 1-D convs over the descriptor of x (GAP on a map); the score is one scalar per head.
    The value mixer, norm and lambda's shape come from the layout.
    """

    def __init__(self, channels: int, head_dim: int = 32, layout: Layout = FEATURE_MAPS) -> None:
        super().__init__()
        self.layout = layout
        self.heads = num_heads(channels, head_dim)
        self.query = ChannelConv1d(channels)
        self.key = ChannelConv1d(channels)
        self.value = layout.value_mixer(channels)
        self.lambda_t = nn.Parameter(torch.randn(layout.channel_shape(channels)))
        self.bn = layout.norm(channels)

    def scores(self, y: Tensor) -> Tensor:
        """Per-head sigmoid scores expanded to channels: [B, C]."""
        return sigmoid_head_scores(self.query(y), self.key(y), self.heads)

    def forward(self, x: Tensor, previous: Tensor, y: Tensor | None = None) -> Tensor:
        """`y` = the descriptor of x when the caller has it already."""
        s = self.scores(self.layout.descriptor(x) if y is None else y)
        return self.bn(torch.addcmul(self.lambda_t * previous, self.value(x), self.layout.per_channel(s)))


class BaseAttention(nn.Module):
    """MRLA-base for one block: softmax attention of the current query over the stage's stored keys/values.

    The caller keeps keys [B, t, C] and the t value outputs (maps or tokens); `value_scales` [B, t, C] are
    per-channel factors applied to the stored values (DLA-B's refresh), kept apart so the outputs themselves
    are never rewritten.
    """

    def __init__(self, channels: int, head_dim: int = 32, layout: Layout = FEATURE_MAPS, relu: bool = True) -> None:
        super().__init__()
        self.layout = layout
        self.heads = num_heads(channels, head_dim)
        self.query = ChannelConv1d(channels)
        self.key = ChannelConv1d(channels)
        self.value = layout.value_mixer(channels)
        self.bn = layout.norm(channels)
        self.relu = relu

    def attention(self, q: Tensor, keys: Tensor) -> Tensor:
        """Softmax over the t stored layers, per head, expanded to channels: [B, t, C]."""
        return softmax_head_weights(q, keys, self.heads)

    def project(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Block output x (descriptor y) -> its query [B, C], key [B, 1, C] and value output."""
        y = self.layout.descriptor(x) if y is None else y
        return self.query(y), self.key(y).unsqueeze(1), self.value(x)

    def forward(self, q: Tensor, keys: Tensor, values: Sequence[Tensor], value_scales: Tensor | None = None,
                x: Tensor | None = None) -> Tensor:
        """`x`, the block output, is read by the token form only (its class token); the maps form ignores it."""
        w = self.attention(q, keys)
        if value_scales is not None:
            w = w * value_scales
        # Under fvcore's trace the sum is one matmul, so its multiply-adds are counted as the public code's are.
        layout = self.layout
        out = self.bn((layout.matmul_weighted_sum if torch.jit.is_tracing() else layout.weighted_sum)(w, values))
        return F.relu(out) if self.relu else out
