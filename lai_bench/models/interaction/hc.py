"""Hyper-Connections (HC: Zhu et al., "Hyper-Connections", ICLR 2025, arXiv 2409.19606) and the manifold-constrained
variant (mHC: Xie et al., DeepSeek-AI, "mHC: Manifold-Constrained Hyper-Connections", arXiv 2512.24880).

The residual stream becomes n streams H = (h_1 .. h_n) (`rate` n). Layer k (one residual block here) reads a mix of
the streams, and writes its output back into every stream beside a learned mix of the streams:

    HC = [[0, B], [A_m, A_r]]        B [1, n], A_m [n, 1], A_r [n, n]       (HC eq. 1-5)
    h = A_m^T H;   H' = B^T T(h) + A_r^T H
    SHC (static):   A_m, A_r, B are parameters, initialised as the plain residual net: A_m = e_{k mod n}, A_r = I,
                    B = 1 (the paper's Algorithm 2; all streams stay equal, each the plain network's h)
    DHC (dynamic):  Hbar = LayerNorm(H) (one norm shared by the streams, per stream row)
                    [A_m A_r](H) = s_a * tanh(Hbar W_a) + [A_m A_r],  W_a [d, n + 1] zeros, s_a = 0.01
                    B(H)         = s_b * tanh(Hbar W_b)^T + B,        W_b [d, 1] zeros,     s_b = 0.01

`constraint="sinkhorn"` (mHC eq. 8): the same logits through the mHC maps, H_pre = A_m^T, H_post = B, H_res = A_r^T:

    A_m = sigmoid(.),  B = 2 sigmoid(.),  A_r^T = Sinkhorn-Knopp(.): M = exp(.), then `sinkhorn_iters` (20, mHC's
    t_max) times normalise columns, then rows, so each stream's new mix weights sum to 1 exactly after the last step.

The static logits under the constraint start where the maps give HC's init on equal streams: A_m logits
log(1/(n-1)) (sigmoid = 1/n for every stream: the one-hot e_{k mod n} is out of a sigmoid's range), A_r logits I
(HC's), B logits 0 (2 sigmoid = 1). A doubly stochastic A_r keeps equal streams equal, so mHC at init is the plain
network too. mHC's own dynamic term (one RMSNorm over the n streams flattened to nC, no tanh, a gate per map) is
replaced by HC's per-stream form here: docs/faithfulness.md.

Where the streams live: on tokens they span the whole network (the stage carry), every block is an HC layer, and the
streams are summed at the end (the last stage's `head`, before the final LayerNorm): at init n times the plain
network's features, which the LayerNorm maps to the plain logits up to its eps. On maps a stage's first block changes
shape (stride, projection shortcut), which the n streams cannot follow: it runs as the plain block, its output is
copied into the n streams, blocks 1.. are HC layers, and the stage ends in the streams' mean (the next stage's plain
first block reads the plain scale) or, in the last stage, their sum (the paper's reduction; n times the plain
features at init). The ReLU after the add acts on each stream: h'_j = ReLU(B_j r_t + (A_r^T H)_j), so at init every
stream is the plain block's output. The block function T(h) is the block's residual branch (maps) or its increment
(tokens). Dynamic weights are per position (pixel or token), as the paper's are per token.
"""
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .base import Interaction, StageSpec
from .registry import register_method

CONSTRAINTS = ("none", "sinkhorn")


def sinkhorn(logits: Tensor, iters: int) -> Tensor:
    """Sinkhorn-Knopp on exp(logits) [..., n_src, n_dst]: `iters` times normalise over the targets, then over the
    sources (mHC's T_c then T_r on H_res = this transposed); each target's weights sum to 1 after the last step."""
    m = (logits - logits.amax((-2, -1), keepdim=True)).exp()  # the shift cancels in the normalisations
    for _ in range(iters):
        m = m / m.sum(-1, keepdim=True)
        m = m / m.sum(-2, keepdim=True)
    return m


class StreamState(NamedTuple):
    """What block t's merge needs from its width connection."""

    streams: Tensor  # A_r^T H [n, *x.shape]: the streams mixed for the identity path
    beta: Tensor  # B: [n, 1, ...] static or [n, *x.shape with channels 1] dynamic
    h: Tensor  # A_m^T H: the block's input


class HCLayer(nn.Module):
    """The connection weights of one layer (block) k: static [A_m A_r] and B, and in DHC the dynamic part."""

    def __init__(self, channels: int, rate: int, k: int, dynamic: bool, constrained: bool) -> None:
        super().__init__()
        if constrained:  # logits of the mHC maps that give HC's init on equal streams (module docstring)
            a_m = torch.full((rate, 1), -math.log(rate - 1))
            beta = torch.zeros(rate)
        else:  # HC's Algorithm 2: A_m = e_{k mod n}, A_r = I, B = 1
            a_m = torch.zeros(rate, 1)
            a_m[k % rate] = 1.0
            beta = torch.ones(rate)
        self.static_alpha = nn.Parameter(torch.cat([a_m, torch.eye(rate)], 1))  # rows: source stream i
        self.static_beta = nn.Parameter(beta)
        self.dynamic = dynamic
        if dynamic:
            self.norm = nn.LayerNorm(channels)
            self.dynamic_alpha_fn = nn.Parameter(torch.zeros(channels, rate + 1))
            self.dynamic_alpha_scale = nn.Parameter(torch.full((), 0.01))
            self.dynamic_beta_fn = nn.Parameter(torch.zeros(channels, 1))
            self.dynamic_beta_scale = nn.Parameter(torch.full((), 0.01))


