"""Stochastic depth."""
from torch import Tensor, nn


class DropPath(nn.Module):
    """Per-sample stochastic depth on a branch (identity in eval mode or when p == 0)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        scale = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep).div_(keep)
        return x * scale

    def extra_repr(self) -> str:
        return f"p={self.p}"
