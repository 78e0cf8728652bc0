"""Efficient Channel Attention: a 1-D conv (adaptive odd kernel, no bias) over GAP(r), sigmoid gate."""
from typing import Any

import torch
from torch import Tensor, nn

from ..layers import ChannelConv1d
from .base import GatedInteraction, StageSpec
from .registry import register_method


@register_method("eca", display="ECA", order=2, color="#ff7f0e")
class ECA(GatedInteraction):
    """One ECA gate per block, placed like SE."""

    layouts = ("maps",)  # a gate of the residual branch; no published ViT form to follow

    def __init__(self, spec: StageSpec, **kw) -> None:
        super().__init__(spec, **kw)
        self.convs = nn.ModuleList(ChannelConv1d(spec.channels) for _ in range(spec.num_blocks))

    def gate(self, t: int, residual: Tensor, state: Any) -> tuple[Tensor, Any]:
        return torch.sigmoid(self.convs[t](self.layout.descriptor(residual))), state
