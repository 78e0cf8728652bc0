"""MRLA-base and DLA-B computed the straightforward way, as their public code does.

Not registered as methods, so grids never see them: they are the oracle the fast implementations are tested
against and the "loop" rows of the benchmark. Same modules and parameter names as the fast classes, so a
state dict moves between the two and both give the same outputs.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from .interaction.dla import DLA
from .interaction.mrla import MRLABase
from .layers import BaseAttention, gap, matmul_weighted_sum


def attend(attn: BaseAttention, y: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """Softmax attention over stacked keys [B, t, C] and values [B, t, C, H, W], then BN (and ReLU)."""
    weights = attn.attention(attn.query(y), keys)
    out = attn.bn(matmul_weighted_sum(weights, values.unbind(1)))
    return F.relu(out) if attn.relu else out


class MRLABaseConcat(MRLABase):
    """Re-concatenates every stored value map at every block (quadratic copies in depth)."""

    def merge(self, t: int, residual: Tensor, identity: Tensor,
              state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x = F.relu(residual + identity)
        attn, y = self.attn[t], gap(x)
        k, v = attn.key(y).unsqueeze(1), attn.value(x).unsqueeze(1)
        keys, values = (k, v) if state is None else (torch.cat([state[0], k], 1), torch.cat([state[1], v], 1))
        return x + self.drop_path(attend(attn, y, keys, values)), (keys, values)


class DLABLoop(DLA):
    """DLA-B refreshing each stored key and value map in its own DSU call and rewriting the maps."""

    def merge(self, t: int, residual: Tensor, identity: Tensor, state):
        if self.attention != "base":
            return super().merge(t, residual, identity, state)
        x = F.relu(residual + identity)
        attn, y = self.attn[t], gap(x)
        context, keys, values = state if state is not None else (None, [], [])
        context = self.update_context(y, context)
        if self.backward_path:
            keys = [k * self.refresh(k, context) for k in keys]
            values = [v * self.refresh(gap(v), context)[:, :, None, None] for v in values]
        keys: list[Tensor] = keys + [attn.key(y)]
        values: list[Tensor] = values + [attn.value(x)]
        out = attend(attn, y, torch.stack(keys, 1), torch.stack(values, 1))
        return x + self.drop_path(out), (context, keys, values)


REFERENCE_IMPLS: dict[str, type] = {"mrla_base": MRLABaseConcat, "dla_b": DLABLoop}


def reference_impl(method: str) -> type:
    """The straightforward class for `method`; ValueError naming the methods that have one."""
    if method not in REFERENCE_IMPLS:
        raise ValueError(f"no reference (loop) implementation of {method!r}; "
                         f"methods with one: {', '.join(REFERENCE_IMPLS)}")
    return REFERENCE_IMPLS[method]