@register_method("hc", display="HC", order=12, color="#98df8a")
@register_method("dhc", display="DHC", order=13, color="#ff9896", dynamic=True)
@register_method("mhc", display="mHC", order=14, color="#c5b0d5", dynamic=True, constraint="sinkhorn")
class HyperConnections(Interaction):
    """HC for one stage: SHC, DHC (`dynamic`) or mHC (`constraint="sinkhorn"`)."""

    # Where the n streams start and end: a stage on maps (its first block changes shape), the network on tokens.
    network_streams = {"maps": False, "tokens": True}

    def __init__(self, spec: StageSpec, *, rate: int = 4, dynamic: bool = False, constraint: str = "none",
                 sinkhorn_iters: int = 20, **kw) -> None:
        super().__init__(spec, **kw)
        if constraint not in CONSTRAINTS:
            raise ValueError(f"HC constraint must be one of {CONSTRAINTS}, got {constraint!r}")
        if constraint == "sinkhorn" and rate < 2:
            raise ValueError(f"HC constraint 'sinkhorn' needs rate >= 2 (a sigmoid pre weight cannot be 1), got {rate}")
        self.rate, self.constrained, self.iters = rate, constraint == "sinkhorn", sinkhorn_iters
        self.spans_network = self.network_streams[spec.layout.name]
        self.first = 0 if self.spans_network else 1  # the first HC block; on maps block 0 is the plain one
        # The channel axis of a block output as stored ([B, C, H, W]: 1; [B, T, C]: 2), +1 in the streams [n, ...].
        self.channel_dims = len(spec.layout.channel_shape(spec.channels))
        self.layers = nn.ModuleList(HCLayer(spec.channels, rate, k, dynamic, self.constrained)
                                    for k in range(self.first, spec.num_blocks))

    def width(self, t: int, streams: Tensor) -> StreamState:
        """Block t's width connection on the streams [n, *x.shape]: its input A_m^T H, A_r^T H and B."""
        layer = self.layers[t - self.first]
        alpha, beta = layer.static_alpha, layer.static_beta
        cdim = streams.dim() - self.channel_dims
        last = streams.movedim(cdim, -1)  # channels last: the paper's per-token rows
        if layer.dynamic:
            normed = layer.norm(last)
            alpha = alpha + layer.dynamic_alpha_scale * torch.tanh(normed @ layer.dynamic_alpha_fn).movedim(0, -2)
            beta = beta + layer.dynamic_beta_scale * torch.tanh(normed @ layer.dynamic_beta_fn)[..., 0].movedim(0, -1)
        if self.constrained:
            alpha = torch.cat([alpha[..., :1].sigmoid(), sinkhorn(alpha[..., 1:], self.iters)], -1)
            beta = 2 * beta.sigmoid()
        if layer.dynamic:  # alpha [*pos, n, n + 1], beta [*pos, n], per position
            mixed = torch.einsum("...ij,i...c->j...c", alpha, last).movedim(-1, cdim)
            beta = beta.movedim(-1, 0).unsqueeze(cdim)
        else:
            mixed = torch.einsum("ij,i...->j...", alpha, streams)
            beta = beta.view(-1, *[1] * (streams.dim() - 1))
        return StreamState(mixed[1:], beta, mixed[0])

    def begin(self, x: Tensor, carry: Tensor | None) -> StreamState | None:
        if not self.spans_network:
            return None  # block 0 runs plain; the streams start at its output
        streams = carry if carry is not None else x.expand(self.rate, *x.shape)
        return self.width(0, streams)

    def block_input(self, x: Tensor, state: StreamState | None) -> Tensor:
        return x if state is None else state.h

    def merge(self, t: int, residual: Tensor, identity: Tensor, state: StreamState | None):
        if t < self.first:
            x = self.layout.residual_add(self.drop_path(residual), identity)
            streams = x.expand(self.rate, *x.shape)
        else:
            if t == 0:  # a token block returns Block(h) - x for the x it was given: T(h) = Block(h) - h
                residual = residual + (identity - state.h)
            streams = self.layout.residual_add(state.beta * self.drop_path(residual), state.streams)
        if t == self.spec.num_blocks - 1:
            x = streams.sum(0) if self.spec.is_last else streams.mean(0)
            return x, streams
        state = self.width(t + 1, streams)
        return state.h, state  # the next block's x is its input: a token block's increment is taken over x

    def end(self, x: Tensor, state: Tensor) -> Tensor | None:
        return state if self.spans_network else None
