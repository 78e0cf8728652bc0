"""DIANet: one DIA-LSTM per stage, shared by its blocks, gating each residual branch (AAAI 2020)."""

import torch
from torch import Tensor

from ..layers import GateCell, align
from ..registry import register_method
from .base import GatedInteraction, StageSpec

State = tuple[Tensor, Tensor]


class DIALSTMCell(GateCell):
    """gates [i, f, g, o] = W_ih(m) + W_hh(h), each W = Linear(C, C/r) -> ReLU -> Linear(C/r, 4C).

    c' = sigmoid(f) c + sigmoid(i) tanh(g);  h' = sigmoid(o) * sigmoid(c')  (sigmoid, not tanh,
    so h' is a channel gate in (0, 1)).
    """

    num_gates = 4

    def step(self, ih: Tensor, hh: Tensor | None, state: State) -> tuple[Tensor, State]:
        i, f, g, o = self.gates(ih, hh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * align(state[1], ih) + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.sigmoid(c)
        return h, (h, c)


@register_method("dianet", display="DIANet", order=3, color="#2ca02c")
class DIANet(GatedInteraction):
    """m_t = GAP(r_t); (h, c) <- LSTM(m_t, (h, c)); x_t = act(r_t * h + s_t). State reset per stage."""

    layouts = ("maps",)  # a gate of the residual branch; no published ViT form to follow

    def __init__(self, spec: StageSpec, *, reduction: int = 4, **kw) -> None:
        super().__init__(spec, **kw)
        self.lstm = DIALSTMCell(spec.channels, reduction)

    def gate(self, t: int, residual: Tensor, state: State | None) -> tuple[Tensor, State]:
        return self.lstm(self.layout.descriptor(residual), state)
