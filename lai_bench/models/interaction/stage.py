"""The generic stage every backbone builds: its blocks run through one method object's hooks (base.py's contract),
on any layout. A block is called as `block(x_in, x)` and returns its residual branch and its identity."""
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from .base import Interaction


class Stage(nn.Module):
    """A sequence of blocks sharing one interaction object."""

    def __init__(self, blocks: Sequence[nn.Module], interaction: Interaction) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.interaction = interaction

    def forward(self, x: Tensor, carry: Any = None) -> tuple[Tensor, Any]:
        inter = self.interaction
        state = inter.begin(x, carry)
        for t, block in enumerate(self.blocks):
            residual, identity = block(inter.block_input(x, state), x)
            x, state = inter.merge(t, residual, identity, state)
        return x, inter.end(x, state)
