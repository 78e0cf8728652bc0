"""DIANet: one DIA-LSTM per stage, shared by its blocks, gating each residual branch (AAAI 2020)."""

from torch import Tensor

from ..layers import DIALSTMCell
from .base import GatedInteraction, StageSpec
from .registry import register_method

State = tuple[Tensor, Tensor]


@register_method("dianet", display="DIANet", order=3, color="#2ca02c")
class DIANet(GatedInteraction):
    """m_t = GAP(r_t); (h, c) <- LSTM(m_t, (h, c)); x_t = act(r_t * h + s_t). State reset per stage."""

    layouts = ("maps",)  # a gate of the residual branch; no published ViT form to follow

    def __init__(self, spec: StageSpec, *, reduction: int = 4, **kw) -> None:
        super().__init__(spec, **kw)
        self.lstm = DIALSTMCell(spec.channels, reduction)

    def gate(self, t: int, residual: Tensor, state: State | None) -> tuple[Tensor, State]:
        return self.lstm(self.layout.descriptor(residual), state)
