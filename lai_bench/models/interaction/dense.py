"""DenseNet-style static layer aggregation on the ResNet backbone (static layer attention).

Within a stage, x_t <- x_t + DropPath(BN(sum_{j<t} softmax(alpha_t)_j x_j)): every block adds a
learned, input-independent weighting of the earlier block outputs of its stage (the list resets
per stage). alpha_t starts at zero, i.e. at the plain average of the earlier outputs.
"""

import torch
from torch import Tensor, nn

from .base import Interaction, StageSpec
from .registry import register_method


@register_method("dense", display="DenseNet-style", order=6, color="#e377c2")
class DenseAggregation(Interaction):
    def __init__(self, spec: StageSpec, **kw) -> None:
        super().__init__(spec, **kw)
        # Block t has t earlier outputs; block 0 has none and no parameters.
        self.alphas = nn.ParameterList(nn.Parameter(torch.zeros(t)) for t in range(1, spec.num_blocks))
        self.bns = nn.ModuleList(spec.layout.norm(spec.channels) for _ in range(1, spec.num_blocks))

    def merge(self, t: int, residual: Tensor, identity: Tensor,
              state: list[Tensor] | None) -> tuple[Tensor, list[Tensor]]:
        x = self.layout.residual_add(residual, identity)
        outputs = state or []
        if outputs:
            w = self.alphas[t - 1].softmax(0)
            weights = w[None, :, None].expand(x.shape[0], -1, self.spec.channels)
            x = x + self.drop_path(self.bns[t - 1](self.layout.weighted_sum(weights, outputs)))
        return x, outputs + [x]
