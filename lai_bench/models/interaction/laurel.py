"""LAuReL: Learned Augmented Residual Layer (Menghani, Kumar, Kumar; ICML 2025, arXiv 2411.07501). Paper only: no
public code exists.

The paper generalises x_{i+1} = f(x_i) + x_i to x_{i+1} = alpha f(x_i) + g(x_i, ..., x_0) (its eq. 2), x_i the
input of block i, and studies three versions (`variant`):

  rw (sec. 2.1):  x_{i+1} = alpha f(x_i) + beta x_i, (alpha, beta) normalised: "a normalization function such as
                  softmax or sigmoid helps" (`norm`: softmax over the pair, or a sigmoid of each).
  lr (eq. 3):     x_{i+1} = f(x_i) + B A x_i + x_i, A: D -> r, B: r -> D (`rank` r). B starts at zero ("B was always
                  initialized to zero", sec. 3.3), so the network starts as the plain one; A is Xavier (the paper's
                  ResNet runs, `lr_init=xavier`) or column-orthogonal, A_ij = 1/sqrt(rD) where i mod r = j (its LLM
                  runs, `lr_init=orthogonal`, the default on tokens).
  pa (eq. 4):     x_{i+1} = f(x_i) + x_i + sum_{j<k} gamma_{i,j} h_i(x_{i-j}), the k most recent block inputs (`k`);
                  h_i a rank-r B A as in lr ("in practice", `pa_map=lowrank`) or the identity (`pa_map=identity`).
                  h_i is linear, so h_i is applied once to sum_j gamma_j x_{i-j}. Near the start of a span fewer than
                  k inputs exist: block i has min(k, i + 1) gammas.

D is the channels; A and B are 1x1 convs on maps and linears on tokens, no bias (parameters, so the ResNet's conv
init leaves B at zero). Parameters per block: rw 2, lr 2rD, pa 2rD + min(k, i + 1) (identity: min(k, i + 1)).

Initialisation the paper does not state: RW's two logits start at 0, so alpha = beta = 1/2 (softmax and sigmoid
alike) and each block starts as (f(x) + x) / 2 (then the ReLU on maps); PA's gammas start at 1 with the low-rank
map (B = 0 zeroes the term; gamma = 0 as well would leave gamma and B without gradient) and at 0 with the identity.

On the backbones: f is the block's residual branch; on tokens the whole pre-norm block (both sublayers), one
LAuReL per block. At a projection shortcut (a ResNet stage's first block) x_i is the projected identity P(x): RW
weights it, LR adds B A P(x), PA's history starts with it. PA's history spans a stage on maps and the whole ViT on
tokens (`span`, as DWA's). Stochastic depth drops f.
"""
import torch
from torch import Tensor, nn

from ..layers import scalar_weighted_sum
from ..layers.layout import Layout
from .base import Interaction, StageSpec, check_span
from .registry import register_method

VARIANTS = ("rw", "lr", "pa")
NORMS = ("softmax", "sigmoid")
PA_MAPS = ("lowrank", "identity")
LR_INITS = ("xavier", "orthogonal")


def column_orthogonal_(down: Tensor) -> Tensor:
    """The paper's footnote 2 for A [D, r]: 1/sqrt(rD) where i mod r = j, else 0; `down` is A's transpose [r, D]."""
    r, d = down.shape
    with torch.no_grad():
        down.zero_()
        i = torch.arange(d, device=down.device)
        down[i % r, i] = 1.0 / (r * d) ** 0.5
    return down


class LowRank(nn.Module):
    """x -> B A x at every position: A [r, C] (Xavier or column-orthogonal), B [C, r] zeros."""

    def __init__(self, channels: int, rank: int, layout: Layout, init: str) -> None:
        super().__init__()
        self.layout = layout
        self.down = nn.Parameter(torch.empty(rank, channels))  # A
        self.up = nn.Parameter(torch.zeros(channels, rank))  # B
        if init == "xavier":
            nn.init.xavier_uniform_(self.down)
        else:
            column_orthogonal_(self.down)

    def forward(self, x: Tensor) -> Tensor:
        return self.layout.pointwise(self.layout.pointwise(x, self.down), self.up)


