"""DenseFormer's depth-weighted average (DWA; Pagliardini et al., NeurIPS 2024, arXiv 2402.02622).

X_0 is the input of the span and X_k the output of its k-th block (k = 1..L). After block k, when k % period == 0,
the next block reads (and the network carries on with)

    X'_k = sum_{j <= k, j = k (mod dilation)} alpha_{k,j} X_j,

else X_k itself; X_k is always the raw block output, never an average. alpha_k has k // dilation + 1 scalars,
all 0 but the weight of X_k, 1: at init the network is the plain one, exactly. These are the official DWAModules
(epfml/DenseFormer, denseformer/denseformer.py), `dilation` and `period` as there (DWA k x p: k = dilation,
p = period); the official Linear(m, 1) per block is an [m] parameter here.

The span: on tokens the whole ViT (`span=network`, the default): the stages' carry passes the stored outputs on,
so a 12-block DeiT has one 12-block DWA as in DenseFormer, X_0 the token embedding (patches + position + class
token). On maps a span is a stage (shapes change between ResNet stages) and X_0 is the identity of the stage's first
block: the stage input where its shape allows, else its projection shortcut P(x) (1x1 conv + BN), the stage input
as the stage's shape has it. `span=stage` on tokens restarts the average every 4 blocks. Stochastic depth drops the
block's residual branch, as in the plain network.
"""
import torch
from torch import Tensor, nn

from ..layers import scalar_weighted_sum
from .base import Interaction, StageSpec, check_span
from .registry import register_method


@register_method("dwa", display="DWA", order=11, color="#ffbb78")
class DWA(Interaction):
    layout_defaults = {"tokens": {"span": "network"}}

    def __init__(self, spec: StageSpec, *, dilation: int = 1, period: int = 1, span: str = "stage", **kw) -> None:
        super().__init__(spec, **kw)
        check_span("DWA", span, spec.layout)
        for name, value in (("dilation", dilation), ("period", period)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DWA {name} must be an integer >= 1, got {value!r}")
        self.dilation, self.period, self.span = dilation, period, span
        self.offset = spec.first_block if span == "network" else 0  # blocks of the span before this stage
        self.alphas = nn.ParameterDict()  # by block: only the blocks with k % period == 0 average
        for t in range(spec.num_blocks):
            k = self.offset + t + 1  # this block's output is X_k
            if k % period == 0:
                alpha = torch.zeros(k // dilation + 1)  # X_j for j = k mod dilation, ..., k
                alpha[-1] = 1.0  # the newest output: the plain network
                self.alphas[str(t)] = nn.Parameter(alpha)

    def begin(self, x: Tensor, carry: list[Tensor] | None) -> list[Tensor] | None:
        return carry  # span=network: X_0 .. X_k of the earlier stages; None where the span starts

    def merge(self, t: int, residual: Tensor, identity: Tensor,
              state: list[Tensor] | None) -> tuple[Tensor, list[Tensor]]:
        x = self.layout.residual_add(self.drop_path(residual), identity)
        outputs = (state if state is not None else [identity]) + [x]  # X_0 (the first block's identity) .. X_k
        if str(t) in self.alphas:
            k = self.offset + t + 1
            x = scalar_weighted_sum(self.alphas[str(t)], outputs[k % self.dilation::self.dilation])
        return x, outputs

    def end(self, x: Tensor, state: list[Tensor]) -> list[Tensor] | None:
        return state if self.span == "network" else None
