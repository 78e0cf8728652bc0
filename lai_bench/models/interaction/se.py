"""Squeeze-and-Excitation: s = sigmoid(W2 ReLU(W1 GAP(r))), no bias, r = 16; gates the residual branch."""
from typing import Any

import torch
from torch import Tensor, nn

from .base import GatedInteraction, StageSpec
from .registry import register_method


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True), nn.Linear(hidden, channels, bias=False)
        )

    def forward(self, y: Tensor) -> Tensor:
        """The gate [B, C] of a descriptor y [B, C]."""
        return torch.sigmoid(self.fc(y))


@register_method("se", display="SE", order=1, color="#1f77b4")
class SE(GatedInteraction):
    """One SE gate per block, after the residual branch's last BN and before the add."""

    layouts = ("maps",)  # a gate of the residual branch; no published ViT form to follow

    def __init__(self, spec: StageSpec, *, reduction: int = 16, **kw) -> None:
        super().__init__(spec, **kw)
        self.gates = nn.ModuleList(SqueezeExcite(spec.channels, reduction) for _ in range(spec.num_blocks))

    def gate(self, t: int, residual: Tensor, state: Any) -> tuple[Tensor, Any]:
        return self.gates[t](self.layout.descriptor(residual)), state