@register_method("laurel", display="LAuReL-RW", order=15, color="#c49c94", variant="rw")
@register_method("laurel_lr", display="LAuReL-LR", order=16, color="#f7b6d2", variant="lr")
@register_method("laurel_pa", display="LAuReL-PA", order=17, color="#dbdb8d", variant="pa")
class LAuReL(Interaction):
    """LAuReL for one stage; `variant` selects RW, LR or PA (`laurel`, `laurel_lr`, `laurel_pa`)."""

    layout_defaults = {"tokens": {"lr_init": "orthogonal", "span": "network"}}

    def __init__(self, spec: StageSpec, *, variant: str = "rw", norm: str = "softmax", rank: int = 16, k: int = 3,
                 pa_map: str = "lowrank", lr_init: str = "xavier", span: str = "stage", **kw) -> None:
        super().__init__(spec, **kw)
        for name, value, allowed in (("variant", variant, VARIANTS), ("norm", norm, NORMS),
                                     ("pa_map", pa_map, PA_MAPS), ("lr_init", lr_init, LR_INITS)):
            if value not in allowed:
                raise ValueError(f"LAuReL {name} must be one of {allowed}, got {value!r}")
        for name, value in (("rank", rank), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LAuReL {name} must be an integer >= 1, got {value!r}")
        check_span("LAuReL", span, spec.layout)
        self.variant, self.norm, self.k, self.span = variant, norm, k, span
        n, c = spec.num_blocks, spec.channels
        if variant == "rw":
            self.logits = nn.Parameter(torch.zeros(n, 2))  # (alpha, beta) of each block before normalisation
        elif variant == "lr" or pa_map == "lowrank":
            self.maps = nn.ModuleList(LowRank(c, rank, spec.layout, lr_init) for _ in range(n))
        else:
            self.maps = None
        if variant == "pa":
            first = spec.first_block if span == "network" else 0  # block inputs of the span before this stage
            start = 1.0 if self.maps is not None else 0.0
            self.gammas = nn.ParameterList(nn.Parameter(torch.full((min(k, first + t + 1),), start))
                                           for t in range(n))

    def residual_weights(self, t: int) -> tuple[Tensor, Tensor]:
        """RW's (alpha, beta) of block t."""
        w = self.logits[t].softmax(0) if self.norm == "softmax" else self.logits[t].sigmoid()
        return w[0], w[1]

    def begin(self, x: Tensor, carry: list[Tensor] | None) -> list[Tensor] | None:
        return carry  # PA, span=network: the last block inputs of the earlier stages

    def merge(self, t: int, residual: Tensor, identity: Tensor,
              state: list[Tensor] | None) -> tuple[Tensor, list[Tensor] | None]:
        f = self.drop_path(residual)
        if self.variant == "rw":
            alpha, beta = self.residual_weights(t)
            return self.layout.residual_add(alpha * f, beta * identity), state
        if self.variant == "lr":
            return self.layout.residual_add(f, identity + self.maps[t](identity)), state
        history = (state or []) + [identity]  # block inputs x_0 .. x_i of the span, x_i = this block's identity
        gammas = self.gammas[t]
        recent = history[::-1][:len(gammas)]  # x_i, x_{i-1}, ..., paired with gamma_{i,0}, gamma_{i,1}, ...
        mix = scalar_weighted_sum(gammas, recent)
        if self.maps is not None:
            mix = self.maps[t](mix)
        kept = history[len(history) - (self.k - 1):] if self.k > 1 else []  # what the next block reads
        return self.layout.residual_add(f, identity + mix), kept

    def end(self, x: Tensor, state: list[Tensor] | None) -> list[Tensor] | None:
        return state if self.span == "network" else None
